"""The one error root for problems caused by user input or by the device.

The CLI catches :class:`GendertoolError` once, prints its message and exits with code 2.
Any other exception is a bug and keeps its traceback.
"""


class GendertoolError(Exception):
    """A user or device problem with a clear, one-line explanation."""


class ModelError(GendertoolError):
    """The model file is unreadable, malformed or unsupported."""


class ImageError(GendertoolError):
    """An image could not be read or decoded."""


class BuildError(GendertoolError):
    """Rendering or compiling the firmware failed, or the toolchain is missing."""


class DeviceError(GendertoolError):
    """The serial port or the device misbehaved (missing, busy, vanished, protocol error)."""


class NetworkError(GendertoolError):
    """A download failed (offline, unreachable host, bad checksum)."""


class Interrupted(Exception):
    """Ctrl-C stopped a command. Not a GendertoolError: the CLI exits 130, not 2.

    ``partial`` is what was finished before the interrupt (for the CLI to present) and the
    message says what was done and where the partial report is. An operation that holds
    results catches KeyboardInterrupt, saves them, and raises this instead.
    """

    def __init__(self, message: str = "", partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial


class OutputError(Exception):
    """Standard output or standard error could not be written (full disk, /dev/full, a closed pipe).

    Not a GendertoolError: an operation that records a device or user problem must not take it
    for one; :func:`gendertool.cli.main` says it in one line (a closed pipe: quietly) and exits
    non-zero. ``broken_pipe``: the reader went away (``| head``), which is not worth a word.
    """

    def __init__(self, message: str, *, broken_pipe: bool = False) -> None:
        super().__init__(message)
        self.broken_pipe = broken_pipe
        self.reported = False  # said once by the CLI (every later write raises the same one)


# --------------------------------------------------------------------------- Ctrl-C
#
# The one Ctrl-C policy of every command: the first SIGINT raises KeyboardInterrupt (the
# operation that holds results saves them, then says what it kept); every later one is
# ignored, with one line on stderr, because the process is already stopping and a second
# KeyboardInterrupt inside the saving or the speaking would lose or falsify results. Inside
# ``ctrl_c_waits()`` (a save, one record being counted and shown) even the first one waits
# until the block is done. Signals reach the main thread only; worker threads are told by
# their callers.

CTRL_C_AGAIN = "Ctrl-C again: saving what was finished first; gendertool stops as soon as it is written\n"


class _CtrlC:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stopping = False  # a KeyboardInterrupt was raised: the command is ending
        self.holding = 0  # nesting depth of ctrl_c_waits() in the main thread
        self.pending = False  # a Ctrl-C that arrived while holding
        self.told = False


_ctrl_c = _CtrlC()


def _on_sigint(signum, frame) -> None:
    state = _ctrl_c
    if state.stopping or state.pending:
        if not state.told:
            state.told = True
            try:
                import os

                os.write(2, CTRL_C_AGAIN.encode())
            except OSError:  # stderr gone: nothing can be said, and nothing must be raised
                pass
        return
    if state.holding:
        state.pending = True
        return
    state.stopping = True
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class ctrl_c_handled:
    """Ctrl-C under the policy above for the ``with`` block (main thread; nested blocks are no-ops).

    ``stay``: a block that was stopped by Ctrl-C leaves the handler in place afterwards, so a
    SIGINT while the process exits is ignored too (the CLI's main); otherwise the previous
    handler is put back.
    """

    def __init__(self, *, stay: bool = False) -> None:
        self.stay = stay
        self.previous = None
        self.installed = False

    def __enter__(self) -> "ctrl_c_handled":
        import signal

        current = signal.getsignal(signal.SIGINT) if _main_thread() else _on_sigint
        # SIG_IGN: started ignoring SIGINT (a script's background job): it stays ignored
        if current is not _on_sigint and current is not signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, _on_sigint)
            self.installed = True
            _ctrl_c.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.installed and not (self.stay and _ctrl_c.stopping):
            signal.signal(signal.SIGINT, self.previous)
            _ctrl_c.reset()


class ctrl_c_waits:
    """A block that Ctrl-C does not cut (a save, a record being counted and shown): a SIGINT in it
    is held and raised as KeyboardInterrupt when the block ends normally. Main thread only (a
    worker thread's block is not held: Ctrl-C is the main thread's)."""

    def __enter__(self) -> None:
        self.active = _main_thread()
        if self.active:
            _ctrl_c.holding += 1

    def __exit__(self, exc_type, *exc: object) -> None:
        if not self.active:
            return
        _ctrl_c.holding -= 1
        if _ctrl_c.holding or not _ctrl_c.pending:
            return
        _ctrl_c.pending = False
        _ctrl_c.stopping = True
        if exc_type is None:
            raise KeyboardInterrupt
        # the block failed: its exception goes on and ends the command, which the Ctrl-C asked for
