"""Writing output files so that a crash or a full disk never leaves half a file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


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
    from gendertool.errors import GendertoolError

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
    from gendertool.errors import GendertoolError

    try:
        write_json_atomic(path, data)
    except OSError as exc:
        raise GendertoolError(f"cannot write {path}: {exc.strerror or exc}") from None
