"""Issue 20.4: wrong or broken messages.

Commands named in messages and docs exist; a port that streams bytes without a line end is
not "silent"; garbled records late in a session are not blamed on a boot banner seen before
twenty good results; a silent server is described once ("it sent nothing"); a socket URL
without a port number is one clear line; nan and inf are refused by every number option.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from gendertool import protocol as p
from test_monitor import HELLO, ScriptedDevice, _result

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- commands named


def _command_tree():
    import typer.main

    from gendertool.cli import app

    return typer.main.get_command(app)


def _named_commands() -> list[tuple[str, str]]:
    """Every `gendertool WORD [WORD]` in backticks in the docs, the README and the package."""
    found = []
    files = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md", *sorted((REPO / "host").rglob("*.py"))]
    for path in files:
        for m in re.finditer(r"`gendertool ([a-z][a-z-]*)((?: [a-z][a-z-]*)?)", path.read_text(encoding="utf-8")):
            found.append((f"{path.relative_to(REPO)}", f"{m.group(1)}{m.group(2)}"))
    return found


def test_every_command_a_message_or_a_doc_names_exists():
    root = _command_tree()
    wrong = []
    for where, words in _named_commands():
        first, *rest = words.split()
        cmd = root.commands.get(first) if hasattr(root, "commands") else None
        if cmd is None:
            wrong.append(f"{where}: gendertool {words}")
            continue
        if rest:
            sub = rest[0]
            if hasattr(cmd, "commands"):  # a group: the next word is a sub-command
                if sub not in cmd.commands:
                    wrong.append(f"{where}: gendertool {words}")
            elif not any(param.param_type_name == "argument" for param in cmd.params):
                wrong.append(f"{where}: gendertool {words} ({first} takes no argument)")
    assert wrong == []  # it named `gendertool sim serve`


def test_the_scan_finds_what_it_looks_for():
    named = {w for _, w in _named_commands()}
    assert {"flash", "sim", "build"} <= {w.split()[0] for w in named}


# --------------------------------------------------------------------------- what a port sent


@pytest.fixture
def device():
    made = []

    def make(script, greet: bool = True) -> ScriptedDevice:
        def after_info(conn, n):
            if greet:
                dev.wait_for(b"info\n", n + 1)
            script(conn, n)

        dev = ScriptedDevice(after_info)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


def _until_closed(conn, block: bytes, pause: float, limit_s: float = 30) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        conn.sendall(block)
        time.sleep(pause)


def test_bytes_without_a_line_end_are_data_not_silence(cli, device):
    dev = device(lambda conn, n: _until_closed(conn, b"x" * 200, 0.01), greet=False)
    r = cli("monitor", "--port", dev.url, "-t", "1", "--no-record-timeout", "2")
    assert r.exit_code == 2
    msg = " ".join(r.stderr.split())
    assert "no data from" not in msg  # it said `no data ... for 1 s` while bytes kept coming
    assert "is not speaking the gendertool protocol: no valid record in 2 s" in msg
    assert "bytes and no complete line" in msg and "lines longer than 2048 bytes dropped" in msg


ROM = (b"ESP-ROM:esp32s3-20210327\r\nrst:0x1 (POWERON),boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n")


def _garbled(rec) -> bytes:
    line = p.encode_record(rec)
    return line[:-9] + b"00000000\n"  # the right frame, a wrong CRC


def test_garbled_records_late_in_a_session_do_not_blame_the_boot_banner(cli, device):
    def script(conn, n):
        conn.sendall(ROM + p.encode_record(HELLO))
        for seq in range(20):
            conn.sendall(p.encode_record(_result(seq)))
        seq = 20
        end = time.monotonic() + 30
        while time.monotonic() < end:
            conn.sendall(_garbled(_result(seq)))
            seq += 1
            time.sleep(0.02)

    dev = device(script)
    r = cli("monitor", "--port", dev.url, "--no-record-timeout", "1")
    assert r.exit_code == 2
    msg = " ".join(r.stderr.split())
    assert "answered as a gendertool device but sent no record for 1 s" in msg
    assert "ROM bootloader" not in msg and "flash it" not in msg
    assert "meanwhile it sent only damaged records (" in msg and "with a bad checksum or frame" in msg


def test_a_silent_server_is_said_once(cli, device):
    dev = device(lambda conn, n: time.sleep(10), greet=False)
    r = cli("monitor", "--port", dev.url, "-t", "20", "--no-record-timeout", "1")
    assert r.exit_code == 2
    msg = " ".join(r.stderr.split())
    assert "it sent nothing" in msg and "it sent it sent" not in msg


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("url", ["socket://127.0.0.1", "socket://127.0.0.1:", "socket://127.0.0.1:http",
                                 "socket://127.0.0.1:70000", "socket://:7420"])
def test_a_socket_url_needs_a_host_and_a_port_number(cli, url):
    r = cli("monitor", "--port", url, "-n", "1")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"{url} is not a socket port: write socket://HOST:PORT" in " ".join(r.stderr.split())
    assert "NoneType" not in r.stderr


@pytest.mark.parametrize(
    "args, option",
    [
        (["monitor", "--port", "sim", "-n", "1", "-t", "nan"], "'--timeout' / '-t'"),
        (["monitor", "--port", "sim", "-n", "1", "--no-record-timeout", "nan"], "'--no-record-timeout'"),
        (["monitor", "--port", "sim", "-n", "1", "--timeout", "inf"], "'--timeout' / '-t'"),
        (["monitor", "--port", "sim", "--no-record-timeout", "-inf"], "'--no-record-timeout'"),
        (["validate", "--images", ".", "--port", "sim", "--min-parity", "nan"], "'--min-parity'"),
    ],
)
def test_number_options_refuse_nan_and_inf(cli, args, option):
    r = cli(*args)
    assert r.exit_code == 2
    assert f"Invalid value for {option}" in r.stderr and "is not a finite number" in r.stderr


def test_monitor_refuses_nan_from_python_too():
    from gendertool.device.monitor import check_options
    from gendertool.errors import GendertoolError

    with pytest.raises(GendertoolError, match="--timeout must be positive and finite"):
        check_options(timeout=float("nan"))
    with pytest.raises(GendertoolError, match="--no-record-timeout must be positive and finite"):
        check_options(no_record_timeout=float("inf"))
