"""`gendertool bench` end to end against the virtual device (socket:// and --port sim)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from gendertool.device import bench

from gendertool.device import bench_results

from gendertool import errors

from gendertool import files
from gendertool.device.bench_results import BenchResult, Sample

from conftest import closed_port_url


def _png_ok(path: Path) -> None:
    from PIL import Image

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", raw[16:24])
    assert 300 <= w <= 4000 and 150 <= h <= 4000
    with Image.open(path) as im:
        im.verify()


def test_help(cli):
    r = cli("bench", "--help")
    assert r.exit_code == 0
    for opt in ("--port", "--warmup", "--input", "--profile", "--out", "--compare", "--matrix"):
        assert opt in r.stdout


def test_bench_socket_sim(cli, sim_server, tmp_path):
    server = sim_server()
    r = cli("bench", "--port", server.url, "-n", "40", "--warmup", "2", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "SIMULATED latency on sim" in r.stdout
    for row in ("preprocessing", "Invoke()", "total", "FPS"):
        assert row in r.stdout
    # host timings are never weighed against the board's 40 ms reference
    assert "not comparable with the 40 ms board reference" in r.stdout
    assert "faster than" not in r.stdout and "slower than" not in r.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["simulated"] is True and data["complete"] is True and data["error"] is None
    assert data["completed"] == 40 and len(data["samples"]) == 40
    assert [s["seq"] for s in data["samples"]] == list(range(40))
    assert all(s["invoke_us"] > 0 and s["pre_us"] > 0 for s in data["samples"])
    assert all(s["total_us"] == s["pre_us"] + s["invoke_us"] for s in data["samples"])
    assert "runs" not in data and data["schema"] == 2
    assert data["model"]["sha256"] == data["device"]["model_sha256"] and len(data["model"]["sha256"]) == 64
    assert data["device_summary"]["n"] == 40
    assert data["selftest"]["pass"] is True and data["selftest"]["origin"] == "boot"
    # the statistics in the file are those of the samples in the file, every metric over all 40
    for m in ("pre_us", "invoke_us", "total_us"):
        st = data["stats"][m]
        vals = [s[m] for s in data["samples"]]
        assert st["n"] == 40 and (st["min"], st["max"]) == (min(vals), max(vals))
        assert st["mean"] == pytest.approx(sum(vals) / 40)
    assert data["stats"]["fps"] == pytest.approx(1e6 / data["stats"]["total_us"]["mean"])
    _png_ok(tmp_path / "latency_hist.png")
    assert not (tmp_path / "operators.png").exists()


def test_bench_port_sim_with_profile(cli, tmp_path):
    r = cli("bench", "--port", "sim", "-n", "10", "--warmup", "0", "--profile", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "per-operator time" in r.stdout and "(estimated)" in r.stdout
    assert "CONV_2D" in r.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    ops = data["profile"]
    assert ops and data["profile_estimated"] is True
    assert [o["total_us"] for o in ops] == sorted((o["total_us"] for o in ops), reverse=True)
    assert sum(o["share"] for o in ops) == pytest.approx(1.0, abs=1e-6)
    for name in ("latency_hist.png", "operators.png"):
        _png_ok(tmp_path / name)


def test_disconnect_mid_run_keeps_samples(cli, sim_server, tmp_path):
    from gendertool.device.sim import SimFaults

    # no autostart: the records on the connection are boot, replies and bench batches only
    server = sim_server(autostart=False, faults=SimFaults(disconnect_after=8))
    r = cli("bench", "--port", server.url, "-n", "200", "--warmup", "0", "--out", tmp_path)
    assert r.exit_code == 2
    data = json.loads((tmp_path / "bench.json").read_text())
    done = data["completed"]
    assert 0 < done < 200 and len(data["samples"]) == done
    assert data["complete"] is False and "disconnected" in data["error"]
    assert f"{done} of 200 runs completed" in r.stderr
    assert str(tmp_path / "bench.json") in r.stderr.replace("\n", "")
    # the samples kept still make a table and a plot
    assert "INCOMPLETE" in r.stdout
    _png_ok(tmp_path / "latency_hist.png")


def test_camera_on_sim_is_refused_cleanly(cli, sim_server, tmp_path):
    server = sim_server()
    r = cli("bench", "--port", server.url, "-n", "5", "--input", "camera", "--out", tmp_path)
    assert r.exit_code == 2
    assert "unsupported" in r.stderr and "camera" in r.stderr
    assert "Traceback" not in r.output


def test_bad_input_option(cli):
    r = cli("bench", "--port", "sim", "--input", "webcam")
    assert r.exit_code == 2 and "sample" in r.output and "camera" in r.output


@pytest.mark.parametrize(
    "args, message",
    [(["-n", "0"], "1..10000"), (["-n", "10001"], "1..10000"), (["--warmup", "1001"], "0..1000"),
     (["--warmup", "-1"], "0..1000")],
)
def test_request_out_of_range_fails_before_the_device(cli, tmp_path, args, message):
    r = cli("bench", "--port", closed_port_url(), *args, "--out", tmp_path)
    assert r.exit_code == 2 and message in r.stderr
    assert not (tmp_path / "bench.json").exists()


def test_several_ports_in_parallel(cli, sim_server, tmp_path):
    a, b = sim_server(), sim_server()
    refused = closed_port_url()
    r = cli("bench", "--port", a.url, "--port", b.url, "--port", refused, "-n", "12", "--warmup", "0",
            "--no-plots", "--out", tmp_path)
    assert r.exit_code == 2  # one board failed; the others are still reported
    assert "all boards" in r.stdout
    for url in (a.url, b.url):
        data = json.loads((tmp_path / bench.port_slug(url) / "bench.json").read_text())
        assert data["port"] == url and data["completed"] == 12 and data["complete"]
    assert not (tmp_path / bench.port_slug(refused)).exists()  # it received nothing: nothing written
    assert refused in r.stderr and "0 of 12 runs completed" in r.stderr


def test_same_port_twice(cli):
    r = cli("bench", "--port", "sim", "--port", "sim")
    assert r.exit_code == 2 and "twice" in r.output


def _known(path: Path, invoke: list[int], pre: list[int]) -> Path:
    r = BenchResult(port="old", n=len(invoke), warmup=0, input="sample", simulated=True)
    r.device = {"board": "xiao_esp32s3", "model_sha256": "0" * 64}
    r.samples = [Sample(i, p, v) for i, (p, v) in enumerate(zip(pre, invoke))]
    files.write_json_atomic(path, r.to_json())
    return path


def test_compare_with_old_file(cli, sim_server, tmp_path):
    # an "old" run 1000x slower than anything the host does: every speed-up is > 1
    old = _known(tmp_path / "old.json", [40_000_000] * 4, [1_000_000] * 4)
    server = sim_server()
    r = cli("bench", "--port", server.url, "-n", "8", "--warmup", "0", "--out", tmp_path / "new",
            "--compare", old, "--no-plots")
    assert r.exit_code == 0, r.output
    assert "compare" in r.stdout and "speed-up" in r.stdout
    new = bench_results.load_bench(tmp_path / "new" / "bench.json")
    rows = bench_results.compare_results(bench_results.load_bench(old), new)
    p50 = next(x for x in rows if (x.metric, x.stat) == ("invoke_us", "p50"))
    assert p50.speedup == pytest.approx(40_000_000 / new.stats()["invoke_us"].p50)
    assert f"{p50.speedup:.2f}x" in r.stdout


def test_compare_bad_file_fails_before_the_device(cli, tmp_path):
    bad = tmp_path / "old.json"
    bad.write_text('{"kind": "something else"}')
    r = cli("bench", "--port", closed_port_url(), "--compare", bad)
    assert r.exit_code == 2 and "not a bench.json" in r.stderr


def test_compare_deltas_from_two_files(tmp_path):
    old = bench_results.load_bench(_known(tmp_path / "a.json", [30000, 32000, 34000], [1000, 1000, 1000]))
    new = bench_results.load_bench(_known(tmp_path / "b.json", [15000, 16000, 17000], [500, 500, 500]))
    rows = {(x.metric, x.stat): x for x in bench_results.compare_results(old, new)}
    assert rows[("invoke_us", "mean")].delta == -16000
    assert rows[("invoke_us", "mean")].speedup == pytest.approx(2.0)
    assert rows[("total_us", "min")].old == 31000 and rows[("total_us", "min")].new == 15500
    assert rows[("pre_us", "p50")].delta_pct == pytest.approx(-50.0)
    assert rows[("fps", "")].speedup == pytest.approx(2.0)


@pytest.mark.parametrize("found, message", [([], "no ESP32-S3"), (["/dev/ttyACM0", "/dev/ttyACM1"], "several ESP32-S3")])
def test_without_port_detection(cli, monkeypatch, found, message):
    import gendertool.device.ports

    monkeypatch.setattr(gendertool.device.ports, "find_esp32s3_ports", lambda: list(found))
    r = cli("bench", "-n", "5")
    assert r.exit_code == 2 and message in r.stderr and "--port" in r.stderr


def test_no_result_stream_needed(model_info, tmp_path, monkeypatch):
    """Every figure comes from the bench command: a device that never streams results (or
    streams them once a second) benches at full speed."""
    from gendertool.device import sim as simdevice
    from gendertool.device.link import DeviceClient

    monkeypatch.setattr(simdevice._Session, "stream_one", lambda self: None)
    dev = simdevice.SimDevice(model_info, period_ms=1000, boot_delay_s=0.05)
    with simdevice.SimServer(dev) as server, DeviceClient.open(server.url) as client:
        r = bench.run_bench(client, port=server.url, n=10, warmup=0, out_json=tmp_path / "bench.json")
    assert r.complete and r.error is None and r.completed == 10
    assert set(r.stats()) == {"pre_us", "invoke_us", "total_us", "fps"}


def test_old_schema_file_is_refused_with_a_reason(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"kind": "gendertool-bench", "schema": 1, "samples": [{"seq": 0, "invoke_us": 5}]}))
    with pytest.raises(errors.GendertoolError, match="schema 1 is not supported.*Invoke\\(\\) times only"):
        bench_results.load_bench(old)


def test_port_from_environment(cli, sim_server, tmp_path, monkeypatch):
    server = sim_server()
    monkeypatch.setenv("GENDERTOOL_PORT", server.url)
    r = cli("bench", "-n", "4", "--warmup", "0", "--no-plots", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["port"] == server.url and data["completed"] == 4


# --------------------------------------------------------------------------- output order and --json


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_output_order_table_then_paths(cli, sim_server, tmp_path):
    server = sim_server()
    r = cli("bench", "--port", server.url, "-n", "10", "--warmup", "0", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    lines = _lines(r.stdout)
    assert lines[0].startswith("SIMULATED latency on sim")  # no leading blank line, no paths first
    assert r.stderr == ""  # nothing before it on stderr either (no progress on a non-terminal)
    table = next(i for i, ln in enumerate(lines) if "Invoke()" in ln)
    report = next(i for i, ln in enumerate(lines) if ln.startswith("bench.json: "))
    plots = next(i for i, ln in enumerate(lines) if ln.startswith("plots: "))
    assert table < report < plots == len(lines) - 1
    assert str(tmp_path / "latency_hist.png") in lines[plots]


def test_failure_is_said_first_then_what_was_kept(cli, sim_server, tmp_path):
    from gendertool.device.sim import SimFaults

    server = sim_server(autostart=False, faults=SimFaults(disconnect_after=8))
    r = cli("bench", "--port", server.url, "-n", "200", "--warmup", "0", "--out", tmp_path)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and "runs completed" in r.stderr
    assert r.stderr.count("error: ") == 1  # said once
    lines = _lines(r.stdout)
    assert lines[0].startswith("SIMULATED latency on sim")
    assert lines[-2].startswith("bench.json: ") and "INCOMPLETE" in lines[-2]
    assert lines[-1].startswith("plots: ")


def test_no_samples_failure_first(cli, tmp_path):
    refused = closed_port_url()
    r = cli("bench", "--port", refused, "-n", "5", "--warmup", "0", "--out", tmp_path)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and refused in r.stderr
    assert "no samples received" in r.stdout
    assert not any(ln.startswith("plots: ") for ln in _lines(r.stdout))


def test_json_on_stdout(cli, sim_server, tmp_path):
    server = sim_server()
    old = tmp_path / "old.json"
    assert cli("bench", "--port", server.url, "-n", "6", "--warmup", "0", "--out", tmp_path / "a",
               "--no-plots").exit_code == 0
    (tmp_path / "a" / "bench.json").rename(old)
    r = cli("bench", "--port", server.url, "-n", "8", "--warmup", "0", "--out", tmp_path / "b", "--json",
            "--compare", old)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # stdout is one JSON document, nothing else
    (board,) = doc["boards"]
    assert board == {**json.loads((tmp_path / "b" / "bench.json").read_text()), "path": board["path"],
                     "plots": board["plots"], "compare": board["compare"]}
    assert board["path"] == str(tmp_path / "b" / "bench.json")
    assert board["plots"] == [str(tmp_path / "b" / "latency_hist.png")]
    assert board["completed"] == 8 and len(board["samples"]) == 8
    assert board["compare"]["old"] == str(old)
    assert {(row["metric"], row["stat"]) for row in board["compare"]["rows"]} >= {("invoke_us", "p50"), ("fps", "")}


def test_json_failure_keeps_stdout_json(cli, sim_server, tmp_path):
    good, refused = sim_server(), closed_port_url()
    r = cli("bench", "--port", good.url, "--port", refused, "-n", "5", "--warmup", "0", "--no-plots", "--json",
            "--out", tmp_path)
    assert r.exit_code == 2
    boards = {b["port"]: b for b in json.loads(r.stdout)["boards"]}
    assert boards[good.url]["complete"] and boards[refused]["error"]
    assert r.stderr.startswith("error: ") and refused in r.stderr


# --- figures tied to what the device sent ------------------------------------------------------


class ScriptedClient:
    """A device whose bench records are given: pre_us 10+k and invoke_us 5000+7k for run k."""

    def __init__(self, n: int, summary_overrides: dict | None = None, warmup_run: int | None = None):
        from gendertool import protocol as p

        self.p = p
        pre = tuple(10 + k for k in range(n))
        inv = tuple(5000 + 7 * k for k in range(n))
        self.records = [p.BenchSample(0, pre[:3], inv[:3], False), p.BenchSample(3, pre[3:], inv[3:], False)]
        fields = dict(n=n, warmup=warmup_run, min_us=min(inv), max_us=max(inv), mean_us=round(sum(inv) / n, 1),
                      total_us=sum(inv), simulated=False)
        fields.update(summary_overrides or {})
        self.fields = fields

    def info(self):
        return self.p.Hello(self.p.PROTO_VERSION, "t", "board", "esp32s3", "m", "0" * 64, ("a", "b"), (1, 8, 8, 3), 0.1, 0, 0.1, 0,
                            1, 1, 1, 1, 240, "i", "t", "e", 4, "sample", False, False)

    def boot_selftest(self):
        return None

    def set_source(self, source):
        pass

    def bench(self, n, warmup):
        yield from self.records
        f = dict(self.fields)
        if f["warmup"] is None:
            f["warmup"] = warmup
        yield self.p.BenchSummary(**f)


def test_samples_keep_preprocessing_and_invoke_in_their_own_columns(tmp_path):
    r = bench.run_bench(ScriptedClient(6), port="x", n=6, warmup=2, out_json=tmp_path / "bench.json")
    assert r.error is None and r.complete
    assert [(s.seq, s.pre_us, s.invoke_us) for s in r.samples] == [(k, 10 + k, 5000 + 7 * k) for k in range(6)]
    st = r.stats()
    assert (st["pre_us"].min, st["pre_us"].max) == (10, 15)
    assert (st["invoke_us"].min, st["invoke_us"].max) == (5000, 5035)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [s["pre_us"] for s in data["samples"]] == list(range(10, 16))
    assert data["stats"]["invoke_us"]["mean"] == pytest.approx(5017.5)
    assert data["device_summary"]["warmup"] == 2 and data["request"]["warmup"] == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"total_us": 1}, "its Invoke() total is 1 us, the samples' is 30105 us"),
        ({"min_us": 10}, "its Invoke() min is 10 us, the samples' is 5000 us"),
        ({"max_us": 15}, "its Invoke() max is 15 us, the samples' is 5035 us"),
        ({"mean_us": 5017.7}, "its Invoke() mean is 5017.7 us, the samples' is 5017.5 us"),
    ],
)
def test_a_summary_that_disagrees_with_the_samples_is_reported(tmp_path, overrides, message):
    r = bench.run_bench(ScriptedClient(6, overrides), port="x", n=6, warmup=2, out_json=tmp_path / "bench.json")
    assert r.error == f"the device's bsummary disagrees with its samples: {message}"
    assert r.completed == 6 and not r.complete  # the samples are kept, the run is marked
    assert json.loads((tmp_path / "bench.json").read_text())["error"] == r.error


def test_a_device_that_skips_warmups_is_reported(cli, sim_server, tmp_path):
    from gendertool.device.sim import SimFaults

    server = sim_server(faults=SimFaults(skip_warmup=True))
    r = cli("bench", "--port", server.url, "-n", "10", "--warmup", "5", "--no-plots", "--out", tmp_path)
    assert r.exit_code == 2
    assert "the device ran 0 warm-up run(s), 5 requested" in r.stderr
    assert "warm-up runs: 0 on the device (5 requested)" in r.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["device_summary"]["warmup"] == 0 and data["request"]["warmup"] == 5
    assert data["completed"] == 10 and data["complete"] is False


def test_a_device_that_swaps_the_timing_columns_is_caught_by_its_own_summary(cli, sim_server, tmp_path):
    from gendertool.device.sim import SimFaults

    server = sim_server(faults=SimFaults(swap_timings=True))
    r = cli("bench", "--port", server.url, "-n", "40", "--warmup", "0", "--no-plots", "--out", tmp_path)
    assert r.exit_code == 2
    assert "bsummary disagrees with its samples: its Invoke() " in r.stderr
    data = json.loads((tmp_path / "bench.json").read_text())
    # the summary's total is the sum of what the device timed as Invoke(): here the pre_us column
    assert data["device_summary"]["total_us"] == sum(s["pre_us"] for s in data["samples"])
    assert data["completed"] == 40


def test_a_correct_device_summary_matches_its_samples(cli, sim_server, tmp_path):
    server = sim_server()
    r = cli("bench", "--port", server.url, "-n", "40", "--warmup", "3", "--no-plots", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "bench.json").read_text())
    d, inv = data["device_summary"], [s["invoke_us"] for s in data["samples"]]
    assert (d["n"], d["warmup"], d["min_us"], d["max_us"], d["total_us"]) == (40, 3, min(inv), max(inv), sum(inv))
    assert "warm-up runs: 3 on the device (3 requested)" in r.stdout


def test_sim_fault_option_names_the_known_faults(cli):
    r = cli("sim", "--fault", "nope", "--listen", "127.0.0.1:0")
    assert r.exit_code == 2
    assert "--fault 'nope' is not a fault; known: score-off-by-one, wrong-class, selftest-fail, skip-warmup, swap-timings" in r.stderr


def test_every_fault_name_sets_its_own_flag():
    from dataclasses import asdict

    from gendertool.device.sim import DEVICE_FAULTS, SimFaults

    for name in DEVICE_FAULTS:
        on = {k for k, v in asdict(SimFaults(**{name.replace("-", "_"): True})).items() if v is True}
        assert on == {name.replace("-", "_")}


def test_one_run_is_a_valid_request_and_a_short_run_is_an_error(tmp_path):
    bench.check_request(1, 0, "sample")  # the firmware's lower limit
    r = bench.run_bench(ScriptedClient(4), port="x", n=6, warmup=0, out_json=tmp_path / "bench.json")
    assert r.completed == 4 and not r.complete
    assert r.error == "the device reported 4 runs but 4 arrived (6 requested)"


def test_arena_placement_in_bench_json_and_a_loud_warning_for_psram(cli, sim_server, tmp_path):
    """Issue 21 fault 8: where the arena landed changes every latency figure."""
    server = sim_server()
    r = cli("bench", "--port", server.url, "-n", "4", "--warmup", "0", "--out", tmp_path / "a", "--no-plots")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "a" / "bench.json").read_text())
    assert doc["firmware"]["arena_in"] == "host" and doc["device"]["arena_in"] == "host"
    assert doc["device_summary"]["arena_in"] == "host" and doc["device_summary"]["camera"] is False
    assert "WARNING" not in r.output and "arena: in host" in r.output
    server.device.arena_in = "psram"
    r = cli("bench", "--port", server.url, "-n", "4", "--warmup", "0", "--out", tmp_path / "b", "--no-plots")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert doc["firmware"]["arena_in"] == "psram" and doc["device_summary"]["arena_in"] == "psram"
    assert "WARNING: the tensor arena is in PSRAM" in " ".join(r.output.split())


def test_report_bundles_what_a_first_board_run_must_send_back(cli, sim_server, tmp_path):
    """docs/first-board-run.md: one file with the hello (arena placement, heaps), the self-test,
    the samples and summary, the profile, the device's log lines and the link counters."""
    server = sim_server()
    report = tmp_path / "send-me" / "report.json"
    r = cli("bench", "--port", server.url, "-n", "5", "--warmup", "3", "--profile", "--out", tmp_path / "a",
            "--no-plots", "--report", report)
    assert r.exit_code == 0, r.output
    assert f"report: {report}" in " ".join(r.stderr.split())
    doc = json.loads(report.read_text())
    assert doc["kind"] == "gendertool-report" and doc["schema"] == 1 and doc["argv"]
    (board,) = doc["boards"]
    on_disk = json.loads((tmp_path / "a" / "bench.json").read_text())
    assert board == {**on_disk, "path": str(tmp_path / "a" / "bench.json")}
    assert board["device"]["arena_in"] == "host" and board["device"]["proto"] == 2
    assert board["profile"] and len(board["samples"]) == 5 and board["device_summary"]["warmup"] == 3
    assert board["link"]["records"] > 0 and board["link"]["bad_crc"] == 0
    assert any("virtual device" in line for line in board["device_log"])
