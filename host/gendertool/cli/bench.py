"""Commands: bench (on-device latency statistics, per-operator profile, compare, variant matrix).

Also the tables for on-target validation (``gendertool validate --port``), since both present
device figures the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.present.bench import (
    present_bench,
    present_boards,
    present_calibration_point,
    present_compare,
    present_estimate,
    present_matrix,
    present_paths,
)
from gendertool.present.console import console, err_console
from gendertool.text import about, count

from .options import (
    complete_bench_inputs,
    complete_boards,
    complete_models,
    port_option,
    resolve_ports,
)
from .root import EXIT_USER_ERROR, app, print_error

if TYPE_CHECKING:

    from gendertool.device.bench_results import BenchResult


@app.command("bench")
def bench_cmd(
    port: list[str] = port_option(several=True),
    n: int = typer.Option(200, "-n", "--runs", help="Timed runs, each preprocessing + Invoke() (1..10000)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing (0..1000)."),
    input_source: str = typer.Option(
        "sample", "--input", metavar="sample|camera", help="Input to run on: sample (a built-in image) or camera (a new frame per run; capture not timed).",
        autocompletion=complete_bench_inputs,
    ),
    profile: bool = typer.Option(False, "--profile", help="Also time every operator of one Invoke()."),
    out: Path = typer.Option(Path("out/bench"), "--out", "-o", help="Folder for bench.json and the PNG plots."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="An earlier bench.json: show deltas and the speed-up."),
    matrix: bool = typer.Option(False, "--matrix", help="Build, flash and bench every firmware variant on the board."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model for --matrix builds and for the latency estimate (default: the shipped model).",
        autocompletion=complete_models,
    ),
    board: Optional[str] = typer.Option(None, "--board", "-b", help="Board for --matrix builds (default: xiao_esp32s3).",
                                         autocompletion=complete_boards),
    variant: list[str] = typer.Option([], "--variant", help="With --matrix: only these variants (repeatable; default: all)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots next to bench.json."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (every board's bench.json, paths, compare)."),
    report: Optional[Path] = typer.Option(
        None, "--report",
        help="Also write one JSON file to send back: every board's bench.json with the device's log lines and link "
             "counters, and this computer's versions (docs/first-board-run.md)."),
) -> None:
    """Benchmark the model on the board: latency statistics from every run, FPS, memory, profile."""
    from gendertool.device.bench import check_request
    from gendertool.device.bench_results import load_bench

    check_request(n, warmup, input_source)  # before any port or file is touched
    ports = resolve_ports(port)
    old = load_bench(compare) if compare is not None else None  # fail before touching a device
    if matrix:
        _matrix(ports, n=n, warmup=warmup, input_source=input_source, out=out, model=model, board=board,
                variants=variant, plots=plots, as_json=as_json)
        return

    from gendertool.device.bench import bench_boards
    from gendertool.errors import Interrupted

    try:
        with BoardProgress(ports) as progress:
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
        info, load_error = _model_for_estimate(model, results)
        for r in results:
            present_bench(r, console)
            measured = present_estimate(r, info, console, load_error=load_error)
            if measured is not None:
                from gendertool.device.bench_results import save_calibration

                point = save_calibration(r, info, measured)
                if point is not None:
                    present_calibration_point(point, console)
            if old is not None and r.samples:
                present_compare(old, r, console)
        if len(results) > 1:
            present_boards(results, console)
        for r in results:
            present_paths(r, written[id(r)], console)
    if failed or unwritten:
        raise typer.Exit(EXIT_USER_ERROR)  # said above, before the results it still shows


def _model_for_estimate(model: Optional[str], results: list["BenchResult"]):
    """The model loaded once for every board's estimate comparison: (ModelInfo or None, why not)."""
    if all(r.simulated or not r.samples for r in results):
        return None, ""
    from gendertool.errors import GendertoolError
    from gendertool.model.info import load_model

    try:
        return load_model(model, measure_arena=False), ""
    except GendertoolError as exc:  # the bench results are in; a bad --model only costs the comparison
        return None, str(exc)


def _write_bundle(path: Path, results: list["BenchResult"]) -> None:
    import sys

    from gendertool.device.bench import report_bundle, write_report

    write_report(path, report_bundle(results, sys.argv))
    err_console.print(f"report: {path} (send this one file)", highlight=False, soft_wrap=True)


def _plots(r: "BenchResult", unwritten: list[str]) -> list[Path]:
    """The run's plots, beside the bench.json they belong to only; a failure is noted, not raised."""
    if not r.samples or r.path is None or r.stale:  # no plot of runs its bench.json does not hold
        return []
    from gendertool.errors import GendertoolError
    from gendertool.present.plots import write_plots

    try:
        return write_plots(r, r.path.parent)
    except GendertoolError as exc:
        unwritten.append(str(exc))
    except OSError as exc:  # a full disk or a read-only folder: the figures are shown all the same
        unwritten.append(f"cannot write plot in {r.path.parent}: {exc.strerror or exc}")
    return []


def _old_moved_aside(old: "BenchResult", results: list["BenchResult"]) -> None:
    """--compare OUT/bench.json of a complete run: this run moved it to bench.prev.json."""
    from gendertool.device.bench_results import PREV_JSON

    for r in results:
        if (r.samples and old.complete and old.path is not None and r.path is not None
                and old.path.resolve() == r.path.resolve()):
            old.path = r.path.parent / PREV_JSON


def _print_json(results: list["BenchResult"], written: dict, old: "Optional[BenchResult]") -> None:
    import json

    from gendertool.device.bench_results import compare_caveats, compare_results

    boards = []
    for r in results:
        doc = r.to_json()
        doc["path"] = str(r.path) if r.path else None
        doc["plots"] = [str(p) for p in written.get(id(r), [])]
        if old is not None and r.samples:
            doc["compare"] = {"old": str(old.path) if old.path else None,
                              "rows": [row.to_dict() for row in compare_results(old, r)],
                              "caveats": compare_caveats(old, r)}
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
        if r.stale:
            kept = f"; only the first {count(r.saved, 'sample')} are in {r.path}, written before the failure"
        else:
            kept = f"; {count(r.completed, 'sample')} kept in {r.path}" if r.path else ""
        parts.append(f"{about(r.port, r.error)} ({r.completed} of {r.n} runs completed{kept})")
    return DeviceError("; ".join(parts))


# --------------------------------------------------------------------------- progress


class BoardProgress:
    """One Rich progress line per board on stderr."""

    def __init__(self, ports: list[str]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

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


# --------------------------------------------------------------------------- matrix


def _matrix(ports: list[str], *, n: int, warmup: int, input_source: str, out: Path,
            model: Optional[str], board: Optional[str], variants: list[str], plots: bool, as_json: bool = False) -> None:
    from gendertool.device.matrix import get_variants, run_matrix

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
