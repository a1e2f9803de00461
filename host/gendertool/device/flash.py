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

from gendertool.device.esptool_log import AFTER_CHOICES, BEFORE_CHOICES, FlashReporter, esptool_logger
from gendertool.device.ports import is_usb_jtag, resolve_port
from gendertool.device.transport import check_port_list, check_socket_url, run_parallel
from gendertool.errors import BuildError, DeviceError, GendertoolError
from gendertool.project.images import image_problems
from gendertool.project.manifest import REQUIRED_CHIP, FlashImage, FlashPlan

DEFAULT_BAUD = 460800


# esptool reset modes: the native USB-Serial-JTAG port of the XIAO is reset through USB
# (no EN/IO0 wires); esptool's hard reset drives the same USB control lines afterwards.
CONNECT_MODE_USB = "usb-reset"
CONNECT_MODE_UART = "default-reset"
AFTER_MODE = "hard-reset"
FORCE_HINT = "pass --force to write anyway (esptool's --force: its safety and content checks are skipped too)"

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
    verified: bool = True  # the second read-back of every region ran (esptool's per-image MD5 always does)
    forced: bool = False  # --force overrode a refusal (the warnings said which)

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


def check_reset_modes(before: str, after: str) -> None:
    if before not in BEFORE_CHOICES:
        raise DeviceError(f"--before must be one of {', '.join(BEFORE_CHOICES)}, not {before!r}")
    if after not in AFTER_CHOICES:
        raise DeviceError(f"--after must be one of {', '.join(AFTER_CHOICES)}, not {after!r}")


def check_images(plan: FlashPlan, *, force: bool = False, reporter: FlashReporter | None = None) -> bool:
    """Refuse a plan whose bootloader, app or partition table is not one (esptool's image reader),
    before any port is opened; with ``force`` say so and go on (True: a refusal was overridden)."""
    problems = image_problems(plan.images)
    if not problems:
        return False
    if force:
        for problem in problems:
            (reporter or FlashReporter()).warning(f"--force: writing it anyway: {problem}")
        return True
    raise BuildError(
        f"refusing to flash: {'; '.join(problems)}; rebuild with `gendertool build`, or {FORCE_HINT}"
    )


def _flash_bytes(size: str) -> int | None:
    from esptool.util import flash_size_bytes

    if size in ("keep", "detect", ""):
        return None
    try:
        return flash_size_bytes(size)
    except Exception:  # noqa: BLE001 - esptool raises FatalError or ValueError for an unknown size
        return None


def check_flash_size(plan: FlashPlan, detected: str | None, port: str, *, force: bool, reporter: FlashReporter) -> bool:
    """The flash size the chip reports (esptool's detect_flash_size) against the manifest's and
    the images' ends: refuse a build that does not fit, unless ``force``."""
    have = _flash_bytes(detected) if detected else None
    problem = None
    if have is None:
        want = f"the {plan.flash_size} build fits" if plan.flash_size not in ("keep", "detect") else "the images fit"
        problem = (f"the flash chip on {port} reports a size esptool does not know, "
                   f"so gendertool cannot check that {want}")  # fmt: skip
    else:
        want = _flash_bytes(plan.flash_size)
        end = max((img.offset + img.size for img in plan.images), default=0)
        if want is not None and want > have:
            problem = (f"the build is for {plan.flash_size} of flash ({plan.manifest_path.name}) but the chip on "
                       f"{port} reports {detected}; build for this board's flash")  # fmt: skip
        elif end > have:
            last = max(plan.images, key=lambda img: img.offset + img.size)
            problem = (f"{last.name} ends at {end:#x}, beyond the {detected} of flash the chip on {port} reports")
    if problem is None:
        return False
    if force:
        reporter.warning(f"--force: writing anyway: {problem}")
        return True
    raise DeviceError(f"refusing to flash: {problem}; {FORCE_HINT}")


def flash(
    plan: FlashPlan,
    port: str | None = None,
    *,
    baud: int = DEFAULT_BAUD,
    reporter: FlashReporter | None = None,
    port_finder: Callable[[], Sequence[str]] | None = None,
    force: bool = False,
    verify: bool = True,
    before: str = "auto",
    after: str = AFTER_MODE,
) -> FlashResult:
    """Detect an ESP32-S3 on ``port``, write ``plan``'s images with verification, reset it.

    ``before``/``after``: esptool's reset choices (``auto``: the USB or UART sequence by port);
    ``verify=False`` skips the second read-back of every region (esptool still checks each
    image's MD5 right after writing it); ``force``: write what the checks refuse (esptool's force).
    """
    import serial
    from esptool import cmds
    from esptool.util import FatalError, NotImplementedInROMError

    reporter = reporter or FlashReporter()
    forced = check_images(plan, force=force, reporter=reporter)
    port = resolve_port(port, port_finder)
    check_flashable(port, baud)
    check_reset_modes(before, after)

    connect_mode = _connect_mode(port, before)
    t0 = time.monotonic()
    stage = "connecting"
    reporter.stage(stage)
    with esptool_logger(reporter, plan.images) as bridge:
        esp = _detect_chip(port, connect_mode)
        try:
            chip, description = _require_s3(esp, port, "flash")
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
            stage = "reading the flash size"
            reporter.stage(stage)
            forced = check_flash_size(plan, cmds.detect_flash_size(esp), port, force=force, reporter=reporter) or forced
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
                force=force,
            )
            # esptool checks an MD5 per image after writing; verify_flash re-reads the digest
            # of every region so a silently skipped check cannot pass as verified.
            if verify:
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
            cmds.reset_chip(esp, after)
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
        reset_mode=after,
        log=messages,
        verified=verify,
        forced=forced,
    )



def _connect_mode(port: str, before: str) -> str:
    """esptool's reset before connecting: ``before``, or by port for ``auto`` (USB or UART)."""
    return before if before != "auto" else (CONNECT_MODE_USB if is_usb_jtag(port) else CONNECT_MODE_UART)


def _detect_chip(port: str, connect_mode: str):
    """Connect to the ROM loader on ``port``; a failure is one DeviceError naming the port."""
    import serial
    from esptool import cmds
    from esptool.util import FatalError

    try:
        return cmds.detect_chip(port, connect_mode=connect_mode)
    except (FatalError, serial.SerialException, OSError) as exc:
        raise _explain(exc, port, "connecting") from None


def _require_s3(esp, port: str, what: str) -> tuple[str, str]:
    """The chip's name and description; a DeviceError when it is not an ESP32-S3."""
    import serial
    from esptool.util import FatalError

    chip = str(getattr(esp, "CHIP_NAME", "unknown"))
    try:
        description = esp.get_chip_description()
    except (FatalError, serial.SerialException, OSError):  # the description is informational only
        description = chip
    if chip != REQUIRED_CHIP:
        raise DeviceError(
            f"{port} has an {description} ({chip}), not an {REQUIRED_CHIP}; "
            f"gendertool firmware only runs on the ESP32-S3: refusing to {what}"
        )
    return chip, description


@dataclass
class EraseResult:
    port: str
    description: str
    mac: str
    seconds: float
    reset_mode: str


def erase(
    port: str | None = None,
    *,
    before: str = "auto",
    after: str = AFTER_MODE,
    force: bool = False,
    reporter: FlashReporter | None = None,
    port_finder: Callable[[], Sequence[str]] | None = None,
) -> EraseResult:
    """Erase the whole flash of the ESP32-S3 on ``port`` with esptool's erase_flash (through the
    flasher stub, as esptool's erase-flash does); ``force`` is esptool's (its security checks)."""
    import serial
    from esptool import cmds
    from esptool.util import FatalError

    reporter = reporter or FlashReporter()
    port = resolve_port(port, port_finder)
    if port == "sim":
        raise DeviceError("cannot erase sim: the virtual device has no flash; erase a real board's serial port")
    check_reset_modes(before, after)
    connect_mode = _connect_mode(port, before)
    t0 = time.monotonic()
    stage = "connecting"
    reporter.stage(stage)
    with esptool_logger(reporter, ()):
        esp = _detect_chip(port, connect_mode)
        try:
            _, description = _require_s3(esp, port, "erase it")
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            stage = "loading the flasher stub"
            reporter.stage(stage)
            esp = cmds.run_stub(esp)
            stage = "erasing"
            reporter.stage(stage)
            cmds.erase_flash(esp, force=force)
            stage = "resetting"
            reporter.stage(stage)
            cmds.reset_chip(esp, after)
        except DeviceError:
            raise
        except (FatalError, serial.SerialException, OSError) as exc:
            raise _explain(exc, port, stage) from None
        finally:
            try:
                esp._port.close()
            except OSError:
                pass
    return EraseResult(port, description, mac, time.monotonic() - t0, after)


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
    **options,
) -> list[BoardFlash]:
    """Flash ``plan`` onto every board in ``ports`` at once (one thread each), in the order given.

    A board that fails does not stop the others: its :class:`BoardFlash` carries the message.
    Ports that can never be flashed (virtual devices, a port twice) are refused before any
    board is touched. An unexpected exception (a bug) is re-raised once every board is done.
    """

    check_images(plan, force=options.get("force", False))
    check_reset_modes(options.get("before", "auto"), options.get("after", AFTER_MODE))
    ports = check_port_list(ports)
    for port in ports:
        check_flashable(port, baud)

    outcomes = {port: BoardFlash(port) for port in ports}

    def run(port: str) -> None:
        outcome = outcomes[port]
        reporter = reporter_for(port) if reporter_for is not None else FlashReporter()
        t0 = time.monotonic()
        try:
            outcome.result = flash(plan, port, baud=baud, reporter=reporter, **options)
        except GendertoolError as exc:
            outcome.error = str(exc)
        finally:
            outcome.seconds = time.monotonic() - t0

    run_parallel(ports, run)
    return [outcomes[p] for p in ports]
