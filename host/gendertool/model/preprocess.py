"""The reference image preprocessing, shared bit for bit with the firmware.

Pipeline (RGB888 in, the model's int8 input tensor out):

1. **crop** (:func:`crop_rect`): ``crop="center"`` takes a centred square of side
   ``floor(min(h, w) * crop_fraction)``; ``crop="none"`` takes the centred
   ``floor(h * crop_fraction) x floor(w * crop_fraction)`` rectangle (the whole frame at 1.0),
   so the resize stretches it to the model's input and the aspect ratio is not kept.
2. **resize**: bilinear with half-pixel centres in integer fixed point (8 fractional
   bits, taps computed per axis), so that ``firmware/main/image_preprocess.cc`` computes the
   same bytes.
3. **channel order + normalise + quantise**: the resized R, G, B bytes go to the tensor in
   the model's ``channel_order`` (``"rgb"``, or ``"bgr"`` for OpenCV/mmcv-trained models), then
   per tensor channel ``q = clamp(round((v - mean) / std / scale) + zp)``, precomputed for every
   byte value into a 3 x 256 int8 table. The firmware receives the table generated from the
   model's input tensor, so no float arithmetic runs on the device.

Training uses :func:`crop_resize` and :func:`normalize` so the model learns on exactly the
pixels the device will see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gendertool.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
# "center": centred square; "none": the whole frame (scaled by crop_fraction), stretched
CROP_MODES = ("center", "none")


# the order the model's input tensor holds the colour channels in
CHANNEL_ORDERS = ("rgb", "bgr")


def check_channel_order(order: str) -> None:
    if order not in CHANNEL_ORDERS:  # "rbg" or "BGR" must not fall back to rgb
        raise ValueError(f"channel_order must be one of {', '.join(map(repr, CHANNEL_ORDERS))}, not {order!r}")


def check_crop_mode(crop: str) -> None:
    if crop not in CROP_MODES:  # a typo must not silently fall back to the centre square
        raise ValueError(f"crop must be one of {', '.join(map(repr, CROP_MODES))}, not {crop!r}")


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its pixels: part of each model's profile, rendered into the firmware."""

    crop_fraction: float = 1.0
    # float = (pixel - mean) / std, pixel in 0..255, per tensor channel (in channel_order)
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    crop: str = field(default="center")  # one of CROP_MODES
    resize: str = field(default="bilinear")
    channel_order: str = field(default="rgb")  # one of CHANNEL_ORDERS

    def __post_init__(self) -> None:
        check_crop_mode(self.crop)
        check_channel_order(self.channel_order)
        if self.resize != "bilinear":
            raise ValueError(f"only 'bilinear' resize is implemented, not {self.resize!r}")
        if not 0.1 <= self.crop_fraction <= 1.0:
            raise ValueError("crop_fraction must be within [0.1, 1.0]")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(
            crop_fraction=float(data.get("crop_fraction", 1.0)),
            mean=tuple(float(v) for v in data.get("mean", (127.5,) * 3)),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data.get("std", (127.5,) * 3)),  # type: ignore[arg-type]
            crop=data.get("crop", "center"),
            resize=data.get("resize", "bilinear"),
            channel_order=data.get("channel_order", "rgb"),
        )


# Largest image (width x height, as its header says) gendertool decodes: 10000 x 10000.
MAX_IMAGE_PIXELS = 100_000_000
# Big images are reduced while decoding as long as both sides stay at least this large (above
# the 640-pixel upload side, far above any model input), so memory stays bounded: JPEGs at
# 1/2, 1/4 or 1/8 scale in libjpeg (Pillow's draft mode: 8000 x 8000 decodes at 2000 x 2000),
# other formats by an integer box reduction right after decoding, before any copy.
DECODE_MIN_SIDE = 1024


def _too_large(path, pixels: str) -> ImageError:
    return ImageError(f"{path}: too large ({pixels}, over the {MAX_IMAGE_PIXELS:,}-pixel limit); scale it down first")


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an ``HxWx3`` uint8 RGB array (EXIF orientation applied).

    Images over MAX_IMAGE_PIXELS are refused as too large; big ones are decoded at reduced
    size (DECODE_MIN_SIDE)."""
    import re
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP on; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise _too_large(path, f"{w}x{h} = {w * h:,} pixels")
                if im.format == "JPEG":
                    im.draft("RGB", (DECODE_MIN_SIDE, DECODE_MIN_SIDE))
                else:
                    factor = min(w, h) // DECODE_MIN_SIDE
                    if factor >= 2:
                        if im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):  # reduce() cannot average palettes
                            im = im.convert("RGBA" if "transparency" in im.info or im.mode.endswith("A") else "RGB")
                        im = im.reduce(factor)
                im = ImageOps.exif_transpose(im)
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:  # raised by open() itself, from 179 MP on
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, f"{int(m.group(1)):,} pixels" if m else str(exc)) from exc
    # what Pillow's decoders raise for damaged or hostile files; anything else is a bug
    except (OSError, ValueError, SyntaxError, EOFError, NotImplementedError, OverflowError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def crop_box(height: int, width: int, crop_fraction: float = 1.0) -> tuple[int, int, int]:
    """Return ``(y0, x0, side)`` of the centred square crop."""
    side = max(1, int(min(height, width) * crop_fraction))
    return (height - side) // 2, (width - side) // 2, side


def _axis_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and 8-bit weights of ``hi`` for one axis."""
    o = np.arange(out_size, dtype=np.int64)
    # source coordinate (o + 0.5) * in / out - 0.5, in units of 1 / (2 * out)
    num = np.maximum((2 * o + 1) * in_size - out_size, 0)
    s8 = (num * 256) // (2 * out_size)
    lo = s8 >> 8
    frac = s8 & 255
    at_edge = lo >= in_size - 1
    lo = np.where(at_edge, in_size - 1, lo)
    hi = np.where(at_edge, in_size - 1, lo + 1)
    frac = np.where(at_edge, 0, frac)
    return lo, hi, frac


def crop_rect(height: int, width: int, crop_fraction: float = 1.0, crop: str = "center") -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` of the source region: the centred square (``"center"``) or the
    whole frame, scaled by ``crop_fraction`` on both axes (``"none"``: stretched to the output)."""
    check_crop_mode(crop)
    if crop == "none":
        h, w = max(1, int(height * crop_fraction)), max(1, int(width * crop_fraction))
        return (height - h) // 2, (width - w) // 2, h, w
    y0, x0, side = crop_box(height, width, crop_fraction)
    return y0, x0, side, side


def crop_resize(rgb: np.ndarray, out_h: int, out_w: int, crop_fraction: float = 1.0,
                crop: str = "center") -> np.ndarray:
    """Crop (:func:`crop_rect`) and resize an ``HxWx3`` uint8 image to ``out_h x out_w x 3`` uint8."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 RGB image, got shape {rgb.shape} {rgb.dtype}")
    y0, x0, h, w = crop_rect(rgb.shape[0], rgb.shape[1], crop_fraction, crop)
    ylo, yhi, fy = _axis_taps(out_h, h)
    xlo, xhi, fx = _axis_taps(out_w, w)
    src = rgb[y0 : y0 + h, x0 : x0 + w]
    fx_ = fx[None, :, None]
    fy_ = fy[:, None, None]
    # gather the taps first (uint8) and widen only those: memory follows the output, not the source
    rlo, rhi = src[ylo], src[yhi]

    def taps(rows, cols):
        return rows[:, cols].astype(np.int64)

    top = taps(rlo, xlo) * (256 - fx_) + taps(rlo, xhi) * fx_
    bottom = taps(rhi, xlo) * (256 - fx_) + taps(rhi, xhi) * fx_
    out = (top * (256 - fy_) + bottom * fy_ + 32768) >> 16
    return out.astype(np.uint8)


def to_channel_order(rgb: np.ndarray, order: str = "rgb") -> np.ndarray:
    """An ``HxWx3`` RGB image with its channels in the tensor's ``order`` (a view, no copy)."""
    check_channel_order(order)
    return rgb[..., ::-1] if order == "bgr" else rgb


def normalize(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 RGB -> float32 model input in ``pre.channel_order`` (before quantisation)."""
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return (to_channel_order(rgb, pre.channel_order).astype(np.float32) - mean) / std


def quant_lut(pre: Preprocessing, scale: float, zero_point: int) -> np.ndarray:
    """The 3 x 256 int8 table mapping each tensor channel's byte value to the quantised input."""
    if not scale > 0:
        raise ValueError("input scale must be positive")
    v = np.arange(256, dtype=np.float64)
    rows = []
    for c in range(3):
        x = (v - pre.mean[c]) / pre.std[c] / scale
        q = np.sign(x) * np.floor(np.abs(x) + 0.5) + zero_point  # round half away from zero
        rows.append(np.clip(q, -128, 127))
    return np.stack(rows).astype(np.int8)


def quantize(rgb: np.ndarray, lut: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """Apply a :func:`quant_lut` table to an ``HxWx3`` uint8 RGB image -> ``HxWx3`` int8 in
    ``channel_order``."""
    src = to_channel_order(rgb, channel_order)
    return np.stack([lut[c][src[..., c]] for c in range(3)], axis=-1)


def preprocess(rgb: np.ndarray, pre: Preprocessing, height: int, width: int, scale: float, zero_point: int) -> np.ndarray:
    """The whole pipeline: ``HxWx3`` uint8 -> ``1 x height x width x 3`` int8 input tensor."""
    resized = crop_resize(rgb, height, width, pre.crop_fraction, pre.crop)
    return quantize(resized, quant_lut(pre, scale, zero_point), pre.channel_order)[None, ...]


def list_images(folder: str | Path) -> list[Path]:
    """Image-looking files below ``folder``, sorted (by suffix; decoding decides the rest)."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def rgb_to_rgb565be(rgb: np.ndarray) -> np.ndarray:
    """``HxWx3`` uint8 RGB -> ``HxWx2`` uint8, RGB565 big-endian (RRRRRGGG GGGBBBBB): an
    OV2640 frame in esp32-camera's PIXFORMAT_RGB565 layout (the low bits are dropped)."""
    px = rgb.astype(np.uint16)
    v = ((px[..., 0] >> 3) << 11) | ((px[..., 1] >> 2) << 5) | (px[..., 2] >> 3)
    return np.stack([(v >> 8).astype(np.uint8), (v & 0xFF).astype(np.uint8)], axis=-1)


def rgb565be_to_rgb(px: np.ndarray) -> np.ndarray:
    """``HxWx2`` RGB565 big-endian -> ``HxWx3`` uint8 by bit replication, as the firmware's
    ``Rgb565BeToRgb888`` expands each pixel before its crop and resize."""
    v = (px[..., 0].astype(np.uint16) << 8) | px[..., 1]
    r5, g6, b5 = (v >> 11) & 0x1F, (v >> 5) & 0x3F, v & 0x1F
    return np.stack([(r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2)], axis=-1).astype(np.uint8)


def inverse_lut(lut: np.ndarray) -> np.ndarray:
    """For a :func:`quant_lut` table, a 3 x 256 uint8 table from each int8 value (indexed
    ``q + 128``) back to a byte: the middle byte of those that quantise to ``q``, so the picture
    quantises back to exactly the same tensor; a value no byte gives (outside the table's
    range) gets the byte whose value is nearest."""
    inv = np.zeros((3, 256), dtype=np.uint8)
    q_all = np.arange(-128, 128)
    for c in range(3):
        row = lut[c].astype(np.int16)
        for q in q_all:
            hits = np.flatnonzero(row == q)
            inv[c, q + 128] = hits[len(hits) // 2] if len(hits) else int(np.argmin(np.abs(row - q)))
    return inv


def tensor_to_rgb(tensor: np.ndarray, inv: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """The picture an int8 ``[1,]HxWx3`` input tensor shows: each tensor channel through its
    :func:`inverse_lut` row (undoing quantisation and normalisation), then back to RGB order."""
    t = np.asarray(tensor, dtype=np.int8)
    if t.ndim == 4:
        t = t[0]
    idx = t.astype(np.int16) + 128
    out = np.stack([inv[c][idx[..., c]] for c in range(3)], axis=-1)
    return np.ascontiguousarray(to_channel_order(out, channel_order))
