"""Flash a gendertool build onto an ESP32-S3 through esptool's v5 Python API.

The build manifest (``gendertool-build.json``, written by the build step) says which
images go where and with which flash settings; nothing about offsets is hard-coded here.
esptool is imported lazily (it is slow to import) and every esptool/pyserial failure is
turned into one :class:`~gendertool.errors.DeviceError` / :class:`BuildError` message.
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gendertool.errors import BuildError, DeviceError, GendertoolError
from gendertool.files import write_json_atomic

MANIFEST_NAME = "gendertool-build.json"
WEB_MANIFEST_NAME = "manifest.json"
REQUIRED_CHIP = "ESP32-S3"
DEFAULT_BAUD = 460800
DEFAULT_BUILD_DIR = Path("build")

# esptool reset modes: the native USB-Serial-JTAG port of the XIAO is reset through USB
# (no EN/IO0 wires); esptool's hard reset drives the same USB control lines afterwards.
CONNECT_MODE_USB = "usb-reset"
CONNECT_MODE_UART = "default-reset"
AFTER_MODE = "hard-reset"

PERMISSION_HINT = (
    "add your user to the serial group and log in again: "
    "`sudo usermod -aG dialout $USER` (Arch/Manjaro: `uucp`)"
)


# --------------------------------------------------------------------------- build manifest


@dataclass(frozen=True)
class FlashImage:
    name: str
    offset: int
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class FlashPlan:
    """What to write: images sorted by offset, flash settings, where they came from."""

    manifest_path: Path
    chip: str
    board: str
    model: dict
    images: tuple[FlashImage, ...]
    flash_mode: str = "keep"
    flash_freq: str = "keep"
    flash_size: str = "keep"
    merged: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(img.size for img in self.images)


def find_build_manifest(build: str | Path | None = None) -> Path:
    """The manifest file for ``build`` (a build folder or the manifest itself)."""
    candidate = Path(build) if build is not None else DEFAULT_BUILD_DIR
    path = candidate if candidate.suffix == ".json" else candidate / MANIFEST_NAME
    if not path.is_file():
        where = f"{candidate}" if build is not None else f"{DEFAULT_BUILD_DIR}/ (the default)"
        raise BuildError(
            f"no build found: {path} does not exist in {where}; "
            "run `gendertool build` first, or pass --build DIR of a finished build"
        )
    return path


def load_build_manifest(build: str | Path | None = None) -> tuple[Path, dict]:
    path = find_build_manifest(build)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"{path} is not a readable build manifest ({exc}); run `gendertool build` again") from None
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise BuildError(
            f"{path} has an unknown manifest schema ({data.get('schema') if isinstance(data, dict) else type(data).__name__}); "
            "this gendertool reads schema 1: rebuild with `gendertool build`"
        )
    return path, data


def _offset(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BuildError(f"{where}: offset {value!r} is not a number")
    try:
        offset = int(value, 0) if isinstance(value, str) else value
    except ValueError:
        raise BuildError(f"{where}: offset {value!r} is not a number") from None
    if offset < 0:
        raise BuildError(f"{where}: negative offset {offset}")
    return offset


def plan_flash(build: str | Path | None = None, *, merged: bool = False) -> FlashPlan:
    """Read the build manifest and check every image it names exists and is not empty.

    ``merged=True`` writes the single merged image instead of the separate ones.
    """
    path, data = load_build_manifest(build)
    base = path.parent
    chip = str(data.get("chip", ""))
    if chip.lower().replace("-", "") != REQUIRED_CHIP.lower().replace("-", ""):
        raise BuildError(f"{path} is a build for {chip or 'an unknown chip'}, not {REQUIRED_CHIP}; rebuild for the XIAO ESP32S3")

    if merged:
        entry = data.get("merged")
        if not isinstance(entry, dict) or "path" not in entry:
            raise BuildError(f"{path} lists no merged image; flash the separate images (omit --merged) or rebuild")
        entries = [{"name": "merged", **entry}]
    else:
        entries = data.get("images")
        if not isinstance(entries, list) or not entries:
            raise BuildError(f"{path} lists no images to flash; run `gendertool build` again")

    images: list[FlashImage] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry or "offset" not in entry:
            raise BuildError(f"{path}: image #{i} needs 'path' and 'offset'")
        name = str(entry.get("name") or Path(entry["path"]).stem)
        img = FlashImage(name, _offset(entry["offset"], f"{path} image {name!r}"), base / entry["path"])
        if not img.path.is_file():
            raise BuildError(f"{name} image {img.path} is missing; the build is incomplete: run `gendertool build` again")
        if img.size == 0:
            raise BuildError(f"{name} image {img.path} is empty; run `gendertool build` again")
        images.append(img)
    images.sort(key=lambda im: im.offset)
    for prev, nxt in zip(images, images[1:]):
        if prev.offset + prev.size > nxt.offset:
            raise BuildError(
                f"{path}: {prev.name} ({prev.offset:#x}, {prev.size} bytes) overlaps {nxt.name} at {nxt.offset:#x}"
            )

    settings = data.get("flash") if isinstance(data.get("flash"), dict) else {}
    return FlashPlan(
        manifest_path=path,
        chip=chip,
        board=str(data.get("board", "")),
        model=data.get("model") if isinstance(data.get("model"), dict) else {},
        images=tuple(images),
        flash_mode=str(settings.get("mode", "keep")),
        flash_freq=str(settings.get("freq", "keep")),
        flash_size=str(settings.get("size", "keep")),
        merged=merged,
    )


# --------------------------------------------------------------------------- ESP Web Tools


def write_web_manifest(build_manifest_path: str | Path) -> Path:
    """Write an ESP Web Tools ``manifest.json`` next to the merged image; return its path.

    Without a merged image the separate images are listed (paths relative to the manifest).
    """
    path, data = load_build_manifest(build_manifest_path)
    base = path.parent
    merged = data.get("merged")
    if isinstance(merged, dict) and "path" in merged:
        image_path = base / merged["path"]
        out_dir = image_path.parent
        parts = [{"path": image_path.name, "offset": _offset(merged.get("offset", 0), f"{path} merged")}]
    else:
        out_dir = base
        parts = [
            {"path": os.path.relpath(base / e["path"], out_dir).replace(os.sep, "/"), "offset": _offset(e["offset"], f"{path} image")}
            for e in sorted(data.get("images") or [], key=lambda e: _offset(e.get("offset"), f"{path} image"))
        ]
        if not parts:
            raise BuildError(f"{path} lists no images; nothing to put in a web flasher manifest")
    from gendertool import __version__

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    model_name = model.get("name") or "model"
    sha = str(model.get("sha256") or "")[:12]
    web = {
        "name": f"gendertool {model_name} ({data.get('board', 'esp32s3')})",
        "version": f"{__version__}+{sha}" if sha else __version__,
        "new_install_prompt_erase": True,
        "builds": [{"chipFamily": "ESP32-S3", "parts": parts}],
    }
    out = out_dir / WEB_MANIFEST_NAME
    write_json_atomic(out, web, indent=2)
    return out


# --------------------------------------------------------------------------- ports


def find_esp32s3_ports() -> list[str]:
    """Serial ports of ESP32-S3 native USB (USB-Serial-JTAG, VID:PID 303a:1001)."""
    from gendertool.transport import find_esp32s3_ports as find  # LINK's one place for this

    return list(find())


def resolve_port(port: str | None, finder: Callable[[], Sequence[str]] | None = None, *, repeatable: bool = False) -> str:
    """``port`` itself, or the one attached ESP32-S3 (none / several: a clear error).

    ``repeatable``: the command takes --port several times (the message says so).
    """
    if port:
        return port
    ports = list((finder or find_esp32s3_ports)())
    if not ports:
        raise DeviceError(
            "no ESP32-S3 found on USB (looked for VID:PID 303a:1001); plug the XIAO ESP32S3 in "
            "with a data cable, or pass --port (try --port sim for the virtual device)"
        )
    if len(ports) > 1:
        how = "choose with --port (repeat it for several)" if repeatable else "choose one with --port"
        raise DeviceError(f"several ESP32-S3 boards found ({', '.join(ports)}); {how}")
    return ports[0]


def _is_usb_jtag(port: str) -> bool:
    from gendertool.transport import list_serial_ports

    real = os.path.realpath(port)
    return any(p.esp32s3 and (p.device == port or os.path.realpath(p.device) == real) for p in list_serial_ports())


# --------------------------------------------------------------------------- esptool logging bridge


class FlashReporter:
    """Receives esptool's output while flashing. The CLI subclasses this to draw with Rich."""

    def message(self, text: str) -> None:  # esptool's plain lines
        pass

    def warning(self, text: str) -> None:
        pass

    def progress(self, image: FlashImage, done: int, total: int) -> None:
        """``done``/``total`` in bytes on the wire (compressed when esptool compresses)."""

    def stage(self, text: str) -> None:
        """What the flash is doing now ("connecting", "writing", "verifying", ...)."""


def _make_logger_class():
    from esp_pylib.logger import EspLogBase

    class _EsptoolBridge(EspLogBase):
        """esptool's logger interface (esp-pylib EspLogBase) forwarding to a FlashReporter.

        esptool writes images in offset order and draws one progress bar per image, so a
        bar that reached 100 % means the next progress call belongs to the next image.
        """

        def __init__(self, reporter: FlashReporter, images: Sequence[FlashImage]) -> None:
            self.reporter = reporter
            self.images = list(images)
            self.index = 0
            self._finished = False
            self.messages: list[str] = []
            self.verified = 0  # images whose MD5 esptool checked right after writing them
            self.written_to: int | None = None  # flash address the stub acknowledged up to
            self.sent: dict[int, float] = {}  # image index -> share of its data sent

        def board_state(self) -> str:
            """What the board's flash holds now, from esptool's own progress and MD5 lines."""
            return board_state(self.images, self.verified, self.written_to, self.sent.get(self.verified))

        def _text(self, args) -> str:
            return " ".join(str(a) for a in args).strip()

        def print(self, *args, **kwargs) -> None:
            text = self._text(args)
            if text:
                self.messages.append(text)
                if text.startswith(_IMAGE_VERIFIED):
                    self.verified += 1
                self.reporter.message(text)

        def note(self, *args) -> None:
            self.print(*args)

        def hint(self, *args) -> None:
            self.print(*args)

        def debug(self, *args) -> None:
            pass

        def warn(self, *args, suggestion: str | None = None) -> None:
            text = self._text(args)
            self.messages.append(text)
            self.reporter.warning(text)

        def err(self, *args, suggestion: str | None = None) -> None:
            self.warn(*args, suggestion=suggestion)

        # esptool still calls the pre-esp-pylib names in a few places
        warning = warn
        error = err

        def stage(self, finish: bool = False) -> None:
            pass

        def set_verbosity(self, mode) -> None:
            pass

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30) -> None:
            if self._finished:
                self.index += 1
                self._finished = False
            at = _WRITING_AT.search(f"{prefix} {suffix}")
            if at:
                self.written_to = int(at.group(1), 16)
            if not self.images:
                return
            image = self.images[min(self.index, len(self.images) - 1)]
            if total_iters > 0:
                self.sent[min(self.index, len(self.images) - 1)] = cur_iter / total_iters
            self.reporter.progress(image, int(cur_iter), int(total_iters))
            if total_iters >= 0 and cur_iter >= total_iters:
                self._finished = True

    return _EsptoolBridge


# esptool 5 write_flash: "Hash of data verified." after each image's MD5 check; its write
# progress says "Writing at 0x..." with the address written (and acknowledged) so far.
_IMAGE_VERIFIED = "Hash of data verified"
_WRITING_AT = re.compile(r"Writing at (0x[0-9a-fA-F]+)")


def board_state(images: Sequence[FlashImage], verified: int, written_to: int | None, sent: float | None = None) -> str:
    """The board's flash after a flash stopped: images verified, the one cut short, the rest."""
    images = list(images)
    parts = []
    done = images[:verified]
    if done:
        parts.append(", ".join(f"{im.name} ({im.offset:#x})" for im in done) + " written and verified")
    if verified < len(images):
        cur = images[verified]
        end = cur.offset + cur.size
        if written_to is not None and cur.offset < written_to <= end:
            got = written_to - cur.offset
            if got >= cur.size:
                parts.append(f"{cur.name} ({cur.offset:#x}) written but not verified")
            else:
                parts.append(f"{cur.name} ({cur.offset:#x}, {cur.size:,} bytes) written up to {written_to:#x} "
                             f"({got:,} bytes, {got / cur.size:.0%})")  # fmt: skip
        elif sent:  # no address from esptool: the share of the image's data sent
            parts.append(f"{cur.name} ({cur.offset:#x}) partly written ({sent:.0%} of its data sent)")
        else:
            parts.append(f"{cur.name} ({cur.offset:#x}) not written (its sectors may be erased)")
        rest = images[verified + 1:]
        if rest:
            parts.append(", ".join(f"{im.name} ({im.offset:#x})" for im in rest) + " not written")
    return "; ".join(parts)


def _make_router_class():
    from esp_pylib.logger import EspLogBase

    class _ThreadRoutedLog(EspLogBase):
        """esptool's logger is one global (``EspLog.instance``); while boards flash in parallel
        threads, this stands in for it and hands every call to the bridge of the calling thread.

        Progress works too: ``log.progress()`` (inherited) makes a ProgressTask bound to this
        router, whose updates come back through :meth:`progress_bar` on the writing thread.
        Threads without a bridge (none flashing) reach the logger that was installed before.
        """

        def __init__(self, fallback) -> None:
            self.fallback = fallback
            self.bridges: dict[int, Any] = {}

        def _target(self):
            return self.bridges.get(threading.get_ident(), self.fallback)

        def _call(self, name: str, *args, **kwargs):
            target = self._target()
            if target is not None:
                return getattr(target, name)(*args, **kwargs)
            return None

        def print(self, *args, **kwargs) -> None:
            self._call("print", *args, **kwargs)

        def note(self, *args) -> None:
            self._call("note", *args)

        def hint(self, *args) -> None:
            self._call("hint", *args)

        def debug(self, *args) -> None:
            self._call("debug", *args)

        def warn(self, *args, suggestion: str | None = None) -> None:
            self._call("warn", *args, suggestion=suggestion)

        def err(self, *args, suggestion: str | None = None) -> None:
            self._call("err", *args, suggestion=suggestion)

        warning = warn
        error = err

        def stage(self, finish: bool = False) -> None:
            self._call("stage", finish)

        def set_verbosity(self, mode) -> None:
            self._call("set_verbosity", mode)

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30) -> None:
            self._call("progress_bar", cur_iter, total_iters, prefix=prefix, suffix=suffix, bar_length=bar_length)

    return _ThreadRoutedLog


_route_lock = threading.Lock()
_router: Any = None  # the installed _ThreadRoutedLog while any flash runs
_router_previous: Any = None


@contextmanager
def _esptool_logger(reporter: FlashReporter, images: Sequence[FlashImage]) -> Iterator[Any]:
    """Route esptool's log from this thread through ``reporter`` for the duration of one flash.

    The first flash to start installs the thread router as esptool's logger, the last one
    to finish puts the previous logger back, so one flash and several in parallel share a path.
    """
    global _router, _router_previous
    from esp_pylib.logger import EspLog

    bridge = _make_logger_class()(reporter, images)
    ident = threading.get_ident()
    with _route_lock:
        if _router is None:
            _router_previous = EspLog.instance
            _router = _make_router_class()(_router_previous)
            EspLog.set_logger(_router)
        _router.bridges[ident] = bridge
    try:
        yield bridge
    finally:
        with _route_lock:
            _router.bridges.pop(ident, None)
            if not _router.bridges:
                if _router_previous is not None:
                    EspLog.set_logger(_router_previous)
                else:  # pragma: no cover - esptool installs its logger on import
                    EspLog.instance = None
                _router = _router_previous = None


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
            "serial loader (a `gendertool sim serve` virtual device has no flash)"
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
    remote serial bridge, the tests' emulated ROM loader); a `gendertool sim serve` there
    does not answer the ROM's sync, which _explain names."""
    if port == "sim":
        raise DeviceError(f"cannot flash {port}: the virtual device has no flash; flash a real board's serial port")
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

    connect_mode = CONNECT_MODE_USB if _is_usb_jtag(port) else CONNECT_MODE_UART
    t0 = time.monotonic()
    stage = "connecting"
    reporter.stage(stage)
    with _esptool_logger(reporter, plan.images) as bridge:
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
    from gendertool.transport import check_port_list, run_parallel

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
