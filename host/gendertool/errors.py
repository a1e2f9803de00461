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
