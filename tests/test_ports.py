"""gendertool ports: the serial ports pyserial lists, ESP32-S3 native USB (303a:1001) marked."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from serial.tools import list_ports

from gendertool.device import ports as ports_mod

from gendertool.device import transport

from gendertool import errors
FAKE = [
    SimpleNamespace(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60, description="CP2102N USB to UART Bridge Controller", serial_number="0001"),
    SimpleNamespace(device="/dev/ttyACM1", vid=0x303A, pid=0x1001, description="USB JTAG/serial debug unit", serial_number="34:85:18:01:02:03"),
    SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, description="n/a", serial_number=None),
    SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001, description="USB JTAG/serial debug unit", serial_number="34:85:18:0a:0b:0c"),
    SimpleNamespace(device="/dev/ttyACM2", vid=0x303A, pid=0x0002, description="ESP32-S3 TinyUSB CDC", serial_number=None),
]


@pytest.fixture
def comports(monkeypatch):
    found: list = []
    monkeypatch.setattr(list_ports, "comports", lambda *a, **k: list(found))
    return found


def test_list_serial_ports(comports):
    comports.extend(FAKE)
    ports = ports_mod.list_serial_ports()
    assert [p.device for p in ports] == ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyACM2", "/dev/ttyS0", "/dev/ttyUSB0"]
    by = {p.device: p for p in ports}
    assert by["/dev/ttyACM0"].vid_pid == "303a:1001" and by["/dev/ttyACM0"].esp32s3
    assert by["/dev/ttyACM2"].vid_pid == "303a:0002" and not by["/dev/ttyACM2"].esp32s3  # not USB-Serial-JTAG
    assert by["/dev/ttyUSB0"].vid_pid == "10c4:ea60" and not by["/dev/ttyUSB0"].esp32s3
    assert by["/dev/ttyS0"].vid_pid == "" and by["/dev/ttyS0"].description == ""  # pyserial's "n/a"
    # the marked ones are exactly what --port defaults to
    assert [p.device for p in ports if p.esp32s3] == ports_mod.find_esp32s3_ports()


def test_ports_table(cli, comports):
    comports.extend(FAKE)
    r = cli("ports")
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == {"/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyACM2", "/dev/ttyS0", "/dev/ttyUSB0"}
    assert "303a:1001" in rows["/dev/ttyACM0"] and "native USB" in rows["/dev/ttyACM0"]
    assert "native USB" in rows["/dev/ttyACM1"]
    for dev in ("/dev/ttyACM2", "/dev/ttyS0", "/dev/ttyUSB0"):
        assert "native USB" not in rows[dev]
    assert "10c4:ea60" in rows["/dev/ttyUSB0"] and "CP2102N" in rows["/dev/ttyUSB0"]
    assert r.stderr == ""  # an ESP32-S3 is there: no hint


def test_ports_json(cli, comports):
    comports.extend(FAKE)
    r = cli("ports", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [d["device"] for d in data] == ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyACM2", "/dev/ttyS0", "/dev/ttyUSB0"]
    assert data[0] == {"device": "/dev/ttyACM0", "vid_pid": "303a:1001", "description": "USB JTAG/serial debug unit",
                       "serial_number": "34:85:18:0a:0b:0c", "esp32s3": True}
    assert data[3]["vid_pid"] is None and data[3]["esp32s3"] is False


def test_ports_none_at_all(cli, comports):
    r = cli("ports")
    assert r.exit_code == 0
    assert r.stdout == "" and "no serial ports found" in r.stderr
    r = cli("ports", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_ports_without_an_esp32s3(cli, comports):
    comports.extend(p for p in FAKE if p.vid != 0x303A or p.pid != 0x1001)
    r = cli("ports")
    assert r.exit_code == 0 and "/dev/ttyUSB0" in r.stdout
    assert "no ESP32-S3 native USB port (303a:1001)" in " ".join(r.stderr.split()) and "--port" in r.stderr


def test_missing_port_names_the_ports_command(tmp_path):
    with pytest.raises(errors.DeviceError, match=r"not found .*`gendertool ports`"):
        transport.open_port(str(tmp_path / "ttyACM9"))


def test_ports_help(cli):
    r = cli("ports", "--help")
    assert r.exit_code == 0 and "--json" in r.stdout and "303a:1001" in r.stdout
    root = cli("--help")
    assert "ports" in root.stdout


# --------------------------------------------------------------------------- --port across commands


def _port_param(command: str):
    import typer.main

    from gendertool.cli import app

    cmd = typer.main.get_command(app).commands[command]
    return next(p for p in cmd.params if "--port" in p.opts)


@pytest.mark.parametrize(
    "command, several, envvar",
    [("flash", True, "GENDERTOOL_PORT"), ("monitor", False, "GENDERTOOL_PORT"), ("bench", True, "GENDERTOOL_PORT"),
     ("validate", True, None)],  # validate: --port switches to the board, so never implicitly from the environment
)
def test_port_option_is_the_same_everywhere(command, several, envvar):
    from gendertool.cli.options import PORT_DEFAULT, PORT_KINDS

    p = _port_param(command)
    assert p.opts == ["--port", "-p"] or sorted(p.opts) == ["--port", "-p"]
    assert p.multiple is several and p.envvar == envvar
    assert ("repeat for several boards" in p.help) is several
    if command != "flash":  # flash names serial ports only: a virtual device has no flash
        assert PORT_KINDS in p.help
    if command != "validate":
        assert PORT_DEFAULT in p.help


@pytest.mark.parametrize("command", ["monitor", "flash", "bench"])
def test_several_boards_found_without_port(cli, monkeypatch, command, tmp_path):
    monkeypatch.setattr(ports_mod, "find_esp32s3_ports", lambda: ["/dev/ttyACM0", "/dev/ttyACM1"])
    monkeypatch.chdir(tmp_path)
    if command == "flash":  # a build to flash, so discovery is what fails
        from gendertool.project.manifest import MANIFEST_NAME
        (tmp_path / "build").mkdir()
        (tmp_path / "build" / "a.bin").write_bytes(b"\x01" * 16)
        (tmp_path / "build" / MANIFEST_NAME).write_text(json.dumps(
            {"schema": 1, "chip": "esp32s3", "images": [{"name": "app", "offset": 0x10000, "path": "a.bin"}]}))
    r = cli(command)
    assert r.exit_code == 2, r.output
    text = " ".join(r.stderr.split())
    assert "several ESP32-S3 boards found (/dev/ttyACM0, /dev/ttyACM1)" in text
    assert ("repeat it for several" in text) is (command != "monitor")


def test_validate_same_port_twice(cli, tmp_path):
    r = cli("validate", "--images", tmp_path, "--port", "sim", "--port", "sim")
    assert r.exit_code == 2 and "given twice" in r.output
