"""The firmware's portable C++ compiled with the host g++ and checked against the Python reference.

- firmware/main/image_preprocess.cc must give byte-identical int8 input tensors to
  gendertool.model.preprocess for odd, landscape, portrait and tiny images, RGB888 and RGB565, with
  either crop mode ("center" square, "none" = whole frame stretched), either channel order
  ("rgb", "bgr"), and the same crop rectangle as crop_rect for any size and fraction.
No stand-ins for ESP-IDF or TFLM headers: only files that include neither are compiled here.
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gendertool.model.preprocess import Preprocessing, crop_rect, crop_resize, quant_lut, quantize
from gendertool.resources import resource_path

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="host g++ not installed")

FW_MAIN = resource_path("firmware") / "main"
CXXFLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1"]

# Reads one job from stdin, writes the int8 tensor to stdout:
#   u32 width, u32 height, u32 format (0 rgb888, 1 rgb565be), u32 crop mode (gt::CropMode),
#   u32 channel order (gt::ChannelOrder), f64 crop fraction, u32 out_h, u32 out_w, 768 lut bytes, pixel bytes.
# With no job on stdin it answers CropRect queries instead: lines "h w fraction-hex mode" ->
# "y0 x0 h w" (argv[1] == "rect").
DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "image_preprocess.h"

static bool ReadAll(void* dst, size_t n) { return std::fread(dst, 1, n, stdin) == n; }

static int Rects() {
  int h, w, mode;
  char frac[64];
  while (std::scanf("%d %d %63s %d", &h, &w, frac, &mode) == 4) {
    const gt::CropBox b = gt::CropRect(h, w, std::strtod(frac, nullptr), static_cast<gt::CropMode>(mode));
    std::printf("%d %d %d %d\n", b.y0, b.x0, b.h, b.w);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "rect") == 0) return Rects();
  uint32_t w, h, fmt, mode, order, oh, ow;
  double crop;
  int8_t lut[3][256];
  if (!ReadAll(&w, 4) || !ReadAll(&h, 4) || !ReadAll(&fmt, 4) || !ReadAll(&mode, 4) || !ReadAll(&order, 4) ||
      !ReadAll(&crop, 8) ||
      !ReadAll(&oh, 4) || !ReadAll(&ow, 4) || !ReadAll(lut, sizeof lut)) return 3;
  const gt::PixelFormat pf = fmt == 0 ? gt::PixelFormat::kRgb888 : gt::PixelFormat::kRgb565Be;
  const gt::CropMode cm = static_cast<gt::CropMode>(mode);
  const gt::ChannelOrder co = static_cast<gt::ChannelOrder>(order);
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * gt::BytesPerPixel(pf));
  if (!ReadAll(px.data(), px.size())) return 4;
  std::vector<int8_t> out(static_cast<size_t>(oh) * ow * 3);
  const gt::ImageView view{px.data(), static_cast<int>(w), static_cast<int>(h), pf};
  if (!gt::Preprocess(view, cm, crop, static_cast<int>(oh), static_cast<int>(ow), lut, co, out.data())) return 5;
  // The two-step path (CropResize + Quantize) must agree with the fused one.
  std::vector<uint8_t> rgb(out.size());
  std::vector<int8_t> out2(out.size());
  if (!gt::CropResize(view, cm, crop, static_cast<int>(oh), static_cast<int>(ow), rgb.data())) return 6;
  if (!gt::Quantize(rgb.data(), rgb.size() / 3, lut, co, out2.data())) return 8;
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


# gt::CropMode enumerators, in declaration order, for each Preprocessing.crop
CROP_MODE = {"center": 0, "none": 1}
# gt::ChannelOrder enumerators for each Preprocessing.channel_order
CHANNEL_ORDER = {"rgb": 0, "bgr": 1}


def job_header(w: int, h: int, fmt: int, mode: int, crop: float, oh: int, ow: int, order: int = 0) -> bytes:
    return struct.pack("<IIIIIdII", w, h, fmt, mode, order, crop, oh, ow)


def run_device(exe: Path, pixels: np.ndarray, fmt: int, crop: float, oh: int, ow: int, lut: np.ndarray,
               mode: str = "center", order: str = "rgb") -> np.ndarray:
    h, w = pixels.shape[:2]
    job = (job_header(w, h, fmt, CROP_MODE[mode], crop, oh, ow, CHANNEL_ORDER[order]) + lut.astype(np.int8).tobytes()
           + pixels.tobytes())
    proc = subprocess.run([str(exe)], input=job, capture_output=True)
    assert proc.returncode == 0, f"driver exit {proc.returncode}"
    return np.frombuffer(proc.stdout, dtype=np.int8).reshape(oh, ow, 3)


SIZES = [(37, 53), (48, 96), (120, 70), (64, 64), (1, 1), (2, 3), (5, 200)]  # (h, w): odd, landscape, portrait, tiny


@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize("mode", ["center", "none"])
@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("crop", [1.0, 0.875, 0.3])
def test_preprocess_matches_python_rgb888(preprocess_exe, mode, h, w, crop, order):
    rng = np.random.default_rng(h * 1000 + w)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pre = Preprocessing(crop_fraction=crop, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), crop=mode,
                        channel_order=order)
    lut = quant_lut(pre, scale=0.018658447, zero_point=-14)
    for oh, ow in [(64, 64), (7, 5)]:
        expected = quantize(crop_resize(rgb, oh, ow, crop, mode), lut, order)
        got = run_device(preprocess_exe, rgb, 0, crop, oh, ow, lut, mode, order)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize("mode", ["center", "none"])
@pytest.mark.parametrize("h,w", [(240, 320), (31, 17)])
def test_preprocess_matches_python_rgb565(preprocess_exe, mode, h, w, order):
    rng = np.random.default_rng(7)
    px = to_rgb565be(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    pre = Preprocessing(crop=mode, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), channel_order=order)
    lut = quant_lut(pre, scale=1 / 255, zero_point=-128)
    for crop in (1.0, 0.9):
        expected = quantize(crop_resize(from_rgb565be(px), 64, 64, crop, mode), lut, order)
        np.testing.assert_array_equal(run_device(preprocess_exe, px, 1, crop, 64, 64, lut, mode, order), expected)


@pytest.mark.parametrize("fmt", [0, 1])
def test_bgr_puts_blue_first(preprocess_exe, fmt):
    # pure red, green, blue thirds through one channel-symmetric table: BGR is RGB reversed
    rgb = np.zeros((30, 30, 3), dtype=np.uint8)
    rgb[:10, :, 0] = rgb[10:20, :, 1] = rgb[20:, :, 2] = 255
    px = rgb if fmt == 0 else to_rgb565be(rgb)
    lut = quant_lut(Preprocessing(), scale=1 / 128, zero_point=0)
    as_rgb = run_device(preprocess_exe, px, fmt, 1.0, 15, 15, lut, "center", "rgb")
    as_bgr = run_device(preprocess_exe, px, fmt, 1.0, 15, 15, lut, "center", "bgr")
    assert (as_rgb[0, :, 0] == 127).all() and (as_bgr[0, :, 2] == 127).all() and (as_bgr[0, :, 0] == -128).all()
    np.testing.assert_array_equal(as_bgr, as_rgb[..., ::-1])


def test_bgr_uses_each_tensor_channels_own_row(preprocess_exe):
    # rows differ per tensor channel: tensor channel 0 of a BGR model is blue through row 0
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    lut = np.zeros((3, 256), dtype=np.int8)
    lut[0, 30], lut[1, 20], lut[2, 10] = 1, 2, 3
    got = run_device(preprocess_exe, rgb, 0, 1.0, 2, 2, lut, "center", "bgr")
    assert got.reshape(-1, 3).tolist() == [[1, 2, 3]] * 4


def test_whole_frame_keeps_what_the_centre_square_drops(preprocess_exe):
    # 32 x 96 frame: left third red, middle green, right third blue. The centre square sees
    # only green; "none" squeezes all three thirds into the output's columns.
    rgb = np.zeros((32, 96, 3), dtype=np.uint8)
    rgb[:, :32, 0] = rgb[:, 32:64, 1] = rgb[:, 64:, 2] = 255
    lut = quant_lut(Preprocessing(), scale=1 / 128, zero_point=0)
    center = run_device(preprocess_exe, rgb, 0, 1.0, 16, 16, lut, "center")
    whole = run_device(preprocess_exe, rgb, 0, 1.0, 16, 16, lut, "none")
    assert (center[..., 1] == 127).all() and (center[..., [0, 2]] == -128).all()
    assert (whole[:, :4, 0] == 127).all() and (whole[:, 6:10, 1] == 127).all() and (whole[:, 12:, 2] == 127).all()
    np.testing.assert_array_equal(whole, quantize(crop_resize(rgb, 16, 16, 1.0, "none"), lut))


def _tricky_rects() -> list[tuple[int, int, float, str]]:
    """Sizes and fractions whose double product lands just below an integer (e.g. 100 * 0.29 =
    28.999999999999996), where exact arithmetic or rounding would differ from Python's int()."""
    from fractions import Fraction

    cases = []
    for frac in (0.29, 0.57, 0.58, 0.7, 0.35, 0.14, 0.1, 1 / 3, 0.875, 0.99):
        for size in range(1, 400):
            if int(size * frac) != int(size * Fraction(str(frac))):
                cases.append((size, size + 7, frac, "none"))
                cases.append((size + 3, size, frac, "center"))
                if len(cases) > 80:
                    return cases
    return cases


def test_crop_rect_matches_python(preprocess_exe):
    rng = np.random.default_rng(11)
    cases = _tricky_rects()
    assert len(cases) > 20  # the float corner cases really occur
    for _ in range(300):
        cases.append((int(rng.integers(1, 16385)), int(rng.integers(1, 16385)), float(rng.uniform(0.1, 1.0)),
                      str(rng.choice(["center", "none"]))))
    cases += [(1, 1, 0.1, "none"), (1, 9, 0.1, "none"), (9, 1, 0.5, "center"), (16384, 3, 1.0, "none"), (480, 640, 1.0, "none")]
    query = "".join(f"{h} {w} {frac.hex()} {CROP_MODE[mode]}\n" for h, w, frac, mode in cases)
    proc = subprocess.run([str(preprocess_exe), "rect"], input=query, capture_output=True, text=True, check=True)
    got = [tuple(int(v) for v in line.split()) for line in proc.stdout.splitlines()]
    assert got == [crop_rect(h, w, frac, mode) for h, w, frac, mode in cases]


@pytest.mark.parametrize(
    "w,h,mode,crop",
    [(0, 0, 0, 1.0), (0, 0, 1, 1.0),  # empty image
     (4, 4, 2, 1.0), (4, 4, 255, 1.0),  # no such crop mode
     (4, 4, 1, 0.0), (4, 4, 1, 1.5), (4, 4, 0, float("nan"))],  # fraction outside (0, 1]
)
def test_preprocess_rejects_bad_arguments(preprocess_exe, w, h, mode, crop):
    job = job_header(w, h, 0, mode, crop, 64, 64) + bytes(768) + bytes(w * h * 3)
    proc = subprocess.run([str(preprocess_exe)], input=job, capture_output=True)
    assert proc.returncode == 5


@pytest.mark.parametrize("order", [2, 255])
def test_preprocess_rejects_an_unknown_channel_order(preprocess_exe, order):
    job = job_header(4, 4, 0, 0, 1.0, 2, 2, order) + bytes(768) + bytes(4 * 4 * 3)
    proc = subprocess.run([str(preprocess_exe)], input=job, capture_output=True)
    assert proc.returncode == 5


# ---------------------------------------------------------------------------------------------
# generated sources (model data, settings, samples) compiled with the portable firmware parts

WEIRD_LABELS = ['say "hi"', "back\\slash", "new\nline\ttab", "Zoë ☃ é1 ??=", "\x01ctl"]

GEN_DRIVER = r"""
#include <cstdio>
#include <cstring>
#include <vector>
#include "image_preprocess.h"
#include "inference_stats.h"
#include "model_data.h"
#include "model_settings.h"
#include "sample_images.h"

static void hex(const void* p, size_t n) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) std::printf("%02x", b[i]);
  std::printf("\n");
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::FILE* f = std::fopen(argv[1], "wb");
  std::fwrite(g_model_data, 1, g_model_data_len, f);
  std::fclose(f);
  std::printf("align %d\n", static_cast<int>(reinterpret_cast<uintptr_t>(g_model_data) % 16));
  std::printf("shape");
  for (int i = 0; i < gt::kInputDims; ++i) std::printf(" %d", static_cast<int>(gt::kInputShape[i]));
  std::printf("\nquant %a %d %a %d %a %d %d\n", gt::kInputScale, gt::kInputZeroPoint, gt::kOutputScale,
              gt::kOutputZeroPoint, gt::kCropFraction, static_cast<int>(gt::kCropMode), static_cast<int>(gt::kChannelOrder));
  std::printf("meta %s %s %s %u %u\n", gt::kModelName, gt::kModelSha256, gt::kBoardName, gt::kModelBytes,
              gt::kDefaultArenaBytes);
  for (int c = 0; c < gt::kNumClasses; ++c) {
    std::printf("label ");
    hex(gt::kLabels[c], std::strlen(gt::kLabels[c]));
  }
  std::printf("lut ");
  hex(gt::kInputLut, sizeof gt::kInputLut);
  std::vector<int8_t> tensor(gt::kInputBytes);
  for (int i = 0; i < gt::kNumSampleImages; ++i) {
    const gt::SampleImage& s = gt::kSampleImages[i];
    const gt::ImageView view{s.rgb, s.width, s.height, gt::PixelFormat::kRgb888};
    if (!gt::Preprocess(view, gt::kCropMode, gt::kCropFraction, gt::kInputHeight, gt::kInputWidth, gt::kInputLut,
                        gt::kChannelOrder, tensor.data()))
      return 3;
    std::printf("sample %s %d %d %d ", s.name, s.width, s.height, s.expected_class);
    hex(tensor.data(), tensor.size());
    std::printf("rgb ");
    hex(s.rgb, static_cast<size_t>(s.width) * s.height * 3);
    std::printf("expected ");
    hex(s.expected, sizeof s.expected);
    float probs[gt::kNumClasses];
    gt::Probabilities(s.expected, gt::kNumClasses, static_cast<float>(gt::kOutputScale), gt::kOutputZeroPoint, probs);
    std::printf("stats %d %d", gt::ArgMax(s.expected, gt::kNumClasses), gt::MaxAbsDiff(s.expected, s.expected, gt::kNumClasses));
    for (int c = 0; c < gt::kNumClasses; ++c) std::printf(" %.6f", probs[c]);
    std::printf("\n");
  }
  return 0;
}
"""


def _compile_generated(project: Path, work: Path) -> Path:
    main = project / "main"
    (work / "gen_driver.cc").write_text(GEN_DRIVER)
    exe = work / "gen"
    srcs = [main / n for n in ("model_data.cc", "model_settings.cc", "sample_images.cc", "image_preprocess.cc")]
    for src in srcs:  # none of these may need an ESP-IDF or TFLM header
        text = src.read_text(encoding="utf-8")
        assert "tensorflow/" not in text and "esp_" not in text.split("namespace", 1)[0].replace("esp_nn", "")
    cmd = ["g++", *CXXFLAGS, f"-I{main}", *map(str, srcs), str(work / "gen_driver.cc"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


def _parse(stdout: str) -> dict:
    out: dict = {"label": [], "sample": []}
    lines = stdout.splitlines()
    i = 0
    while i < len(lines):
        key, _, rest = lines[i].partition(" ")
        if key == "label":
            out["label"].append(bytes.fromhex(rest).decode("utf-8"))
        elif key == "sample":
            name, w, h, cls, tensor = rest.split(" ")
            rgb = bytes.fromhex(lines[i + 1].split(" ", 1)[1])
            expected = np.frombuffer(bytes.fromhex(lines[i + 2].split(" ", 1)[1]), dtype=np.int8)
            stats = lines[i + 3].split(" ")[1:]
            out["sample"].append((name, int(w), int(h), int(cls), bytes.fromhex(tensor), rgb, expected, stats))
            i += 3
        else:
            out[key] = rest
        i += 1
    return out


def _render(model, board: str, out: Path) -> None:
    from gendertool.boards import get_board
    from gendertool.project.render import render_project

    render_project(model, get_board(board), out)


@pytest.mark.parametrize("which", ["default", "weird_labels", "crop_none", "bgr", "seed", "ties"])
def test_generated_sources_compile_and_match_the_reference(which, tmp_path):
    from gendertool.model.info import load_model, load_model_bytes
    from gendertool.model.preprocess import load_rgb, preprocess
    from gendertool.project.samples import default_sample_paths
    from gendertool.model.runtime import TflmRunner, softmax_probs

    from tflite_fab import seed_shaped_model, tiny_model

    if which == "default":
        model = load_model(None)
    elif which == "crop_none":  # whole frame stretched, on the non-square built-in samples
        pre = Preprocessing(crop_fraction=0.9, mean=(120.0, 110.0, 100.0), std=(60.0, 61.0, 62.0), crop="none")
        model = load_model_bytes(tiny_model(height=24, width=20, classes=2), name="whole", labels=["a", "b"], preprocessing=pre)
    elif which == "seed":  # the Seeed card's graph (LOGISTIC output) with the seeed-gender preprocessing
        pre = Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), channel_order="bgr")
        model = load_model_bytes(seed_shaped_model(), name="seed", labels=["female", "male"], preprocessing=pre)
    elif which == "bgr":  # the seeed-gender profile's order, with per-channel rows that differ
        pre = Preprocessing(mean=(0.0, 10.0, 20.0), std=(255.0, 250.0, 245.0), channel_order="bgr")
        model = load_model_bytes(tiny_model(height=24, width=20, classes=2), name="bgr", labels=["a", "b"], preprocessing=pre)
    elif which == "ties":  # input scale 1/128: v/2, (v-255)/2 and v-127.5 are exact ties
        pre = Preprocessing(mean=(0.0, 255.0, 127.5), std=(256.0, 256.0, 128.0))
        model = load_model_bytes(tiny_model(height=24, width=20, classes=2), name="ties", labels=["a", "b"], preprocessing=pre)
    else:
        model = load_model_bytes(tiny_model(height=24, width=20, classes=len(WEIRD_LABELS)), name="weird", labels=WEIRD_LABELS)
    _render(model, "xiao_esp32s3", tmp_path / "proj")
    exe = _compile_generated(tmp_path / "proj", tmp_path)
    proc = subprocess.run([str(exe), str(tmp_path / "model.bin")], capture_output=True, text=True, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    got = _parse(proc.stdout)

    assert (tmp_path / "model.bin").read_bytes() == model.data
    assert got["align"] == "0"
    assert [int(v) for v in got["shape"].split()] == list(model.input.shape)
    in_scale, in_zp, out_scale, out_zp, crop, mode, order = got["quant"].split()
    assert (float.fromhex(in_scale), int(in_zp), float.fromhex(out_scale), int(out_zp), float.fromhex(crop), int(mode),
            int(order)) == (
        model.input.scale, model.input.zero_point, model.output.scale, model.output.zero_point,
        model.preprocessing.crop_fraction, CROP_MODE[model.preprocessing.crop],
        CHANNEL_ORDER[model.preprocessing.channel_order])
    assert got["meta"].split() == [model.name, model.sha256, "xiao_esp32s3", str(model.size), str(model.arena_bytes)]
    assert got["label"] == list(model.labels)  # quotes, backslashes, newlines, UTF-8 survive
    from gendertool.model.preprocess import quant_lut

    lut = quant_lut(model.preprocessing, model.input.scale, model.input.zero_point)
    assert bytes.fromhex(got["lut"]) == lut.tobytes()
    # the firmware's table against the exact formula, not only against the Python that made it
    from test_preprocess import reference_lut

    pre = model.preprocessing
    ref = reference_lut(pre.mean, pre.std, model.input.scale, model.input.zero_point)
    fw = np.frombuffer(bytes.fromhex(got["lut"]), dtype=np.int8).reshape(3, 256)
    if which == "ties":
        np.testing.assert_array_equal(fw, ref)
        assert (fw[0][1], fw[1][254], fw[2][0], fw[2][128]) == (1, -1, -128, 1)  # 0.5, -0.5, -127.5, 0.5
    else:  # float scales: a value within float error of a tie may go either way
        v = np.arange(256)
        x = (v[None, :] - np.array(pre.mean)[:, None]) / np.array(pre.std)[:, None] / model.input.scale
        away = np.abs(np.abs(x) % 1 - 0.5) > 1e-6
        np.testing.assert_array_equal(fw[away], ref[away])

    paths = default_sample_paths()
    assert [s[0] for s in got["sample"]] == [p.stem for p in paths]
    runner = TflmRunner(model.data)
    _, height, width, _ = model.input.shape
    for (name, w, h, cls, tensor, rgb, expected, stats), path in zip(got["sample"], paths):
        img = load_rgb(path)
        assert (h, w) == img.shape[:2] and rgb == img.tobytes()
        q = preprocess(img, model.preprocessing, height, width, model.input.scale, model.input.zero_point)
        assert tensor == q.tobytes(), f"{name}: device preprocessing differs from the Python reference"
        if model.preprocessing.crop == "none":  # the whole frame reached the pixels, not the centre square
            square = dataclasses.replace(model.preprocessing, crop="center")
            assert tensor != preprocess(img, square, height, width, model.input.scale, model.input.zero_point).tobytes()
        if model.preprocessing.channel_order == "bgr":  # the reorder reached the tensor
            as_rgb = dataclasses.replace(model.preprocessing, channel_order="rgb")
            assert tensor != preprocess(img, as_rgb, height, width, model.input.scale, model.input.zero_point).tobytes()
        ref = np.asarray(runner.invoke(q), dtype=np.int8).reshape(-1)
        np.testing.assert_array_equal(expected, ref)
        assert cls == int(np.argmax(ref)) == int(stats[0])
        assert stats[1] == "0"
        np.testing.assert_allclose([float(v) for v in stats[2:]], softmax_probs(ref[None, :], model.output).reshape(-1), atol=2e-6)


STATS_DRIVER = r"""
#include <cstdio>
#include "inference_stats.h"

int main() {
  // scores as three int8 vectors, then bench times; prints results one per line
  const int8_t a[4] = {-128, 5, 5, 127};
  const int8_t b[4] = {-120, 5, 9, 100};
  const int8_t logits[3] = {-20, 30, 7};
  const int8_t soft[2] = {-128, 127};
  std::printf("argmax %d %d\n", gt::ArgMax(a, 4), gt::ArgMax(logits, 3));
  std::printf("diff %d %d\n", gt::MaxAbsDiff(a, b, 4), gt::MaxAbsDiff(a, a, 4));
  float p[3];
  gt::Probabilities(logits, 3, 0.125f, 3, p);
  std::printf("logits %.7f %.7f %.7f\n", p[0], p[1], p[2]);
  gt::Probabilities(soft, 2, 1.0f / 256, -128, p);
  std::printf("soft %.7f %.7f\n", p[0], p[1]);
  gt::BenchStats s;
  const uint32_t t[5] = {900, 700, 1200, 700, 1000};
  for (uint32_t v : t) s.Add(v);
  std::printf("bench %u %u %u %llu %.1f\n", s.n, s.min_us, s.max_us, static_cast<unsigned long long>(s.total_us), s.mean_us());
  return 0;
}
"""


def test_inference_stats_match_the_host_rules(tmp_path):
    from gendertool.model.info import TensorInfo
    from gendertool.model.runtime import softmax_probs

    (tmp_path / "stats.cc").write_text(STATS_DRIVER)
    exe = tmp_path / "stats"
    proc = subprocess.run(["g++", *CXXFLAGS, f"-I{FW_MAIN}", str(tmp_path / "stats.cc"), "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split(" ", 1) for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines())
    a = np.array([-128, 5, 5, 127], dtype=np.int8)
    logits = np.array([-20, 30, 7], dtype=np.int8)
    assert out["argmax"].split() == [str(int(np.argmax(a))), str(int(np.argmax(logits)))]
    assert out["diff"] == "27 0"
    want = softmax_probs(logits[None, :], TensorInfo("o", (1, 3), "int8", 0.125, 3)).reshape(-1)
    np.testing.assert_allclose([float(v) for v in out["logits"].split()], want, atol=1e-6)
    want = softmax_probs(np.array([[-128, 127]], dtype=np.int8), TensorInfo("o", (1, 2), "int8", 1 / 256, -128)).reshape(-1)
    np.testing.assert_allclose([float(v) for v in out["soft"].split()], want, atol=1e-7)
    assert out["bench"] == "5 700 1200 4500 900.0"
