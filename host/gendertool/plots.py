"""PNG plots for bench results (matplotlib, Agg backend, imported only when a plot is drawn)."""

from __future__ import annotations

from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from gendertool.bench import REFERENCE_LABEL, REFERENCE_MS

if TYPE_CHECKING:
    from gendertool.bench import BenchResult, OpTiming


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _title(text: str, simulated: bool) -> str:
    return f"SIMULATED (host timings, not a board's) - {text}" if simulated else text


@contextmanager
def _png(path: Path, figsize: tuple[float, float]) -> Iterator:
    """Yields the axes; on a clean exit lays out and writes the PNG. The figure is always closed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=figsize, dpi=100)
    try:
        yield ax
        fig.tight_layout()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, format="png")
        except OSError as exc:  # a full or read-only disk: one clear line, no half PNG kept
            with suppress(OSError):
                path.unlink(missing_ok=True)
            from gendertool.errors import GendertoolError

            raise GendertoolError(f"cannot write plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def latency_histogram(result: "BenchResult", path: Path) -> Path:
    """Histogram of total and Invoke() latency in ms with the 40 ms reference line."""
    invoke = [s.invoke_us / 1000.0 for s in result.samples]
    total = [s.total_us / 1000.0 for s in result.samples]
    with _png(path, (8, 4.5)) as ax:
        values = invoke + total
        if values:
            lo, hi = min(values), max(values)
            bins = [lo + (hi - lo) * i / 40 for i in range(41)] if hi > lo else 1
            ax.hist(invoke, bins=bins, alpha=0.6, label=f"Invoke() (n={len(invoke)})", color="tab:blue")
            ax.hist(total, bins=bins, alpha=0.6, label=f"preprocessing + Invoke() (n={len(total)})", color="tab:orange")
        ax.axvline(REFERENCE_MS, color="tab:red", linestyle="--", linewidth=1.5, label=REFERENCE_LABEL)
        ax.set_xlabel("latency [ms]")
        ax.set_ylabel("runs")
        status = "" if result.complete else f" (incomplete: {result.completed}/{result.n} runs)"
        ax.set_title(_title(f"Latency on {result.board} ({result.port}){status}", result.simulated), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return path


def operator_bars(rows: "Sequence[OpTiming]", path: Path, *, board: str = "", simulated: bool = False,
                  estimated: bool = False) -> Path:
    """Horizontal bars: total time per operator, slowest on top, share annotated."""
    rows = list(rows)
    with _png(path, (8, max(2.5, 0.4 * len(rows) + 1.2))) as ax:
        names = [r.op for r in reversed(rows)]
        ms = [r.total_us / 1000.0 for r in reversed(rows)]
        bars = ax.barh(names, ms, color="tab:blue")
        for bar, r in zip(bars, reversed(rows)):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r.share * 100:.1f}% (x{r.count})",
                    va="center", fontsize=8)
        ax.set_xlabel("time per inference [ms]")
        ax.set_title(_title(f"Per-operator time{(' on ' + board) if board else ''}{' (estimated)' if estimated else ''}",
                            simulated), fontsize=10)
        ax.margins(x=0.2)
        ax.grid(axis="x", alpha=0.3)
    return path


def write_plots(result: "BenchResult", out_dir: Path) -> list[Path]:
    """All plots for one result; the operator chart only when a profile was taken."""
    paths = []
    if result.samples:
        paths.append(latency_histogram(result, out_dir / "latency_hist.png"))
    if result.profile:
        paths.append(operator_bars(result.profile, out_dir / "operators.png", board=result.board,
                                   simulated=result.simulated, estimated=result.profile_estimated))
    return paths
