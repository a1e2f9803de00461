"""Writing output files so that a crash or a full disk never leaves half a file behind."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from gendertool.errors import GendertoolError
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


class CsvAppender:
    """Append rows to a CSV file, one flush per row, header written once for a new file.

    Opening an existing file with a different header is refused (appending would mix
    columns). ``fsync=True`` also survives a power cut, at a cost per row.
    """

    def __init__(self, path: str | Path, fieldnames: Sequence[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.fsync = fsync
        self.count = 0
        existing = self._existing_header()
        if existing is not None and existing != self.fieldnames:
            raise ValueError(
                f"{self.path} already has different columns ({','.join(existing)}); "
                "choose another file"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=self.fieldnames, extrasaction="ignore")
        if existing is None:
            self._writer.writeheader()
            self._flush()

    def _existing_header(self) -> list[str] | None:
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                first = fh.readline()
        except FileNotFoundError:
            return None
        if not first.strip():
            return None
        return next(csv.reader(io.StringIO(first)))

    def _flush(self) -> None:
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        self._flush()
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _csv_cell(value: Any) -> Any:
    # Lists (scores, probabilities) go into one cell as a space-separated string.
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value
