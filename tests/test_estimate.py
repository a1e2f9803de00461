"""gendertool.model.estimate: the estimated Invoke() time on the XIAO ESP32S3 from published
calibration points, its leave-one-out uncertainty, and where it shows (inspect, bench)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gendertool.model import estimate as E
from gendertool.model.flatbuffer import parse_model

from tflite_fab import seed_shaped_model, tiny_model

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "latency-estimate.md"


@pytest.fixture(scope="module")
def cal():
    return E.load_calibration()


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc))
    return path


def _doc() -> dict:
    return json.loads(E.CALIBRATION_FILE.read_text())


def test_every_point_and_rate_names_its_source_and_the_docs_cite_it(cal):
    doc = _doc()
    text = DOC.read_text()
    assert doc["kernel_rates"]["source"].startswith("espressif/esp-nn README.md")
    for key, rate in doc["kernel_rates"].items():
        if key != "source":
            assert rate["case"] and rate["cycles"] > 0 and rate["per"] > 0
            assert f"{rate['cycles']:,}" in text or str(rate["cycles"]) in text, key
    for p in cal.points:
        assert p["source"] and p["conditions"]
        assert p["name"] in text and f"{p['published_ms']:g} ms" in text, p["name"]
    assert {54, 40, 582} <= {p["published_ms"] for p in E.esp_nn_points(cal)}


def test_the_seed_point_is_the_seed_shaped_graph(cal):
    """The calibration point's layer rows give the same workload as the fab model of that graph."""
    seed = next(p for p in cal.points if p["name"].startswith("Seeed gender"))
    strip = lambda ws: [(w.op, w.kind, w.amount, w.channels) for w in ws]  # noqa: E731
    assert strip(seed["_work"]) == strip(E.model_work(parse_model(seed_shaped_model())))
    assert sum(w.amount for w in seed["_work"] if w.kind.startswith("conv") or w.kind == "fc") == 5_455_936


def test_workload_kinds_of_a_model():
    work = E.model_work(parse_model(seed_shaped_model()))
    assert [w.kind for w in work] == ["conv_stem"] + ["conv"] * 6 + ["mean", "fc", "other"]
    assert work[0].channels == 3 and work[1].channels == 16 and work[0].amount == 32 * 32 * 16 * 27
    assert work[7].amount == 8 * 8 * 32  # MEAN reads every input element
    default = E.model_work(parse_model((REPO / "models" / "gender_mbv2_035_64.tflite").read_bytes()))
    assert {"conv_stem", "conv", "depthwise", "fc", "add"} <= {w.kind for w in default}


def test_conv_rate_follows_the_esp_nn_table(cal):
    assert E.conv_rate(cal, 16) == pytest.approx(43578 / 16384)
    assert E.conv_rate(cal, 64) == pytest.approx(461398 / 409600)
    assert E.conv_rate(cal, 3) == pytest.approx(643689 / 110592)
    assert E.conv_rate(cal, 16) > E.conv_rate(cal, 32) > E.conv_rate(cal, 64) == E.conv_rate(cal, 512)


def _synthetic(tmp_path, k: float, p: float, arenas=("internal", "psram", "psram", "internal")) -> E.Calibration:
    """Points whose published times are exactly k (and p in PSRAM) times their prior cycles."""
    doc = _doc()
    base = E.load_calibration()
    points = []
    for i, arena in enumerate(arenas):
        layers = [["conv", 3, 16 * (i + 1), 16, 8, 8], ["dw", 3, 16, 8 + i, 8]]
        pt = {"name": f"p{i}", "source": "test", "conditions": "test", "arena": arena, "kernels": "esp-nn",
              "layers": layers, "published_ms": 1.0}
        prior_ms = sum(E.cycles(w, base) for w in E.point_work(pt)) / base.cpu_hz * 1000
        pt["published_ms"] = prior_ms * k * (p if arena == "psram" else 1.0)
        points.append(pt)
    doc["points"] = points
    return E.load_calibration(_write(tmp_path, doc))


def test_fit_recovers_scale_and_psram_factor_and_leave_one_out_is_exact(tmp_path):
    cal = _synthetic(tmp_path, 0.5, 1.5)
    f = E.fit(E.esp_nn_points(cal), cal)
    assert f.scale == pytest.approx(0.5) and f.psram_factor == pytest.approx(1.5)
    rows = E.calibration_table(cal)
    assert [r.loo_error for r in rows] == pytest.approx([0.0] * 4, abs=1e-12)
    est = E.estimate(E.model_work(parse_model(tiny_model(height=16, width=16))), cal)
    assert est.psram_ms == pytest.approx(1.5 * est.internal_ms)
    assert est.ms_range("psram") == pytest.approx((est.psram_ms, est.psram_ms))


def test_psram_is_never_fitted_faster(tmp_path):
    cal = _synthetic(tmp_path, 2.0, 0.5)
    f = E.fit(E.esp_nn_points(cal), cal)
    assert f.psram_factor == 1.0 and f.psram_factor_unclamped == pytest.approx(0.5)
    assert f.scale == pytest.approx(2.0 * 0.5 ** 0.5)  # one common geometric mean
    only_psram = [p for p in cal.points if p["arena"] == "psram"]
    assert E.fit(only_psram, cal).psram_factor == 1.0 and E.fit(only_psram, cal).psram_factor_unclamped is None


def test_the_shipped_calibration_reports_its_leave_one_out_errors(cal):
    rows = E.calibration_table(cal)
    assert [r.name for r in rows] == [p["name"] for p in E.esp_nn_points(cal)]
    for r in rows:
        assert r.fitted_ms > 0 and r.loo_ms > 0 and r.loo_ms != pytest.approx(r.published_ms)
    est = E.estimate(E.model_work(parse_model(seed_shaped_model())), cal)
    assert est.error_range == (min(r.loo_error for r in rows), max(r.loo_error for r in rows))
    lo, hi = est.ms_range("internal")
    assert lo < est.internal_ms < hi
    assert est.internal_ms == pytest.approx(sum(o.internal_ms for o in est.ops))
    assert est.psram_ms >= est.internal_ms


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["points"][0].update(arena="SET internal OR psram"), "needs a name, published_ms > 0, arena internal|psram"),
        (lambda d: d["points"][1].update(published_ms=0), "needs a name, published_ms > 0"),
        (lambda d: d["kernel_rates"].pop("depthwise"), "bad latency calibration (KeyError: 'depthwise')"),
        (lambda d: d["kernel_rates"]["fc"].update(cycles=-1), "kernel rate 'fc' must be positive"),
        (lambda d: d["points"][0]["layers"].append(["conv3d", 1]), "unknown layer row ['conv3d', 1]"),
    ],
)
def test_a_bad_calibration_file_is_refused_with_its_reason(tmp_path, change, message):
    doc = _doc()
    change(doc)
    with pytest.raises(E.CalibrationError) as info:
        E.load_calibration(_write(tmp_path, doc))
    assert message in str(info.value) and "cal.json" in str(info.value)


def test_a_broken_calibration_file_stops_inspect_with_one_message(cli, tmp_path, monkeypatch):
    doc = _doc()
    doc["points"][0]["arena"] = "flash"
    monkeypatch.setattr(E, "CALIBRATION_FILE", _write(tmp_path, doc))
    E.default_calibration.cache_clear()
    try:
        r = cli("inspect", "--no-arena")
    finally:
        E.default_calibration.cache_clear()
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "cal.json: point 'esp-tflite-micro person detection' needs a name, published_ms > 0" in " ".join(r.stderr.split())


def test_inspect_shows_the_estimate_labelled_as_one(cli):
    r = cli("inspect", "--no-arena")
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "ESTIMATE on the XIAO ESP32S3 (240 MHz, ESP-NN), not a measurement" in text
    assert "Estimated Invoke() time per operator (estimate" in text and "total (estimate)" in text
    doc = json.loads(cli("inspect", "--no-arena", "--json").stdout)
    est = doc["latency_estimate"]
    table = est["calibration"]["table"]
    assert est["label"] == "estimate" and est["calibration"]["points"] == len(table) >= 3
    assert [r["published_ms"] for r in table][:3] == [54, 40, 582]  # the published points; real runs follow
    assert est["leave_one_out_error"] == [min(r["leave_one_out_error"] for r in table),
                                          max(r["leave_one_out_error"] for r in table)]
    n_ops = sum(op["count"] for op in doc["operators"])
    assert len(est["operators"]) == n_ops
    assert est["invoke_ms"]["internal"] == pytest.approx(sum(o["internal_ms"] for o in est["operators"]), abs=0.01)
    lo, hi = est["range_ms"]["internal"]
    assert lo < est["invoke_ms"]["internal"] < hi


def test_a_board_run_is_compared_and_becomes_a_calibration_point(tmp_path, model_info):
    """`bench` on a board: measured against estimated, and the run written as a new point."""
    import io

    from rich.console import Console

    from gendertool.device.bench_results import BenchResult, Sample
    from gendertool.present.bench import present_estimate

    from gendertool.device.bench_results import OpTiming, save_calibration

    res = BenchResult(port="/dev/ttyACM0", n=3, warmup=0, input="sample", simulated=False,
                      device={"board": "xiao_esp32s3", "model_sha256": model_info.sha256, "fw": "0.1.0", "cpu_mhz": 240},
                      samples=[Sample(i, 900, 60000 + 1000 * i) for i in range(3)], path=tmp_path / "bench.json",
                      profile=[OpTiming("CONV_2D", 35, 41230, 0.7), OpTiming("DEPTHWISE_CONV_2D", 17, 17000, 0.3)])
    buf = io.StringIO()
    measured = present_estimate(res, model_info, Console(file=buf, width=300))
    out = buf.getvalue()
    assert measured == pytest.approx(61.0)
    assert save_calibration(res, model_info, measured) == tmp_path / "calibration_point.json"
    est = model_info.latency
    assert f"Invoke() mean 61.00 ms MEASURED vs ESTIMATE {est.internal_ms:.2f} ms" in out
    assert f"measured/estimate {61.0 / est.internal_ms:.2f}" in out
    conv = next(row for row in est.by_op() if row[0] == "CONV_2D")
    assert "per operator: profiled Invoke() MEASURED vs ESTIMATE" in out
    cells = [[c for c in line.replace("│", " ").split()] for line in out.splitlines()]
    assert ["CONV_2D", "41.23", f"{conv[2]:.2f}", f"{conv[3]:.2f}"] in cells
    entry = json.loads((tmp_path / "calibration_point.json").read_text())
    assert entry["published_ms"] == 61.0 and entry["arena"] == E.UNKNOWN_ARENA
    assert sum(w["amount"] for w in entry["workload"] if w["kind"] in ("conv", "conv_stem", "depthwise", "fc")) == model_info.macs

    doc = _doc()
    before = len(E.calibration_table())
    doc["points"].append(entry)
    with pytest.raises(E.CalibrationError, match="arena internal|psram"):  # the placement must be said
        E.load_calibration(_write(tmp_path, doc))
    entry["arena"] = "internal"
    cal = E.load_calibration(_write(tmp_path, doc))
    assert len(E.calibration_table(cal)) == before + 1
    assert E.calibration_table(cal)[-1].published_ms == 61.0
    assert E.fit(E.esp_nn_points(cal), cal) != E.fit(E.esp_nn_points(E.default_calibration()), E.default_calibration())


def test_a_board_running_another_model_is_not_compared(tmp_path, model_info):
    import io

    from rich.console import Console

    from gendertool.device.bench_results import BenchResult, Sample
    from gendertool.present.bench import present_estimate

    res = BenchResult(port="/dev/ttyACM0", n=1, warmup=0, input="sample", device={"model_sha256": "ab" * 32},
                      samples=[Sample(0, 900, 50000)], path=tmp_path / "bench.json")
    buf = io.StringIO()
    assert present_estimate(res, model_info, Console(file=buf, width=300)) is None
    assert "estimate: not compared, the board runs model sha256 abababababab" in buf.getvalue()
    assert "MEASURED" not in buf.getvalue() and not (tmp_path / "calibration_point.json").exists()


def test_a_model_that_did_not_load_costs_only_the_comparison(tmp_path):
    import io

    from rich.console import Console

    from gendertool.device.bench_results import BenchResult, Sample
    from gendertool.present.bench import present_estimate

    res = BenchResult(port="/dev/ttyACM0", n=1, warmup=0, input="sample", device={"model_sha256": "ab" * 32},
                      samples=[Sample(0, 900, 50000)], path=tmp_path / "bench.json")
    buf = io.StringIO()
    assert present_estimate(res, None, Console(file=buf, width=300), load_error="m.tflite: not a file") is None
    assert buf.getvalue() == "estimate: not compared (m.tflite: not a file)\n"


def test_bench_on_the_virtual_device_is_not_compared(cli, tmp_path):
    r = cli("bench", "--port", "sim", "-n", "5", "--warmup", "0", "--out", str(tmp_path), "--no-plots")
    assert r.exit_code == 0, r.output
    assert "estimate: no comparison on a virtual device" in r.stdout
    assert "MEASURED" not in r.stdout and not (tmp_path / "calibration_point.json").exists()
