"""Commands: bench (on-device latency statistics, per-operator profile, compare, variant matrix).

Also the tables for on-target validation (``gendertool validate --port``), since both present
device figures the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.protocol import arena_warning
from gendertool.wording import count

from ._app import EXIT_USER_ERROR, app, console, err_console, print_error
from ._options import port_option, resolve_ports

if TYPE_CHECKING:
    from rich.console import Console

    from gendertool.bench import BenchResult, CompareRow
    from gendertool.device_validate import DeviceValidation


@app.command("bench")
def bench_cmd(
    port: list[str] = port_option(several=True),
    n: int = typer.Option(200, "-n", "--runs", help="Timed runs, each preprocessing + Invoke() (1..10000)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing (0..1000)."),
    input_source: str = typer.Option(
        "sample", "--input", metavar="sample|camera", help="Input to run on: sample (a built-in image) or camera (a new frame per run; capture not timed)."
    ),
    profile: bool = typer.Option(False, "--profile", help="Also time every operator of one Invoke()."),
    out: Path = typer.Option(Path("out/bench"), "--out", "-o", help="Folder for bench.json and the PNG plots."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="An earlier bench.json: show deltas and the speed-up."),
    matrix: bool = typer.Option(False, "--matrix", help="Build, flash and bench every firmware variant on the board."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model for --matrix builds and for the latency estimate (default: the shipped model)."
    ),
    board: Optional[str] = typer.Option(None, "--board", help="Board for --matrix builds (default: xiao_esp32s3)."),
    variant: list[str] = typer.Option([], "--variant", help="With --matrix: only these variants (repeatable; default: all)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots next to bench.json."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (every board's bench.json, paths, compare)."),
    report: Optional[Path] = typer.Option(
        None, "--report",
        help="Also write one JSON file to send back: every board's bench.json with the device's log lines and link "
             "counters, and this computer's versions (docs/first-board-run.md)."),
) -> None:
    """Benchmark the model on the board: latency statistics from every run, FPS, memory, profile."""
    from gendertool.bench import check_request, load_bench

    check_request(n, warmup, input_source)  # before any port or file is touched
    ports = resolve_ports(port)
    old = load_bench(compare) if compare is not None else None  # fail before touching a device
    if matrix:
        _matrix(ports, n=n, warmup=warmup, input_source=input_source, out=out, model=model, board=board,
                variants=variant, plots=plots, as_json=as_json)
        return

    from gendertool.bench import bench_boards
    from gendertool.errors import Interrupted

    try:
        with _BoardProgress(ports) as progress:
            results = bench_boards(
                ports, n=n, warmup=warmup, input_source=input_source, profile=profile, out_dir=out,
                progress=progress,
            )
    except Interrupted as exc:
        _present_partial(exc.partial or [])
        if report is not None:
            _write_bundle(report, exc.partial or [])
        raise
    if report is not None:  # failed runs too: a failure is what we most want to see
        _write_bundle(report, results)
    # What failed first, then the statistics, then where the files are.
    failed = [r for r in results if r.error is not None]
    unwritten: list[str] = []  # a plot that could not be written does not hide the figures
    written = {id(r): _plots(r, unwritten) if plots else [] for r in results}
    if failed or unwritten:
        print_error(str(_failure(failed, unwritten)))
    if old is not None:
        _old_moved_aside(old, results)
    if as_json:
        _print_json(results, written, old)
    else:
        for r in results:
            present_bench(r, console)
            present_estimate(r, model, console)
            if old is not None and r.samples:
                present_compare(old, r, console)
        if len(results) > 1:
            present_boards(results, console)
        for r in results:
            present_paths(r, written[id(r)], console)
    if failed or unwritten:
        raise typer.Exit(EXIT_USER_ERROR)  # said above, before the results it still shows


def _write_bundle(path: Path, results: list["BenchResult"]) -> None:
    import sys

    from gendertool.bench import report_bundle, write_report

    write_report(path, report_bundle(results, sys.argv))
    err_console.print(f"report: {path} (send this one file)", highlight=False, soft_wrap=True)


def _plots(r: "BenchResult", unwritten: list[str]) -> list[Path]:
    """The run's plots, beside the bench.json they belong to only; a failure is noted, not raised."""
    if not r.samples or r.path is None:
        return []
    from gendertool.errors import GendertoolError
    from gendertool.plots import write_plots

    try:
        return write_plots(r, r.path.parent)
    except GendertoolError as exc:
        unwritten.append(str(exc))
    except OSError as exc:  # a full disk or a read-only folder: the figures are shown all the same
        unwritten.append(f"cannot write plot in {r.path.parent}: {exc.strerror or exc}")
    return []


def _old_moved_aside(old: "BenchResult", results: list["BenchResult"]) -> None:
    """--compare OUT/bench.json of a complete run: this run moved it to bench.prev.json."""
    from gendertool.bench import PREV_JSON

    for r in results:
        if (r.samples and old.complete and old.path is not None and r.path is not None
                and old.path.resolve() == r.path.resolve()):
            old.path = r.path.parent / PREV_JSON


def _print_json(results: list["BenchResult"], written: dict, old: "Optional[BenchResult]") -> None:
    import json

    from gendertool.bench import compare_results

    boards = []
    for r in results:
        doc = r.to_json()
        doc["path"] = str(r.path) if r.path else None
        doc["plots"] = [str(p) for p in written.get(id(r), [])]
        if old is not None and r.samples:
            doc["compare"] = {"old": str(old.path) if old.path else None,
                              "rows": [row.to_dict() for row in compare_results(old, r)]}
        boards.append(doc)
    typer.echo(json.dumps({"boards": boards}, indent=2))


def _present_partial(results: list["BenchResult"]) -> None:
    """After Ctrl-C: the samples so far with their statistics (no plots: they would be a partial run's)."""
    for r in results:
        if r.samples:
            present_bench(r, console)
    if len(results) > 1:
        present_boards(results, console)
    for r in results:
        present_paths(r, [], console)


def _failure(failed: list["BenchResult"], unwritten: list[str] = ()):
    from gendertool.errors import DeviceError

    parts = list(unwritten)
    for r in failed:
        kept = f"; {count(r.completed, 'sample')} kept in {r.path}" if r.path else ""
        parts.append(f"{r.port}: {r.error} ({r.completed} of {r.n} runs completed{kept})")
    return DeviceError("; ".join(parts))


# --------------------------------------------------------------------------- progress


class _BoardProgress:
    """One Rich progress line per board on stderr."""

    def __init__(self, ports: list[str]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True,  # gone when done: the output starts with the results
        )
        self.tasks = {p: self.progress.add_task(f"{p}: connecting", total=None) for p in ports}

    def __call__(self, port: str, phase: str, done: int, total: int) -> None:
        task = self.tasks.get(port)
        if task is None:
            task = self.tasks[port] = self.progress.add_task(port, total=None)
        self.progress.update(task, description=f"{port}: {phase}", completed=done, total=total or None)

    def __enter__(self):
        self.started = err_console.is_terminal
        if self.started:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.started:  # stopping a Progress never started prints an empty line
            self.progress.stop()


# --------------------------------------------------------------------------- presentation


def _ms(us: float | None) -> str:
    from gendertool.present import format_ms

    return format_ms(None if us is None else us / 1000, 2)


def _sim(simulated: bool) -> str:
    return "SIMULATED " if simulated else ""


SIM_NOTE = "simulated: the virtual device's figures are this computer's timings, not a board's"


def present_bench(r: "BenchResult", out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    from gendertool.bench import METRIC_TITLES, REFERENCE_MS, STAT_KEYS
    from gendertool.present import format_bytes

    st = r.stats()
    dev = r.device
    title = (f"{_sim(r.simulated)}latency on {escape(r.board)} ({escape(r.port)}), model {escape(str(dev.get('model', '?')))}"
             f" sha256 {r.model_sha256[:12]}")
    t = Table(title=title, title_justify="left")
    t.add_column("ms")
    t.add_column("n", justify="right")
    for k in STAT_KEYS:
        t.add_column(k, justify="right")
    for m in ("pre_us", "invoke_us", "total_us"):
        if m in st:
            s = st[m]
            t.add_row(METRIC_TITLES[m], str(s.n), *(_ms(getattr(s, k)) for k in STAT_KEYS))
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
        out.print(f"{_sim(r.simulated)}FPS {st['fps']:.1f} (1 / mean total: preprocessing + Invoke(){capture}); "
                  f"mean total {mean_ms:.2f} ms is {verdict}")
    if not st:
        out.print(f"{_sim(r.simulated)}no samples received from {escape(r.port)}")
    if r.device_summary:  # the device's count, not the request's
        out.print(f"warm-up runs: {r.device_summary.get('warmup', '?')} on the device ({r.warmup} requested)")
    mem = {k: v for k, v in r.memory.items() if v}
    if mem:
        out.print("memory: " + ", ".join(f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in mem.items()))
    else:
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
        p = Table(title=f"{_sim(r.simulated)}per-operator time of one Invoke(){' (estimated)' if r.profile_estimated else ''}",
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
        state = ("complete" if r.complete else
                 f"{'INTERRUPTED' if r.interrupted else 'INCOMPLETE'}: {r.completed} of {r.n} runs")
        out.print(f"bench.json: {escape(str(r.path))} ({state})", soft_wrap=True)
    if plots:
        out.print(f"plots: {escape(', '.join(str(p) for p in plots))}", soft_wrap=True)


def present_estimate(r: "BenchResult", model: str | None, out: "Console") -> None:
    """A board's measured Invoke() against gendertool.estimate (a virtual device gets no comparison)."""
    from rich.markup import escape

    if r.simulated:
        out.print("estimate: no comparison on a virtual device (host timings; "
                  "`gendertool inspect` shows the board estimate)")
        return
    st = r.stats()
    if "invoke_us" not in st:
        return
    from gendertool.errors import GendertoolError
    from gendertool.model import load_model

    try:
        info = load_model(model, measure_arena=False)
    except GendertoolError as exc:  # the bench results are in; a bad --model only costs the comparison
        out.print(f"estimate: not compared ({escape(str(exc))})")
        return
    if info.sha256 != r.model_sha256 or info.latency is None:
        out.print(f"estimate: not compared, the board runs model sha256 {escape(r.model_sha256[:12])} and the estimate "
                  f"is for {escape(info.name)} ({info.sha256[:12]}); pass its file with --model")
        return
    from gendertool.estimate import CALIBRATION_FILE, save_calibration_point

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
    if r.path is not None:
        conditions = (f"gendertool bench, {r.completed} runs, firmware {r.device.get('fw', '?')}, "
                      f"CPU {r.device.get('cpu_mhz', '?')} MHz")
        path = save_calibration_point(r.path.parent, f"{info.name} on {r.board}", measured, est, conditions)
        out.print(f"calibration point: {escape(str(path))} (set its arena, then add it to the points of "
                  f"{escape(str(CALIBRATION_FILE))} to recalibrate the estimate)")


def present_compare(old: "BenchResult", new: "BenchResult", out: "Console") -> None:
    from rich.table import Table

    from gendertool.bench import METRIC_TITLES, compare_results

    rows = compare_results(old, new)
    sim = old.simulated or new.simulated
    t = Table(title=f"{_sim(sim)}compare: old {old.path or ''} -> new (speed-up > 1 = new is faster)", title_justify="left")
    for col in ("metric", "stat", "old ms", "new ms", "delta ms", "delta %", "speed-up"):
        t.add_column(col, justify="left" if col in ("metric", "stat") else "right")
    for row in rows:
        t.add_row(*_compare_cells(row, METRIC_TITLES))
    out.print(t)


def _compare_cells(row: "CompareRow", titles: dict) -> list[str]:
    if row.metric == "fps":
        return ["FPS", "", f"{row.old:.1f}", f"{row.new:.1f}", f"{row.delta:+.1f}", f"{row.delta_pct:+.1f}", f"{row.speedup:.2f}x"]
    return [titles[row.metric], row.stat, _ms(row.old), _ms(row.new), f"{row.delta / 1000:+.2f}", f"{row.delta_pct:+.1f}",
            f"{row.speedup:.2f}x"]


def present_boards(results: list["BenchResult"], out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{_sim(any(r.simulated for r in results))}all boards", title_justify="left")
    for col in ("port", "board", "runs", "Invoke() p50 ms", "total p50 ms", "FPS", "status"):
        t.add_column(col, justify="left" if col in ("port", "board", "status") else "right")
    for r in results:
        st = r.stats()
        t.add_row(
            escape(r.port), escape(r.board), f"{r.completed}/{r.n}",
            _ms(st["invoke_us"].p50) if "invoke_us" in st else "-",
            _ms(st["total_us"].p50) if "total_us" in st else "-",
            f"{st['fps']:.1f}" if "fps" in st else "-",
            "ok" if r.error is None else escape(f"failed: {r.error}"),
        )
    out.print(t)


# --------------------------------------------------------------------------- matrix


def _matrix(ports: list[str], *, n: int, warmup: int, input_source: str, out: Path,
            model: Optional[str], board: Optional[str], variants: list[str], plots: bool, as_json: bool = False) -> None:
    from gendertool.bench import get_variants, run_matrix

    if len(ports) != 1:
        raise typer.BadParameter("--matrix flashes the board: give exactly one --port", param_hint="--port")
    chosen = get_variants(variants)

    def step(variant: str, message: str) -> None:
        err_console.print(f"[{variant}] {message}", markup=False, highlight=False)

    from gendertool.errors import Interrupted

    try:
        results = run_matrix(ports[0], chosen, model=model, board=board, n=n, warmup=warmup,
                             input_source=input_source, out_dir=out, on_step=step)
    except Interrupted as exc:
        _present_partial(exc.partial or [])
        raise
    failed = [r for r in results if r.error is not None]
    unwritten: list[str] = []
    written = {id(r): _plots(r, unwritten) if plots else [] for r in results}
    if failed or unwritten:
        print_error(str(_failure(failed, unwritten)))
    if as_json:
        _print_json(results, written, None)
    else:
        for r in results:
            present_bench(r, console)
        present_matrix(results, console)
        for r in results:
            present_paths(r, written[id(r)], console)
    if failed or unwritten:
        raise typer.Exit(EXIT_USER_ERROR)


def present_matrix(results: list["BenchResult"], out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    base = results[0].stats() if results and results[0].samples else {}
    t = Table(title=f"{_sim(any(r.simulated for r in results))}firmware variants", title_justify="left")
    for col in ("variant", "runs", "Invoke() p50 ms", "Invoke() mean ms", "total p50 ms", "FPS", "speed-up vs first"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in results:
        st = r.stats()
        inv = st.get("invoke_us")
        speed = f"{base['invoke_us'].mean / inv.mean:.2f}x" if inv and "invoke_us" in base else "-"
        t.add_row(escape(r.variant or "?"), f"{r.completed}/{r.n}", _ms(inv.p50) if inv else "-",
                  _ms(inv.mean) if inv else "-", _ms(st["total_us"].p50) if "total_us" in st else "-",
                  f"{st['fps']:.1f}" if "fps" in st else "-", speed)
    out.print(t)


# --------------------------------------------------------------------------- validate --port (called by cli/validate.py)


def present_device_validation(dv: "DeviceValidation", out: "Console", *, show_images: bool = False) -> None:
    """Tables for ``gendertool validate --port``: the host report per board plus device extras."""
    from rich.markup import escape
    from rich.table import Table

    from .validate import present

    for b in dv.boards:
        sim = _sim(b.simulated)
        out.rule(f"{sim}{b.port} ({b.board})")
        if b.selftest:
            st = b.selftest
            state = "PASS" if st.get("pass") else "FAIL"
            origin = "boot self-test" if st.get("origin") == "boot" else "self-test (run now; the boot record was not seen)"
            out.print(f"{sim}{origin}: {state}, {count(st.get('n', 0), 'sample')}, {st.get('failed', 0)} failed")
            for e in st.get("results", []):
                if not e.get("ok", True):
                    out.print(f"  sample {e.get('sample')}: expected class {e.get('expect')}, got {e.get('got')}, "
                              f"largest score difference {e.get('diff')}")
        if b.report is not None:
            present(b.report, out, show_images=show_images)
        lat = b.latency_stats()
        if lat:
            t = Table(title=f"{sim}device latency per image (ms)", title_justify="left")
            t.add_column("")
            for col in ("n", "min", "p50", "p90", "max", "mean"):
                t.add_column(col, justify="right")
            for key, name in (("pre_us", "preprocessing"), ("invoke_us", "Invoke()"), ("total_us", "total")):
                s = lat[key]
                t.add_row(name, str(s["n"]), *(_ms(s[k]) for k in ("min", "p50", "p90", "max", "mean")))
            out.print(t)
        if show_images and b.report is not None:
            t = Table(title=f"{sim}per image on the device", title_justify="left")
            for col in ("image", "true", "device", "tflm", "bit-exact", "max diff", "pre ms", "invoke ms"):
                t.add_column(col, justify="right" if col.endswith(("ms", "diff")) else "left")
            for im in b.report.images:
                lat = b.latency.get(im.path)
                t.add_row(escape(im.path), escape(im.label), escape(im.predicted.get("device", "-")),
                          escape(im.predicted.get("tflm", "-")), "yes" if im.identical else "NO", str(im.max_diff),
                          _ms(lat.pre_us) if lat else "-", _ms(lat.invoke_us) if lat else "-")
            out.print(t)
        p = b.parity()
        if p is not None and b.partial:  # no verdict from part of the images
            why = "interrupted (Ctrl-C)" if b.interrupted else "the run stopped early"
            out.print(f"{sim}PARTIAL: {escape(b.coverage())}; of those, {p.identical}/{p.compared} bit-exact "
                      f"({b.parity_pct:.1f} %), largest difference {p.max_diff}; no --min-parity verdict: {why}")
        elif p is not None:
            verdict = "ok" if b.parity_ok(dv.min_parity) else f"BELOW --min-parity {dv.min_parity:g} %"
            out.print(f"{sim}parity with the TFLM reference: {p.identical}/{p.compared} images bit-exact "
                      f"({b.parity_pct:.1f} %), largest difference {p.max_diff}: {verdict}")
        if b.error:
            out.print(f"[red]{escape(b.port)}: {escape(b.error)}[/]")
    if len(dv.boards) > 1:
        t = Table(title="all boards", title_justify="left")
        for col in ("port", "board", "images", "bit-exact", "parity", "max diff", "self-test", "status"):
            t.add_column(col)
        for b in dv.boards:
            p = b.parity()
            t.add_row(escape(b.port), escape(b.board), str(p.compared if p else 0), str(p.identical if p else 0),
                      f"{b.parity_pct:.1f} %", str(p.max_diff if p else "-"),
                      ("pass" if b.selftest.get("pass") else "FAIL") if b.selftest else "-",
                      "ok" if b.passed(dv.min_parity) else escape(
                          b.error or ("interrupted" if b.interrupted else
                                      "self-test FAIL" if b.selftest_passed is False else "below --min-parity")))
        out.print(t)


def device_validation_failure(dv: "DeviceValidation"):
    """The one error for a failed device validation (None when every board passed)."""
    from gendertool.errors import GendertoolError

    if dv.passed:
        return None
    parts = []
    for b in dv.boards:
        if b.passed(dv.min_parity):
            continue
        if b.error:
            parts.append(f"{b.port}: {b.error} ({b.coverage()}{'; report ' + str(dv.path) if dv.path else ''})")
        if b.selftest_passed is False:
            parts.append(f"{b.port}: the device's self-test FAILED ({b.selftest.get('failed', '?')} of "
                         f"{b.selftest.get('n', '?')} samples)")
        if not b.error and not b.partial and not b.parity_ok(dv.min_parity):
            parts.append(f"{b.port}: parity {b.parity_pct:.1f} % is below --min-parity {dv.min_parity:g} %")
    return GendertoolError("; ".join(parts))


def validate_on_ports(
    ports: list[str], images: Path, model: Optional[str], labels: Optional[list[str]], *, limit: Optional[int],
    min_parity: float, as_json: bool, show_images: bool, out: Optional[Path] = None,
) -> None:
    """``gendertool validate --port P... --images DIR``: runs on each board, one report per board."""
    import json

    from gendertool.device_validate import validate_devices

    from .validate import warn_skipped

    from gendertool.errors import GendertoolError, Interrupted

    try:
        with _BoardProgress(ports) as progress:
            dv = validate_devices(ports, images, model, labels=labels, limit=limit, min_parity=min_parity,
                                  progress=progress, out_path=out)
    except Interrupted as exc:
        if exc.partial is not None:
            present_device_validation(exc.partial, console, show_images=show_images)
        raise
    if as_json:
        console.print_json(json.dumps(dv.to_dict(), default=str))
    else:
        present_device_validation(dv, console, show_images=show_images)
        if dv.path is not None:
            err_console.print(f"report: {dv.path}", markup=False, soft_wrap=True)
    warn_skipped(dv.skipped)
    if dv.write_error:
        raise GendertoolError(dv.write_error)
    failure = device_validation_failure(dv)
    if failure is not None:
        raise failure
