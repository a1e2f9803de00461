"""On-device latency benchmark: run, statistics, bench.json, compare, firmware-variant matrix.

The device does the timing (``esp_timer`` around preprocessing and around ``Invoke()``): the
firmware's ``bench`` command preprocesses its input and invokes the model once per run and
sends both times of every run (batched ``bsample`` records, parallel ``pre_us`` and
``invoke_us`` arrays). The host only collects and summarises, so USB latency never enters the
figures. Nothing here prints: progress goes through callbacks and the CLI presents the
returned objects.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from gendertool.errors import DeviceError, GendertoolError, Interrupted
from gendertool.files import write_json_atomic
from gendertool.stats import STAT_KEYS, Stats, latency_stats, percentile  # noqa: F401 - bench's API too
from gendertool.protocol import BenchSample, ProfileOp, ProfileSummary, record_to_dict
from gendertool.transport import check_port_list, run_parallel

SCHEMA = 2  # 2: every sample holds pre_us + invoke_us (1 had Invoke()-only samples plus a few "runs")
KIND = "gendertool-bench"
# Seeed's model card for the gender classifier quotes about 40 ms per inference on a
# XIAO ESP32S3; every histogram draws it so a run can be judged at a glance.
REFERENCE_MS = 40.0
REFERENCE_LABEL = "Seeed card: 40 ms (XIAO ESP32S3)"

METRICS = ("pre_us", "invoke_us", "total_us")
BENCH_JSON = "bench.json"
PREV_JSON = "bench.prev.json"  # the last complete report, kept when a new run replaces it
PLOT_NAMES = ("latency_hist.png", "operators.png")  # gendertool.plots writes these beside bench.json
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
        from gendertool import __version__

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
    def speedup(self) -> float:
        """How many times faster ``new`` is (>1 = faster): old/new for times, new/old for FPS."""
        if self.metric == "fps":
            return self.new / self.old if self.old else float("nan")
        return self.old / self.new if self.new else float("nan")

    def to_dict(self) -> dict:
        return {"metric": self.metric, "stat": self.stat, "old": self.old, "new": self.new,
                "delta": self.delta, "delta_pct": self.delta_pct, "speedup": self.speedup}


def compare_results(old: BenchResult, new: BenchResult) -> list[CompareRow]:
    """Row per metric both runs measured and per statistic: old, new, delta, speed-up."""
    so, sn = old.stats(), new.stats()
    rows = [CompareRow(m, k, getattr(so[m], k), getattr(sn[m], k)) for m in METRICS if m in so and m in sn for k in STAT_KEYS]
    if not rows:
        raise GendertoolError("the two runs have no latency figure in common to compare")
    if "fps" in so and "fps" in sn:
        rows.append(CompareRow("fps", "", so["fps"], sn["fps"]))
    return rows


# --------------------------------------------------------------------------- running on a device


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


def check_request(n: int, warmup: int, input_source: str) -> None:
    """The firmware's limits (docs/protocol.md), checked before any device is touched."""
    if not 1 <= n <= 10000:
        raise GendertoolError(f"-n must be within 1..10000 (the firmware's bench limit), got {n}")
    if not 0 <= warmup <= 1000:
        raise GendertoolError(f"--warmup must be within 0..1000, got {warmup}")
    if input_source not in ("sample", "camera"):
        raise GendertoolError(f"--input must be 'sample' or 'camera', not {input_source!r}")


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
    variant: "Variant | None" = None,
    should_stop: Callable[[], bool] | None = None,
) -> BenchResult:
    """Benchmark a connected :class:`~gendertool.link.DeviceClient`.

    The device's ``bench n warmup`` on ``input_source``: ``n`` timed runs, each preprocessing
    the input and invoking the model, both times reported per run. Then, with ``profile``,
    one profiled ``Invoke()``. bench.json is rewritten while samples arrive (at most every
    ``flush_every_s``) and once at the end, so a run that loses the device keeps every
    sample received. A lost device does not raise: the result carries ``error`` and the
    completed count; the CLI decides the exit code.

    A run that received no sample writes nothing (an earlier report stays as it was); the
    first write moves a complete earlier report aside (:func:`keep_previous`). Ctrl-C (or
    ``should_stop()`` turning true, for a board in a worker thread) writes what arrived,
    marked ``interrupted``, and raises :class:`Interrupted` carrying the result.
    """
    check_request(n, warmup, input_source)
    progress = on_progress or (lambda phase, done, total: None)
    result = BenchResult(port=port, n=n, warmup=warmup, input=input_source, started=_now())
    if variant is not None:
        result.variant, result.variant_options = variant.name, {**variant.options, "sdkconfig": variant.sdkconfig}
    last_flush = 0.0
    started_writing = False
    stop = should_stop or (lambda: False)

    def flush(force: bool = False) -> None:
        nonlocal last_flush, started_writing
        if out_json is None or not (result.samples or result.profile):
            return
        now = time.monotonic()
        if force or now - last_flush >= flush_every_s:
            if not started_writing:
                keep_previous(out_json)
                started_writing = True
            result.finished = _now()
            try:
                write_report(out_json, result.to_json())
            except GendertoolError:
                result.path = None  # what is on disk (if anything) is older than what we hold
                raise
            result.path = out_json
            last_flush = now

    try:
        progress("connect", 0, n)
        result.device = record_to_dict(client.info())
        result.simulated = bool(result.device.get("simulated", False))
        boot = client.boot_selftest()
        if boot is not None:  # recorded when seen (a board that booted before we connected already sent it)
            result.selftest = {**record_to_dict(boot), "origin": "boot"}
        flush(force=True)
        client.set_source(input_source)
        progress("bench", 0, n)
        for rec in client.bench(n, warmup):
            if stop():
                raise KeyboardInterrupt
            if isinstance(rec, BenchSample):
                result.samples.extend(Sample(rec.first + i, pre, inv)
                                      for i, (pre, inv) in enumerate(zip(rec.pre_us, rec.invoke_us)))
                result.simulated = result.simulated or rec.simulated
                progress("bench", result.completed, n)
                flush()
            else:  # the closing bsummary
                result.device_summary = record_to_dict(rec)
        lost = int(result.device_summary.get("n", n)) - result.completed
        if result.completed < n or lost > 0:
            raise DeviceError(f"the device reported {result.device_summary.get('n', '?')} runs but {result.completed} arrived "
                              f"({n} requested)")
        mismatch = summary_mismatches(result)
        if mismatch:
            raise DeviceError("the device's bsummary disagrees with its samples: " + "; ".join(mismatch))
        flush(force=True)
        if profile:
            progress("profile", 0, 1)
            result.profile, result.profile_estimated = profile_from_records(client.profile())
            progress("profile", 1, 1)
    except GendertoolError as exc:
        result.error = str(exc)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        result.finished = _now()
        logs, stats = getattr(client, "logs", None), getattr(client, "stats", None)
        if logs is not None:
            result.device_log = [getattr(line, "text", str(line)) for line in logs]
        if hasattr(stats, "as_dict"):
            result.link = stats.as_dict()
        try:
            flush(force=True)
        except GendertoolError as exc:
            if str(exc) not in (result.error or ""):
                result.error = f"{result.error}; {exc}" if result.error else str(exc)
    if result.interrupted:
        raise Interrupted(interrupted_note([result]), partial=result)
    return result


REPORT_KIND = "gendertool-report"


def report_bundle(results: Sequence[BenchResult], argv: Sequence[str]) -> dict:
    """One JSON document a user can send back (docs/first-board-run.md): per board, bench.json
    as written (hello with arena placement and heaps, self-test, samples, device summary,
    profile) plus the device's log lines and the link counters; and this computer's versions."""
    import platform
    import sys

    from gendertool import __version__

    return {
        "kind": REPORT_KIND,
        "schema": 1,
        "created": _now(),
        "gendertool": __version__,
        "host": {"platform": platform.platform(), "python": sys.version.split()[0]},
        "argv": list(argv),
        "boards": [{**r.to_json(), "path": str(r.path) if r.path else None} for r in results],
    }


def summary_mismatches(result: BenchResult) -> list[str]:
    """Where the device's own ``bsummary`` disagrees with the samples that arrived or with the
    request: its n, its warm-up count, and min / max / total / mean of the ``Invoke()`` column
    (the firmware sums Invoke() times only, so swapped columns show here). Empty: consistent."""
    d = result.device_summary
    if not d:
        return []
    out = []
    if int(d.get("warmup", result.warmup)) != result.warmup:
        out.append(f"the device ran {d.get('warmup')} warm-up run(s), {result.warmup} requested")
    inv = [s.invoke_us for s in result.samples]
    if not inv or int(d.get("n", len(inv))) != len(inv):
        return out  # a count mismatch is reported by run_bench; the figures cannot be compared
    dev = {k: d.get(k) for k in ("min_us", "max_us", "total_us", "mean_us")}
    got = {"min_us": min(inv), "max_us": max(inv), "total_us": sum(inv), "mean_us": sum(inv) / len(inv)}
    for k in ("min_us", "max_us", "total_us"):
        if dev[k] is not None and int(dev[k]) != got[k]:
            out.append(f"its Invoke() {k[:-3]} is {dev[k]} us, the samples' is {got[k]} us")
    if dev["mean_us"] is not None and abs(float(dev["mean_us"]) - got["mean_us"]) > 0.05 + 1e-9:  # sent with 1 decimal
        out.append(f"its Invoke() mean is {dev['mean_us']} us, the samples' is {got['mean_us']:.1f} us")
    return out


def interrupted_note(results: Sequence[BenchResult]) -> str:
    """What an interrupted bench finished, per board, and where each partial report is."""
    parts = []
    for r in results:
        where = (f"partial report {r.path} (marked interrupted)" if r.path
                 else "nothing written" + (f" ({r.error})" if r.error else ""))
        parts.append(f"{r.port}: {r.completed} of {r.n} runs done, {where}")
    return "; ".join(parts) or "no board had sent a sample; nothing written"


def write_report(path: Path, data: dict) -> None:
    """bench.json, atomically: a failed write leaves the earlier file as it was, never half a file."""
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        raise GendertoolError(f"cannot write {path}: {exc.strerror or exc}") from None


def prev_name(name: str) -> str:
    """bench.json -> bench.prev.json, latency_hist.png -> latency_hist.prev.png."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.prev.{ext}" if dot else f"{name}.prev"


def keep_previous(out_json: Path) -> Path | None:
    """Called before a run's first write to ``out_json``; returns where the earlier report went.

    A complete earlier report moves to bench.prev.json with its plots (``*.prev.png``); an
    incomplete one is replaced (a complete bench.prev.json, if any, stays). Either way no plot
    of an older run is left beside the new bench.json.
    """
    folder = out_json.parent
    try:
        old = json.loads(out_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, unreadable or not JSON: nothing worth keeping
        old = None
    keep = isinstance(old, dict) and old.get("kind") == KIND and old.get("complete") is True
    try:
        if keep:
            os.replace(out_json, folder / prev_name(out_json.name))
        for name in PLOT_NAMES:
            plot = folder / name
            if keep:
                (folder / prev_name(name)).unlink(missing_ok=True)
                if plot.exists():
                    os.replace(plot, folder / prev_name(name))
            else:
                plot.unlink(missing_ok=True)
    except OSError as exc:
        raise GendertoolError(f"cannot move the earlier report in {folder} aside: {exc.strerror or exc}") from None
    return folder / prev_name(out_json.name) if keep else None


def check_out_dir(out: Path) -> None:
    """Refuse an --out that cannot hold the report, before any device is touched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GendertoolError(f"--out {out} is a file; give a folder for {BENCH_JSON} and the plots")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise GendertoolError(f"--out {out}: {probe} is a file, not a folder")
    try:  # a real write: os.access says yes to root and knows nothing of read-only mounts
        fd, tmp = tempfile.mkstemp(prefix=".gendertool-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise GendertoolError(f"--out {out}: cannot write into {probe} ({exc.strerror or exc})") from None


def profile_from_records(records: tuple[list[ProfileOp], ProfileSummary]) -> tuple[list[OpTiming], bool]:
    """``DeviceClient.profile()``'s (per-node records, psummary) -> per-operator table, estimated flag."""
    nodes, summary = records
    estimated = summary.estimated or any(op.estimated for op in nodes)
    return profile_table((op.op, 1, op.us) for op in nodes), estimated


# --------------------------------------------------------------------------- several boards


def port_slug(port: str) -> str:
    """A folder name for a port (per-board output folders)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", port).strip("_") or "port"


BoardProgress = Callable[[str, str, int, int], None]  # (port, phase, done, total)


def bench_boards(
    ports: Sequence[str],
    *,
    n: int = 200,
    warmup: int = 10,
    input_source: str = "sample",
    profile: bool = False,
    out_dir: Path | None = None,
    progress: BoardProgress | None = None,
    connect: Callable[[str], Any] | None = None,
) -> list[BenchResult]:
    """Bench every board in ``ports`` in parallel (one thread each), in the order given.

    One port writes ``out_dir/bench.json``; several write ``out_dir/<port>/bench.json``.
    """
    ports = check_port_list(ports)
    check_request(n, warmup, input_source)
    if out_dir is not None:
        check_out_dir(out_dir)
    connect = connect or _open_client
    results: dict[str, BenchResult] = {}
    stop = threading.Event()  # Ctrl-C reaches the main thread only: boards in threads are told

    def work(port: str) -> None:
        out_json = None
        if out_dir is not None:
            out_json = (out_dir if len(ports) == 1 else out_dir / port_slug(port)) / BENCH_JSON
        on_progress = (lambda phase, done, total: progress(port, phase, done, total)) if progress else None
        try:
            with connect(port) as client:
                results[port] = run_bench(client, port=port, n=n, warmup=warmup, input_source=input_source,
                                          profile=profile, out_json=out_json, on_progress=on_progress,
                                          should_stop=stop.is_set)
        except Interrupted as exc:
            results[port] = exc.partial
            raise
        except GendertoolError as exc:  # could not connect at all: a per-board result, no file
            results[port] = BenchResult(port=port, n=n, warmup=warmup, input=input_source, started=_now(),
                                        finished=_now(), error=str(exc))

    try:
        run_parallel(ports, work, stop=stop)
    except (Interrupted, KeyboardInterrupt):
        done = [results[p] for p in ports if p in results]
        raise Interrupted(interrupted_note(done), partial=done) from None
    return [results[p] for p in ports]


# --------------------------------------------------------------------------- firmware-variant matrix


@dataclass(frozen=True)
class Variant:
    """A firmware build to compare: render options (gendertool.render.OPTION_KEYS), nothing else."""

    name: str
    description: str
    options: dict

    @property
    def sdkconfig(self) -> dict[str, str]:
        """The Kconfig symbols these options select in the rendered project (for the record)."""
        o = self.options
        out = {f"CONFIG_APP_ARENA_{str(o.get('arena_placement', 'auto')).upper()}": "y",
               "CONFIG_APP_MODEL_IN_PSRAM": "y" if o.get("model_in_psram", False) else "n"}
        out["CONFIG_NN_OPTIMIZED" if o.get("esp_nn", True) else "CONFIG_NN_ANSI_C"] = "y"
        return out


# Add a row to measure another variant. CONFIG_APP_* live in the rendered main/Kconfig.projbuild,
# CONFIG_NN_* in esp-nn's Kconfig.projbuild (choice NN_OPTIMIZATIONS); tests check both.
_BASE = {"arena_placement": "internal", "model_in_psram": False, "esp_nn": True}
MATRIX: tuple[Variant, ...] = (
    Variant("baseline", "arena in internal RAM, model in flash, ESP-NN on", dict(_BASE)),
    Variant("arena-psram", "tensor arena in PSRAM", {**_BASE, "arena_placement": "psram"}),
    Variant("model-psram", "model copied from flash to PSRAM at boot", {**_BASE, "model_in_psram": True}),
    Variant("esp-nn-off", "ESP-NN off: ANSI C kernels", {**_BASE, "esp_nn": False}),
)


def get_variants(names: Sequence[str] | None = None) -> list[Variant]:
    if not names:
        return list(MATRIX)
    by_name = {v.name: v for v in MATRIX}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise GendertoolError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


StepFn = Callable[[str, str], None]  # (variant, message)


def run_matrix(
    port: str,
    variants: Sequence[Variant],
    *,
    model: str | Path | None = None,
    board: str | None = None,
    n: int = 200,
    warmup: int = 10,
    input_source: str = "sample",
    out_dir: Path = Path("out/bench"),
    on_step: StepFn | None = None,
    connect: Callable[[str], Any] | None = None,
    boot_timeout_s: float = 20.0,
) -> list[BenchResult]:
    """Build, flash and bench each variant on the board at ``port``, in order.

    Build and flash problems raise (BuildError / DeviceError): without a toolchain the first
    build stops the matrix with the toolchain's message, and no figure is invented. Each
    variant's project, bench.json and plots go to ``out_dir/<variant>/``.
    """
    from gendertool.build import build
    from gendertool.flash import flash, plan_flash

    check_request(n, warmup, input_source)
    if port == "sim" or port.startswith("socket://"):
        raise GendertoolError(f"--matrix flashes firmware: {port} is the virtual device, give a board's serial port")
    step = on_step or (lambda variant, message: None)
    connect = connect or _open_client
    results: list[BenchResult] = []
    for v in variants:
        vdir = out_dir / v.name
        try:
            built = build(model, board=board, out_dir=vdir / "project", input_source=input_source,
                          options=dict(v.options), on_stage=lambda msg, _v=v.name: step(_v, msg))
            step(v.name, f"flashing {port}")
            flash(plan_flash(built.out_dir), port)
            step(v.name, "benchmarking")
            client = _connect_when_booted(port, connect, boot_timeout_s)
            with client:
                r = run_bench(client, port=port, n=n, warmup=warmup, input_source=input_source,
                              out_json=vdir / BENCH_JSON, variant=v)
        except Interrupted as exc:
            results.append(exc.partial)
            raise Interrupted(interrupted_note(results), partial=results) from None
        except KeyboardInterrupt:
            note = f"stopped while building or flashing variant {v.name}"
            raise Interrupted(f"{interrupted_note(results)}; {note}" if results else note, partial=results) from None
        results.append(r)
        if r.error is not None:
            break
    return results


def _open_client(port: str) -> Any:
    from gendertool.link import DeviceClient

    return DeviceClient.open(port)


def _connect_when_booted(port: str, connect: Callable[[str], Any], timeout_s: float) -> Any:
    """After flashing, the USB port vanishes while the chip resets: retry until it is back."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return connect(port)
        except DeviceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
