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
from rom_loader import FLASH_BYTES, FLASH_ID_8MB, Faults, RomLoader  # noqa: E402


def _firmware_like(size: int, seed: int) -> bytes:
    """Bytes that compress about as well as a firmware image does (esptool then sends them deflated)."""
    rng = random.Random(seed)
    words = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(2, 24))) for _ in range(400)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


IMAGES = {  # name: (offset, size); offsets deliberately not the defaults
    "bootloader": (0x0, 21_000),
    "partition-table": (0x9000, 3_072),
    "app": (0x20000, 700_000),
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
        (d / f"{name}.bin").write_bytes(_firmware_like(size, i))
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
