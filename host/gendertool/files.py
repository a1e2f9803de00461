"""Writing output files so that a crash or a full disk never leaves half a file behind."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from gendertool.errors import GendertoolError, OutputError
from gendertool.text import escape_control


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` via a temp file in the same folder + rename (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for secrets, not results
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 1) -> None:
    """Write ``data`` as JSON, atomically (NaN/inf refused: not JSON)."""
    text = json.dumps(data, indent=indent, allow_nan=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically unless the file already holds it; True when written."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_bytes_atomic(path, data)
    return True


def check_report_file(path: Path, option: str = "--out") -> None:
    """Refuse a report path that cannot be written, before any work starts (GendertoolError).

    Probes with a real temp file: os.access says yes to root and knows nothing of read-only mounts.
    """

    path = Path(path)
    if path.is_dir():
        raise GendertoolError(f"{option} {path} is a folder; give a file name for the report")
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise GendertoolError(f"{option} {path}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gendertool-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise GendertoolError(f"{option} {path}: cannot write into {probe} ({exc.strerror or exc})") from None


def write_report_atomic(path: Path, data: Any) -> None:
    """A JSON report, atomically; a failed write is one GendertoolError and leaves no half file."""

    try:
        write_json_atomic(path, data)
    except OSError as exc:
        raise GendertoolError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- standard streams


class CheckedStream:
    """``sys.stdout`` / ``sys.stderr`` as the CLI uses them: a failed write or flush (full disk,
    /dev/full, a closed pipe) raises :class:`~gendertool.errors.OutputError` naming the stream,
    and so does every later write or flush (a library that catches the first one, as click's
    stream probe does, cannot turn it into a success); the file descriptor then points to
    /dev/null, so exiting does not fail a second time."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self._stream = stream
        self.name = name
        self.failed: OutputError | None = None

    def __getattr__(self, attr: str) -> Any:  # encoding, isatty, fileno, buffer, ...
        return getattr(self._stream, attr)

    def _fail(self, exc: BaseException) -> OutputError:
        why = getattr(exc, "strerror", None) or str(exc)
        self.failed = OutputError(f"cannot write to {self.name}: {why}", broken_pipe=isinstance(exc, BrokenPipeError))
        self._silence()
        return self.failed

    def _silence(self) -> None:
        # What stays in the buffer would fail again when Python flushes it at exit: send the
        # file descriptor to /dev/null (the recipe of the Python docs for SIGPIPE).
        try:
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
            self._stream.flush()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def _fd(self) -> int | None:
        if os.name != "posix":  # the text layer translates line ends there: keep it
            return None
        try:
            return self._stream.fileno()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return None  # an in-memory stream (a test's capture)

    def write(self, text: str) -> int:
        if self.failed is not None:
            raise self.failed
        if not isinstance(text, str):  # as a text stream says it (click probes with bytes)
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        try:
            fd = self._fd()
            if fd is None:
                return self._stream.write(text)
            # Straight to the file descriptor, every byte accounted for: CPython's buffered
            # writer reports a large write that the disk cut short (8 KB written, then ENOSPC)
            # as complete, and the command would exit 0 with its output cut.
            self._stream.flush()  # anything written through the stream itself goes first
            data = memoryview(text.encode(self._stream.encoding or "utf-8", self._stream.errors or "strict"))
            while data:
                data = data[os.write(fd, data):]
            return len(text)
        except (OSError, ValueError) as exc:  # ValueError: written after it was closed
            raise self._fail(exc) from None

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            raise self._fail(exc) from None


class checked_std_streams:
    """``sys.stdout`` and ``sys.stderr`` as :class:`CheckedStream` for the ``with`` block; the
    originals come back after it. :meth:`finish` flushes both: writing the output is part of
    the command, so its failure is the command's."""

    def __enter__(self) -> "checked_std_streams":
        import sys

        self.saved = (sys.stdout, sys.stderr)
        self.streams = []
        for attr, name in (("stdout", "standard output"), ("stderr", "standard error")):
            stream = getattr(sys, attr)
            if stream is not None and not isinstance(stream, CheckedStream):
                stream = CheckedStream(stream, name)
                setattr(sys, attr, stream)
                self.streams.append(stream)
        return self

    def finish(self) -> None:
        """Flush and close standard output, then flush standard error (OutputError when one of
        them fails). Only the process's own stdout is closed (a file system may report a
        failed write only then); a stream put in place by a caller (a test) stays open."""
        import sys

        for stream in self.streams:
            stream.flush()
            if stream.name == "standard output" and stream._stream is sys.__stdout__ and stream.failed is None:
                try:
                    stream._stream.close()
                except (OSError, ValueError) as exc:
                    raise stream._fail(exc) from None

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stdout, sys.stderr = self.saved


# --------------------------------------------------------------------------- record writers


class JsonLinesWriter:
    """One compact JSON object per line, flushed per record (stdout stays machine-readable)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:

        # json escapes C0 controls but not DEL/C1; these become \u escapes, still JSON
        self.stream.write(escape_control(json.dumps(record, separators=(",", ":"), ensure_ascii=False)) + "\n")
        self.stream.flush()
        self.count += 1


def is_device_or_pipe(path: str | Path) -> bool:
    """True for a character or block device, a FIFO or a socket (``/dev/stdout``, ``/dev/full``,
    a named pipe): never read back (a terminal or a pipe would block the reader forever), never
    opened just to try it (a pipe's reader would see its end). False for anything else,
    including a path where nothing is yet or one that cannot be looked at (opening it says why)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class CsvAppender:
    """Append rows to a CSV file, each row on disk when ``write`` returns, header written once.

    A regular file that already has a different header is refused (appending would mix
    columns); a device or a FIFO (``/dev/stdout``, a named pipe) is never read back and gets
    the header every time. ``stream`` instead of a file: rows go to that text stream (``--csv -``,
    standard output). A row the disk cannot take in full is taken back (the file ends with the
    last whole row) and the failure is one GendertoolError. ``fsync=True`` also survives a
    power cut, at a cost per row.
    """

    def __init__(self, path: str | Path, fieldnames: Sequence[str], *, fsync: bool = False,
                 stream: IO[str] | None = None) -> None:
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.fsync = fsync
        self.count = 0
        self._stream = stream
        self._fd: int | None = None
        existing = self._existing_header() if stream is None else None
        if existing is not None and existing != self.fieldnames:
            raise ValueError(
                f"{self.path} already has different columns ({','.join(existing)}); "
                "choose another file"
            )
        if stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        if existing is None:
            self._put(self._line(self.fieldnames))

    def _existing_header(self) -> list[str] | None:
        if is_device_or_pipe(self.path):
            return None
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                first = fh.readline()
        except FileNotFoundError:
            return None
        if not first.strip():
            return None
        return next(csv.reader(io.StringIO(first)))

    @staticmethod
    def _line(values: Sequence[Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow(values)
        return buf.getvalue()

    def _put(self, line: str) -> None:
        if self._stream is not None:  # standard output: its failures are the CLI's (OutputError)
            self._stream.write(line)
            self._stream.flush()
            return
        fd = self._fd
        start = os.lseek(fd, 0, os.SEEK_END) if self._regular else None
        try:
            data = memoryview(line.encode("utf-8"))
            while data:
                data = data[os.write(fd, data):]
            if self.fsync and self._regular:
                os.fsync(fd)
        except OSError as exc:
            if start is not None:
                try:  # no half row left behind: the file ends with the last whole one
                    os.ftruncate(fd, start)
                except OSError:
                    pass
            raise GendertoolError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, row: Mapping[str, Any]) -> None:
        self._put(self._line([_csv_cell(row.get(k)) for k in self.fieldnames]))
        self.count += 1

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                raise GendertoolError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _csv_cell(value: Any) -> Any:
    # Lists (scores, probabilities) go into one cell as a space-separated string.
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value
