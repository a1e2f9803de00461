"""Bench statistics, bench.json round trip, compare and plots (no device needed)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest


from gendertool.device import bench_results

from gendertool import files

from gendertool import stats
from gendertool.device.bench_results import BenchResult, OpTiming, Sample
from gendertool.errors import GendertoolError


def _result(pre: list[int], inv: list[int], **kw) -> BenchResult:
    r = BenchResult(port=kw.pop("port", "socket://x"), n=kw.pop("n", len(pre)), warmup=2, input="sample", **kw)
    r.device = {"board": "xiao_esp32s3", "model_sha256": "ab" * 32, "labels": ["female", "male"], "fw": "0.1.0",
                "idf": "v5.5.5", "tflm": "1.3.4", "esp_nn": "1.1.2", "proto": 1, "arena_used": 81234, "heap_psram": 8000000}
    r.samples = [Sample(i, p, v) for i, (p, v) in enumerate(zip(pre, inv))]
    return r


@pytest.mark.parametrize("q", [0, 1, 37.5, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    rng = np.random.default_rng(3)
    vals = sorted(rng.integers(1000, 50000, size=157).tolist())
    assert stats.percentile(vals, q) == pytest.approx(np.percentile(vals, q))


def test_latency_stats_known_series():
    s = stats.latency_stats([10, 20, 30, 40, 50])
    assert (s.n, s.min, s.p50, s.max, s.mean) == (5, 10, 30, 50, 30)
    assert s.p90 == pytest.approx(46.0)
    assert s.p99 == pytest.approx(49.6)
    assert s.std == pytest.approx(math.sqrt(200))


def test_latency_stats_rejects_empty():
    with pytest.raises(ValueError):
        stats.latency_stats([])


def test_summarize_fps_from_mean_total():
    r = _result([1000, 1000], [19000, 39000])
    st = r.stats()
    assert st["total_us"].mean == 30000
    assert st["fps"] == pytest.approx(1e6 / 30000)
    assert st["pre_us"].std == 0 and st["pre_us"].n == st["invoke_us"].n == st["total_us"].n == 2
    assert (st["total_us"].min, st["total_us"].max) == (20000, 40000)
    r.samples = []
    assert r.stats() == {}


def test_total_is_summed_per_run_not_from_separate_series():
    # the slowest preprocessing and the slowest Invoke() fall on different runs
    st = _result([5000, 1000, 1000], [10000, 30000, 10000]).stats()
    assert st["total_us"].max == 31000 and st["total_us"].min == 11000
    assert st["total_us"].p50 == 15000


def test_profile_table_aggregates_and_sorts_slowest_first():
    rows = bench_results.profile_table([("CONV_2D", 10, 9000), ("ADD", 3, 500), ("CONV_2D", 5, 1000), ("DEPTHWISE_CONV_2D", 9, 4500)])
    assert [r.op for r in rows] == ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD"]
    assert rows[0].count == 15 and rows[0].total_us == 10000
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert rows[2].share == pytest.approx(500 / 15000)


def test_bench_json_round_trip(tmp_path):
    r = _result([1200, 1300, 1250], [30000, 31000, 29000], simulated=True)
    r.profile = [OpTiming("CONV_2D", 3, 100, 1.0)]
    p = tmp_path / "bench.json"
    files.write_json_atomic(p, r.to_json())
    data = json.loads(p.read_text())
    assert data["kind"] == "gendertool-bench" and data["simulated"] is True
    assert data["completed"] == 3 and data["complete"] is True
    assert data["model"]["sha256"] == "ab" * 32 and data["board"] == "xiao_esp32s3"
    assert data["versions"]["idf"] == "v5.5.5"
    assert data["memory"] == {"arena_used": 81234, "heap_psram": 8000000}
    assert [s["invoke_us"] for s in data["samples"]] == [30000, 31000, 29000]
    assert data["samples"][1] == {"seq": 1, "pre_us": 1300, "invoke_us": 31000, "total_us": 32300}
    assert data["schema"] == 2 and "runs" not in data
    assert data["stats"]["invoke_us"]["p50"] == 30000
    back = bench_results.load_bench(p)
    assert back.samples == r.samples and back.profile == r.profile and back.simulated


def test_incomplete_result_is_marked():
    r = _result([1000] * 3, [2000] * 3, n=10)
    data = r.to_json()
    assert data["completed"] == 3 and data["complete"] is False


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON"),
        ('{"kind": "other"}', "not a bench.json"),
        ('{"kind": "gendertool-bench", "schema": 99}', "schema 99"),
        ('{"kind": "gendertool-bench", "schema": 2, "samples": []}', "no samples"),
        ('{"kind": "gendertool-bench", "schema": 2, "samples": [{"seq": 0}]}', "malformed"),
        ('{"kind": "gendertool-bench", "schema": 2, "samples": [{"seq": 0, "invoke_us": 30000}]}', "malformed"),
    ],
)
def test_load_bench_rejects_bad_files(tmp_path, content, message):
    p = tmp_path / "old.json"
    p.write_text(content)
    with pytest.raises(GendertoolError, match=message):
        bench_results.load_bench(p)


def test_load_bench_missing_file(tmp_path):
    with pytest.raises(GendertoolError, match="no such file"):
        bench_results.load_bench(tmp_path / "nope.json")


def test_compare_deltas_and_speedup(tmp_path):
    old = _result([2000, 2000, 2000, 2000], [38000, 40000, 42000, 40000])  # totals 40..44 ms
    new = _result([1000, 1000, 1000, 1000], [19000, 20000, 21000, 20000])  # totals 20..22 ms
    po, pn = tmp_path / "old.json", tmp_path / "new.json"
    files.write_json_atomic(po, old.to_json())
    files.write_json_atomic(pn, new.to_json())
    rows = {(r.metric, r.stat): r for r in bench_results.compare_results(bench_results.load_bench(po), bench_results.load_bench(pn))}
    mean_total = rows[("total_us", "mean")]
    assert (mean_total.old, mean_total.new) == (42000, 21000)
    assert mean_total.delta == -21000
    assert mean_total.delta_pct == pytest.approx(-50.0)
    assert mean_total.speedup == pytest.approx(2.0)
    assert rows[("pre_us", "p50")].speedup == pytest.approx(2.0)
    assert rows[("invoke_us", "max")].delta == 21000 - 42000
    fps = rows[("fps", "")]
    assert fps.old == pytest.approx(1e6 / 42000) and fps.speedup == pytest.approx(2.0)


def _png_ok(path, min_w=300, min_h=150):
    from PIL import Image

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", raw[16:24])
    assert w >= min_w and h >= min_h
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size == (w, h)
        # not a blank canvas: bars, text and lines give many distinct colours (None: over 65536)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 10


def test_plots_are_valid_pngs(tmp_path):
    from gendertool.present import plots

    r = _result([1000 + i for i in range(50)], [30000 + 37 * i for i in range(50)], simulated=True)
    r.profile = bench_results.profile_table([("CONV_2D", 35, 20000), ("DEPTHWISE_CONV_2D", 17, 8000), ("ADD", 10, 600)])
    paths = plots.write_plots(r, tmp_path)
    assert [p.name for p in paths] == ["latency_hist.png", "operators.png"]
    for p in paths:
        _png_ok(p)


def test_no_profile_no_operator_plot(tmp_path):
    from gendertool.present import plots

    r = _result([1000], [30000])
    assert [p.name for p in plots.write_plots(r, tmp_path)] == ["latency_hist.png"]


def test_zero_latency_has_no_fps_and_still_writes(tmp_path):
    r = _result([0, 0], [0, 0])
    st = r.stats()
    assert "fps" not in st and st["invoke_us"].mean == 0
    files.write_json_atomic(tmp_path / "b.json", r.to_json())  # no inf/NaN in the file
    assert "fps" not in json.loads((tmp_path / "b.json").read_text())["stats"]


def test_latency_axis_fits_the_data_and_leaves_a_far_reference_off():
    from gendertool.present.plots import latency_axis

    left, right, on_scale = latency_axis([8.4, 9.1, 10.6])  # a board at ~10 ms: 40 ms is far off
    assert not on_scale and 8.0 < left < 8.4 and 10.6 < right < 11.0
    left, right, on_scale = latency_axis([30.0, 36.0])  # near 40 ms: the line is drawn, the axis takes it
    assert on_scale and left < 30.0 and right > 40.0
    left, right, on_scale = latency_axis([5.0])  # one value still gets a width
    assert right > left and not on_scale
    assert latency_axis([0.0, 0.01])[0] == 0.0  # never a negative latency axis


def _figure(invoke_us, pre_us):
    from gendertool.present import plots

    return plots.latency_figure(_result(pre_us, invoke_us))


def test_histogram_marks_an_off_scale_reference():
    import matplotlib.pyplot as plt

    fig = _figure([8_800 + 10 * (i % 30) for i in range(100)], [1_400] * 100)
    try:
        top, bottom = fig.axes
        assert top.get_xlim() == bottom.get_xlim() and top.get_xlim()[1] < 11.0  # fitted, shared
        notes = [t.get_text() for t in top.texts]
        assert len(notes) == 1 and "off scale →" in notes[0] and "40 ms" in notes[0]
        assert not any(line.get_xdata()[0] == 40.0 for ax in fig.axes for line in ax.get_lines())
        # one series per panel, in its own colour: nothing drawn over the other
        colours = [{p.get_facecolor() for p in ax.patches} for ax in fig.axes]
        assert all(len(c) == 1 for c in colours) and colours[0] != colours[1]
    finally:
        plt.close(fig)


def test_histogram_draws_a_near_reference_as_a_line():
    import matplotlib.pyplot as plt

    fig = _figure([33_000 + 50 * i for i in range(60)], [1_500] * 60)
    try:
        for ax in fig.axes:
            assert ax.get_xlim()[1] > 40.0 and len(ax.texts) == 0
            assert any(line.get_xdata()[0] == 40.0 for line in ax.get_lines())
    finally:
        plt.close(fig)


def test_histogram_counts_far_outliers_at_the_edge():
    import matplotlib.pyplot as plt

    fig = _figure([15_000 + 100 * (i % 20) for i in range(199)] + [116_000], [500] * 200)
    try:
        top, bottom = fig.axes
        assert top.get_xlim()[1] < 45.0  # the 116 ms run does not stretch the axis
        for ax in (top, bottom):
            notes = [t.get_text() for t in ax.texts]
            assert any(n.startswith("1 run off scale") and "116." in n for n in notes), notes
        assert sum(p.get_height() for p in top.patches) == 199  # every other run drawn
    finally:
        plt.close(fig)


def test_bench_json_keeps_the_boards_free_internal_heap_beside_the_host_budget(tmp_path):
    """issue 20, item 7: the first board run calibrates the internal-RAM budget."""
    from gendertool.boards import get_board
    from gendertool.project.memory import internal_budget

    r = _result([1200], [30000])
    r.device.update(heap_internal=41_234, arena_bytes=169_984)
    data = json.loads(json.dumps(r.to_json()))
    cal = data["internal_ram_calibration"]
    assert cal["board_free_after_allocation_bytes"] == 41_234 and cal["arena_bytes"] == 169_984
    budget = internal_budget(get_board("xiao_esp32s3"))
    assert cal["host_budget"]["for_arena_bytes"] == budget.arena_bytes
    assert cal["host_budget"]["heap_run_bytes"] == 399_120
    sim = _result([1200], [30000], simulated=True)
    sim.device.update(heap_internal=0)
    assert sim.to_json()["internal_ram_calibration"]["board_free_after_allocation_bytes"] is None
