"""Presentation helpers shared by the device-facing commands (flash, monitor, bench).

Generic on purpose: record writers that never lose a record already
received (one flush per record), Rich tables and live views. Nothing here knows about the
serial protocol. Import cost stays low: Rich is imported lazily by the functions that draw.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


# --------------------------------------------------------------------------- formatting


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, like esptool and the ESP-IDF size report)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """0.0042 -> '4.2 ms', 75 -> '1 min 15 s'."""
    if math.isnan(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s"


def format_ms(value: float, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- record writers


class JsonLinesWriter:
    """One compact JSON object per line, flushed per record (stdout stays machine-readable)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.count = 0

    def write(self, record: Mapping[str, Any]) -> None:
        from gendertool.safetext import escape_control

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


# --------------------------------------------------------------------------- Rich views


def kv_table(rows: Iterable[tuple[str, Any]], title: str | None = None):
    """A two-column key/value table (summaries, chip info)."""
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(str(key), value if hasattr(value, "__rich_console__") else str(value))
    return table


def log_panel(lines: Iterable[str], title: str = "device log", height: int = 12):
    """The last ``height`` device log lines, dimmed, in a panel."""
    from rich.panel import Panel
    from rich.text import Text

    tail = list(lines)[-height:]
    text = Text("\n".join(tail) if tail else "(no log lines yet)", style="dim", overflow="ellipsis", no_wrap=True)
    return Panel(text, title=title, title_align="left", border_style="dim")


@contextmanager
def live_view(console, enabled: bool = True, refresh_per_second: float = 8.0) -> Iterator[Any]:
    """A Rich Live region on ``console``; yields an object with ``update(renderable)``.

    Disabled (or on a non-terminal console) it yields a no-op updater, so callers never
    branch and redirected output never fills with redraws.
    """
    if not enabled or not console.is_terminal:
        yield _NullLive()
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=refresh_per_second, transient=False, redirect_stdout=False, redirect_stderr=False) as live:
        yield live


class _NullLive:
    def update(self, renderable: Any, *, refresh: bool = False) -> None:
        pass


def byte_progress(console, *, transient: bool = False):
    """A Rich Progress for byte transfers: bar, percentage, size, speed, elapsed."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
