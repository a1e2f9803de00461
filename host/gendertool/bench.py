"""On-device latency benchmark: run, statistics, bench.json, compare, firmware-variant matrix.

The device does the timing (``esp_timer`` around preprocessing and ``Invoke()``) and sends
every run as a ``bsample`` record; the host only collects and summarises, so USB latency
never enters the figures. Nothing here prints: progress goes through callbacks and the CLI
presents the returned objects.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from gendertool.errors import DeviceError, GendertoolError

SCHEMA = 1
KIND = "gendertool-bench"
# Seeed's model card for the gender classifier quotes about 40 ms per inference on a
# XIAO ESP32S3; every histogram draws it so a run can be judged at a glance.
REFERENCE_MS = 40.0
REFERENCE_LABEL = "Seeed card: 40 ms (XIAO ESP32S3)"

METRICS = ("pre_us", "invoke_us", "total_us")
METRIC_TITLES = {"pre_us": "preprocessing", "invoke_us": "Invoke()", "total_us": "total"}
STAT_KEYS = ("min", "p50", "p90", "p99", "max", "mean", "std")


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """Summary of one latency series in microseconds."""

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


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of pre-sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def latency_stats(values: Iterable[float]) -> Stats:
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


@dataclass(frozen=True)
class Sample:
    """One timed run on the device."""

    seq: int
    pre_us: int
    invoke_us: int
    total_us: int

    def to_dict(self) -> dict:
        return {"seq": self.seq, "pre_us": self.pre_us, "invoke_us": self.invoke_us, "total_us": self.total_us}

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        pre, inv = int(d["pre_us"]), int(d["invoke_us"])
        return cls(int(d["seq"]), pre, inv, int(d.get("total_us", pre + inv)))


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """``{"pre_us": Stats, "invoke_us": Stats, "total_us": Stats, "fps": float}`` (empty when no samples)."""
    if not samples:
        return {}
    out: dict[str, Any] = {m: latency_stats(getattr(s, m) for s in samples) for m in METRICS}
    mean_total = out["total_us"].mean
    out["fps"] = 1e6 / mean_total if mean_total > 0 else float("inf")
    return out


@dataclass(frozen=True)
class OpTiming:
    """One row of the per-operator profile."""

    op: str
    count: int
    total_us: int
    share: float  # fraction of the summed operator time, 0..1

    def to_dict(self) -> dict:
        return {"op": self.op, "count": self.count, "total_us": self.total_us, "share": self.share}

    @classmethod
    def from_dict(cls, d: dict) -> "OpTiming":
        return cls(str(d["op"]), int(d["count"]), int(d["total_us"]), float(d["share"]))


def profile_table(rows: Iterable[tuple[str, int, int]]) -> list[OpTiming]:
    """Aggregate ``(op, count, total_us)`` rows by operator, slowest first, with shares."""
    agg: dict[str, list[int]] = {}
    for op, count, total in rows:
        a = agg.setdefault(op, [0, 0])
        a[0] += int(count)
        a[1] += int(total)
    grand = sum(a[1] for a in agg.values())
    table = [OpTiming(op, c, t, (t / grand) if grand else 0.0) for op, (c, t) in agg.items()]
    table.sort(key=lambda r: (-r.total_us, r.op))
    return table


# --------------------------------------------------------------------------- result + bench.json


@dataclass
class BenchResult:
    """Everything one bench run produced; also what bench.json holds."""

    port: str
    n: int
    warmup: int
    input: str
    simulated: bool = False
    device: dict = field(default_factory=dict)  # the device's hello record, verbatim
    samples: list[Sample] = field(default_factory=list)
    profile: list[OpTiming] = field(default_factory=list)
    device_summary: dict = field(default_factory=dict)  # the device's own bsummary record
    memory: dict = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    error: str | None = None
    variant: str | None = None
    variant_options: dict = field(default_factory=dict)
    path: Path | None = None  # where bench.json was written

    @property
    def completed(self) -> int:
        return len(self.samples)

    @property
    def complete(self) -> bool:
        return self.error is None and self.completed >= self.n

    @property
    def board(self) -> str:
        return str(self.device.get("board", "unknown"))

    @property
    def model_sha256(self) -> str:
        return str(self.device.get("model_sha256", self.device.get("sha256", "")))

    def stats(self) -> dict[str, Any]:
        return summarize(self.samples)

    def to_json(self) -> dict:
        from gendertool import __version__

        dev = self.device
        stats = self.stats()
        return {
            "schema": SCHEMA,
            "kind": KIND,
            "simulated": self.simulated,
            "port": self.port,
            "board": self.board,
            "model": {
                "sha256": self.model_sha256,
                "labels": dev.get("labels", []),
                "input": {k: dev[k] for k in ("input_shape", "input_scale", "input_zero_point") if k in dev},
            },
            "firmware": {
                "version": dev.get("fw", dev.get("fw_version", "")),
                "config": dev.get("config", {}),
                "variant": self.variant,
                "variant_options": self.variant_options,
            },
            "versions": {
                "idf": dev.get("idf", ""),
                "tflm": dev.get("tflm", ""),
                "esp_nn": dev.get("esp_nn", ""),
                "protocol": dev.get("proto", ""),
                "gendertool": __version__,
            },
            "device": dev,
            "memory": self.memory,
            "request": {"n": self.n, "warmup": self.warmup, "input": self.input, "profile": bool(self.profile)},
            "started": self.started,
            "finished": self.finished,
            "completed": self.completed,
            "complete": self.complete,
            "error": self.error,
            "stats": {k: (v.to_dict() if isinstance(v, Stats) else v) for k, v in stats.items()},
            "device_summary": self.device_summary,
            "profile": [r.to_dict() for r in self.profile],
            "samples": [s.to_dict() for s in self.samples],
        }

    @classmethod
    def from_json(cls, data: dict, path: Path | None = None) -> "BenchResult":
        req = data.get("request", {})
        fw = data.get("firmware", {})
        return cls(
            port=str(data.get("port", "")),
            n=int(req.get("n", len(data.get("samples", [])))),
            warmup=int(req.get("warmup", 0)),
            input=str(req.get("input", "sample")),
            simulated=bool(data.get("simulated", False)),
            device=dict(data.get("device", {})),
            samples=[Sample.from_dict(s) for s in data.get("samples", [])],
            profile=[OpTiming.from_dict(r) for r in data.get("profile", [])],
            device_summary=dict(data.get("device_summary", {})),
            memory=dict(data.get("memory", {})),
            started=str(data.get("started", "")),
            finished=str(data.get("finished", "")),
            error=data.get("error"),
            variant=fw.get("variant"),
            variant_options=dict(fw.get("variant_options", {})),
            path=path,
        )


def write_json_atomic(path: Path, data: dict) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written bench.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_bench(path: str | Path) -> BenchResult:
    """Read a bench.json written by :func:`run_bench` (GendertoolError with a clear message otherwise)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GendertoolError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GendertoolError(f"{p}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise GendertoolError(f"{p}: not a bench.json file (invalid JSON: {exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise GendertoolError(f"{p}: not a bench.json file (missing \"kind\": \"{KIND}\")")
    if data.get("schema") != SCHEMA:
        raise GendertoolError(f"{p}: bench.json schema {data.get('schema')!r} is not supported (expected {SCHEMA})")
    try:
        result = BenchResult.from_json(data, p)
    except (KeyError, TypeError, ValueError) as exc:
        raise GendertoolError(f"{p}: malformed bench.json ({exc.__class__.__name__}: {exc})") from None
    if not result.samples:
        raise GendertoolError(f"{p}: holds no samples to compare")
    return result


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class CompareRow:
    metric: str  # "pre_us" | "invoke_us" | "total_us" | "fps"
    stat: str  # "p50", "mean", ... ("" for fps)
    old: float
    new: float

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def delta_pct(self) -> float:
        return (self.new - self.old) / self.old * 100.0 if self.old else float("nan")

    @property
    def speedup(self) -> float:
        """How many times faster ``new`` is (>1 = faster). For FPS higher is better."""
        if self.metric == "fps":
            return self.new / self.old if self.old else float("nan")
        return self.old / self.new if self.new else float("nan")

    def to_dict(self) -> dict:
        return {"metric": self.metric, "stat": self.stat, "old": self.old, "new": self.new,
                "delta": self.delta, "delta_pct": self.delta_pct, "speedup": self.speedup}


def compare_results(old: BenchResult, new: BenchResult) -> list[CompareRow]:
    """Row per metric and statistic: old, new, delta, speed-up (old/new)."""
    so, sn = old.stats(), new.stats()
    if not so or not sn:
        raise GendertoolError("both runs need at least one sample to compare")
    rows = [CompareRow(m, k, getattr(so[m], k), getattr(sn[m], k)) for m in METRICS for k in STAT_KEYS]
    rows.append(CompareRow("fps", "", so["fps"], sn["fps"]))
    return rows


# --------------------------------------------------------------------------- running on a device


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _rec_dict(rec: Any) -> dict:
    """Record -> plain dict, whatever shape the link layer gives (dataclass or mapping)."""
    if rec is None:
        return {}
    if isinstance(rec, dict):
        return dict(rec)
    if hasattr(rec, "to_dict"):
        return dict(rec.to_dict())
    import dataclasses

    if dataclasses.is_dataclass(rec):
        return dataclasses.asdict(rec)
    return dict(vars(rec))


def _rec_type(rec: Any) -> str:
    for attr in ("TYPE", "type", "kind"):
        v = getattr(rec, attr, None)
        if isinstance(v, str):
            return v
    return type(rec).__name__.lower()


def _sample_from(rec: Any) -> Sample:
    d = _rec_dict(rec)
    pre, inv = int(d["pre_us"]), int(d["invoke_us"])
    total = d.get("total_us")
    return Sample(int(d.get("seq", d.get("i", 0))), pre, inv, int(total) if total is not None else pre + inv)


def memory_report(hello: dict) -> dict:
    """The device's memory figures, from its hello record."""
    keys = ("arena_used", "arena_size", "arena_bytes", "free_internal", "free_psram",
            "min_free_internal", "min_free_psram", "heap_internal", "heap_psram")
    return {k: hello[k] for k in keys if k in hello}


ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


def run_bench(
    client: Any,
    *,
    port: str,
    n: int = 200,
    warmup: int = 10,
    input_source: str = "sample",
    profile: bool = False,
    out_json: Path | None = None,
    on_progress: ProgressFn | None = None,
    flush_every_s: float = 0.5,
) -> BenchResult:
    """Drive the firmware's bench command on a connected :class:`~gendertool.link.DeviceClient`.

    bench.json is rewritten while samples arrive (at most every ``flush_every_s``) and once more
    at the end, so a run that loses the device keeps every sample already received. A lost
    device does not raise: the result carries ``error`` and the completed count, and the CLI
    decides the exit code.
    """
    if n < 1:
        raise GendertoolError("-n must be at least 1")
    if warmup < 0:
        raise GendertoolError("--warmup must not be negative")
    if input_source not in ("sample", "camera"):
        raise GendertoolError(f"--input must be 'sample' or 'camera', not {input_source!r}")
    progress = on_progress or (lambda phase, done, total: None)
    result = BenchResult(port=port, n=n, warmup=warmup, input=input_source, started=_now())
    last_flush = 0.0

    def flush(force: bool = False) -> None:
        nonlocal last_flush
        if out_json is None:
            return
        now = time.monotonic()
        if force or now - last_flush >= flush_every_s:
            result.finished = _now()
            write_json_atomic(out_json, result.to_json())
            result.path = out_json
            last_flush = now

    try:
        progress("connect", 0, n)
        hello = _rec_dict(client.info())
        result.device = hello
        result.simulated = bool(hello.get("simulated", False))
        result.memory = memory_report(hello)
        flush(force=True)
        client.set_source(input_source)
        progress("bench", 0, n)
        for rec in client.bench(n, warmup):
            kind = _rec_type(rec)
            if kind in ("bsample", "benchsample", "benchsamplerecord"):
                result.samples.append(_sample_from(rec))
                progress("bench", result.completed, n)
                flush()
            elif kind in ("bsummary", "benchsummary", "benchsummaryrecord"):
                result.device_summary = _rec_dict(rec)
                result.memory.update(memory_report(result.device_summary))
        if result.completed < n:
            raise DeviceError(f"the device ended the bench after {result.completed} of {n} runs")
        if profile:
            progress("profile", 0, 1)
            result.profile = _profile_from(client.profile())
            progress("profile", 1, 1)
    except GendertoolError as exc:
        result.error = str(exc)
    finally:
        result.finished = _now()
        flush(force=True)
    return result


def _profile_from(rec: Any) -> list[OpTiming]:
    d = _rec_dict(rec)
    ops = d.get("ops", d.get("operators", []))
    rows = []
    for op in ops:
        if isinstance(op, dict):
            rows.append((str(op.get("op", op.get("name", "?"))), int(op.get("count", 1)), int(op.get("us", op.get("total_us", 0)))))
        else:  # [name, count, us]
            rows.append((str(op[0]), int(op[1]), int(op[2])))
    return profile_table(rows)
