"""Byte transport to a device: a serial port, ``socket://host:port``, or ``sim``.

``sim`` starts the virtual device (gendertool.device.sim) in this process, serving on an
ephemeral loopback TCP port, and connects to it through pyserial's ``socket://`` handler, so
every port kind goes through the same code. Opening errors become one clear DeviceError;
a port that vanishes while open raises :class:`PortVanished` (the XIAO's USB-Serial-JTAG
port disappears on every reset), and :meth:`Transport.reconnect` waits for it to return.
"""

from __future__ import annotations

import errno
import io
import os
import select
import threading
import time
from typing import Any, Callable, Sequence

from gendertool.device.sim import SimDevice, SimServer
from gendertool.errors import DeviceError

ESP32S3_USB_VID_PID = (0x303A, 0x1001)
SIM_PORT = "sim"
DEFAULT_BAUDRATE = 115200
READ_CHUNK = 65536
WRITE_CHUNK = 16384  # ~1.4 s at 115200 baud, well inside the 5 s write timeout


class PortVanished(DeviceError):
    """The open port stopped working (unplugged, device reset, socket closed)."""


def _open_error(port: str, exc: BaseException) -> DeviceError:
    """Translate an opening failure into one actionable message."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if port.startswith("socket://"):
        if isinstance(exc, ConnectionRefusedError) or "refused" in text.lower():
            return DeviceError(f"cannot connect to {port}: connection refused (is `gendertool sim --listen` running there?)")
        return DeviceError(f"cannot connect to {port}: {text}")
    if code == errno.EACCES or "Permission denied" in text:
        return DeviceError(
            f"permission denied on {port}: add your user to the 'dialout' group "
            f"(Arch/Fedora: 'uucp'), e.g. `sudo usermod -aG dialout $USER`, then log in again"
        )
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text or "busy" in text.lower():
        return DeviceError(f"port {port} is busy (another program has it open, e.g. another monitor)")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return DeviceError(f"port {port} not found (is the board plugged in? `gendertool ports` lists the serial ports)")
    return DeviceError(f"cannot open {port}: {text}")


class Transport:
    """An open byte stream to a device, with timeouts and reconnection."""

    def __init__(
        self, port: str, opener: Callable[[], Any], *, owner: Any = None, reconnectable: bool = True, timeout: float | None = 0.5
    ) -> None:
        self.port = port
        self.timeout = timeout  # read()'s default wait
        self._opener = opener
        self._owner = owner  # the in-process virtual device server, for "sim"
        self.reconnectable = reconnectable
        self._ser = None
        self._ser = self._open()

    @property
    def owner(self) -> Any:
        return self._owner

    def _open(self):
        ser = self._opener()
        ser.timeout = 0  # reads never block: select() below does the waiting
        ser.write_timeout = 5
        return ser

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def fileno(self) -> int:
        if self._ser is None:
            raise PortVanished(f"{self.port} is closed")
        return self._ser.fileno()

    def read(self, timeout: float | None | object = ...) -> bytes:
        """Bytes available within ``timeout`` seconds (b"" if none; default: the port's
        ``timeout``; None waits forever); PortVanished if the port died."""
        import serial

        if timeout is ...:
            timeout = self.timeout
        if self._ser is None:
            raise PortVanished(f"{self.port} is not open")
        try:
            fd = self._fileno()
            if fd is None:  # Windows serial ports: no select(), let pyserial wait
                return self._read_blocking(timeout)
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return b""
            data = self._ser.read(READ_CHUNK)
        except (serial.SerialException, OSError, ValueError, TypeError) as exc:
            self._drop()
            raise PortVanished(f"{self.port} disconnected ({exc})") from None
        if not data:
            # readable but empty: EOF on a socket, device gone on a tty
            self._drop()
            raise PortVanished(f"{self.port} disconnected")
        return data

    read_some = read

    def _fileno(self) -> int | None:
        try:
            return self._ser.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None

    def _read_blocking(self, timeout: float | None) -> bytes:
        ser = self._ser
        ser.timeout = timeout
        try:
            first = ser.read(1)
            return first + ser.read(ser.in_waiting) if first and ser.in_waiting else first
        finally:
            ser.timeout = 0

    def write(self, data: bytes) -> None:
        import serial

        if self._ser is None:
            raise PortVanished(f"{self.port} is not open")
        try:
            # in pieces, so write_timeout bounds a stall, not a large upload at UART speed
            view = memoryview(data)
            for k in range(0, len(view), WRITE_CHUNK):
                self._ser.write(view[k : k + WRITE_CHUNK])
            self._ser.flush()
        except serial.SerialTimeoutException:
            raise DeviceError(f"writing to {self.port} timed out (the device stopped reading)") from None
        except (serial.SerialException, OSError) as exc:
            self._drop()
            raise PortVanished(f"{self.port} disconnected while writing ({exc})") from None

    def _drop(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except OSError:  # a vanished port may fail to close (SerialException is an OSError)
                pass

    def reconnect(self, timeout: float = 10.0, *, poll: float = 0.2, on_wait: Callable[[str], None] | None = None) -> None:
        """Wait until the port can be opened again (as esp-idf-monitor does), up to ``timeout`` s."""
        self._drop()
        if not self.reconnectable:
            raise DeviceError(f"{self.port} disconnected")
        deadline = time.monotonic() + timeout
        last: DeviceError | None = None
        said = False
        while True:
            try:
                self._ser = self._open()
                return
            except DeviceError as exc:
                last = exc
            if on_wait is not None and not said:
                on_wait(f"waiting for {self.port} to come back (up to {timeout:.0f} s)")
                said = True
            if time.monotonic() >= deadline:
                raise DeviceError(f"{self.port} did not come back within {timeout:.0f} s ({last})")
            time.sleep(poll)

    def close(self) -> None:
        self._drop()
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Transport({self.port!r}, open={self.is_open})"


def _serial_opener(port: str, baudrate: int, exclusive: bool) -> Callable[[], Any]:
    def open_() -> Any:
        import serial

        try:
            if port.startswith("socket://"):
                ser = serial.serial_for_url(port, baudrate=baudrate, do_not_open=True)
            else:
                ser = serial.serial_for_url(port, baudrate=baudrate, do_not_open=True, exclusive=exclusive)
                # Opening must not reset the chip (same as esp-idf-monitor).
                ser.dtr = False
                ser.rts = False
            ser.open()
            return ser
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _open_error(port, exc) from None

    return open_


def check_socket_url(port: str) -> None:
    """A ``socket://`` port names a host and a port number (DeviceError otherwise: pyserial would
    fail with a comparison of int and None)."""
    if not port.startswith("socket://"):
        return
    from urllib.parse import urlsplit

    url = urlsplit(port)
    try:
        number = url.port
    except ValueError:  # not a number, or outside 0..65535
        number = None
    if not url.hostname or not number:
        raise DeviceError(f"{port} is not a socket port: write socket://HOST:PORT with a port number from 1 to 65535, "
                          "e.g. socket://127.0.0.1:7420 (what `gendertool sim --listen` serves on)")


def open_port(
    port: str,
    *,
    baudrate: int = DEFAULT_BAUDRATE,
    timeout: float | None = 0.5,
    exclusive: bool = True,
    sim_options: dict | None = None,
) -> Transport:
    """Open ``port``: a serial device path, ``socket://host:port``, or ``sim``.

    ``timeout`` is the default wait of :meth:`Transport.read`.

    ``sim_options`` are keyword arguments for :class:`gendertool.device.sim.SimDevice`
    (``model``, ``period_ms``, fault injection) when ``port == "sim"``.
    """
    if not port:
        raise DeviceError("no port given")
    if port == SIM_PORT:

        server = SimServer(SimDevice(**(sim_options or {})), "127.0.0.1", 0)
        server.start()
        url = f"socket://127.0.0.1:{server.port}"
        try:
            return Transport(SIM_PORT, _serial_opener(url, baudrate, False), owner=server, timeout=timeout)
        except BaseException:
            server.close()
            raise
    if "://" in port and not port.startswith("socket://"):
        raise DeviceError(f"unsupported port URL {port!r}: use a serial device, socket://HOST:PORT or sim")
    check_socket_url(port)
    return Transport(port, _serial_opener(port, baudrate, exclusive), timeout=timeout)


def check_port_list(ports: Sequence[str]) -> list[str]:
    """The ports of a run on several boards: at least one, none twice (a link counts as its target)."""
    ports = list(ports)
    if not ports:
        raise DeviceError("give at least one --port")
    seen: dict[str, str] = {}
    for port in ports:
        real = os.path.realpath(port)
        if real in seen:
            raise DeviceError(f"the same port is given twice ({seen[real]} and {port})")
        seen[real] = port
    return ports


def run_parallel(ports: Sequence[str], work: Callable[[str], None], *, stop: threading.Event | None = None,
                 grace_s: float = 5.0) -> None:
    """Run ``work(port)`` for every port, one thread per board; re-raise a bug from any thread.

    Ctrl-C reaches the main thread only: with ``stop`` given, it is set so the workers can save
    what they hold, they get ``grace_s`` to finish, then KeyboardInterrupt goes on.
    """
    if len(ports) == 1:
        work(ports[0])
        return
    errors: list[BaseException] = []

    def guarded(port: str) -> None:
        try:
            work(port)
        except BaseException as exc:  # a bug: surfaced in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(p,), name=f"board-{p}", daemon=True) for p in ports]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        if stop is not None:
            stop.set()
            deadline = time.monotonic() + grace_s
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
        raise
    if errors:
        raise errors[0]
