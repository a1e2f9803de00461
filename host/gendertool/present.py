"""Presentation helpers shared by the device-facing commands (flash, monitor, bench).

Generic on purpose: rolling statistics, record writers that never lose a record already
received (one flush per record), Rich tables and live views. Nothing here knows about the
serial protocol. Import cost stays low: Rich is imported lazily by the functions that draw.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default method).

    NaN for an empty sequence, so a summary of nothing prints "nan" instead of failing.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    n = len(values)
    if n == 0:
        return math.nan
    ordered = sorted(values)
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


STAT_KEYS = ("min", "p50", "p90", "p99", "max", "mean", "std")


@dataclass(frozen=True)
class Stats:
    """Summary of one latency series (bench: microseconds, monitor: milliseconds)."""

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    std: float  # population standard deviation (the runs are the whole population measured)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("n",) + STAT_KEYS}

    @classmethod
    def from_dict(cls, d: dict) -> "Stats":
        return cls(n=int(d["n"]), **{k: float(d[k]) for k in STAT_KEYS})


def latency_stats(values: Iterable[float]) -> Stats:
    """Every statistic of a whole series (ValueError when it is empty)."""
    vals = sorted(float(v) for v in values)
    if not vals:
        raise ValueError("no samples")
    n = len(vals)
    mean = sum(vals) / n
    var = sum((v - mean) ** 2 for v in vals) / n
    return Stats(
        n=n,
        min=vals[0],
        p50=percentile(vals, 50),
        p90=percentile(vals, 90),
        p99=percentile(vals, 99),
        max=vals[-1],
        mean=mean,
        std=math.sqrt(var),
    )


class RollingStats:
    """Percentiles over the last ``window`` values plus running totals over all of them."""

    def __init__(self, window: int = 200) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._recent: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        self._recent.append(value)
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    @property
    def recent(self) -> list[float]:
        return list(self._recent)

    @property
    def last(self) -> float:
        return self._recent[-1] if self._recent else math.nan

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def percentile(self, q: float) -> float:
        """Percentile over the rolling window."""
        return percentile(self._recent, q)

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)


class RateMeter:
    """Events per second over a sliding time window (FPS of a result stream)."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self.count = 0
        self.first: float | None = None
        self.latest: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        if self.first is None:
            self.first = now
        self.latest = now
        self.count += 1
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        """Rate over the window: (events - 1) / span between the first and last in it."""
        now = self._clock() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def overall(self) -> float:
        """Average rate from the first to the latest event."""
        if self.first is None or self.latest is None or self.count < 2:
            return 0.0
        span = self.latest - self.first
        return (self.count - 1) / span if span > 0 else 0.0


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
        self.stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
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
