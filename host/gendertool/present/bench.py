"""Tables for ``bench``: statistics, paths, the latency estimate, comparison, several boards, variants."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gendertool.device.bench_results import (
    METRIC_TITLES,
    REFERENCE_MS,
    compare_caveats,
    compare_results,
)
from gendertool.model.estimate import CALIBRATION_FILE
from gendertool.present.tables import format_bytes, format_ms
from gendertool.protocol import arena_warning
from gendertool.stats import STAT_KEYS

if TYPE_CHECKING:
    from rich.console import Console

    from gendertool.device.bench_results import BenchResult, CompareRow
    from gendertool.model.info import ModelInfo


# --------------------------------------------------------------------------- presentation


def ms_text(us: float | None) -> str:

    return format_ms(None if us is None else us / 1000, 2)


def sim_prefix(simulated: bool) -> str:
    return "SIMULATED " if simulated else ""


SIM_NOTE = "simulated: the virtual device's figures are this computer's timings, not a board's"


def present_bench(r: "BenchResult", out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table


    st = r.stats()
    dev = r.device
    title = (f"{sim_prefix(r.simulated)}latency on {escape(r.board)} ({escape(r.port)}), model {escape(str(dev.get('model', '?')))}"
             f" sha256 {r.model_sha256[:12]}")
    t = Table(title=title, title_justify="left")
    t.add_column("ms")
    t.add_column("n", justify="right")
    for k in STAT_KEYS:
        t.add_column(k, justify="right")
    for m in ("pre_us", "invoke_us", "total_us"):
        if m in st:
            s = st[m]
            t.add_row(METRIC_TITLES[m], str(s.n), *(ms_text(getattr(s, k)) for k in STAT_KEYS))
    if st:
        out.print(t)
    if "fps" in st:
        mean_ms = st["total_us"].mean / 1000
        capture = ", camera capture not included" if r.input == "camera" else ""
        if r.simulated:  # host timings say nothing about the board: no verdict against it
            verdict = f"not comparable with the {REFERENCE_MS:.0f} ms board reference"
        else:
            verdict = "faster than" if mean_ms < REFERENCE_MS else "slower than"
            verdict += f" the {REFERENCE_MS:.0f} ms reference (Seeed card, XIAO ESP32S3)"
        out.print(f"{sim_prefix(r.simulated)}FPS {st['fps']:.1f} (1 / mean total: preprocessing + Invoke(){capture}); "
                  f"mean total {mean_ms:.2f} ms is {verdict}")
    if not st:
        out.print(f"{sim_prefix(r.simulated)}no samples received from {escape(r.port)}")
    if r.device_summary:  # the device's count, not the request's
        out.print(f"warm-up runs: {r.device_summary.get('warmup', '?')} on the device ({r.warmup} requested)")
    mem = {k: v for k, v in r.memory.items() if v}
    if mem:
        out.print("memory: " + ", ".join(f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in mem.items()))
    elif r.device:  # the device said who it is, without memory figures (no hello: nothing to say)
        out.print("memory: not reported by the device" + (" (a virtual device has no heap of its own)" if r.simulated else ""))
    if dev.get("arena_in"):
        warning = arena_warning(dev["arena_in"])
        out.print(f"[bold red]WARNING: {escape(warning)}[/]" if warning else f"arena: in {escape(dev['arena_in'])}")
    if r.device_summary.get("camera"):
        out.print("[bold red]WARNING: the camera was running during this benchmark (it captures into PSRAM and shares the bus)[/]")
    versions = ", ".join(f"{k} {dev[k]}" for k in ("fw", "idf", "tflm", "esp_nn") if dev.get(k))
    if versions:
        mhz = f"; CPU {dev['cpu_mhz']} MHz" if dev.get("cpu_mhz") else ""
        out.print(f"firmware: {escape(versions)}{mhz}")
    if r.profile:
        p = Table(title=f"{sim_prefix(r.simulated)}per-operator time of one Invoke(){' (estimated)' if r.profile_estimated else ''}",
                  title_justify="left")
        for col in ("operator", "count", "total us", "share"):
            p.add_column(col, justify="left" if col == "operator" else "right")
        for row in r.profile:
            p.add_row(escape(row.op), str(row.count), str(row.total_us), f"{row.share * 100:.1f} %")
        out.print(p)
    if r.simulated:
        out.print(SIM_NOTE)


def present_paths(r: "BenchResult", plots: "list[Path]", out: "Console") -> None:
    """Where a run's report and plots are (the last lines of the output)."""
    from rich.markup import escape

    if r.path:
        state = ("complete" if r.complete and not r.stale else
                 f"{'INTERRUPTED' if r.interrupted else 'INCOMPLETE'}: {r.saved} of {r.n} runs"
                 + (f", not the {r.completed} shown above: a later write failed" if r.stale else ""))
        out.print(f"bench.json: {escape(str(r.path))} ({state})", soft_wrap=True)
    if plots:
        out.print(f"plots: {escape(', '.join(str(p) for p in plots))}", soft_wrap=True)


def present_estimate(r: "BenchResult", info: "ModelInfo | None", out: "Console", *, load_error: str = "") -> float | None:
    """A board's measured Invoke() against gendertool.model.estimate for ``info`` (the model the
    command loaded once; None with ``load_error`` when it could not be loaded). A virtual device
    gets no comparison. Returns the measured Invoke() mean in ms when compared, else None."""
    from rich.markup import escape

    if r.simulated:
        out.print("estimate: no comparison on a virtual device (host timings; "
                  "`gendertool inspect` shows the board estimate)")
        return None
    st = r.stats()
    if "invoke_us" not in st:
        return None
    if info is None:  # the bench results are in; a bad --model only costs the comparison
        out.print(f"estimate: not compared ({escape(load_error)})")
        return None
    if info.sha256 != r.model_sha256 or info.latency is None:
        out.print(f"estimate: not compared, the board runs model sha256 {escape(r.model_sha256[:12])} and the estimate "
                  f"is for {escape(info.name)} ({info.sha256[:12]}); pass its file with --model")
        return None

    est = info.latency
    measured = st["invoke_us"].mean / 1000
    out.print(f"Invoke() mean {measured:.2f} ms MEASURED vs ESTIMATE {est.internal_ms:.2f} ms (arena in internal RAM, "
              f"measured/estimate {measured / est.internal_ms:.2f}) / {est.psram_ms:.2f} ms (PSRAM, "
              f"{measured / est.psram_ms:.2f})")
    if r.profile and not r.profile_estimated:
        from rich.table import Table

        measured_op = {row.op: row.total_us for row in r.profile}
        t = Table(title="per operator: profiled Invoke() MEASURED vs ESTIMATE", title_justify="left")
        for col in ("operator", "measured ms", "estimate ms (internal)", "estimate ms (PSRAM)"):
            t.add_column(col, justify="left" if col == "operator" else "right")
        for name, _, internal, psram in est.by_op():
            got = measured_op.get(name)
            t.add_row(escape(name), "-" if got is None else f"{got / 1000:.2f}", f"{internal:.2f}", f"{psram:.2f}")
        out.print(t)
    return measured


def present_calibration_point(path: Path, out: "Console") -> None:
    from rich.markup import escape

    out.print(f"calibration point: {escape(str(path))} (set its arena, then add it to the points of "
              f"{escape(str(CALIBRATION_FILE))} to recalibrate the estimate)")


def present_compare(old: "BenchResult", new: "BenchResult", out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table


    rows = compare_results(old, new)
    sim = old.simulated or new.simulated
    t = Table(title=f"{sim_prefix(sim)}compare: old {old.path or ''} -> new (speed-up > 1 = new is faster)", title_justify="left")
    for col in ("metric", "stat", "old ms", "new ms", "delta ms", "delta %", "speed-up"):
        t.add_column(col, justify="left" if col in ("metric", "stat") else "right")
    for row in rows:
        t.add_row(*_compare_cells(row, METRIC_TITLES))
    out.print(t)
    for caveat in compare_caveats(old, new):
        out.print(f"caveat: {escape(caveat)}", soft_wrap=True)


def _compare_cells(row: "CompareRow", titles: dict) -> list[str]:
    if row.metric == "fps":
        return ["FPS", "", f"{row.old:.1f}", f"{row.new:.1f}", f"{row.delta:+.1f}", f"{row.delta_pct:+.1f}", f"{row.speedup:.2f}x"]
    return [titles[row.metric], row.stat, ms_text(row.old), ms_text(row.new), f"{row.delta / 1000:+.2f}", f"{row.delta_pct:+.1f}",
            "-" if row.speedup is None else f"{row.speedup:.2f}x"]


def present_boards(results: list["BenchResult"], out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{sim_prefix(any(r.simulated for r in results))}all boards", title_justify="left")
    for col in ("port", "board", "runs", "Invoke() p50 ms", "total p50 ms", "FPS", "status"):
        t.add_column(col, justify="left" if col in ("port", "board", "status") else "right")
    for r in results:
        st = r.stats()
        t.add_row(
            escape(r.port), escape(r.board), f"{r.completed}/{r.n}",
            ms_text(st["invoke_us"].p50) if "invoke_us" in st else "-",
            ms_text(st["total_us"].p50) if "total_us" in st else "-",
            f"{st['fps']:.1f}" if "fps" in st else "-",
            "ok" if r.error is None else escape(f"failed: {r.error}"),
        )
    out.print(t)


def present_matrix(results: list["BenchResult"], out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    base = results[0].stats() if results and results[0].samples else {}
    t = Table(title=f"{sim_prefix(any(r.simulated for r in results))}firmware variants", title_justify="left")
    for col in ("variant", "runs", "Invoke() p50 ms", "Invoke() mean ms", "total p50 ms", "FPS", "speed-up vs first"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in results:
        st = r.stats()
        inv = st.get("invoke_us")
        speed = f"{base['invoke_us'].mean / inv.mean:.2f}x" if inv and "invoke_us" in base else "-"
        t.add_row(escape(r.variant or "?"), f"{r.completed}/{r.n}", ms_text(inv.p50) if inv else "-",
                  ms_text(inv.mean) if inv else "-", ms_text(st["total_us"].p50) if "total_us" in st else "-",
                  f"{st['fps']:.1f}" if "fps" in st else "-", speed)
    out.print(t)
