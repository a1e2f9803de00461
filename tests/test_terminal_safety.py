"""Issue 11.2: nothing a device sends reaches the terminal raw, and a port that does not speak
the protocol (noise, other firmware, a ROM bootloader, a flood of log lines) is named and left.

The streams come from a real TCP server (pyserial socket://), through the whole CLI.
"""

from __future__ import annotations

import io
import json
import random
import re
import socket
import threading
import time

import pytest

from gendertool import protocol as p
from gendertool.text import escape_control, has_control, shown_line

# what a terminal acts on: C0 but tab/newline, DEL, C1 (0x9b is CSI), bidi overrides
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x1b[31mred\x9b6n\x00\x08\x0c\r\u202eevil\x7f"


def assert_terminal_safe(text: str) -> None:
    bad = UNSAFE.findall(text)
    assert not bad, f"{len(bad)} control characters reached the terminal, first {bad[:5]!r}"


# --------------------------------------------------------------------------- escaping


def test_every_control_character_is_escaped_and_tab_and_newline_kept():
    everything = "".join(map(chr, range(0xA0))) + "\u061c\u200e\u200f\u202a\u202e\u2066\u2069\u2028\u2029"
    out = escape_control(everything)
    assert_terminal_safe(out)
    assert "\t" in out and "\n" in out and "\\x1b" in out and "\\u009b" in out and "\\u202e" in out
    assert "\n" not in escape_control("a\nb", keep_newlines=False)
    assert escape_control("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert has_control("a\x1bb") and not has_control("a\tb\n")


def test_escaped_json_stays_json():
    line = json.dumps({"label": "\x7f\x9b\u202e"}, ensure_ascii=False)
    assert json.loads(escape_control(line)) == {"label": "\x7f\x9b\u202e"}


def test_shown_line_is_bounded():
    long = "x" * 5000 + "\x1b"
    out = shown_line(long, 400)
    assert out.startswith("x" * 400) and out.endswith("(4604 more characters)") and len(out) < 450
    assert shown_line("a\x1bb", 400) == "a\\x1bb"


@pytest.mark.parametrize("color", [False, True])
def test_the_consoles_escape_text_but_keep_their_own_styling(color):
    from rich.table import Table

    from gendertool.present.console import SafeConsole

    buf = io.StringIO()
    con = SafeConsole(file=buf, force_terminal=color, color_system="standard" if color else None, width=120)
    con.print(f"board {HOSTILE}", style="red")
    t = Table(title=HOSTILE)
    t.add_column(HOSTILE)
    t.add_row(HOSTILE)
    con.print(t)
    out = buf.getvalue()
    if color:
        assert "\x1b[31m" in out  # Rich's own colour codes pass
        out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # ... and are the only escapes
    assert_terminal_safe(out)
    assert "\\x1b]0;pwned" in out and "\\u202eevil" in out


# --------------------------------------------------------------------------- streams over socket://


class Feeder:
    """A TCP 'port' that sends ``chunks()`` to whoever connects, until closed.

    ``after_info``: start once the host asked ``info`` (bytes sent earlier are flushed by
    pyserial's open, as on a real tty, so a record stream must wait for it).
    """

    def __init__(self, chunks, after_info: bool = False) -> None:
        self.after_info = after_info
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, args=(chunks,), daemon=True)
        self.thread.start()

    def _run(self, chunks) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                if self.after_info:
                    got = b""
                    conn.settimeout(5)
                    while b"info\n" not in got:
                        data = conn.recv(256)
                        if not data:
                            return
                        got += data
                    conn.settimeout(None)
                for chunk in chunks():
                    if self.stop.is_set():
                        return
                    conn.sendall(chunk)
                    self.sent += len(chunk)
                while not self.stop.wait(0.05):
                    pass
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def feeder():
    made = []

    def make(chunks, after_info=False):
        f = Feeder(chunks, after_info)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def _forever(block: bytes, pause: float = 0.005):
    def gen():
        while True:
            yield block
            time.sleep(pause)

    return gen


def _noise():
    rng = random.Random(11)
    while True:
        yield bytes(rng.randrange(256) for _ in range(2048))
        time.sleep(0.005)


ROM = (b"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\nrst:0x1 (POWERON),boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n"
       b"invalid header: 0xffffffff\r\n")
DOWNLOAD = (b"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\nrst:0x1 (POWERON),boot:0x0 (DOWNLOAD(USB/UART0))\r\n"
            b"waiting for download\r\n")


@pytest.mark.parametrize(
    "chunks, seen",
    [
        (_noise, "it sent binary noise ("),
        (_forever(b"\x1b[2J\x1b]0;pwned\x07I (12) app: hello \x1b[31mred\x1b[0m \xc2\x9b6n\x00\x00\r\n"),
         "it sent text without records ("),
        (_forever(ROM, 0.2), "ROM bootloader banner (ESP-ROM:esp32s3-20210327)"),
        (_forever(DOWNLOAD, 0.2), "ROM bootloader waiting for download"),
        (_forever(b"I (99) other_fw: " + b"y" * 3000 + b"\r\nI (1) other_fw: tick\r\n", 0.001), "overlong lines dropped"),
    ],
    ids=["noise", "escapes", "rom-banner", "download-mode", "flood"],
)
def test_monitor_names_a_port_that_is_not_speaking_the_protocol(cli, feeder, chunks, seen):
    f = feeder(chunks)
    t0 = time.monotonic()
    r = cli("monitor", "--port", f.url, "--no-record-timeout", "1")
    assert r.exit_code == 2, r.output
    assert time.monotonic() - t0 < 15
    msg = r.stderr.replace("\n", "")
    assert f"{f.url} is not speaking the gendertool protocol: no valid record in 1 s" in msg and seen in msg
    assert "--no-record-timeout" in msg and "Traceback" not in r.output
    assert_terminal_safe(r.stdout)
    assert_terminal_safe(r.stderr)
    assert f.sent > 0
    longest = max(len(line) for line in r.stderr.splitlines())
    assert longest < 2000  # lines are bounded (shown_line), not 3000 'y's


def test_monitor_escapes_log_lines_between_real_results(cli, feeder):
    """A gendertool device whose log lines (and a result label) carry escapes: shown escaped, results kept."""
    from test_monitor import HELLO, _result

    hostile = p.Result(**{**_result(2).__dict__, "label": "male\x1b[8m\x9b"})
    hello = p.Hello(**{**HELLO.__dict__, "board": "xiao\x1b]0;title\x07", "model": "m\u202eodel"})

    def chunks():
        yield p.encode_record(hello)
        for i in range(3):
            yield b"\x1b[0;32mI (1) app: \x1b]0;pwned\x07 frame\x1b[0m\r\n"
            yield p.encode_record(hostile if i == 2 else _result(i))

    f = feeder(chunks, after_info=True)
    r = cli("monitor", "--port", f.url, "--count", "3", "--json", "--timeout", "3")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["seq"] for row in rows] == [0, 1, 2] and rows[2]["label"] == "male\x1b[8m\x9b"  # data intact
    assert_terminal_safe(r.stdout)
    assert_terminal_safe(r.stderr)
    assert "\\x1b]0;pwned\\x07 frame" in r.stderr
    assert "connected: xiao\\x1b]0;title" in r.stderr and "m\\u202eodel" in r.stderr  # record strings too


def test_monitor_gives_up_on_a_device_that_answers_then_only_logs(cli, feeder):
    from test_monitor import HELLO

    def chunks():
        yield p.encode_record(HELLO)
        while True:
            yield b"W (5) app: camera not ready\r\n"
            time.sleep(0.01)

    f = feeder(chunks, after_info=True)
    r = cli("monitor", "--port", f.url, "--no-record-timeout", "1")
    assert r.exit_code == 2
    msg = r.stderr.replace("\n", "")
    assert "answered as a gendertool device but sent no record for 1 s" in msg and "text without records" in msg


def test_no_record_timeout_must_be_positive(cli):
    r = cli("monitor", "--port", "sim", "--no-record-timeout", "0")
    assert r.exit_code == 2 and "--no-record-timeout must be positive" in r.stderr
