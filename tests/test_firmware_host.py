"""The firmware's portable C++ compiled with the host g++ and checked against the Python reference.

- firmware/main/image_preprocess.cc must give byte-identical int8 input tensors to
  gendertool.preprocess for odd, landscape, portrait and tiny images, RGB888 and RGB565.
No stand-ins for ESP-IDF or TFLM headers: only files that include neither are compiled here.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gendertool.preprocess import Preprocessing, crop_resize, quant_lut, quantize
from gendertool.resources import resource_path

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="host g++ not installed")

FW_MAIN = resource_path("firmware") / "main"
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1"]

# Reads one job from stdin, writes the int8 tensor to stdout:
#   u32 width, u32 height, u32 format (0 rgb888, 1 rgb565be), f64 crop, u32 out_h, u32 out_w,
#   768 lut bytes, pixel bytes.
DRIVER = r"""
#include <cstdio>
#include <cstring>
#include <vector>
#include "image_preprocess.h"

static bool ReadAll(void* dst, size_t n) { return std::fread(dst, 1, n, stdin) == n; }

int main() {
  uint32_t w, h, fmt, oh, ow;
  double crop;
  int8_t lut[3][256];
  if (!ReadAll(&w, 4) || !ReadAll(&h, 4) || !ReadAll(&fmt, 4) || !ReadAll(&crop, 8) ||
      !ReadAll(&oh, 4) || !ReadAll(&ow, 4) || !ReadAll(lut, sizeof lut)) return 3;
  const gt::PixelFormat pf = fmt == 0 ? gt::PixelFormat::kRgb888 : gt::PixelFormat::kRgb565Be;
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * gt::BytesPerPixel(pf));
  if (!ReadAll(px.data(), px.size())) return 4;
  std::vector<int8_t> out(static_cast<size_t>(oh) * ow * 3);
  const gt::ImageView view{px.data(), static_cast<int>(w), static_cast<int>(h), pf};
  if (!gt::Preprocess(view, crop, static_cast<int>(oh), static_cast<int>(ow), lut, out.data())) return 5;
  // The two-step path (CropResize + Quantize) must agree with the fused one.
  std::vector<uint8_t> rgb(out.size());
  std::vector<int8_t> out2(out.size());
  if (!gt::CropResize(view, crop, static_cast<int>(oh), static_cast<int>(ow), rgb.data())) return 6;
  gt::Quantize(rgb.data(), rgb.size() / 3, lut, out2.data());
  if (std::memcmp(out.data(), out2.data(), out.size()) != 0) return 7;
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
"""


@pytest.fixture(scope="module")
def preprocess_exe(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("fwhost")
    (work / "driver.cc").write_text(DRIVER)
    exe = work / "preprocess"
    cmd = ["g++", *CXXFLAGS, f"-I{FW_MAIN}", str(FW_MAIN / "image_preprocess.cc"), str(work / "driver.cc"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def to_rgb565be(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
    p = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
    return np.stack([(p >> 8).astype(np.uint8), (p & 0xFF).astype(np.uint8)], axis=-1)


def from_rgb565be(px: np.ndarray) -> np.ndarray:
    """The reference expansion (bit replication) the firmware must match."""
    p = (px[..., 0].astype(np.uint16) << 8) | px[..., 1]
    r5, g6, b5 = (p >> 11) & 0x1F, (p >> 5) & 0x3F, p & 0x1F
    return np.stack([(r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2)], axis=-1).astype(np.uint8)


def run_device(exe: Path, pixels: np.ndarray, fmt: int, crop: float, oh: int, ow: int, lut: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    job = struct.pack("<IIIdII", w, h, fmt, crop, oh, ow) + lut.astype(np.int8).tobytes() + pixels.tobytes()
    proc = subprocess.run([str(exe)], input=job, capture_output=True)
    assert proc.returncode == 0, f"driver exit {proc.returncode}"
    return np.frombuffer(proc.stdout, dtype=np.int8).reshape(oh, ow, 3)


SIZES = [(37, 53), (48, 96), (120, 70), (64, 64), (1, 1), (2, 3), (5, 200)]  # (h, w): odd, landscape, portrait, tiny


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("crop", [1.0, 0.875, 0.3])
def test_preprocess_matches_python_rgb888(preprocess_exe, h, w, crop):
    rng = np.random.default_rng(h * 1000 + w)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pre = Preprocessing(crop_fraction=crop, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    lut = quant_lut(pre, scale=0.018658447, zero_point=-14)
    for oh, ow in [(64, 64), (7, 5)]:
        expected = quantize(crop_resize(rgb, oh, ow, crop), lut)
        got = run_device(preprocess_exe, rgb, 0, crop, oh, ow, lut)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("h,w", [(240, 320), (31, 17)])
def test_preprocess_matches_python_rgb565(preprocess_exe, h, w):
    rng = np.random.default_rng(7)
    px = to_rgb565be(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    pre = Preprocessing()
    lut = quant_lut(pre, scale=1 / 128, zero_point=0)
    expected = quantize(crop_resize(from_rgb565be(px), 64, 64, 1.0), lut)
    np.testing.assert_array_equal(run_device(preprocess_exe, px, 1, 1.0, 64, 64, lut), expected)


def test_preprocess_rejects_empty_image(preprocess_exe):
    job = struct.pack("<IIIdII", 0, 0, 0, 1.0, 64, 64) + bytes(768)
    proc = subprocess.run([str(preprocess_exe)], input=job, capture_output=True)
    assert proc.returncode == 5
