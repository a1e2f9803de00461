"""PNG plots for bench results (matplotlib, Agg backend, imported only when a plot is drawn)."""

from __future__ import annotations

from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from gendertool.device.bench_results import REFERENCE_LABEL, REFERENCE_MS
from gendertool.errors import GendertoolError

if TYPE_CHECKING:
    from gendertool.device.bench_results import BenchResult, OpTiming


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
        _save_png(fig, path)
    finally:
        plt.close(fig)


# Draw the reference line when it lies within this many data spans of the data (the data keeps
# at least half the width); farther away it would squeeze the data into a corner, so it is
# annotated at the edge instead.
REFERENCE_REACH = 1.0


def latency_axis(values: "Sequence[float]", reference: float = REFERENCE_MS) -> tuple[float, float, bool]:
    """x-axis limits fitted to ``values`` (ms) and whether ``reference`` is drawn on that scale."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 0.05 * abs(hi), 0.01)  # a single value still gets a readable width
    pad = 0.05 * span
    left, right = lo - pad, hi + pad
    on_scale = lo - REFERENCE_REACH * span <= reference <= hi + REFERENCE_REACH * span
    if on_scale:
        left, right = min(left, reference - pad), max(right, reference + pad)
    return max(0.0, left), right, on_scale


# Runs beyond Q3 + this many interquartile ranges are counted at the edge, not drawn: one
# 100 ms hiccup would otherwise squeeze 199 runs into a few bins.
OUTLIER_IQR = 3.0


def outlier_fence(values: "Sequence[float]") -> float:
    """The largest value drawn on the latency axis (Tukey's far-out fence, or the maximum)."""
    import statistics

    if len(values) < 4:
        return max(values)
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q3 + OUTLIER_IQR * (q3 - q1) if q3 > q1 else max(values)


def _bins(lo: float, hi: float, n: int = 40) -> list[float]:
    if hi <= lo:
        half = max(0.005, 0.025 * abs(lo))
        lo, hi = lo - half, hi + half
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def latency_figure(result: "BenchResult"):
    """Invoke() and total latency, one panel each on a shared x-axis fitted to the data; the
    40 ms reference is a line when near the data, else an arrow at the edge saying how far."""
    import statistics

    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    invoke = [s.invoke_us / 1000.0 for s in result.samples]
    total = [s.total_us / 1000.0 for s in result.samples]
    series = [("Invoke()", invoke, "tab:blue"), ("preprocessing + Invoke()", total, "tab:orange")]
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), dpi=100)
    values = invoke + total
    # each series its own fence: pooled, the quartiles of the Invoke() times cut the total times
    fences = {name: outlier_fence(data) for name, data, _ in series if data}
    shown = [v for name, data, _ in series for v in data if v <= fences[name]]
    left, right, on_scale = latency_axis(shown) if values else (0.0, REFERENCE_MS * 1.1, True)
    bins = _bins(min(shown), max(shown)) if values else 1
    for ax, (name, data, colour) in zip(axes, series):
        if data:
            fence = fences[name]
            ax.hist([v for v in data if v <= fence], bins=bins, color=colour, edgecolor="white", linewidth=0.4,
                    label=f"{name} (n={len(data)})")
            med = statistics.median(data)
            ax.axvline(med, color="black", linestyle=":", linewidth=1.2, label=f"p50 {med:.2f} ms")
            beyond = [v for v in data if v > fence]
            if beyond:
                runs = f"{len(beyond)} run{'' if len(beyond) == 1 else 's'}"
                ax.annotate(f"{runs} off scale → (up to {max(beyond):.1f} ms)", xy=(0.99, 0.55), xycoords="axes fraction",
                            ha="right", fontsize=8, color="dimgray",
                            bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.85})
        if on_scale:
            ax.axvline(REFERENCE_MS, color="tab:red", linestyle="--", linewidth=1.5, label=REFERENCE_LABEL)
        ax.set_ylabel("runs")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # headroom so the legend finds a place off the bars
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(left, right)
    if values and not on_scale:
        med_total = statistics.median(total)
        right_side = REFERENCE_MS > right
        where = (0.99, 1.0) if right_side else (0.01, 1.0)
        text = f"{REFERENCE_LABEL} off scale {'→' if right_side else '←'}  ({REFERENCE_MS / med_total:.1f}x the p50 total)"
        axes[0].annotate(text, xy=where, xycoords="axes fraction", ha="right" if right_side else "left", va="bottom",
                         fontsize=8, color="tab:red")
    axes[1].set_xlabel("latency [ms]")
    status = "" if result.complete else f" (incomplete: {result.completed}/{result.n} runs)"
    where = "the virtual device" if result.simulated else result.board
    if result.port and result.port != where:
        where += f" ({result.port})"
    fig.suptitle(_title(f"Latency on {where}{status}", result.simulated), fontsize=10)
    return fig


def latency_histogram(result: "BenchResult", path: Path) -> Path:
    """Write :func:`latency_figure` as a PNG."""
    plt = _pyplot()
    fig = latency_figure(result)
    try:
        fig.tight_layout()
        _save_png(fig, path)
    finally:
        plt.close(fig)
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


def _save_png(fig, path: Path) -> None:
    """Write ``fig`` as a PNG; a full or read-only disk is one clear line and no half PNG is kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        with suppress(OSError):
            path.unlink(missing_ok=True)
        raise GendertoolError(f"cannot write plot {path}: {exc.strerror or exc}") from None
