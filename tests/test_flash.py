"""gendertool flash: build manifest -> esptool v5 API calls, and every failure's message.

No board here: the esptool API functions gendertool calls are replaced by recorders at
the module boundary (esptool.cmds.*). Port-opening failures go through esptool's real
ESPLoader with pyserial's open replaced, so the text we parse is esptool's own.
"""

from __future__ import annotations

import json
import os
import pty
import threading
from pathlib import Path

import pytest
import serial

from gendertool.device import esptool_log

from gendertool.device import flash as gflash

from gendertool.device import ports as ports_mod

from gendertool.project import manifest as build_manifest
from gendertool.errors import BuildError, DeviceError

esptool_cmds = pytest.importorskip("esptool.cmds")
from esptool.util import FatalError  # noqa: E402

import esp_images  # noqa: E402


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ESP32-S3 images made by esptool's own image writer (tests/esp_images.py): flash checks them
BOOTLOADER, PARTITIONS, APP = esp_images.bootloader(21_000), esp_images.partition_table(), esp_images.app(300_000)
APP_SIZE = len(APP)
TOTAL = len(BOOTLOADER) + len(PARTITIONS) + APP_SIZE


@pytest.fixture
def build_dir(tmp_path) -> Path:
    """A finished build as the build step leaves it (offsets deliberately not the defaults)."""
    d = tmp_path / "build"
    _write(d / "bootloader.bin", BOOTLOADER)
    _write(d / "partition-table.bin", PARTITIONS)
    _write(d / "gendertool.bin", APP)
    _write(d / "gendertool-merged.bin", BOOTLOADER + os.urandom(400_000 - len(BOOTLOADER)))
    _write(d / "gendertool.elf", b"\x7fELF")
    manifest = {
        "schema": 1,
        "board": "xiao_esp32s3",
        "chip": "esp32s3",
        "backend": "pio",
        "model": {"name": "gender_mbv2_035_64", "sha256": "ab" * 32},
        "flash": {"mode": "qio", "freq": "80m", "size": "8MB"},
        # listed out of order on purpose: esptool wants them sorted by offset
        "images": [
            {"name": "app", "offset": 0x20000, "path": "gendertool.bin"},
            {"name": "bootloader", "offset": 0, "path": "bootloader.bin"},
            {"name": "partition-table", "offset": "0x9000", "path": "partition-table.bin"},
        ],
        "merged": {"offset": 0, "path": "gendertool-merged.bin"},
        "elf": "gendertool.elf",
        "sizes": {"flash_bytes": 0, "dram_bytes": 0, "iram_bytes": 0},
    }
    (d / build_manifest.MANIFEST_NAME).write_text(json.dumps(manifest))
    return d


class FakePort:
    def __init__(self, name: str) -> None:
        self.port = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeEsp:
    ESP_ROM_BAUD = 115200
    IS_STUB = False

    def __init__(self, chip: str = "ESP32-S3", port: str = "/dev/ttyACM0") -> None:
        self.CHIP_NAME = chip
        self._port = FakePort(port)
        self.baud_changes: list[int] = []

    def get_chip_description(self) -> str:
        return f"{self.CHIP_NAME} (QFN56) (revision v0.2)"

    def get_chip_features(self) -> list[str]:
        return ["Wi-Fi", "BT 5 (LE)", "Dual Core + LP Core", "240MHz", "Embedded PSRAM 8MB (AP_3v3)"]

    def read_mac(self):
        return (0x34, 0x85, 0x18, 0x01, 0x02, 0x03)

    def change_baud(self, baud: int) -> None:
        self.baud_changes.append(baud)


@pytest.fixture
def esptool_api(monkeypatch):
    """Record every esptool.cmds call gendertool makes; drive esptool's real progress logger."""
    calls: list[tuple] = []
    # "fail": stage -> exception for every port; "fail_on": port -> {stage: exception};
    # "barrier": a threading.Barrier every board must reach inside write_flash (parallel runs)
    state = {"chip": "ESP32-S3", "flash_size": "8MB", "fail": {}, "fail_on": {}, "barrier": None, "esps": {}, "by_port": {}}

    def record(port, call):
        calls.append(call)
        state["by_port"].setdefault(port, []).append(call[0])

    def maybe_fail(name, port):
        exc = state["fail_on"].get(port, {}).get(name) or state["fail"].get(name)
        if exc is not None:
            raise exc

    def detect_chip(port, baud=115200, connect_mode="default-reset", trace_enabled=False, connect_attempts=7):
        record(port, ("detect_chip", port, connect_mode))
        maybe_fail("detect_chip", port)
        esp = FakeEsp(state["chip"], port)
        state["esp"] = state["esps"][port] = esp
        return esp

    def run_stub(esp, plugins=None):
        record(esp._port.port, ("run_stub",))
        maybe_fail("run_stub", esp._port.port)
        esp.IS_STUB = True
        return esp

    def attach_flash(esp, spi_connection=None, flash_type="nor"):
        record(esp._port.port, ("attach_flash", spi_connection))
        maybe_fail("attach_flash", esp._port.port)

    def detect_flash_size(esp):
        record(esp._port.port, ("detect_flash_size",))
        maybe_fail("detect_flash_size", esp._port.port)
        return state["flash_size"]

    def write_flash(esp, addr_data, flash_freq="keep", flash_mode="keep", flash_size="keep", flash_type="nor", **kw):
        port = esp._port.port
        record(port, ("write_flash", list(addr_data), flash_freq, flash_mode, flash_size, kw))
        from esptool.logger import log

        if state["barrier"] is not None:
            state["barrier"].wait(timeout=10)  # every board is writing at the same time
        for addr, path in addr_data:
            size = Path(path).stat().st_size
            log.print(f"Writing '{path}' at {addr:#010x} on {port}...")
            with log.progress(total=size, unit="B") as progress:
                for _ in range(0, size, 16384):
                    progress.update(advance=16384)
                    maybe_fail("write_flash", port)
                    if state.get("lockstep") is not None:
                        state["lockstep"].wait(timeout=10)  # boards advance chunk by chunk together
            log.print(f"Hash of data verified on {port}.")

    def verify_flash(esp, addr_data, flash_freq="keep", flash_mode="keep", flash_size="keep", diff=False, flash_type="nor"):
        record(esp._port.port, ("verify_flash", list(addr_data), flash_freq, flash_mode, flash_size))
        maybe_fail("verify_flash", esp._port.port)

    def reset_chip(esp, reset_mode="hard-reset"):
        record(esp._port.port, ("reset_chip", reset_mode))
        maybe_fail("reset_chip", esp._port.port)

    for fn in (detect_chip, run_stub, attach_flash, detect_flash_size, write_flash, verify_flash, reset_chip):
        monkeypatch.setattr(esptool_cmds, fn.__name__, fn)
    monkeypatch.setattr(gflash, "is_usb_jtag", lambda port: port.startswith("/dev/ttyACM"))
    state["calls"] = calls
    return state


class Recorder(esptool_log.FlashReporter):
    def __init__(self, timeline: list | None = None, port: str = "") -> None:
        self.progress_events: list[tuple[str, int, int]] = []
        self.messages: list[str] = []
        self.warnings: list[str] = []
        self.stages: list[str] = []
        self.threads: set[int] = set()
        self.timeline, self.port = timeline, port

    def stage(self, text):
        self.stages.append(text)

    def message(self, text):
        self.messages.append(text)

    def warning(self, text):
        self.warnings.append(text)

    def progress(self, image, done, total):
        self.progress_events.append((image.name, done, total))
        self.threads.add(threading.get_ident())
        if self.timeline is not None:
            self.timeline.append(self.port)


# --------------------------------------------------------------------------- manifest -> esptool


def test_manifest_maps_to_esptool_calls(build_dir, esptool_api):
    plan = build_manifest.plan_flash(build_dir)
    rec = Recorder()
    result = gflash.flash(plan, "/dev/ttyACM0", baud=921600, reporter=rec)

    calls = esptool_api["calls"]
    assert [c[0] for c in calls] == ["detect_chip", "run_stub", "attach_flash", "detect_flash_size", "write_flash", "verify_flash", "reset_chip"]
    # USB-Serial-JTAG port: USB reset sequence to enter the ROM loader
    assert calls[0] == ("detect_chip", "/dev/ttyACM0", "usb-reset")
    expected = [(0, str(build_dir / "bootloader.bin")), (0x9000, str(build_dir / "partition-table.bin")), (0x20000, str(build_dir / "gendertool.bin"))]
    _, addr_data, freq, mode, size, kw = calls[4]
    assert addr_data == expected  # sorted by offset, hex string offsets parsed
    assert (freq, mode, size) == ("80m", "qio", "8MB")
    assert kw.get("compress") is True and not kw.get("no_compress") and not kw.get("force")
    # verification on: every written region checked with the same flash settings
    assert calls[5] == ("verify_flash", expected, "80m", "qio", "8MB")
    assert calls[6] == ("reset_chip", "hard-reset")
    assert esptool_api["esp"].baud_changes == [921600]
    assert esptool_api["esp"]._port.closed

    # esptool's progress (through its real logger) reached us, per image, in order
    names_in_order = []
    for name, _, _ in rec.progress_events:
        if not names_in_order or names_in_order[-1] != name:
            names_in_order.append(name)
    assert names_in_order == ["bootloader", "partition-table", "app"]
    last = {name: (done, total) for name, done, total in rec.progress_events}
    assert last["app"] == (APP_SIZE, APP_SIZE)
    assert any("Hash of data verified" in m for m in rec.messages)

    assert result.chip == "ESP32-S3" and result.mac == "34:85:18:01:02:03"
    assert result.bytes_written == TOTAL
    assert result.throughput > 0 and result.total_seconds >= result.write_seconds


def test_esptool_logger_is_restored(build_dir, esptool_api):
    from esp_pylib.logger import EspLog

    before = EspLog.instance
    gflash.flash(build_manifest.plan_flash(build_dir), "/dev/ttyACM0")
    assert EspLog.instance is before
    esptool_api["fail"]["write_flash"] = serial.SerialException("device disconnected")
    with pytest.raises(DeviceError):
        gflash.flash(build_manifest.plan_flash(build_dir), "/dev/ttyACM0")
    assert EspLog.instance is before


def test_merged_image_and_uart_port(build_dir, esptool_api):
    plan = build_manifest.plan_flash(build_dir, merged=True)
    gflash.flash(plan, "/dev/ttyUSB0", baud=115200)
    calls = esptool_api["calls"]
    assert calls[0] == ("detect_chip", "/dev/ttyUSB0", "default-reset")
    assert calls[4][1] == [(0, str(build_dir / "gendertool-merged.bin"))]
    assert esptool_api["esp"].baud_changes == []  # not above the ROM rate: no change


def test_flash_cli_end_to_end(cli, build_dir, esptool_api):
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 0, res.output
    assert "ESP32-S3" in res.stdout and "34:85:18:01:02:03" in res.stdout
    assert "wrote and verified" in res.stdout and "/s" in res.stdout
    for name in ("bootloader", "partition-table", "app"):
        assert name in res.stdout
    assert [c[0] for c in esptool_api["calls"]][-1] == "reset_chip"


# --------------------------------------------------------------------------- errors at the API boundary


def test_wrong_chip_is_refused_naming_it(build_dir, esptool_api, cli):
    esptool_api["chip"] = "ESP32-C3"
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 2
    assert "ESP32-C3" in res.stderr and "ESP32-S3" in res.stderr and "refusing" in res.stderr
    assert "Traceback" not in res.output
    assert [c[0] for c in esptool_api["calls"]] == ["detect_chip"]  # nothing written


@pytest.mark.parametrize(
    "error, expected",
    [
        (FatalError("Failed to connect to ESP32-S3: No serial data received."), "no ESP chip answered"),
        (FatalError("Unexpected chip ID value 99. Failed to autodetect chip type."), "not one esptool knows"),
        (FatalError("Timed out waiting for packet header"), "no ESP chip answered"),
    ],
)
def test_connect_failures(build_dir, esptool_api, error, expected):
    esptool_api["fail"]["detect_chip"] = error
    with pytest.raises(DeviceError, match=expected):
        gflash.flash(build_manifest.plan_flash(build_dir), "/dev/ttyACM0")


@pytest.mark.parametrize(
    "stage, error, expected",
    [
        ("write_flash", serial.SerialException("device reports readiness to read but returned no data (device disconnected or multiple access on port?)"), "dropped while writing"),
        ("write_flash", OSError(5, "Input/output error"), "dropped while writing"),
        ("verify_flash", FatalError("Verification failed."), "verification failed"),
        ("run_stub", FatalError("Failed to start stub. Unexpected response"), "esptool failed while loading the flasher stub"),
        ("reset_chip", serial.SerialException("[Errno 19] No such device"), "vanished while resetting"),
    ],
)
def test_failures_after_connect(build_dir, esptool_api, cli, stage, error, expected):
    esptool_api["fail"][stage] = error
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 2
    assert expected in res.stderr
    assert "Traceback" not in res.output
    assert esptool_api["esp"]._port.closed
    if stage == "write_flash":  # the recorder's progress got the bootloader part-way
        assert "on the board: bootloader (0x0) partly written (" in " ".join(res.stderr.split())


def _real_open_failure(monkeypatch, exc):
    """Let esptool's real ESPLoader open the port, with pyserial's open raising ``exc``."""
    import esptool.loader

    class FailingSerial:
        def __init__(self, *a, **kw):
            self.port = a[0] if a else kw.get("port")

        def open(self):
            raise exc

        def close(self):
            pass

    monkeypatch.setattr(esptool.loader.serial, "serial_for_url", lambda port, **kw: FailingSerial(port))


@pytest.mark.parametrize(
    "exc, expected",
    [
        (serial.SerialException(13, "could not open port /dev/ttyACM0: [Errno 13] Permission denied: '/dev/ttyACM0'"), "dialout"),
        (serial.SerialException(2, "could not open port /dev/ttyACM0: [Errno 2] No such file or directory: '/dev/ttyACM0'"), "does not exist"),
        (serial.SerialException("Could not exclusively lock port /dev/ttyACM0: [Errno 11] Resource temporarily unavailable"), "is busy"),
    ],
)
def test_port_open_failures_through_real_esptool(build_dir, monkeypatch, cli, exc, expected):
    monkeypatch.setattr(gflash, "is_usb_jtag", lambda port: True)
    _real_open_failure(monkeypatch, exc)
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 2, res.output
    assert expected in res.stderr
    if expected == "dialout":
        assert "uucp" in res.stderr


def test_busy_port_real_pty(build_dir, monkeypatch):
    """A port another program holds exclusively (as a monitor does): esptool's real open fails."""
    monkeypatch.setattr(gflash, "is_usb_jtag", lambda port: True)
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    holder = serial.Serial(path, exclusive=True)
    try:
        with pytest.raises(DeviceError, match="is busy"):
            gflash.flash(build_manifest.plan_flash(build_dir), path)
    finally:
        holder.close()
        os.close(master)
        os.close(slave)


def test_missing_port_real(build_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(gflash, "is_usb_jtag", lambda port: False)
    with pytest.raises(DeviceError, match="does not exist"):
        gflash.flash(build_manifest.plan_flash(build_dir), str(tmp_path / "ttyACM9"))


def test_port_discovery(monkeypatch, build_dir, esptool_api, cli):
    monkeypatch.setattr(ports_mod, "find_esp32s3_ports", lambda: [])
    res = cli("flash", "--build", build_dir)
    assert res.exit_code == 2 and "no ESP32-S3 found" in res.stderr and "--port" in res.stderr

    monkeypatch.setattr(ports_mod, "find_esp32s3_ports", lambda: ["/dev/ttyACM0", "/dev/ttyACM1"])
    res = cli("flash", "--build", build_dir)
    assert res.exit_code == 2
    assert "/dev/ttyACM0" in res.stderr and "/dev/ttyACM1" in res.stderr and "--port" in res.stderr
    assert esptool_api["calls"] == []

    monkeypatch.setattr(ports_mod, "find_esp32s3_ports", lambda: ["/dev/ttyACM3"])
    res = cli("flash", "--build", build_dir)
    assert res.exit_code == 0, res.output
    assert esptool_api["calls"][0][1] == "/dev/ttyACM3"


def test_find_ports_filters_vid_pid(monkeypatch):
    from types import SimpleNamespace

    from serial.tools import list_ports

    fake = [
        SimpleNamespace(device="/dev/ttyACM1", vid=0x303A, pid=0x1001),
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60),  # CP2102 bridge
        SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001),
        SimpleNamespace(device="/dev/ttyACM2", vid=0x303A, pid=0x0002),  # S3 in USB-OTG DFU
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None),
    ]
    monkeypatch.setattr(list_ports, "comports", lambda *a, **k: fake)
    assert ports_mod.find_esp32s3_ports() == ["/dev/ttyACM0", "/dev/ttyACM1"]


def test_virtual_ports_cannot_be_flashed(build_dir, esptool_api):
    with pytest.raises(DeviceError, match="no flash"):
        gflash.flash(build_manifest.plan_flash(build_dir), "sim")
    assert esptool_api["calls"] == []
    # socket:// is esptool's own (tests/test_flash_rom.py flashes the emulated ROM loader there)
    gflash.check_flashable("socket://127.0.0.1:5555", 460800)


# --------------------------------------------------------------------------- several boards

PORTS3 = ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0"]
STAGES = ["connecting", "loading the flasher stub", "changing the baud rate", "attaching the flash", "reading the flash size", "writing", "verifying", "resetting"]


def _image_order(events):
    order = []
    for name, _, _ in events:
        if not order or order[-1] != name:
            order.append(name)
    return order


def test_boards_flash_in_parallel_each_with_its_own_progress(build_dir, esptool_api):
    from esp_pylib.logger import EspLog

    before = EspLog.instance
    ports = PORTS3[:2]
    esptool_api["barrier"] = threading.Barrier(2)
    esptool_api["lockstep"] = threading.Barrier(2)  # chunks of both boards strictly interleave
    timeline: list[str] = []
    recs = {p: Recorder(timeline, p) for p in ports}
    plan = build_manifest.plan_flash(build_dir)
    boards = gflash.flash_boards(plan, ports, baud=921600, reporter_for=recs.__getitem__)

    assert [b.port for b in boards] == ports and all(b.ok for b in boards)
    esptool_api["barrier"] = esptool_api["lockstep"] = None
    single = Recorder()  # what one board alone receives
    gflash.flash(plan, "/dev/ttyACM5", reporter=single)
    switches = sum(1 for a, b in zip(timeline, timeline[1:]) if a != b)
    assert switches > 10  # the progress of the two boards really was interleaved
    for port, rec in recs.items():
        other = next(p for p in ports if p != port)
        assert rec.progress_events == single.progress_events  # all of its own, none of the other's
        assert _image_order(rec.progress_events) == ["bootloader", "partition-table", "app"]
        assert any(port in m for m in rec.messages) and not any(other in m for m in rec.messages)
        assert rec.stages == STAGES
        assert len(rec.threads) == 1 and threading.get_ident() not in rec.threads
        assert esptool_api["by_port"][port] == ["detect_chip", "run_stub", "attach_flash", "detect_flash_size", "write_flash", "verify_flash", "reset_chip"]
        assert esptool_api["esps"][port].baud_changes == [921600] and esptool_api["esps"][port]._port.closed
    for b in boards:
        assert b.result.port == b.port and b.result.bytes_written == TOTAL
        assert b.result.throughput > 0 and b.seconds >= b.result.total_seconds
    assert EspLog.instance is before  # esptool's own logger back once every board is done


def test_one_failing_board_does_not_stop_the_others(build_dir, esptool_api):
    from esp_pylib.logger import EspLog

    before = EspLog.instance
    esptool_api["barrier"] = threading.Barrier(3)
    esptool_api["fail_on"]["/dev/ttyACM1"] = {"write_flash": serial.SerialException("device disconnected")}
    recs = {p: Recorder() for p in PORTS3}
    boards = gflash.flash_boards(build_manifest.plan_flash(build_dir), PORTS3, reporter_for=recs.__getitem__)

    ok = {b.port: b.ok for b in boards}
    assert ok == {"/dev/ttyACM0": True, "/dev/ttyACM1": False, "/dev/ttyUSB0": True}
    failed = boards[1]
    assert failed.result is None and "the link to /dev/ttyACM1 dropped while writing" in failed.error
    assert esptool_api["esps"]["/dev/ttyACM1"]._port.closed
    assert "reset_chip" not in esptool_api["by_port"]["/dev/ttyACM1"]
    assert recs["/dev/ttyACM1"].stages[-1] == "writing" and recs["/dev/ttyUSB0"].stages == STAGES
    for port in ("/dev/ttyACM0", "/dev/ttyUSB0"):
        assert esptool_api["by_port"][port][-1] == "reset_chip"
        assert recs[port].progress_events[-1] == ("app", APP_SIZE, APP_SIZE)
    # the UART bridge board connects with the classic reset, the native USB ones through USB
    modes = {c[1]: c[2] for c in esptool_api["calls"] if c[0] == "detect_chip"}
    assert modes == {"/dev/ttyACM0": "usb-reset", "/dev/ttyACM1": "usb-reset", "/dev/ttyUSB0": "default-reset"}
    assert EspLog.instance is before


def test_board_failing_to_connect_and_wrong_chip(build_dir, esptool_api, monkeypatch):
    esptool_api["fail_on"]["/dev/ttyACM0"] = {"detect_chip": FatalError("Failed to connect to ESP32-S3: No serial data received.")}
    boards = gflash.flash_boards(build_manifest.plan_flash(build_dir), PORTS3[:2])
    assert "no ESP chip answered on /dev/ttyACM0" in boards[0].error and boards[1].ok


def test_unexpected_exception_in_a_board_is_raised(build_dir, esptool_api):
    esptool_api["fail_on"]["/dev/ttyACM1"] = {"attach_flash": ValueError("a bug")}
    with pytest.raises(ValueError, match="a bug"):
        gflash.flash_boards(build_manifest.plan_flash(build_dir), PORTS3)
    # the other boards were still finished before the bug surfaced
    assert esptool_api["by_port"]["/dev/ttyACM0"][-1] == "reset_chip"
    assert esptool_api["by_port"]["/dev/ttyUSB0"][-1] == "reset_chip"


@pytest.mark.parametrize(
    "ports, expected",
    [
        (["/dev/ttyACM0", "sim"], "cannot flash sim"),
        (["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyACM0"], "the same port is given twice"),
        ([], "at least one --port"),
    ],
)
def test_boards_refused_before_any_is_touched(build_dir, esptool_api, ports, expected):
    with pytest.raises(DeviceError, match=expected):
        gflash.flash_boards(build_manifest.plan_flash(build_dir), ports)
    assert esptool_api["calls"] == []


def test_boards_same_device_through_a_symlink(build_dir, esptool_api, tmp_path):
    link = tmp_path / "xiao"
    link.symlink_to("/dev/ttyACM0")
    with pytest.raises(DeviceError, match="given twice"):
        gflash.flash_boards(build_manifest.plan_flash(build_dir), ["/dev/ttyACM0", str(link)])


def test_flash_cli_two_boards(cli, build_dir, esptool_api):
    esptool_api["barrier"] = threading.Barrier(2)
    res = cli("flash", "-p", "/dev/ttyACM0", "--port", "/dev/ttyACM1", "--build", build_dir)
    assert res.exit_code == 0, res.output
    for port in ("/dev/ttyACM0", "/dev/ttyACM1"):
        row = next(line for line in res.stdout.splitlines() if port in line)
        assert "OK" in row and "34:85:18:01:02:03" in row and "/s" in row
    assert "2 of 2 boards written, verified and reset" in res.stdout
    assert "/dev/ttyACM0" in res.stderr and "/dev/ttyACM1" in res.stderr and "done" in res.stderr  # progress lines


def test_flash_cli_three_boards_one_failing(cli, build_dir, esptool_api):
    esptool_api["fail_on"]["/dev/ttyUSB0"] = {"verify_flash": FatalError("Verification failed.")}
    res = cli("flash", *[a for p in PORTS3 for a in ("--port", p)], "--build", build_dir)
    assert res.exit_code == 2
    assert "flashing failed on 1 of 3 boards: /dev/ttyUSB0: verification failed on /dev/ttyUSB0" in " ".join(res.stderr.split())
    assert "/dev/ttyACM0:" not in res.stderr and "/dev/ttyACM1:" not in res.stderr
    assert "Traceback" not in res.output
    rows = {p: next(line for line in res.stdout.splitlines() if line.strip("│ ").startswith(p)) for p in PORTS3}
    assert "OK" in rows["/dev/ttyACM0"] and "OK" in rows["/dev/ttyACM1"] and "error" in rows["/dev/ttyUSB0"]
    assert "2 of 3 boards" in res.stdout
    assert "FAILED" in res.stderr


def test_flash_cli_same_port_twice(cli, build_dir, esptool_api):
    res = cli("flash", "--port", "/dev/ttyACM0", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 2 and "given twice" in res.output
    assert esptool_api["calls"] == []


def test_flash_cli_port_from_environment(cli, build_dir, esptool_api, monkeypatch):
    monkeypatch.setenv("GENDERTOOL_PORT", "/dev/ttyACM4")
    res = cli("flash", "--build", build_dir)
    assert res.exit_code == 0, res.output
    assert esptool_api["calls"][0] == ("detect_chip", "/dev/ttyACM4", "usb-reset")


# --------------------------------------------------------------------------- build problems


def test_missing_build(cli, tmp_path, esptool_api):
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", tmp_path / "nope")
    assert res.exit_code == 2
    assert "gendertool build" in res.stderr and "gendertool-build.json" in res.stderr
    assert esptool_api["calls"] == []


def test_default_build_dir_missing(cli, tmp_path, monkeypatch, esptool_api):
    monkeypatch.chdir(tmp_path)
    res = cli("flash", "--port", "/dev/ttyACM0")
    assert res.exit_code == 2 and "gendertool build" in res.stderr


def test_missing_image(cli, build_dir, esptool_api):
    (build_dir / "partition-table.bin").unlink()
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 2
    assert "partition-table" in res.stderr and "missing" in res.stderr
    assert esptool_api["calls"] == []


def test_missing_merged_image(build_dir):
    (build_dir / "gendertool-merged.bin").unlink()
    with pytest.raises(BuildError, match="merged.*missing"):
        build_manifest.plan_flash(build_dir, merged=True)
    assert len(build_manifest.plan_flash(build_dir).images) == 3  # separate images still fine


def test_empty_image(build_dir):
    (build_dir / "gendertool.bin").write_bytes(b"")
    with pytest.raises(BuildError, match="app image .* is empty"):
        build_manifest.plan_flash(build_dir)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda m: m.update(schema=7), "unknown manifest schema"),
        (lambda m: m.update(chip="esp32c3"), "esp32c3, not ESP32-S3"),
        (lambda m: m.update(images=[]), "lists no images"),
        (lambda m: m["images"][0].update(offset="zero"), "not a number"),
        (lambda m: m["images"][0].update(offset=0x8000), "overlaps"),
        (lambda m: m["images"][1].pop("path"), "needs 'path' and 'offset'"),
    ],
)
def test_bad_manifests(build_dir, mutate, expected):
    path = build_dir / build_manifest.MANIFEST_NAME
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BuildError, match=expected):
        build_manifest.plan_flash(build_dir)


def test_unreadable_manifest(build_dir):
    (build_dir / build_manifest.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BuildError, match="not a readable build manifest"):
        build_manifest.plan_flash(build_dir / build_manifest.MANIFEST_NAME)


# --------------------------------------------------------------------------- ESP Web Tools


def test_web_manifest_next_to_merged_image(build_dir):
    out = build_manifest.write_web_manifest(build_dir / build_manifest.MANIFEST_NAME)
    assert out == build_dir / "manifest.json"
    web = json.loads(out.read_text())
    assert web["builds"] == [{"chipFamily": "ESP32-S3", "parts": [{"path": "gendertool-merged.bin", "offset": 0}]}]
    assert "gender_mbv2_035_64" in web["name"] and web["version"].endswith("+" + "ab" * 6)
    # every part must resolve relative to the manifest (that is how the browser fetches it)
    for part in web["builds"][0]["parts"]:
        assert (out.parent / part["path"]).is_file()


def test_web_manifest_without_merged_lists_images(build_dir):
    path = build_dir / build_manifest.MANIFEST_NAME
    data = json.loads(path.read_text())
    del data["merged"]
    path.write_text(json.dumps(data))
    web = json.loads(build_manifest.write_web_manifest(build_dir).read_text())
    parts = web["builds"][0]["parts"]
    assert [(p["path"], p["offset"]) for p in parts] == [("bootloader.bin", 0), ("partition-table.bin", 0x9000), ("gendertool.bin", 0x20000)]


def test_flash_help(cli):
    res = cli("flash", "--help")
    assert res.exit_code == 0
    for opt in ("--port", "--build", "--baud"):
        assert opt in res.stdout
    assert "repeat for several boards" in res.stdout


# --------------------------------------------------------------------------- a real board


@pytest.mark.hardware
def test_flash_real_board(board_ports, tmp_path):
    """Flash the build in ./build (made by `gendertool build`) onto the first --port board."""
    manifest = Path("build") / build_manifest.MANIFEST_NAME
    if not manifest.is_file():
        pytest.skip("no ./build/gendertool-build.json: run `gendertool build` first")
    rec = Recorder()
    result = gflash.flash(build_manifest.plan_flash(manifest.parent), board_ports[0], reporter=rec)
    assert result.chip == "ESP32-S3"
    assert rec.progress_events and result.throughput > 0


def test_build_step_writes_the_web_manifest(tmp_path):
    """build.write_manifest (the build step) leaves manifest.json next to the merged image."""
    out = tmp_path / "proj"
    images = []
    for name, offset, size in (("bootloader", 0, 4096), ("partition-table", 0x8000, 3072), ("app", 0x10000, 65536)):
        path = out / "build" / f"{name}.bin"
        _write(path, (b"\xe9\x03\x02\x20" if name == "bootloader" else b"") + os.urandom(size))
        images.append(build_manifest.Image(name, offset, path))
    output = build_manifest.BuildOutput(tuple(images), None, "dio", "80m", "8MB")
    build_manifest.write_manifest(out, output, board="xiao_esp32s3", chip="esp32s3", backend="idf", model={"name": "m", "sha256": "cd" * 32}, sizes=None)
    web = json.loads((out / "manifest.json").read_text())
    (part,) = web["builds"][0]["parts"]
    assert web["builds"][0]["chipFamily"] == "ESP32-S3" and part["offset"] == 0
    assert (out / part["path"]).stat().st_size >= 0x10000 + 65536  # the merged image spans all


# --------------------------------------------------------------------------- Ctrl-C (issue 11.1)


@pytest.mark.parametrize(
    "stage, state",
    [("write_flash", "may hold a partly written image (bootloader"), ("detect_chip", "nothing was written to the board")],
)
def test_ctrl_c_says_what_state_the_board_is_in(build_dir, esptool_api, cli, stage, state):
    esptool_api["fail"][stage] = KeyboardInterrupt()
    res = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert res.exit_code == 130
    msg = res.stderr.replace("\n", "")
    assert "interrupted (Ctrl-C): /dev/ttyACM0: stopped while" in msg and state in msg
    assert "Traceback" not in res.output


# --------------------------------------------------------------------------- esptool's options (issue 20, items 5 and 8)


def test_boards_refuse_a_non_image_before_any_board_is_touched(build_dir, esptool_api):
    (build_dir / "gendertool.bin").write_bytes(os.urandom(300_000).replace(b"\xe9", b"\x00"))
    plan = build_manifest.plan_flash(build_dir)
    with pytest.raises(BuildError, match=r"refusing to flash: app \(.*gendertool.bin at 0x20000\) is not an ESP32-S3 image"):
        gflash.flash_boards(plan, ["/dev/ttyACM0", "/dev/ttyACM1"])
    assert esptool_api["calls"] == []


def test_no_verify_skips_the_read_back_and_says_so(cli, build_dir, esptool_api):
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir, "--no-verify")
    assert r.exit_code == 0, r.output
    names = [c[0] for c in esptool_api["calls"]]
    assert "verify_flash" not in names and names[-2:] == ["write_flash", "reset_chip"]
    out = " ".join(r.stdout.split())
    assert "wrote (MD5 per image; second read-back skipped: --no-verify)" in out and "wrote and verified" not in out


@pytest.mark.parametrize(
    "args, connect, reset, said",
    [
        ([], "usb-reset", "hard-reset", "reset into the app (hard-reset)"),
        (["--before", "no-reset", "--after", "no-reset"], "no-reset", "no-reset", "left in the ROM loader (no-reset)"),
        (["--before", "default-reset", "--after", "watchdog-reset"], "default-reset", "watchdog-reset", "reset into the app (watchdog-reset)"),
    ],
)
def test_before_and_after_are_esptools_reset_modes(cli, build_dir, esptool_api, args, connect, reset, said):
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir, *args)
    assert r.exit_code == 0, r.output
    calls = esptool_api["calls"]
    assert calls[0] == ("detect_chip", "/dev/ttyACM0", connect) and calls[-1] == ("reset_chip", reset)
    assert said in " ".join(r.stdout.split())


def test_unknown_reset_mode_is_refused_naming_the_choices(cli, build_dir, esptool_api):
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir, "--after", "reboot")
    assert r.exit_code == 2 and esptool_api["calls"] == []
    assert "--after must be one of hard-reset, soft-reset, no-reset, no-reset-stub, watchdog-reset, not 'reboot'" in " ".join(r.stderr.split())


def test_force_is_esptools_force(cli, build_dir, esptool_api):
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir, "--force")
    assert r.exit_code == 0, r.output
    kw = next(c for c in esptool_api["calls"] if c[0] == "write_flash")[5]
    assert kw["force"] is True
    assert "forced past" not in r.stdout  # nothing was refused, so nothing was forced


def test_chip_smaller_than_the_build_is_refused(cli, build_dir, esptool_api):
    esptool_api["flash_size"] = "4MB"
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert r.exit_code == 2
    assert "the build is for 8MB of flash (gendertool-build.json) but the chip on /dev/ttyACM0 reports 4MB" in " ".join(r.stderr.split())
    assert "write_flash" not in [c[0] for c in esptool_api["calls"]]


def test_flash_size_esptool_does_not_know_is_refused_unless_forced(cli, build_dir, esptool_api):
    esptool_api["flash_size"] = None  # esptool's detect_flash_size: an unknown JEDEC capacity
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir)
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    assert ("refusing to flash: the flash chip on /dev/ttyACM0 reports a size esptool does not know, "
            "so gendertool cannot check that the 8MB build fits; pass --force") in err
    assert "write_flash" not in [c[0] for c in esptool_api["calls"]]
    r = cli("flash", "--port", "/dev/ttyACM0", "--build", build_dir, "--force")
    assert r.exit_code == 0 and "--force: writing anyway: the flash chip on /dev/ttyACM0 reports a size" in " ".join(r.stderr.split())
    assert "forced past the image and flash-size checks" in r.stdout
