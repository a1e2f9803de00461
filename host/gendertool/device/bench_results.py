"""Benchmark results: samples and their statistics, ``bench.json`` (read, write, keep the previous
one), comparison of two results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from gendertool import __version__
from gendertool.boards import BOARDS
from gendertool.errors import GendertoolError
from gendertool.model.estimate import save_calibration_point
from gendertool.project.memory import internal_budget
from gendertool.stats import STAT_KEYS, Stats, latency_stats

SCHEMA = 2  # 2: every sample holds pre_us + invoke_us (1 had Invoke()-only samples plus a few "runs")
KIND = "gendertool-bench"
# Seeed's model card for the gender classifier quotes about 40 ms per inference on a
# XIAO ESP32S3; every histogram draws it so a run can be judged at a glance.
REFERENCE_MS = 40.0
REFERENCE_LABEL = "Seeed card: 40 ms (XIAO ESP32S3)"

METRICS = ("pre_us", "invoke_us", "total_us")
BENCH_JSON = "bench.json"
PREV_JSON = "bench.prev.json"  # the last complete report, kept when a new run replaces it
PLOT_NAMES = ("latency_hist.png", "operators.png")  # gendertool.present.plots writes these beside bench.json
METRIC_TITLES = {"pre_us": "preprocessing", "invoke_us": "Invoke()", "total_us": "total"}


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Sample:
    """One timed run of the device's bench command: preprocessing, then ``Invoke()``."""

    seq: int
    pre_us: int
    invoke_us: int

    @property
    def total_us(self) -> int:
        return self.pre_us + self.invoke_us

    def to_dict(self) -> dict:
        return {"seq": self.seq, "pre_us": self.pre_us, "invoke_us": self.invoke_us, "total_us": self.total_us}

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        return cls(int(d["seq"]), int(d["pre_us"]), int(d["invoke_us"]))


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Statistics of ``pre_us``, ``invoke_us`` and ``total_us`` (their sum per run) over every
    sample; ``fps`` = 1 / mean total (none for a 0 µs mean: a clock too coarse has no FPS)."""
    if not samples:
        return {}
    out: dict[str, Any] = {m: latency_stats(getattr(s, m) for s in samples) for m in METRICS}
    if out["total_us"].mean > 0:
        out["fps"] = 1e6 / out["total_us"].mean
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
    profile_estimated: bool = False
    device_summary: dict = field(default_factory=dict)  # the device's own bsummary record
    selftest: dict = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    error: str | None = None
    interrupted: bool = False  # Ctrl-C stopped the run; the samples are the ones received before
    variant: str | None = None
    variant_options: dict = field(default_factory=dict)
    path: Path | None = None  # where bench.json was written
    device_log: list[str] = field(default_factory=list)  # the device's log lines seen during the run
    link: dict = field(default_factory=dict)  # the host parser's counters (damaged / dropped records)
    saved: int = 0  # samples in the bench.json at ``path`` (fewer than completed when a later write failed)

    @property
    def stale(self) -> bool:
        """bench.json holds fewer samples than arrived (the disk filled after an earlier write)."""
        return self.path is not None and self.saved < self.completed

    @property
    def completed(self) -> int:
        return len(self.samples)

    @property
    def complete(self) -> bool:
        return self.error is None and not self.interrupted and self.completed >= self.n

    @property
    def board(self) -> str:
        return str(self.device.get("board", "unknown"))

    @property
    def model_sha256(self) -> str:
        return str(self.device.get("model_sha256", ""))

    @property
    def memory(self) -> dict:
        return memory_report(self.device)

    def stats(self) -> dict[str, Any]:
        return summarize(self.samples)

    def to_json(self) -> dict:

        dev = self.device
        stats = self.stats()
        return {
            "schema": SCHEMA,
            "kind": KIND,
            "simulated": self.simulated,
            "port": self.port,
            "board": self.board,
            "chip": dev.get("chip", ""),
            "model": {
                "name": dev.get("model", ""),
                "sha256": self.model_sha256,
                "labels": dev.get("labels", []),
                "input": {"shape": dev.get("input", []), "scale": dev.get("in_scale"), "zero_point": dev.get("in_zp")},
            },
            "firmware": {
                "version": dev.get("fw", ""),
                "cpu_mhz": dev.get("cpu_mhz"),
                "arena_bytes": dev.get("arena_bytes"),
                "arena_in": dev.get("arena_in", ""),  # "internal", "psram" (slower), "host" (virtual device)
                "variant": self.variant,
                "options": self.variant_options,
            },
            "versions": {
                "idf": dev.get("idf", ""),
                "tflm": dev.get("tflm", ""),
                "esp_nn": dev.get("esp_nn", ""),
                "protocol": dev.get("proto"),
                "gendertool_host": __version__,
            },
            "device": dev,
            "memory": self.memory,
            "internal_ram_calibration": internal_ram_calibration(dev, self.simulated),
            "selftest": self.selftest,
            "request": {"n": self.n, "warmup": self.warmup, "input": self.input},
            "started": self.started,
            "finished": self.finished,
            "completed": self.completed,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "error": self.error,
            "stats": {k: (v.to_dict() if isinstance(v, Stats) else v) for k, v in stats.items()},
            "device_summary": self.device_summary,
            "device_log": self.device_log,
            "link": self.link,
            "profile": [r.to_dict() for r in self.profile],
            "profile_estimated": self.profile_estimated,
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
            profile_estimated=bool(data.get("profile_estimated", False)),
            device_summary=dict(data.get("device_summary", {})),
            selftest=dict(data.get("selftest", {})),
            device_log=[str(x) for x in data.get("device_log", [])],
            link=dict(data.get("link", {})),
            started=str(data.get("started", "")),
            finished=str(data.get("finished", "")),
            error=data.get("error"),
            interrupted=bool(data.get("interrupted", False)),
            variant=fw.get("variant"),
            variant_options=dict(fw.get("options", {})),
            path=path,
        )


def internal_ram_calibration(hello: dict, simulated: bool = False) -> dict:
    """The board's free internal heap once the arena and every boot allocation are made (the hello's
    ``heap_internal``) beside the host's internal-RAM budget for that board (project.memory,
    estimated before a build): what the first run on a board calibrates the budget with."""
    free = hello.get("heap_internal")
    board = BOARDS.get(str(hello.get("board", "")))
    return {
        "board_free_after_allocation_bytes": None if simulated or free is None else int(free),
        "arena_bytes": hello.get("arena_bytes"),
        "host_budget": internal_budget(board).to_dict() if board is not None else None,
        "note": ("board_free_after_allocation_bytes counts every internal heap (the startup-stack region and the "
                 "PSRAM DMA pool too); host_budget.for_arena_bytes is the largest arena the host expects "
                 "internal RAM to take (a virtual device reports no heap)"),
    }


def memory_report(hello: dict) -> dict:
    """The device's memory figures, from its hello record."""
    keys = ("arena_bytes", "arena_used", "heap_internal", "heap_psram")
    return {k: hello[k] for k in keys if k in hello}


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
        why = " (its samples hold Invoke() times only; run the benchmark again)" if data.get("schema") == 1 else ""
        raise GendertoolError(f"{p}: bench.json schema {data.get('schema')!r} is not supported (expected {SCHEMA}){why}")
    try:
        result = BenchResult.from_json(data, p)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
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
    def speedup(self) -> float | None:
        """How many times faster ``new`` is (>1 = faster): old/new for times, new/old for FPS.
        None for the standard deviation: a narrower spread is not a speed."""
        if self.stat == "std":
            return None
        if self.metric == "fps":
            return self.new / self.old if self.old else float("nan")
        return self.old / self.new if self.new else float("nan")

    def to_dict(self) -> dict:
        return {"metric": self.metric, "stat": self.stat, "old": self.old, "new": self.new,
                "delta": self.delta, "delta_pct": self.delta_pct, "speedup": self.speedup}


def compare_caveats(old: BenchResult, new: BenchResult) -> list[str]:
    """What makes a comparison of ``old`` and ``new`` weaker: a run that was interrupted, failed
    or stopped short, or one side simulated and the other not."""
    out = []
    for side, r in (("old", old), ("new", new)):
        if not r.complete:
            why = "interrupted (Ctrl-C)" if r.interrupted else (f"failed: {r.error}" if r.error else "incomplete")
            where = f" ({r.path})" if r.path else ""
            out.append(f"the {side} run{where} is {why}: {r.completed} of {r.n} runs, so its figures describe part of a run")
    if old.simulated != new.simulated:
        out.append("one run is simulated (host timings) and the other is not: the speed-up compares a computer with a board")
    return out


def compare_results(old: BenchResult, new: BenchResult) -> list[CompareRow]:
    """Row per metric both runs measured and per statistic: old, new, delta, speed-up."""
    so, sn = old.stats(), new.stats()
    rows = [CompareRow(m, k, getattr(so[m], k), getattr(sn[m], k)) for m in METRICS if m in so and m in sn for k in STAT_KEYS]
    if not rows:
        raise GendertoolError("the two runs have no latency figure in common to compare")
    if "fps" in so and "fps" in sn:
        rows.append(CompareRow("fps", "", so["fps"], sn["fps"]))
    return rows


def save_calibration(r: BenchResult, info: Any, measured_ms: float) -> Path | None:
    """Write the calibration point of a board's measured Invoke() mean beside its bench.json
    (``info``: the ModelInfo the board runs, with its latency estimate). None without a file."""
    if r.path is None or info.latency is None:
        return None
    conditions = (f"gendertool bench, {r.completed} runs, firmware {r.device.get('fw', '?')}, "
                  f"CPU {r.device.get('cpu_mhz', '?')} MHz")
    return save_calibration_point(r.path.parent, f"{info.name} on {r.board}", measured_ms, info.latency, conditions)
