"""`gendertool run`: build, flash and monitor in one go, stopping at the first step that fails
(issue 20, item 8). The build runs a stand-in `pio` (tests/test_build.py's), the flash runs
esptool's real protocol against the emulated ROM loader (tests/rom_loader.py), the monitor
then listens on the same port."""

from __future__ import annotations

import pytest

pytest.importorskip("esp32_mock_bootloader")
from esp32_mock_bootloader import protocol as mock_protocol  # noqa: E402

import esp_images  # noqa: E402
from rom_loader import FLASH_ID_8MB, RomLoader  # noqa: E402
from test_build import fake_pio, fake_pio_build, registry  # noqa: E402,F401 - fixtures and the stand-in build


@pytest.fixture
def loader(monkeypatch):
    monkeypatch.setattr(mock_protocol, "MOCK_FLASH_ID", FLASH_ID_8MB)
    rom = RomLoader()
    yield rom
    rom.close()


def _pio_build(out, *, good_images: bool = True):
    """The folder a successful `pio run` leaves; ``good_images``: real ESP32-S3 images in it."""
    b = fake_pio_build(out, "xiao_esp32s3", with_flasher_args=True)
    if good_images:
        (b / "bootloader.bin").write_bytes(esp_images.bootloader())
        (b / "partitions.bin").write_bytes(esp_images.partition_table())
        (b / "firmware.bin").write_bytes(esp_images.app(200_000))
    return b


def _steps(stderr: str) -> list[str]:
    return [s for s in ("1/3 build", "2/3 flash", "3/3 monitor") if s in stderr]


def test_all_three_steps_run_in_order_and_the_last_ones_error_ends_it(cli, tmp_path, fake_pio, loader):
    fake_pio("success")
    out = tmp_path / "out"
    b = _pio_build(out)
    r = cli("run", "--out", out, "--port", loader.url, "-n", "1", "--timeout", "1")
    assert _steps(r.stderr) == ["1/3 build", "2/3 flash", "3/3 monitor"], r.stderr
    assert "built" in r.stdout and "wrote and verified" in r.stdout  # build's and flash's own reports
    app = (b / "firmware.bin").read_bytes()
    assert loader.read(0x20000, len(app)) == app  # the build's app is on the board
    # the ROM loader sends no records: the monitor step fails with the monitor's own message
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert " ".join(r.stderr.split()).count("error:") == 1, r.stderr


def test_a_failing_build_stops_before_the_board_is_touched(cli, tmp_path, fake_pio, loader):
    fake_pio("compile-error")
    out = tmp_path / "out"
    r = cli("run", "--out", out, "--port", loader.url)
    assert r.exit_code == 2 and "pio run failed (exit 1)" in r.stderr
    assert _steps(r.stderr) == ["1/3 build"] and loader.commands == []


def test_a_refused_flash_stops_before_the_monitor(cli, tmp_path, fake_pio, loader):
    fake_pio("success")
    out = tmp_path / "out"
    _pio_build(out, good_images=False)
    r = cli("run", "--out", out, "--port", loader.url)
    assert r.exit_code == 2
    assert _steps(r.stderr) == ["1/3 build", "2/3 flash"]
    assert "refusing to flash: " in " ".join(r.stderr.split()) and loader.commands == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "sim"], "cannot flash sim: the virtual device has no flash"),
        (["--after", "no-reset"], "--after no-reset leaves the board without the app running"),
        (["--before", "sometimes"], "--before must be one of auto, default-reset"),
    ],
)
def test_what_would_fail_after_the_compile_fails_first(cli, tmp_path, args, message, loader):
    out = tmp_path / "out"
    argv = ["run", "--out", out, *args]
    if "--port" not in args:
        argv += ["--port", loader.url]
    r = cli(*argv)
    assert r.exit_code == 2 and message in " ".join(r.stderr.split())
    assert _steps(r.stderr) == [] and not out.exists()
