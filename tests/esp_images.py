"""ESP32-S3 images for the flash tests, made with esptool's own image writer (bin_image): a
bootloader (RAM segments only), an app (flash-mapped DROM/IROM segments plus RAM ones) and an
ESP-IDF binary partition table (32-byte entries, 0xAA50 magic, the 0xEBEB MD5 record), so
`flash`'s image check sees what a real build leaves. Segment data compresses about as well as
firmware does, so esptool sends it deflated as it would a real image."""

from __future__ import annotations

import hashlib
import random
import struct

from esptool.bin_image import ELFSection, ESP32S3FirmwareImage
from esptool.cmds import FLASH_MODES
from esptool.targets import ESP32S3ROM

# What the test manifests say: DIO at 80 MHz on 8 MB, so esptool leaves the bootloader's
# header as it is when it writes it (the flash holds the file's bytes exactly).
FLASH_MODE, FLASH_FREQ, FLASH_SIZE = "dio", "80m", "8MB"


def firmware_like(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(2, 24))) for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def _image(segments: list[tuple[int, bytes]], *, flash_size: str = FLASH_SIZE, entry: int = 0x403C8000) -> bytes:
    image = ESP32S3FirmwareImage()
    image.flash_mode = FLASH_MODES[FLASH_MODE]
    image.flash_size_freq = ESP32S3ROM.FLASH_SIZES[flash_size] + ESP32S3ROM.FLASH_FREQUENCY[FLASH_FREQ]
    image.entrypoint = entry
    image.segments = [ELFSection(f".seg{i}".encode(), addr, data, flags=0) for i, (addr, data) in enumerate(segments)]
    return image.save(None)


def bootloader(size: int = 21_000, seed: int = 0, **kw) -> bytes:
    """A second-stage bootloader image of about ``size`` bytes (DRAM + IRAM segments)."""
    half = (size - 64) // 2 & ~3
    return _image([(0x3FCE3000, firmware_like(half, seed)), (0x403C9000, firmware_like(half, seed + 100))], **kw)


def app(size: int = 700_000, seed: int = 2, **kw) -> bytes:
    """An app image of about ``size`` bytes (DROM and IROM mapped from flash, DRAM, IRAM)."""
    quarter = (size - 256) // 4 & ~3
    return _image(
        [
            (0x3C000020, firmware_like(quarter, seed)),
            (0x42000020, firmware_like(2 * quarter, seed + 1)),
            (0x3FC90000, firmware_like(quarter // 2, seed + 2)),
            (0x40380000, firmware_like(quarter // 2, seed + 3)),
        ],
        entry=0x40380000,
        **kw,
    )


def partition_table(entries: list[tuple[str, int, int, int, int]] | None = None, size: int = 3_072) -> bytes:
    """ESP-IDF binary partition table: (label, type, subtype, offset, size) entries, MD5 record, 0xFF fill."""
    entries = entries or [("nvs", 1, 2, 0x10000, 0x6000), ("factory", 0, 0, 0x20000, 0x300000)]
    table = b"".join(
        struct.pack("<2sBBII16sI", b"\xaa\x50", t, st, off, sz, label.encode(), 0) for label, t, st, off, sz in entries
    )
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    return table + b"\xff" * (size - len(table))
