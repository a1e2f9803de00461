"""On-device latency benchmark: run, statistics, bench.json, compare, firmware-variant matrix.

The device does the timing (``esp_timer`` around preprocessing and around ``Invoke()``): the
firmware's ``bench`` command preprocesses its input and invokes the model once per run and
sends both times of every run (batched ``bsample`` records, parallel ``pre_us`` and
``invoke_us`` arrays). The host only collects and summarises, so USB latency never enters the
figures. Nothing here prints: progress goes through callbacks and the CLI presents the
returned objects.
"""

from __future__ import annotations

import platform
import sys

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from gendertool import __version__
from gendertool.device.bench_results import (
    BENCH_JSON,
    KIND,
    PLOT_NAMES,
    BenchResult,
    OpTiming,
    Sample,
    profile_table,
)
from gendertool.device.link import DeviceClient
from gendertool.device.transport import check_port_list, run_parallel
from gendertool.errors import DeviceError, GendertoolError, Interrupted, ctrl_c_waits
from gendertool.files import write_json_atomic
from gendertool.protocol import BenchSample, ProfileOp, ProfileSummary, record_to_dict

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
    """Benchmark a connected :class:`~gendertool.device.link.DeviceClient`.

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
            write_report(out_json, result.to_json())  # a failure leaves path/saved at the last good write
            result.path, result.saved = out_json, result.completed
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
    late = False  # a Ctrl-C during the final save: held until it is written (errors.ctrl_c_waits)
    try:
        with ctrl_c_waits():
            result.finished = _now()
            logs, stats = getattr(client, "logs", None), getattr(client, "stats", None)
            if logs is not None:
                result.device_log = [getattr(line, "text", str(line)) for line in logs]
            if hasattr(stats, "as_dict"):
                result.link = stats.as_dict()
            flush(force=True)
    except GendertoolError as exc:
        if str(exc) not in (result.error or ""):
            result.error = f"{result.error}; {exc}" if result.error else str(exc)
    except KeyboardInterrupt:
        late = True
    if result.interrupted or late:
        raise Interrupted(interrupted_note([result]), partial=result)
    return result


REPORT_KIND = "gendertool-report"


def report_bundle(results: Sequence[BenchResult], argv: Sequence[str]) -> dict:
    """One JSON document a user can send back (docs/first-board-run.md): per board, bench.json
    as written (hello with arena placement and heaps, self-test, samples, device summary,
    profile) plus the device's log lines and the link counters; and this computer's versions."""
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
        if r.path and r.complete and not r.stale:  # stopped while its complete report was being written
            where = f"report {r.path} (complete)"
        elif r.stale:
            where = f"{r.path} holds only the first {r.saved} ({r.error or 'a later write failed'})"
        elif r.path:
            where = f"partial report {r.path}" + (" (marked interrupted)" if r.interrupted else "")
        else:
            where = "nothing written" + (f" ({r.error})" if r.error else "")
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
    connect = connect or open_client
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


@dataclass(frozen=True)
class Variant:
    """A firmware build to compare: render options (gendertool.project.render.OPTION_KEYS), nothing else."""

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


def open_client(port: str) -> Any:

    return DeviceClient.open(port)


def connect_when_booted(port: str, connect: Callable[[str], Any], timeout_s: float) -> Any:
    """After flashing, the USB port vanishes while the chip resets: retry until it is back."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return connect(port)
        except DeviceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
