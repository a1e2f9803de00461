"""Is each file a flash plan names what its name says? Checked before any board is touched.

The bootloader, the app and a merged image (which starts with the bootloader) are read with
esptool's own image reader (``esptool.bin_image.LoadFirmwareImage``) and checked as esptool's
``image-info`` does: magic byte, the chip id of the extended header (an ESP32-S3 image), the
segments' checksum and, when the header says one is appended, the SHA-256 digest. The
partition table is read as ESP-IDF's gen_esp32part.py writes it: 32-byte entries with the
0xAA50 magic, then (unless disabled at build time) an 0xEBEB record holding the MD5 of the
entries. Images of other names (otadata, data partitions) carry no format to check.

esptool itself only warns ("doesn't look like an image file") and writes anyway; gendertool
refuses unless the user passes --force.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from gendertool.errors import GendertoolError
from gendertool.project.manifest import REQUIRED_CHIP, FlashImage
from gendertool.project.partitions import parse_partition_table

# images written by esptool's image format (the merged one starts with the bootloader)
ESP_IMAGE_ROLES = ("bootloader", "app", "merged")
PARTITION_TABLE_ROLE = "partition-table"
_PT_MD5_MAGIC = b"\xeb\xeb"
_PT_ENTRY_BYTES = 32


def _esp_image_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole, intact ESP32-S3 image (None: it is one)."""
    import esptool.targets
    from esptool.bin_image import LoadFirmwareImage
    from esptool.util import FatalError

    if not data:
        return "it is empty"
    magic = 0xE9  # ESPLoader.ESP_IMAGE_MAGIC, stated here for the message only
    if data[0] != magic:
        return f"no image header: first byte {data[0]:#04x}, not the image magic {magic:#04x}"
    try:
        image = LoadFirmwareImage("esp32s3", data)
    except (FatalError, struct.error, RuntimeError, ValueError, EOFError, TypeError) as exc:
        text = _exception_text(exc)
        return f"esptool cannot read it as an image ({text})"
    want = esptool.targets.ESP32S3ROM.IMAGE_CHIP_ID
    if image.chip_id != want:
        other = next(
            (c.CHIP_NAME for c in esptool.targets.CHIP_DEFS.values() if getattr(c, "IMAGE_CHIP_ID", None) == image.chip_id),
            f"unknown chip id {image.chip_id}",
        )
        return f"it is an image for {other}, not the {REQUIRED_CHIP} (chip id {image.chip_id}, want {want})"
    calc = image.calculate_checksum()
    if image.checksum != calc:
        return f"its checksum is wrong ({image.checksum:#04x} stored, {calc:#04x} computed): the file is damaged"
    if image.append_digest and getattr(image, "stored_digest", None) != getattr(image, "calc_digest", None):
        return "its SHA-256 digest does not match its contents: the file is damaged"
    return None


def _exception_text(exc: BaseException) -> str:
    # esptool raises some errors logging-style: RuntimeError("... (0x%02x) ...", value)
    args = exc.args
    if len(args) > 1 and isinstance(args[0], str):
        try:
            return (args[0] % tuple(args[1:])).strip()
        except (TypeError, ValueError):
            return str(args[0]).strip()
    return str(exc).strip() or type(exc).__name__


def _partition_table_problem(data: bytes) -> str | None:
    try:
        entries = parse_partition_table(data)
    except GendertoolError:
        return f"no partition entries (first bytes {data[:2].hex() or 'none'}, not the table magic aa50)"
    end = len(entries) * _PT_ENTRY_BYTES
    record = data[end : end + _PT_ENTRY_BYTES]
    if record[:2] == _PT_MD5_MAGIC:
        if record[16:32] != hashlib.md5(data[:end]).digest():
            return "the MD5 of its entries does not match the table's MD5 record: the file is damaged"
    return None


def image_problem(image: FlashImage) -> str | None:
    """What is wrong with one image of a flash plan, in words (None: nothing found)."""
    try:
        data = image.path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if image.name in ESP_IMAGE_ROLES:
        return _esp_image_problem(data)
    if image.name == PARTITION_TABLE_ROLE:
        return _partition_table_problem(data)
    return None


def image_problems(images: Iterable[FlashImage]) -> list[str]:
    """'bootloader (build/bootloader.bin at 0x0): it is empty' for each image that is not what it says."""
    out = []
    for image in images:
        problem = image_problem(image)
        if problem:
            what = "an ESP32-S3 image" if image.name in ESP_IMAGE_ROLES else "an ESP-IDF partition table"
            out.append(f"{image.name} ({image.path} at {image.offset:#x}) is not {what}: {problem}")
    return out
