"""Bridge esptool's v5 logger to a :class:`FlashReporter` (progress, messages, what was verified)."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from gendertool.project.manifest import FlashImage

# esptool's own reset choices (its --before / --after); "auto" (ours) picks usb-reset on the
# native USB-Serial-JTAG port and default-reset on a UART bridge.
BEFORE_CHOICES = ("auto", "default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER_CHOICES = ("hard-reset", "soft-reset", "no-reset", "no-reset-stub", "watchdog-reset")

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
def esptool_logger(reporter: FlashReporter, images: Sequence[FlashImage]) -> Iterator[Any]:
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
