"""gendertool monitor end to end over real TCP sockets (pyserial socket://) against the
virtual device, plus scripted devices for faults the simulator does not produce (panics,
silence, a port that never returns), and the shared presentation helpers.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from conftest import closed_port_url
from gendertool import protocol as p
from gendertool.device.monitor import MonitorSink, run_monitor
from gendertool.device.panic import PanicDecoder
from gendertool.files import CsvAppender, JsonLinesWriter
from gendertool.stats import RateMeter, RollingStats, percentile
from gendertool.device.sim import SimDevice, SimFaults, SimServer

from conftest import REPO

PY = sys.executable


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fast_device(model_info):
    """One virtual device for the module (the session's model): no period, replayed results."""
    return SimDevice(model_info, period_ms=0, replay=True)


@pytest.fixture
def sim_url(fast_device):
    with SimServer(fast_device) as server:
        yield server.url


def _result(seq: int, label: str = "male", invoke_us: int = 45000) -> p.Result:
    cls = 1 if label == "male" else 0
    probs = (0.1, 0.9) if cls else (0.9, 0.1)
    return p.Result(seq, "sample", seq % 3, cls, label, (-80, 80) if cls else (80, -80), probs, 800, invoke_us, False)


HELLO = p.Hello(
    p.PROTO_VERSION, "0.1.0", "xiao_esp32s3", "esp32s3", "gender_mbv2_035_64", "ab" * 32, ("female", "male"), (1, 64, 64, 3),
    0.0078125, 0, 0.00390625, -128, 180000, 170000, 250000, 8000000, 240, "v5.5.5", "1.3.4", "1.1.2", 8, "sample", True, False,
)


class ScriptedDevice:
    """A TCP 'device' running ``script(conn, n)`` for the n-th connection (0-based).

    ``max_conns``: stop listening after that many connections (the port never comes back).
    Scripts start talking once the host asked ``info`` (:meth:`wait_for`): bytes sent before
    the host finished opening the port are flushed by pyserial's open, as on a real tty.
    """

    def __init__(self, script, max_conns: int | None = None) -> None:
        self.script = script
        self.max_conns = max_conns
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = bytearray()
        self.conns = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.settimeout(0.2)
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            n = self.conns
            self.conns += 1
            reader = threading.Thread(target=self._drain, args=(conn,), daemon=True)
            reader.start()
            try:
                self.script(conn, n)
            except OSError:
                pass
            finally:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            if self.max_conns is not None and self.conns >= self.max_conns:
                self.sock.close()
                return

    def wait_for(self, needle: bytes, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while bytes(self.received).count(needle) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the host never sent {needle!r}")
            time.sleep(0.005)

    def _drain(self, conn) -> None:
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                self.received += data
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(timeout=5)


@pytest.fixture
def scripted():
    devices = []

    def make(script, max_conns=None, greet=True) -> ScriptedDevice:
        def after_info(conn, n):
            if greet:
                dev.wait_for(b"info\n", n + 1)
            script(conn, n)

        dev = ScriptedDevice(after_info, max_conns)
        devices.append(dev)
        return dev

    yield make
    for dev in devices:
        dev.close()


class Collect(MonitorSink):
    def __init__(self) -> None:
        self.results, self.logs, self.statuses, self.panics, self.hellos, self.errors = [], [], [], [], [], []

    def hello(self, h):
        self.hellos.append(h)

    def result(self, r, session):
        self.results.append(r)

    def log(self, text):
        self.logs.append(text)

    def status(self, text):
        self.statuses.append(text)

    def panic(self, report):
        self.panics.append(report)

    def device_error(self, rec):
        self.errors.append(rec)


# --------------------------------------------------------------------------- against the virtual device


def test_monitor_help(cli):
    res = cli("monitor", "--help")
    assert res.exit_code == 0
    for opt in ("--port", "--count", "--json", "--csv", "--timeout", "--elf", "--source"):
        assert opt in res.stdout


def test_monitor_count_text(cli, sim_url):
    res = cli("monitor", "--port", sim_url, "--count", "7")
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("#")]
    assert len(lines) == 7
    assert all(("male" in ln or "female" in ln) and "invoke" in ln for ln in lines)
    assert "Monitor summary" in res.stdout and "results" in res.stdout and "p90" in res.stdout
    assert "virtual device" in res.stdout  # simulated figures are labelled as such
    assert "connected" in res.stderr and "gender_mbv2_035_64" in res.stderr


def test_monitor_json_only_results_on_stdout(cli, sim_url):
    res = cli("monitor", "--port", sim_url, "--count", "25", "--json")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]  # every stdout line is JSON
    assert len(rows) == 25
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + 25))
    for r in rows:
        assert r["label"] in ("female", "male") and r["simulated"] is True
        assert r["class"] in (0, 1) and len(r["probs"]) == 2 and len(r["scores"]) == 2
        assert math.isclose(r["confidence"], r["probs"][r["class"]], abs_tol=1e-4)
        assert r["invoke_us"] > 0
    assert "Monitor summary" in res.stderr


def test_monitor_garbage_and_10000_results_lose_none(cli, tmp_path):
    """10,000 results with garbage before every record: all arrive, in order, none damaged."""
    dev = SimDevice(period_ms=0, replay=True, faults=SimFaults(garbage_every=1, seed=7))
    with SimServer(dev) as server:
        res = cli("monitor", "--port", server.url, "--count", "10000", "--json")
    assert res.exit_code == 0, res.stderr
    seqs = [json.loads(line)["seq"] for line in res.stdout.splitlines()]
    assert len(seqs) == 10000
    assert seqs == list(range(seqs[0], seqs[0] + 10000))
    assert _summary_row(res.stderr, "lost / damaged") == "none"


def test_monitor_reports_resets_and_bad_checksums(cli, fast_device):
    """Resets mid-record and corrupted checksums: said on stderr, counted in the summary."""
    dev = SimDevice(fast_device.model, period_ms=0, replay=True, faults=SimFaults(reset_every=7, bad_crc_every=5, seed=3))
    with SimServer(dev) as server:
        res = cli("monitor", "--port", server.url, "--count", "30")
    assert res.exit_code == 0, res.output
    assert len([ln for ln in res.stdout.splitlines() if ln.startswith("#")]) == 30
    assert "the device rebooted" in res.stderr
    (row,) = [ln for ln in res.stdout.splitlines() if ln.startswith("lost / damaged")]
    bad_crc = int(row.split(" bad crc")[0].split()[-1])
    missing = int(row.split("lost / damaged")[1].split()[0])
    assert bad_crc > 0 and missing > 0


def test_monitor_csv_appends_with_one_header(cli, sim_url, tmp_path):
    out = tmp_path / "runs" / "results.csv"
    assert cli("monitor", "--port", sim_url, "--count", "4", "--csv", out).exit_code == 0
    res = cli("monitor", "--port", sim_url, "--count", "3", "--csv", out)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7  # appended, header written once
    assert out.read_text().count("seq,") == 1
    assert all(r["label"] in ("female", "male") and int(r["invoke_us"]) > 0 for r in rows)
    assert list(rows[0]) == ["run", "t", "seq", "source", "sample", "sample_name", "truth", "correct", "class", "label",
                             "confidence", "p_female", "p_male", "score_female", "score_male", "pre_us", "invoke_us",
                             "simulated"]
    for r in rows:  # one number per cell, the chosen class's probability is the confidence
        assert math.isclose(float(r["p_female"]) + float(r["p_male"]), 1.0, abs_tol=2e-3)
        assert math.isclose(float(r[f"p_{r['label']}"]), float(r["confidence"]), abs_tol=1e-4)
        int(r["score_female"]), int(r["score_male"])
    runs = [r["run"] for r in rows]
    assert runs[:4] == [runs[0]] * 4 and runs[4:] == [runs[4]] * 3 and runs[0] != runs[4]  # appended runs apart


def test_monitor_csv_keeps_results_that_precede_the_hello(cli, scripted, tmp_path):
    def script(conn, n):  # already streaming: two results arrive before the reply to `info`
        conn.sendall(p.encode_record(_result(0)) + p.encode_record(_result(1, "female")) + p.encode_record(HELLO))
        conn.sendall(p.encode_record(_result(2)))
        time.sleep(1)

    out = tmp_path / "early.csv"
    res = cli("monitor", "--port", scripted(script).url, "--count", "3", "--csv", out)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [(r["seq"], r["label"], r["p_female"], r["score_male"]) for r in rows] == [
        ("0", "male", "0.1", "80"), ("1", "female", "0.9", "-80"), ("2", "male", "0.1", "80")]


def test_monitor_csv_with_other_labels_refused(cli, sim_url, tmp_path):
    from gendertool.device.monitor import csv_fields

    out = tmp_path / "cats.csv"
    out.write_text(",".join(csv_fields(("cat", "dog"))) + "\n")
    res = cli("monitor", "--port", sim_url, "--count", "1", "--csv", out)
    assert res.exit_code == 2 and "already has different columns" in res.stderr and "p_cat" in res.stderr
    assert out.read_text().count("\n") == 1  # nothing appended


def test_monitor_csv_unwritable_refused_before_connecting(cli, tmp_path):
    target = tmp_path / "a-folder.csv"
    target.mkdir()
    res = cli("monitor", "--port", closed_port_url(), "--count", "1", "--csv", target)
    assert res.exit_code == 2 and f"cannot write --csv {target}" in res.stderr
    assert "cannot connect" not in res.stderr


def test_monitor_csv_header_mismatch_refused(cli, sim_url, tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    res = cli("monitor", "--port", sim_url, "--count", "1", "--csv", out)
    assert res.exit_code == 2 and "different columns" in res.stderr
    assert out.read_text() == "a,b\n1,2\n"


def test_monitor_csv_survives_a_kill(tmp_path, fast_device):
    """A crash (SIGKILL) loses no row already received: every row written is complete."""
    out = tmp_path / "live.csv"
    with SimServer(SimDevice(fast_device.model, period_ms=20)) as server:
        proc = subprocess.Popen(
            [PY, "-m", "gendertool", "monitor", "--port", server.url, "--csv", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if out.exists() and out.read_text().count("\n") >= 11:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = out.read_text()
    assert text.endswith("\n")  # nothing half-written
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) >= 10
    seqs = [int(r["seq"]) for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_monitor_reconnects_after_disconnect(cli, fast_device):
    dev = SimDevice(fast_device.model, period_ms=0, replay=True, faults=SimFaults(disconnect_after=6, disconnects=1))
    with SimServer(dev) as server:
        res = cli("monitor", "--port", server.url, "--count", "15", "--json", "--timeout", "5")
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.splitlines()) == 15
    assert "disconnected" in res.stderr and "reconnected" in res.stderr
    assert _summary_row(res.stderr, "port lost") == "1 time, back 1 time"


def _summary_row(text: str, key: str) -> str:
    """The value of one row of the monitor summary (a two-column table after its title)."""
    lines = text.split("Monitor summary", 1)[1].splitlines()
    (row,) = [ln for ln in lines if ln.startswith(key + "  ")]
    return " ".join(row[len(key):].split())


def _ten_results(conn, n):
    # 10 results 0.1 s apart: invoke 10..100 ms, pre 0.8 ms, 3 female + 7 male, seq 4 and 5 lost
    conn.sendall(p.encode_record(HELLO))
    for i, seq in enumerate((0, 1, 2, 3, 6, 7, 8, 9, 10, 11)):
        label = "female" if i < 3 else "male"
        conn.sendall(p.encode_record(_result(seq, label, invoke_us=10_000 * (i + 1))))
        time.sleep(0.1)
    time.sleep(1)


def test_monitor_summary_figures_are_the_streams(cli, scripted):
    url = scripted(_ten_results).url
    res = cli("monitor", "--port", url, "--count", "10")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert _summary_row(out, "port") == url  # a board's figures: no virtual-device note
    assert _summary_row(out, "results").startswith("10 in ")
    fps = _summary_row(out, "FPS")
    assert fps.endswith("s)") and "first to last result" in fps
    assert 7.0 < float(fps.split()[0]) <= 10.5  # 9 intervals of ~0.1 s (sleep only ever overshoots)
    assert _summary_row(out, "invoke ms") == "p50 55.00 p90 91.00 p99 99.10 mean 55.00 min 10.00 max 100.00"
    assert _summary_row(out, "preprocess ms") == "p50 0.80 p90 0.80"
    assert _summary_row(out, "classes") == "female 3 (30%) male 7 (70%)"
    lost = _summary_row(out, "lost / damaged")
    assert lost.startswith("2 missing seq") and "0 bad crc" in lost
    for absent in ("port lost", "panics", "stopped", "csv"):  # nothing of the kind happened
        assert not any(ln.startswith(absent) for ln in out.split("Monitor summary")[1].splitlines())


def test_monitor_summary_of_one_result_has_no_rate(cli, scripted):
    def script(conn, n):
        conn.sendall(p.encode_record(HELLO) + p.encode_record(_result(0)))
        time.sleep(1)

    res = cli("monitor", "--port", scripted(script).url, "--count", "1")
    assert res.exit_code == 0, res.output
    assert _summary_row(res.stdout, "FPS") == "- (needs two results)"
    assert _summary_row(res.stdout, "lost / damaged") == "none"


def test_monitor_summary_names_the_csv(cli, sim_url, tmp_path):
    out = tmp_path / "r.csv"
    res = cli("monitor", "--port", sim_url, "--count", "2", "--csv", out)
    assert res.exit_code == 0, res.output
    assert _summary_row(res.stdout, "csv") == str(out)


def test_monitor_gives_up_when_port_does_not_return(cli, scripted):
    def script(conn, n):
        conn.sendall(p.encode_record(HELLO))
        for i in range(3):
            conn.sendall(p.encode_record(_result(i)))
        time.sleep(0.2)

    dev = scripted(script, max_conns=1)
    t0 = time.monotonic()
    res = cli("monitor", "--port", dev.url, "--count", "10", "--timeout", "1", "--json")
    assert res.exit_code == 2
    assert time.monotonic() - t0 < 15
    assert "did not come back within 1 s" in res.stderr and "giving up" in res.stderr
    assert len(res.stdout.splitlines()) == 3  # what arrived is kept
    assert "Monitor summary" in res.stderr  # summary still shown
    # it vanished once and never came back: no reconnect to report
    assert _summary_row(res.stderr, "port lost") == "1 time, back 0 times"


def test_monitor_silent_device_times_out(cli, scripted):
    dev = scripted(lambda conn, n: time.sleep(1.5), greet=False)
    res = cli("monitor", "--port", dev.url, "--timeout", "0.5")
    assert res.exit_code == 2
    assert "no data from" in res.stderr and "0.5 s" in res.stderr
    assert b"info\n" in dev.received  # it asked the device who it is


def test_monitor_starts_a_stopped_device_and_selects_source(scripted):
    stopped = p.Hello(**{**HELLO.__dict__, "running": False})

    def script(conn, n):
        conn.sendall(p.encode_record(stopped))
        dev.wait_for(b"start\n")
        for i in range(3):
            conn.sendall(p.encode_record(_result(i)))
        time.sleep(1)

    dev = scripted(script)
    sink = Collect()
    summary = run_monitor(dev.url, sink, count=3, timeout=3, source="camera")
    assert summary.results == 3 and summary.error is None
    sent = bytes(dev.received)
    assert b"source camera\n" in sent and b"start\n" in sent
    time.sleep(0.2)
    assert bytes(dev.received).endswith(b"stop\n")  # we started it, so we stop it


def test_monitor_counts_sequence_gaps_and_reboots(scripted):
    def script(conn, n):
        conn.sendall(p.encode_record(HELLO))
        for seq in (0, 1, 2, 5, 6):  # 3 and 4 lost
            conn.sendall(p.encode_record(_result(seq)))
        conn.sendall(b"I (10) boot: rebooting\r\n" + p.encode_record(HELLO))  # a boot hello: seq restarts
        for seq in (0, 1):
            conn.sendall(p.encode_record(_result(seq)))
        time.sleep(1)

    dev = scripted(script)
    sink = Collect()
    summary = run_monitor(dev.url, sink, count=7, timeout=3)
    assert summary.results == 7
    assert summary.lost == 2
    assert any("rebooted" in s for s in sink.statuses)
    assert "I (10) boot: rebooting" in sink.logs


def test_ctrl_c_inside_a_record_waits_for_it(scripted):
    """A SIGINT while a result is being counted and shown lands after it: the summary counts
    exactly the results the sink showed (the race the Ctrl-C subprocess test can hit)."""
    import os
    import signal

    def script(conn, n):
        conn.sendall(p.encode_record(HELLO))
        for seq in range(10):
            conn.sendall(p.encode_record(_result(seq)))
        time.sleep(1)

    class InterruptOnThird(Collect):
        def result(self, r, session):
            if len(self.results) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # delivered at once, mid-record
            self.results.append(r)

    before = signal.getsignal(signal.SIGINT)
    sink = InterruptOnThird()
    summary = run_monitor(scripted(script).url, sink, count=10, timeout=3)
    assert summary.interrupted
    assert summary.results == len(sink.results) == 3
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_monitor_sim_port_for_a_newcomer(cli):
    """`gendertool monitor --port sim`: the in-process virtual device, nothing to set up."""
    res = cli("monitor", "--port", "sim", "--count", "2")
    assert res.exit_code == 0, res.output
    assert len([ln for ln in res.stdout.splitlines() if ln.startswith("#")]) == 2


def test_monitor_source_camera_refused_by_sim(cli, sim_url):
    res = cli("monitor", "--port", sim_url, "--source", "camera", "--count", "100000", "--json", "--timeout", "3")
    assert res.exit_code == 2
    assert "refused --source camera" in res.stderr and "no camera" in res.stderr


def test_monitor_device_error_records_shown(scripted):
    def script(conn, n):
        conn.sendall(p.encode_record(HELLO))
        conn.sendall(p.encode_record(p.ErrorRecord("camera_failed", "", "capture timeout", False)))
        conn.sendall(p.encode_record(_result(0)))
        time.sleep(1)

    sink = Collect()
    run_monitor(scripted(script).url, sink, count=1, timeout=3)
    assert [(e.code, e.message) for e in sink.errors] == [("camera_failed", "capture timeout")]


def test_monitor_refuses_other_protocol_versions(cli, scripted):
    for other in (p.PROTO_VERSION + 1, 1):  # a newer firmware, and a version 1 firmware
        hello = p.Hello(**{**HELLO.__dict__, "proto": other})
        dev = scripted(lambda conn, n: (conn.sendall(p.encode_record(hello)), time.sleep(1)))
        res = cli("monitor", "--port", dev.url, "--count", "1", "--timeout", "2")
        assert res.exit_code == 2 and f"protocol version {other}" in res.stderr


# --------------------------------------------------------------------------- ports


def test_monitor_busy_port(cli):
    """Ports are opened exclusively: a second monitor on the same tty gets a clear error."""
    from gendertool.device.transport import open_port

    master, slave = pty.openpty()
    path = os.ttyname(slave)
    first = open_port(path)
    try:
        res = cli("monitor", "--port", path, "--count", "1", "--timeout", "1")
        assert res.exit_code == 2
        assert "busy" in res.stderr and path in res.stderr
        assert "Traceback" not in res.output
    finally:
        first.close()
        os.close(master)
        os.close(slave)


def test_monitor_missing_port(cli, tmp_path):
    res = cli("monitor", "--port", str(tmp_path / "ttyACM7"))
    assert res.exit_code == 2 and "not found" in res.stderr


def test_monitor_no_board_found(cli, monkeypatch):
    import gendertool.device.ports

    monkeypatch.setattr(gendertool.device.ports, "find_esp32s3_ports", lambda: [])
    res = cli("monitor")
    assert res.exit_code == 2 and "no ESP32-S3 found" in res.stderr and "--port sim" in res.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--json", "--csv", "x.csv"], "one of --json and --csv"),
        (["--source", "upload"], "--source must be sample or camera"),
        (["--count", "0"], "--count must be at least 1"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--elf", "/nonexistent/app.elf"], "does not exist"),
    ],
)
def test_monitor_bad_options(cli, sim_url, args, expected):
    res = cli("monitor", "--port", sim_url, *args)
    assert res.exit_code == 2 and expected in res.stderr


# --------------------------------------------------------------------------- panics

PANIC = (
    "Guru Meditation Error: Core  0 panic'ed (LoadProhibited). Exception was unhandled.\r\n"
    "\r\n"
    "Core  0 register dump:\r\n"
    "PC      : 0x42000024  PS      : 0x00060930  A0      : 0x82008e1d  A1      : 0x3fc97a90\r\n"
    "\r\n"
    "Backtrace: 0x42000024:0x3fc97a90 0x42000035:0x3fc97ab0 0x40379999:0x3fc97ad0\r\n"
    "\r\n"
    "ELF file SHA256: {sha}\r\n"
    "\r\n"
    "Rebooting...\r\n"
)


def _panic_script(sha: str = "0123456789abcdef"):
    def script(conn, n):
        conn.sendall(p.encode_record(HELLO))
        conn.sendall(p.encode_record(_result(0)))
        conn.sendall(PANIC.format(sha=sha).encode())
        conn.sendall(b"ESP-ROM:esp32s3-20210327\r\n" + p.encode_record(HELLO) + p.encode_record(_result(0)))
        time.sleep(1)

    return script


@pytest.fixture(scope="module")
def host_elf(tmp_path_factory) -> Path:
    """A real 32-bit ELF whose code sits at ESP32-S3 flash addresses (0x42000020), built with g++'s
    sibling gcc, so the real addr2line path of esp-idf-panic-decoder can be exercised here."""
    if shutil.which("gcc") is None or shutil.which("addr2line") is None:
        pytest.skip("needs gcc and binutils' addr2line")
    d = tmp_path_factory.mktemp("elf")
    src = d / "app.c"
    src.write_text(
        "__attribute__((noinline)) int inference_step(int x) { return x * 3 + 1; }\n"
        "int app_main(void) { return inference_step(2); }\n"
    )
    elf = d / "app.elf"
    proc = subprocess.run(
        ["gcc", "-m32", "-g", "-O0", "-ffreestanding", "-nostdlib", "-static", "-fno-pie", "-no-pie",
         "-Wl,-Ttext=0x42000020", "-Wl,-e,app_main", "-o", str(elf), str(src)],
        capture_output=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"gcc -m32 unavailable: {proc.stderr.decode()[:200]}")
    return elf


def test_panic_decoded_with_a_real_elf_and_addr2line(scripted, host_elf):
    import hashlib

    sha = hashlib.sha256(host_elf.read_bytes()).hexdigest()[:16]
    sink = Collect()
    summary = run_monitor(scripted(_panic_script(sha)).url, sink, count=2, timeout=3, elf=host_elf, toolchain_prefix="")
    assert summary.panics == 1 and summary.results == 2
    (report,) = sink.panics
    assert "LoadProhibited" in report.reason
    assert report.decoded and report.hint is None  # the device's ELF SHA matches this ELF
    f0, f1, f2 = report.frames
    assert (f0.pc, f0.function) == ("0x42000024", "inference_step")
    assert f0.location.endswith("app.c:1")
    assert f1.function == "app_main"
    assert f2.function is None  # outside the ELF's code (ROM)


def test_panic_elf_mismatch_is_flagged(scripted, host_elf):
    sink = Collect()
    run_monitor(scripted(_panic_script("deadbeefdeadbeef")).url, sink, count=2, timeout=3, elf=host_elf, toolchain_prefix="")
    (report,) = sink.panics
    assert report.hint and "deadbeefdeadbeef" in report.hint and "may be wrong" in report.hint


def test_panic_decoder_gets_the_elf_and_toolchain(monkeypatch, tmp_path):
    """Without an Xtensa toolchain here: the decoder is built with the flashed ELF and the
    esp32s3 toolchain prefix, and asked for exactly the backtrace PCs."""
    import esp_idf_panic_decoder

    import gendertool.device.panic as mon

    elf = tmp_path / "gendertool.elf"
    elf.write_bytes(b"\x7fELF")
    calls = {}

    class FakeDecoder:
        def __init__(self, toolchain_prefix, elf_file, rom_elf_file=None):
            calls["init"] = (toolchain_prefix, elf_file)

        def translate_addresses(self, line):
            calls["line"] = line
            from esp_idf_panic_decoder.pc_address_decoder import PcAddressLocation

            return [("0x42000024", [PcAddressLocation("run_inference", "/p/main/inference.cc", "42"), PcAddressLocation("app_main", "/p/main/main.cc", "7")])]

    tool = tmp_path / "bin" / "xtensa-esp32s3-elf-addr2line"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(esp_idf_panic_decoder, "PcAddressDecoder", FakeDecoder)
    monkeypatch.setattr(mon, "find_addr2line", lambda prefix: str(tool))
    report = PanicDecoder(elf).decode("Guru Meditation Error", "Backtrace: 0x42000024:0x3fc97a90 0x40379999:0x3fc97ab0")
    assert calls["init"] == (str(tool.parent / "xtensa-esp32s3-elf-"), str(elf))
    assert calls["line"].split() == ["0x42000024", "0x40379999"]
    assert report.decoded
    assert report.frames[0].function == "run_inference" and report.frames[0].location == "/p/main/inference.cc:42"
    assert report.frames[0].inlined == ["app_main at /p/main/main.cc:7"]


def test_panic_without_elf_shows_raw_backtrace_and_hint(cli, scripted):
    res = cli("monitor", "--port", scripted(_panic_script()).url, "--count", "2", "--timeout", "3")
    assert res.exit_code == 0, res.output
    assert "Backtrace: 0x42000024:0x3fc97a90 0x42000035:0x3fc97ab0" in res.stderr
    assert "no ELF known" in res.stderr and "--elf" in res.stderr
    assert "panics" in res.stdout  # counted in the summary


def test_panic_elf_from_build_manifest_without_toolchain(cli, scripted, tmp_path, monkeypatch):
    """The ELF comes from the build manifest; with no Xtensa addr2line the hint says so."""
    import gendertool.device.panic as mon

    monkeypatch.setattr(mon, "find_addr2line", lambda prefix: None)
    build = tmp_path / "build"
    build.mkdir()
    (build / "gendertool.elf").write_bytes(b"\x7fELF")
    (build / "gendertool-build.json").write_text(json.dumps({"schema": 1, "chip": "esp32s3", "images": [], "elf": "gendertool.elf"}))
    monkeypatch.chdir(tmp_path)  # ./build is the default
    res = cli("monitor", "--port", scripted(_panic_script()).url, "--count", "2", "--timeout", "3")
    assert res.exit_code == 0, res.output
    assert "xtensa-esp32s3-elf-addr2line not found" in res.stderr


# --------------------------------------------------------------------------- present.py helpers


def test_percentile_matches_linear_interpolation():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile(values, 90) == pytest.approx(4.6)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(3)
    data = list(rng.normal(40, 5, 333))
    for q in (1, 10, 50, 90, 99):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)))


def test_rolling_stats_window_and_totals():
    s = RollingStats(window=3)
    for v in (100.0, 1.0, 2.0, 3.0):
        s.add(v)
    assert s.recent == [1.0, 2.0, 3.0] and s.p50 == 2.0  # 100 rolled out of the window
    assert s.count == 4 and s.max == 100.0 and s.mean == pytest.approx(26.5)


def test_rate_meter():
    r = RateMeter(window_s=1.0, clock=lambda: 0.0)
    for t in (0.0, 0.1, 0.2, 0.3, 0.4):
        r.tick(t)
    assert r.rate(0.4) == pytest.approx(10.0)
    assert r.rate(5.0) == 0.0  # window empty: nothing recent
    assert r.overall() == pytest.approx(10.0)


def test_jsonl_and_csv_writers_flush_per_record(tmp_path):
    path = tmp_path / "r.csv"
    w = CsvAppender(path, ["seq", "probs"])
    w.write({"seq": 1, "probs": [0.1, 0.9], "ignored": "x"})
    assert path.read_text().splitlines() == ["seq,probs", "1,0.1 0.9"]  # on disk before close
    w.close()

    class Stream:
        def __init__(self):
            self.parts, self.flushes = [], 0

        def write(self, s):
            self.parts.append(s)

        def flush(self):
            self.flushes += 1

    s = Stream()
    j = JsonLinesWriter(s)
    j.write({"a": 1})
    j.write({"a": 2})
    assert s.flushes == 2 and "".join(s.parts) == '{"a":1}\n{"a":2}\n'


# --------------------------------------------------------------------------- Ctrl-C, a real board


def test_monitor_ctrl_c_prints_summary(fast_device):
    with SimServer(SimDevice(fast_device.model, period_ms=20)) as server:
        proc = subprocess.Popen(
            [PY, "-m", "gendertool", "monitor", "--port", server.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while sum(ln.startswith("#") for ln in lines) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(timeout=5)
        err = proc.stderr.read()
    assert proc.returncode == 0, err
    out = "".join(lines)
    assert "Monitor summary" in out and "Ctrl-C" in out
    shown = sum(ln.startswith("#") for ln in lines)
    assert _summary_row(out, "results").startswith(f"{shown} in ")  # the summary counts what was shown


@pytest.mark.hardware
def test_monitor_real_board(board_ports):
    """A flashed board streams results: protocol 1, not simulated, latencies plausible."""
    sink = Collect()
    summary = run_monitor(board_ports[0], sink, count=10, timeout=15)
    assert summary.error is None and summary.results == 10
    assert sink.results and not sink.results[-1].simulated
    assert 0 < summary.invoke_ms["p50"] < 1000


# --------------------------------------------------------------------------- built-in sample verdicts

NAMED = p.Hello(**{**HELLO.__dict__, "samples": 3, "sample_names": ("female_a", "male_b", "odd"),
                   "sample_truth": (0, 1, -1)})


def test_monitor_names_samples_and_marks_wrong_answers(cli, scripted, tmp_path):
    """Each sample result names its sample and true label; a wrong answer says WRONG (text,
    JSON, CSV), an unlabelled sample has no verdict, and the summary counts right and wrong."""

    def script(conn, n):
        conn.sendall(p.encode_record(NAMED))
        # sample 0 is female but answered male (wrong); 1 male answered male (right); 2 unknown
        for seq, (sample, label) in enumerate([(0, "male"), (1, "male"), (2, "female"), (0, "female")]):
            r = _result(seq, label)
            conn.sendall(p.encode_record(p.Result(**{**r.__dict__, "sample": sample})))
        time.sleep(1)

    dev = scripted(script)
    out = tmp_path / "r.csv"
    res = cli("monitor", "--port", dev.url, "--count", "4", "--csv", out)
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("#")]
    assert "sample female_a (true female) WRONG" in lines[0]
    assert "sample male_b (true male) ok" in lines[1]
    assert "sample odd (true label unknown)" in lines[2] and "WRONG" not in lines[2]
    assert "sample female_a (true female) ok" in lines[3]
    assert _summary_row(res.stdout, "sample checks") == "2/3 right, 1 WRONG"
    rows = list(csv.DictReader(out.open()))
    assert [(r["sample_name"], r["truth"], r["correct"]) for r in rows] == [
        ("female_a", "female", "False"), ("male_b", "male", "True"), ("odd", "", ""), ("female_a", "female", "True")]


def test_monitor_json_verdicts_from_the_virtual_device(cli, sim_url):
    """The sim names the shipped samples like the firmware (file stem, label prefix): every
    JSON row's verdict is the row's own class against the label in the sample's name."""
    res = cli("monitor", "--port", sim_url, "--count", "8", "--json")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert {r["sample_name"] for r in rows} == {p.stem for p in (REPO / "firmware" / "samples").glob("*.png")}
    for r in rows:
        assert r["truth"] == r["sample_name"].split("_")[0]
        assert r["correct"] is (r["label"] == r["truth"])


def test_hello_without_sample_names_still_parses():
    """Hellos from firmware rendered before sample names were added parse, with no verdicts."""
    from gendertool.device.monitor import sample_verdict

    line = p.encode_record(HELLO).decode()
    body = json.loads(line[line.index("{"): line.rindex("*")])
    for key in ("sample_names", "sample_truth"):
        del body[key]
    payload = "hello " + json.dumps(body, separators=(",", ":"))
    old = f"@GT {payload}*{zlib.crc32(payload.encode()):08x}\n".encode()
    (rec,) = [item for item in p.StreamParser().feed(old)]
    assert isinstance(rec, p.Hello) and rec.sample_names == () and rec.labels == ("female", "male")
    assert sample_verdict(_result(0), rec) is None


def test_monitor_header_says_where_the_arena_is_and_warns_for_psram(cli, scripted):
    """Issue 21 fault 8: the header (and the summary's device block) name the placement."""
    for where, warned in (("internal", False), ("psram", True)):
        hello = p.Hello(**{**HELLO.__dict__, "arena_in": where})
        dev = scripted(lambda conn, n: (conn.sendall(p.encode_record(hello) + p.encode_record(_result(0))), time.sleep(1)))
        res = cli("monitor", "--port", dev.url, "--count", "1", "--timeout", "3")
        assert res.exit_code == 0, res.output
        assert f"arena in {where}" in res.stderr
        assert ("WARNING: the tensor arena is in PSRAM" in " ".join(res.stderr.split())) is warned
        summary = " ".join(res.stdout.split())  # the summary table's row
        assert f"arena in {where}" in summary and ("WARNING" in summary) is warned


def test_monitor_live_view_names_the_arena(monkeypatch):
    """Issue 21 fault 8: the live view (the Rich panel while results stream) shows the placement."""
    from rich.console import Console

    from gendertool.present.monitor import MonitorView
    from gendertool.device.monitor import MonitorSession

    view = MonitorView(json_out=None, csv_out=None, text_results=False)
    view.session = MonitorSession("socket://x")
    for where, warned in (("internal", False), ("psram", True)):
        view.session.hello = p.Hello(**{**HELLO.__dict__, "arena_in": where})
        con = Console(width=160, record=True, color_system=None)
        con.print(view._render())
        text = " ".join(con.export_text().split())
        assert f"arena in {where}" in text and ("WARNING" in text) is warned


def test_monitor_panic_makes_the_device_abort_once_and_follows_it_back(cli, sim_server):
    """docs/first-board-run.md step 7: `monitor --panic` sends the `panic` test command once; the
    dump is recognised as a panic (decoded with --elf), the device reboots, results go on."""
    server = sim_server(autostart=False)  # a fresh device that streams only when told to
    res = cli("monitor", "--port", server.url, "--panic", "--count", "6", "--timeout", "10")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "abort() was called at PC 0x42009e2b on core 1" in out
    assert "panics 1" in out  # the summary row: one panic, not one per reconnect
