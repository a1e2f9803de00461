"""Images that are too large, or decoded at reduced size (issue 11, item 4); folder layout
problems are in test_validate_host.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gendertool.errors import ImageError
from gendertool.model.preprocess import DECODE_MIN_SIDE, MAX_IMAGE_PIXELS, load_rgb
from tflite_fab import tiny_model


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` with no pixel data (the size check comes before decoding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def jpeg(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (200, 120, 40)).save(path, quality=90)
    return path


def test_limit_is_10000_by_10000():
    assert MAX_IMAGE_PIXELS == 10000 * 10000


def test_image_over_our_limit_is_named_too_large(tmp_path):
    # 108 MP: under Pillow's own error threshold (179 MP), so gendertool's check names it
    path = png_header(tmp_path / "wide.png", 12000, 9000)
    with pytest.raises(ImageError) as err:
        load_rgb(path)
    assert str(err.value) == (
        f"{path}: too large (12000x9000 = 108,000,000 pixels, over the 100,000,000-pixel limit); scale it down first"
    )


def test_14000_square_is_too_large_not_unreadable(tmp_path):
    # Pillow's decompression-bomb error comes from open() itself: reported as too large
    path = png_header(tmp_path / "huge.png", 14000, 14000)
    with pytest.raises(ImageError) as err:
        load_rgb(path)
    assert str(err.value) == f"{path}: too large (196,000,000 pixels, over the 100,000,000-pixel limit); scale it down first"
    assert "not a readable image" not in str(err.value)


def test_image_at_the_limit_is_not_refused_for_size(tmp_path):
    path = png_header(tmp_path / "edge.png", 10000, 10000)  # header only: fails later, as unreadable
    with pytest.raises(ImageError, match="not a readable image"):
        load_rgb(path)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    rgb = load_rgb(jpeg(tmp_path / "big.jpg", 4100, 4100))
    # libjpeg's DCT scaling: 1/4 keeps both sides >= DECODE_MIN_SIDE
    assert rgb.shape == (1025, 1025, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - (200, 120, 40)).max() <= 3
    rect = load_rgb(jpeg(tmp_path / "rect.jpg", 3000, 2200))  # 1/2 would make 1100 wide, 1100 x 1500
    assert rect.shape == (1100, 1500, 3)


@pytest.mark.parametrize("mode", ["RGB", "P", "RGBA", "L"])
def test_large_png_is_box_reduced_right_after_decoding(tmp_path, mode):
    path = tmp_path / f"big_{mode}.png"
    Image.new("RGB", (2600, 2100), (0, 204, 102)).convert(mode).save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (1050, 1300, 3)  # factor min(2600, 2100) // 1024 = 2
    want = np.asarray(Image.new("RGB", (1, 1), (0, 204, 102)).convert(mode).convert("RGB"))[0, 0]
    assert (rgb == want).all()


def test_jpeg_below_twice_the_draft_side_is_decoded_in_full(tmp_path):
    rgb = load_rgb(jpeg(tmp_path / "photo.jpg", 2 * DECODE_MIN_SIDE - 1, 1200))
    assert rgb.shape == (1200, 2 * DECODE_MIN_SIDE - 1, 3)


def test_validate_names_a_too_large_image_and_keeps_going(cli, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model(height=16, width=16))
    root = tmp_path / "imgs"
    for label in ("female", "male"):
        (root / label).mkdir(parents=True)
        jpeg(root / label / "ok.jpg", 40, 40)
    png_header(root / "male" / "huge.png", 14000, 14000)
    r = cli("validate", "--model", model, "--labels", "female,male", "--images", root, "--json")
    assert r.exit_code == 0, r.stderr
    err = " ".join(r.stderr.split())
    assert "warning: skipped male/huge.png: too large (196,000,000 pixels, over the 100,000,000-pixel limit)" in err
    assert "not readable images" not in err
