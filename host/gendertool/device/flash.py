"""Flash a gendertool build onto an ESP32-S3 through esptool's v5 Python API.

The build manifest (``gendertool-build.json``, written by the build step) says which
images go where and with which flash settings; nothing about offsets is hard-coded here.
esptool is imported lazily (it is slow to import) and every esptool/pyserial failure is
turned into one :class:`~gendertool.errors.DeviceError` / :class:`BuildError` message.
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gendertool.device.esptool_log import FlashReporter, esptool_logger
from gendertool.device.ports import is_usb_jtag, resolve_port
from gendertool.device.transport import check_port_list, check_socket_url, run_parallel
from gendertool.errors import DeviceError, GendertoolError
from gendertool.project.manifest import REQUIRED_CHIP, FlashImage, FlashPlan

DEFAULT_BAUD = 460800


# esptool reset modes: the native USB-Serial-JTAG port of the XIAO is reset through USB
# (no EN/IO0 wires); esptool's hard reset drives the same USB control lines afterwards.
CONNECT_MODE_USB = "usb-reset"
CONNECT_MODE_UART = "default-reset"
AFTER_MODE = "hard-reset"

PERMISSION_HINT = (
    "add your user to the serial group and log in again: "
    "`sudo usermod -aG dialout $USER` (Arch/Manjaro: `uucp`)"
)


# --------------------------------------------------------------------------- error mapping


def _explain(exc: BaseException, port: str, stage: str, board: str | None = None) -> DeviceError:
    """One clear message for an esptool / pyserial failure at ``stage``; ``board``: what the
    flash holds when the failure came while writing (board_state)."""
    text = str(exc)
    low = text.lower()
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    codes = {int(n) for n in re.findall(r"errno (\d+)", low)}  # "errno 11" must not match 111
    if errno.ECONNREFUSED in codes or "connection refused" in low:
        return DeviceError(f"nothing answers at {port} (connection refused): is the serial bridge or loader running there?")
    if isinstance(exc, PermissionError) or "permission denied" in low or getattr(exc, "errno", None) == errno.EACCES:
        return DeviceError(f"permission denied opening {port}; {PERMISSION_HINT}")
    busy = (
        "could not exclusively lock" in low
        or "resource busy" in low
        or "resource temporarily unavailable" in low
        or errno.EBUSY in codes
        or errno.EAGAIN in codes
        or "access is denied" in low
        or getattr(exc, "errno", None) in (errno.EBUSY, errno.EAGAIN)
    )
    if busy:
        return DeviceError(
            f"{port} is busy: another program has it open (a `gendertool monitor`, idf.py monitor, "
            "screen, a browser tab...); close it and try again"
        )
    missing = (
        errno.ENOENT in codes
        or "no such file" in low
        or "filenotfounderror" in low
        or getattr(exc, "errno", None) == errno.ENOENT
    )
    if missing and stage == "connecting":
        return DeviceError(f"{port} does not exist (unplugged, or a different name?); check the cable and --port")
    vanished = (
        missing
        or "device disconnected" in low
        or "socket disconnected" in low
        or "connection reset" in low
        or "broken pipe" in low
        or "device reports readiness to read but returned no data" in low
        or "input/output error" in low
        or errno.EIO in codes
        or errno.ENXIO in codes
        or errno.ENODEV in codes
        or getattr(exc, "errno", None) in (errno.EIO, errno.ENXIO, errno.ENODEV, errno.ECONNRESET, errno.EPIPE)
    )
    if vanished and board:
        return DeviceError(
            f"the link to {port} dropped while {stage} ({first_line}); on the board: {board}. "
            "It holds an incomplete firmware and will not boot it: reconnect it (hold BOOT while plugging "
            "it in if it does not enter download mode) and run `gendertool flash` again, which rewrites every image"
        )
    if vanished:
        return DeviceError(
            f"{port} vanished while {stage} (unplugged or reset?); the flash may be incomplete: "
            "reconnect the board and run `gendertool flash` again"
        )
    if "md5 of file does not match" in low or "verification failed" in low or "written flash region is empty" in low:
        where = f"; on the board: {board}" if board else ""
        return DeviceError(f"verification failed on {port}: the flash does not hold what was written ({text.splitlines()[0]}){where}; try again with a lower --baud or another cable")
    if port.startswith("socket://") and stage == "connecting" and ("failed to connect" in low or "no serial data received" in low):
        return DeviceError(
            f"no ESP ROM loader answered on {port} ({first_line}); a socket:// port must lead to a board's "
            "serial loader (a `gendertool sim` virtual device has no flash)"
        )
    if "failed to connect" in low or "no serial data received" in low or "wrong boot mode" in low or "timed out" in low:
        return DeviceError(
            f"no ESP chip answered on {port} ({text.splitlines()[0].strip()}); "
            "hold BOOT while plugging the board in to force download mode, then try again"
        )
    if "unexpected chip" in low or "failed to autodetect" in low:
        return DeviceError(f"the chip on {port} is not one esptool knows ({text.splitlines()[0].strip()}); gendertool needs an {REQUIRED_CHIP}")
    where = f"; on the board: {board}; run `gendertool flash` again" if board else ""
    return DeviceError(f"esptool failed while {stage} on {port}: {first_line}{where}")


# --------------------------------------------------------------------------- flashing


@dataclass
class FlashResult:
    port: str
    chip: str
    description: str
    features: list[str]
    mac: str
    images: tuple[FlashImage, ...]
    bytes_written: int
    write_seconds: float
    total_seconds: float
    connect_mode: str
    reset_mode: str
    log: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Image bytes per second over the write + verify phase."""
        return self.bytes_written / self.write_seconds if self.write_seconds > 0 else 0.0


def check_flashable(port: str, baud: int) -> None:
    """Refuse what cannot be flashed before touching any port. socket:// is esptool's too (a
    remote serial bridge, the tests' emulated ROM loader); a `gendertool sim` there does not
    answer the ROM's sync, which _explain names."""
    if port == "sim":
        raise DeviceError(f"cannot flash {port}: the virtual device has no flash; flash a real board's serial port")
    check_socket_url(port)
    if baud <= 0:
        raise DeviceError(f"--baud must be positive, got {baud}")


def flash(
    plan: FlashPlan,
    port: str | None = None,
    *,
    baud: int = DEFAULT_BAUD,
    reporter: FlashReporter | None = None,
    port_finder: Callable[[], Sequence[str]] | None = None,
) -> FlashResult:
    """Detect an ESP32-S3 on ``port``, write ``plan``'s images with verification, reset it."""
    import serial
    from esptool import cmds
    from esptool.util import FatalError, NotImplementedInROMError

    reporter = reporter or FlashReporter()
    port = resolve_port(port, port_finder)
    check_flashable(port, baud)

    connect_mode = CONNECT_MODE_USB if is_usb_jtag(port) else CONNECT_MODE_UART
    t0 = time.monotonic()
    stage = "connecting"
    reporter.stage(stage)
    with esptool_logger(reporter, plan.images) as bridge:
        try:
            esp = cmds.detect_chip(port, connect_mode=connect_mode)
        except (FatalError, serial.SerialException, OSError) as exc:
            raise _explain(exc, port, "connecting") from None
        try:
            chip = str(getattr(esp, "CHIP_NAME", "unknown"))
            try:
                description = esp.get_chip_description()
            except (FatalError, serial.SerialException, OSError):  # the description is informational only
                description = chip
            if chip != REQUIRED_CHIP:
                raise DeviceError(
                    f"{port} has an {description} ({chip}), not an {REQUIRED_CHIP}; "
                    "gendertool firmware only runs on the ESP32-S3: refusing to flash"
                )
            features = list(esp.get_chip_features())
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())

            stage = "loading the flasher stub"
            reporter.stage(stage)
            esp = cmds.run_stub(esp)
            if baud > esp.ESP_ROM_BAUD:
                stage = "changing the baud rate"
                reporter.stage(stage)
                try:
                    esp.change_baud(baud)
                except NotImplementedInROMError as exc:  # ROM without baud change: keep going at the ROM rate
                    reporter.warning(f"keeping {esp.ESP_ROM_BAUD} baud: {exc}")
            stage = "attaching the flash"
            reporter.stage(stage)
            cmds.attach_flash(esp)
            stage = "writing"
            reporter.stage(stage)
            t_write = time.monotonic()
            cmds.write_flash(
                esp,
                [(img.offset, str(img.path)) for img in plan.images],
                flash_freq=plan.flash_freq,
                flash_mode=plan.flash_mode,
                flash_size=plan.flash_size,
                compress=True,
            )
            # esptool checks an MD5 per image after writing; verify_flash re-reads the digest
            # of every region so a silently skipped check cannot pass as verified.
            stage = "verifying"
            reporter.stage(stage)
            addr_data = [(img.offset, str(img.path)) for img in plan.images]
            cmds.verify_flash(
                esp,
                addr_data,
                flash_freq=plan.flash_freq,
                flash_mode=plan.flash_mode,
                flash_size=plan.flash_size,
            )
            write_seconds = time.monotonic() - t_write
            stage = "resetting"
            reporter.stage(stage)
            cmds.reset_chip(esp, AFTER_MODE)
        except DeviceError:
            raise
        except (FatalError, serial.SerialException, OSError) as exc:
            board = bridge.board_state() if stage in ("writing", "verifying") else None
            raise _explain(exc, port, stage, board) from None
        finally:
            try:
                esp._port.close()
            except OSError:  # the port may already be gone (reset, unplug); SerialException is one
                pass
        messages = list(bridge.messages)

    return FlashResult(
        port=port,
        chip=chip,
        description=description,
        features=features,
        mac=mac,
        images=plan.images,
        bytes_written=plan.total_bytes,
        write_seconds=write_seconds,
        total_seconds=time.monotonic() - t0,
        connect_mode=connect_mode,
        reset_mode=AFTER_MODE,
        log=messages,
    )



# --------------------------------------------------------------------------- several boards


@dataclass
class BoardFlash:
    """One board's outcome in a parallel flash: the result, or the error that stopped it."""

    port: str
    result: FlashResult | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None


def flash_boards(
    plan: FlashPlan,
    ports: Sequence[str],
    *,
    baud: int = DEFAULT_BAUD,
    reporter_for: Callable[[str], FlashReporter] | None = None,
) -> list[BoardFlash]:
    """Flash ``plan`` onto every board in ``ports`` at once (one thread each), in the order given.

    A board that fails does not stop the others: its :class:`BoardFlash` carries the message.
    Ports that can never be flashed (virtual devices, a port twice) are refused before any
    board is touched. An unexpected exception (a bug) is re-raised once every board is done.
    """

    ports = check_port_list(ports)
    for port in ports:
        check_flashable(port, baud)

    outcomes = {port: BoardFlash(port) for port in ports}

    def run(port: str) -> None:
        outcome = outcomes[port]
        reporter = reporter_for(port) if reporter_for is not None else FlashReporter()
        t0 = time.monotonic()
        try:
            outcome.result = flash(plan, port, baud=baud, reporter=reporter)
        except GendertoolError as exc:
            outcome.error = str(exc)
        finally:
            outcome.seconds = time.monotonic() - t0

    run_parallel(ports, run)
    return [outcomes[p] for p in ports]
