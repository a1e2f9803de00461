"""Latency statistics shared by the device operations (monitor, bench, validate --port):
exact percentiles, summaries of a series, rolling windows and a result-rate meter. Pure
Python, no numpy, so the device commands stay fast to start."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
