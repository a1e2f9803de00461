"""Read an ESP-IDF binary partition table (the app partition the bootloader starts)."""

from __future__ import annotations

import struct

from gendertool.errors import BuildError

# --------------------------------------------------------------------------- partition table

_PT_MAGIC = b"\xaa\x50"
_PT_ENTRY = struct.Struct("<2sBBII16sI")


def parse_partition_table(data: bytes) -> list[dict]:
    """Entries of an ESP-IDF binary partition table (32-byte records, magic 0xAA50)."""
    entries = []
    for pos in range(0, len(data) - _PT_ENTRY.size + 1, _PT_ENTRY.size):
        chunk = data[pos : pos + _PT_ENTRY.size]
        if chunk[:2] != _PT_MAGIC:
            break  # 0xEBEB MD5 record or 0xFF padding ends the table
        _, ptype, subtype, offset, size, label, flags = _PT_ENTRY.unpack(chunk)
        entries.append(
            {
                "label": label.rstrip(b"\x00").decode("ascii", "replace"),
                "type": ptype,
                "subtype": subtype,
                "offset": offset,
                "size": size,
                "flags": flags,
            }
        )
    if not entries:
        raise BuildError("the partition table image holds no partition entries")
    return entries


def boot_app_partition(table: list[dict]) -> dict:
    """The partition the bootloader starts by default (parttool's --partition-boot-default):
    factory, else ota_0, else the first app partition."""
    apps = [p for p in table if p["type"] == 0]
    for subtype in (0x00, 0x10):
        for p in apps:
            if p["subtype"] == subtype:
                return p
    if apps:
        return apps[0]
    raise BuildError("the partition table has no app partition")
