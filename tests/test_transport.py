"""gendertool.device.transport: every opening failure is one clear DeviceError; vanish + reconnect."""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from types import SimpleNamespace

import pytest
import serial

from gendertool.errors import DeviceError
from gendertool.device.transport import PortVanished, Transport, open_port
from gendertool.device.ports import find_esp32s3_ports

from conftest import closed_port_url


@pytest.fixture
def pty_port():
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_missing_port(tmp_path):
    with pytest.raises(DeviceError, match=r"port .*ttyNOPE not found \(is the board plugged in"):
        open_port(str(tmp_path / "ttyNOPE"))


def test_second_open_of_the_same_port_is_busy(pty_port):
    master, path = pty_port
    first = open_port(path)
    try:
        with pytest.raises(DeviceError, match=rf"port {path} is busy \(another program has it open"):
            open_port(path)
    finally:
        first.close()
    open_port(path).close()  # free again once closed


def test_reads_and_writes_a_tty(pty_port):
    master, path = pty_port
    with open_port(path) as t:
        os.write(master, b"@GT hi\n")
        assert t.read(2.0) == b"@GT hi\n"
        assert t.read(0.05) == b""
        t.write(b"ping\n")
        assert os.read(master, 100) == b"ping\n"


def test_port_vanishing_while_open_raises_port_vanished(pty_port):
    master, path = pty_port
    t = open_port(path)
    os.close(master)  # the USB device goes away
    with pytest.raises(PortVanished, match=rf"{path} disconnected"):
        for _ in range(5):
            t.read(0.5)
    assert not t.is_open
    t.close()


def test_permission_denied_hints_the_dialout_group(monkeypatch):
    class Denied:
        dtr = rts = False

        def open(self):
            raise serial.SerialException(errno.EACCES, "could not open port /dev/ttyACM0: [Errno 13] Permission denied")

    monkeypatch.setattr(serial, "serial_for_url", lambda *a, **k: Denied())
    with pytest.raises(DeviceError, match=r"permission denied on /dev/ttyACM0: add your user to the 'dialout' group"):
        open_port("/dev/ttyACM0")


def test_exclusive_and_no_reset_lines_requested(monkeypatch):
    seen = {}

    class Fake:
        def __init__(self, url, **kw):
            seen.update(kw, url=url)

        def open(self):
            seen["dtr_at_open"], seen["rts_at_open"] = self.dtr, self.rts
            raise serial.SerialException(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(serial, "serial_for_url", Fake)
    with pytest.raises(DeviceError, match="not found"):
        open_port("/dev/ttyACM7", baudrate=921600)
    assert seen["exclusive"] is True and seen["baudrate"] == 921600 and seen["do_not_open"] is True
    assert seen["dtr_at_open"] is False and seen["rts_at_open"] is False


def test_socket_refused_is_clear():
    url = closed_port_url()
    with pytest.raises(DeviceError, match=rf"cannot connect to {re.escape(url)}: connection refused"):
        open_port(url)


def test_unsupported_url_and_empty_port():
    with pytest.raises(DeviceError, match="unsupported port URL 'rfc2217://x:1'"):
        open_port("rfc2217://x:1")
    with pytest.raises(DeviceError, match="no port given"):
        open_port("")


def test_socket_peer_close_is_a_vanish_and_reconnect_waits_then_gives_up():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    url = f"socket://127.0.0.1:{srv.getsockname()[1]}"
    t = open_port(url)
    conn, _ = srv.accept()
    conn.sendall(b"last words\n")
    conn.close()
    assert t.read(2.0) == b"last words\n"  # data before the close is delivered
    with pytest.raises(PortVanished):
        t.read(2.0)
    t.reconnect(2.0)  # the listener is still there: back at once
    assert t.is_open
    conn, _ = srv.accept()
    conn.close()
    srv.close()
    waits = []
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=rf"{url} did not come back within 1 s \(cannot connect"):
        t.reconnect(0.8, on_wait=waits.append)
    assert time.monotonic() - t0 >= 0.7
    assert waits == [f"waiting for {url} to come back (up to 1 s)"]
    t.close()


def test_find_esp32s3_ports_filters_by_vid_pid(monkeypatch):
    from serial.tools import list_ports

    fake = [
        SimpleNamespace(device="/dev/ttyACM1", vid=0x303A, pid=0x1001),
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60),  # CP210x bridge
        SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001),
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None),
        SimpleNamespace(device="/dev/ttyACM2", vid=0x303A, pid=0x0002),  # S2/S3 TinyUSB CDC, not JTAG
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: fake)
    assert find_esp32s3_ports() == ["/dev/ttyACM0", "/dev/ttyACM1"]


def test_transport_not_reconnectable_says_so():
    class Once:
        def __init__(self):
            self.timeout = self.write_timeout = None

        def close(self):
            pass

    t = Transport("x", Once, reconnectable=False)
    with pytest.raises(DeviceError, match="^x disconnected$"):
        t.reconnect(1)


def test_ports_without_fileno_are_read_through_pyserial_timeouts():
    class NoFd:  # like pyserial's Win32 Serial
        def __init__(self):
            self.timeout = self.write_timeout = None
            self.buf = bytearray(b"abc")
            self.timeouts = []

        def fileno(self):
            raise AttributeError("fileno")

        @property
        def in_waiting(self):
            return len(self.buf)

        def read(self, n):
            self.timeouts.append(self.timeout)
            out, self.buf[:] = bytes(self.buf[:n]), self.buf[n:]
            return out

        def close(self):
            pass

    fake = NoFd()
    t = Transport("COM3", lambda: fake)
    assert t.read(0.25) == b"abc"
    assert fake.timeouts[0] == 0.25 and fake.timeout == 0
    assert t.read(0.01) == b""
