"""`gendertool flash` through esptool's real code and protocol, against an emulated ESP32-S3
ROM serial loader over socket:// (tests/rom_loader.py): connect + chip detection, the flasher
stub upload, baud change, compressed writes at the manifest's offsets, MD5 verification,
reset; and the faults: the link dropped mid-write, a block corrupted in flash, no loader."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

pytest.importorskip("esp32_mock_bootloader")
from esp32_mock_bootloader import protocol as mock_protocol  # noqa: E402

from gendertool.project import manifest as build_manifest
import esp_images  # noqa: E402
from rom_loader import FLASH_BYTES, FLASH_ID_8MB, Faults, RomLoader  # noqa: E402


# ESP32-S3 images made with esptool's own image writer (flash checks them before writing)
CONTENT = {"bootloader": esp_images.bootloader(21_000), "partition-table": esp_images.partition_table(), "app": esp_images.app(700_000)}
IMAGES = {  # name: (offset, size); offsets deliberately not the defaults
    "bootloader": (0x0, len(CONTENT["bootloader"])),
    "partition-table": (0x9000, len(CONTENT["partition-table"])),
    "app": (0x20000, len(CONTENT["app"])),
}


@pytest.fixture
def rom(monkeypatch):
    monkeypatch.setattr(mock_protocol, "MOCK_FLASH_ID", FLASH_ID_8MB)  # the XIAO's 8 MB flash
    loaders: list[RomLoader] = []

    def make(**faults) -> RomLoader:
        loaders.append(RomLoader(faults=Faults(**faults)))
        return loaders[-1]

    yield make
    for loader in loaders:
        loader.close()


@pytest.fixture
def build(tmp_path) -> Path:
    d = tmp_path / "build"
    d.mkdir()
    entries = []
    for i, (name, (offset, size)) in enumerate(IMAGES.items()):
        (d / f"{name}.bin").write_bytes(CONTENT[name])
        entries.append({"name": name, "offset": offset, "path": f"{name}.bin"})
    merged = bytearray(b"\xff" * (IMAGES["app"][0] + IMAGES["app"][1]))
    for name, (offset, size) in IMAGES.items():
        merged[offset : offset + size] = (d / f"{name}.bin").read_bytes()
    (d / "merged.bin").write_bytes(bytes(merged))
    manifest = {
        "schema": 1, "board": "xiao_esp32s3", "chip": "esp32s3", "backend": "pio",
        "model": {"name": "m", "sha256": "ab" * 32},
        "flash": {"mode": "dio", "freq": "80m", "size": "8MB"},
        "images": entries, "merged": {"offset": 0, "path": "merged.bin"},
    }  # fmt: skip
    (d / build_manifest.MANIFEST_NAME).write_text(json.dumps(manifest))
    return d


def _expected_flash(build: Path) -> bytes:
    flash = bytearray(b"\xff" * FLASH_BYTES)
    for name, (offset, size) in IMAGES.items():
        flash[offset : offset + size] = (build / f"{name}.bin").read_bytes()
    return bytes(flash)


def _blocks_of(build: Path, name: str) -> int:
    """FLASH_DEFL_DATA blocks esptool's stub path sends for one image (16 KiB of deflated data each)."""
    import zlib

    return -(-len(zlib.compress((build / f"{name}.bin").read_bytes(), 9)) // 0x4000)


def test_flash_writes_every_image_at_its_manifest_offset(cli, rom, build):
    loader = rom()
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 0, r.stderr
    assert bytes(loader.flash.data) == _expected_flash(build)  # every byte, gaps still erased
    assert "ESP32-S3" in r.stdout and "wrote and verified" in r.stdout
    # esptool's real path: sync, chip id, stub upload (MEM_* then OHAI), baud change, deflated writes
    assert loader.saw("SYNC", "GET_SECURITY_INFO", "READ_REG", "MEM_BEGIN", "MEM_DATA", "MEM_END",
                      "CHANGE_BAUDRATE", "SPI_SET_PARAMS", "FLASH_DEFL_BEGIN", "FLASH_DEFL_DATA", "FLASH_DEFL_END")  # fmt: skip
    assert not loader.saw("FLASH_DATA")  # nothing went uncompressed
    # MD5: once per image after writing it (write_flash), once more per image (verify_flash)
    assert loader.commands.count(mock_protocol.CMD_SPI_FLASH_MD5) == 2 * len(IMAGES)


def test_flash_merged_image_at_zero(cli, rom, build):
    loader = rom()
    r = cli("flash", "--port", loader.url, "--build", build, "--merged")
    assert r.exit_code == 0, r.stderr
    assert bytes(loader.flash.data) == _expected_flash(build)


def test_link_dropped_mid_write_names_the_board_state(cli, rom, build):
    before_app = _blocks_of(build, "bootloader") + _blocks_of(build, "partition-table")
    loader = rom(drop_after_blocks=before_app + 3)  # 3 blocks of the app, then the cable goes
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2 and loader.dropped
    err = " ".join(r.stderr.split())
    assert err.count("error:") == 1 and "Traceback" not in r.stderr
    app_off, app_size = IMAGES["app"]
    m = re.search(
        rf"the link to {re.escape(loader.url)} dropped while writing \(.*socket disconnected\); on the board: "
        r"bootloader \(0x0\), partition-table \(0x9000\) written and verified; "
        rf"app \(0x20000, {app_size:,} bytes\) written up to (0x[0-9a-f]+) \(([\d,]+) bytes, \d+%\)\. "
        r"It holds an incomplete firmware and will not boot it: reconnect it .* and run `gendertool flash` again",
        err,
    )
    assert m, err
    upto, got = int(m.group(1), 16), int(m.group(2).replace(",", ""))
    assert upto == app_off + got and 0 < got < app_size
    # what the message says is what the flash holds
    app = (build / "app.bin").read_bytes()
    assert loader.read(app_off, got) == app[:got]
    for name in ("bootloader", "partition-table"):
        offset, size = IMAGES[name]
        assert loader.read(offset, size) == (build / f"{name}.bin").read_bytes()
    # and what it says to do next works: flash again, the board ends up complete
    loader.faults = Faults()
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 0, r.stderr
    assert bytes(loader.flash.data) == _expected_flash(build)


def test_link_dropped_at_the_first_block(cli, rom, build):
    loader = rom(drop_after_blocks=0)
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert ("on the board: bootloader (0x0) not written (its sectors may be erased); "
            "partition-table (0x9000), app (0x20000) not written.") in err  # fmt: skip


def test_md5_verification_catches_a_block_corrupted_in_flash(cli, rom, build):
    first_app_block = _blocks_of(build, "bootloader") + _blocks_of(build, "partition-table") + 1
    loader = rom(corrupt_block=first_app_block)
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert (f"verification failed on {loader.url}: the flash does not hold what was written "
            "(MD5 of file does not match data in flash!); on the board: bootloader (0x0), "
            "partition-table (0x9000) written and verified; app (0x20000) written but not verified") in err  # fmt: skip
    assert "Traceback" not in r.stderr


def test_socket_without_a_rom_loader(cli, build, sim_server):
    server = sim_server()  # a gendertool virtual device: speaks our protocol, not the ROM's
    r = cli("flash", "--port", server.url, "--build", build)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert f"no ESP ROM loader answered on {server.url}" in err and "has no flash" in err


def test_socket_where_nothing_listens_is_not_called_busy(cli, build):
    from conftest import closed_port_url

    url = closed_port_url()
    r = cli("flash", "--port", url, "--build", build)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert f"nothing answers at {url} (connection refused)" in err and "busy" not in err


# --------------------------------------------------------------------------- what is not an image (issue 20, item 5)

FLASH_ID_4MB = 0x00164020  # JEDEC capacity byte 0x16 = 2^22 = 4 MB


def _wrote_nothing(loader) -> bool:
    return not loader.saw("FLASH_DEFL_BEGIN") and not loader.saw("FLASH_BEGIN") and bytes(loader.flash.data) == b"\xff" * FLASH_BYTES


def test_random_bootloader_is_refused_before_the_port_is_opened(cli, rom, build):
    (build / "bootloader.bin").write_bytes(random.Random(5).randbytes(21_000).replace(b"\xe9", b"\x00", 1))
    loader = rom()
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert err.count("error:") == 1 and "Traceback" not in r.stderr
    assert (f"refusing to flash: bootloader ({build / 'bootloader.bin'} at 0x0) is not an ESP32-S3 image: "
            "no image header: first byte") in err  # fmt: skip
    assert "pass --force to write anyway" in err and "wrote" not in r.stdout
    assert loader.commands == [] and _wrote_nothing(loader)  # the port was never opened


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        # a header esptool reads, then garbage: its segment count / lengths make no sense
        ("bootloader", lambda b: b"\xe9" + random.Random(1).randbytes(len(b) - 1), "esptool cannot read it as an image"),
        # one byte of a segment changed: the checksum (and the SHA-256) no longer match
        ("app", lambda b: b[:4096] + bytes([b[4096] ^ 0x55]) + b[4097:], "its checksum is wrong"),
        # an image for another chip (extended header's chip id 0 = ESP32)
        ("app", lambda b: b[:12] + b"\x00\x00" + b[14:], "it is an image for ESP32, not the ESP32-S3"),
        ("partition-table", lambda b: random.Random(2).randbytes(len(b)), "is not an ESP-IDF partition table: no partition entries"),
        ("partition-table", lambda b: b[:40] + b"X" + b[41:], "the MD5 of its entries does not match"),
    ],
)
def test_damaged_or_foreign_images_are_refused(cli, rom, build, name, damage, expected):
    path = build / f"{name}.bin"
    path.write_bytes(damage(path.read_bytes()))
    loader = rom()
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2, r.stdout
    err = " ".join(r.stderr.split())
    assert f"refusing to flash: {name} ({path} at {IMAGES[name][0]:#x})" in err and expected in err, err
    assert _wrote_nothing(loader)


def test_8mb_build_on_a_4mb_chip_is_refused_before_writing(cli, rom, build, monkeypatch):
    loader = rom()
    monkeypatch.setattr(mock_protocol, "MOCK_FLASH_ID", FLASH_ID_4MB)  # the chip esptool asks reports 4 MB
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2, r.stdout
    err = " ".join(r.stderr.split())
    assert (f"refusing to flash: the build is for 8MB of flash (gendertool-build.json) but the chip on {loader.url} "
            "reports 4MB; build for this board's flash; pass --force to write anyway") in err  # fmt: skip
    assert loader.saw("SYNC") and _wrote_nothing(loader)  # asked the chip, wrote nothing


def test_image_past_the_end_of_the_chips_flash_is_refused(cli, rom, build, monkeypatch):
    data = json.loads((build / build_manifest.MANIFEST_NAME).read_text())
    data["flash"]["size"] = "keep"  # no size in the manifest: the images' end is what is checked
    data["images"][2]["offset"] = 0x3F0000
    (build / build_manifest.MANIFEST_NAME).write_text(json.dumps(data))
    loader = rom()
    monkeypatch.setattr(mock_protocol, "MOCK_FLASH_ID", FLASH_ID_4MB)
    r = cli("flash", "--port", loader.url, "--build", build)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert f"refusing to flash: app ends at {0x3F0000 + IMAGES['app'][1]:#x}, beyond the 4MB of flash the chip on {loader.url} reports" in err
    assert _wrote_nothing(loader)


def test_force_writes_what_the_checks_refuse_and_says_so(cli, rom, build, monkeypatch):
    junk = random.Random(7).randbytes(21_000).replace(b"\xe9", b"\x00", 1)
    (build / "bootloader.bin").write_bytes(junk)
    loader = rom()
    monkeypatch.setattr(mock_protocol, "MOCK_FLASH_ID", FLASH_ID_4MB)
    r = cli("flash", "--port", loader.url, "--build", build, "--force")
    assert r.exit_code == 0, r.stderr
    err = " ".join(r.stderr.split())
    assert "--force: writing it anyway: bootloader" in err and "--force: writing anyway: the build is for 8MB" in err
    assert loader.read(0, len(junk)) == junk  # written as it is: esptool did not touch a non-image header
    assert "forced past the image and flash-size checks" in r.stdout


# --------------------------------------------------------------------------- erase (issue 20, item 8)


def test_erase_wipes_the_whole_flash_through_esptool(cli, rom, build):
    loader = rom()
    assert cli("flash", "--port", loader.url, "--build", build).exit_code == 0
    assert bytes(loader.flash.data) != b"\xff" * FLASH_BYTES
    loader.commands.clear()
    r = cli("erase", "--port", loader.url)
    assert r.exit_code == 0, r.stderr
    assert bytes(loader.flash.data) == b"\xff" * FLASH_BYTES
    assert loader.saw("SYNC", "MEM_BEGIN", "ERASE_FLASH")  # esptool's erase-flash, through the stub
    out = " ".join(r.stdout.split())
    assert f"erased the whole flash of ESP32-S3" in out and loader.url in out and "reset: hard-reset" in out


def test_erase_refuses_the_virtual_device_and_an_empty_socket(cli):
    from conftest import closed_port_url

    r = cli("erase", "--port", "sim")
    assert r.exit_code == 2 and "cannot erase sim: the virtual device has no flash" in r.stderr
    url = closed_port_url()
    r = cli("erase", "--port", url)
    assert r.exit_code == 2 and f"nothing answers at {url} (connection refused)" in " ".join(r.stderr.split())
