"""Issue 20.1: repeated Ctrl-C never loses or falsifies results.

Real SIGINT bursts (the way an impatient user presses Ctrl-C) against the console script: the
first one stops the command, which saves what it holds and then says so; every later one is
ignored with one line saying the save comes first. Exit 130, never a KeyboardInterrupt
traceback, and what the message says matches what is on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import noise_images

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

BURST = 25  # SIGINTs per burst, 2 ms apart: they cover the whole save-and-speak of the first one


def _exe() -> str:
    local = Path(sys.executable).parent / "gendertool"
    exe = str(local) if local.exists() else shutil.which("gendertool")
    assert exe, "the gendertool console script must be installed"
    return exe


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GENDERTOOL_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [_exe(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a shell's background job ignores it
    )


def _wait_for(proc: subprocess.Popen, ready, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"never saw {what}: rc {proc.returncode}\n{out}\n{err}")
        time.sleep(0.02)


def _burst(proc: subprocess.Popen, n: int = BURST, gap_s: float = 0.002) -> tuple[str, str]:
    try:
        for _ in range(n):
            if proc.poll() is not None:
                break
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(gap_s)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _one_line(text: str) -> str:
    return text.replace("\n", "")


@pytest.mark.parametrize("n, gap_s", [(BURST, 0.002), (3, 0.15)], ids=["burst", "three-150ms-apart"])
def test_a_burst_of_ctrl_c_during_bench_keeps_and_names_every_sample(tmp_path, n, gap_s):
    out = tmp_path / "b"
    proc = _start(["bench", "--port", "sim", "-n", "10000", "--warmup", "0", "--out", str(out)], tmp_path)
    _wait_for(proc, (out / "bench.json").exists, "bench.json")
    stdout, stderr = _burst(proc, n, gap_s)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["interrupted"] is True and data["complete"] is False
    # the message counts exactly what the file holds (it used to say "no board had sent a sample")
    assert f"sim: {data['completed']} of 10000 runs done, partial report {out / 'bench.json'}" in _one_line(stderr)
    assert "nothing written" not in stderr
    assert stderr.count("Ctrl-C again") <= 1  # said once, however many (none when it was done first)
    if n == BURST:  # the burst lands while the first one's save is in progress
        assert "Ctrl-C again: saving what was finished first" in stderr
    assert f"{data['completed']} of 10000 runs" in _one_line(stdout)  # the partial table, then the path


@pytest.fixture
def images(tmp_path) -> Path:
    return noise_images(tmp_path / "imgs", 60, (48, 40), seed=20, name="i{i:02}.png")


def test_a_burst_of_ctrl_c_during_validate_on_a_board_keeps_the_report(tmp_path, images, sim_server):
    from gendertool.device.sim import SimFaults

    # an in-process virtual device that answers slowly, so the burst lands among the uploads
    server = sim_server(autostart=False, faults=SimFaults(reply_delay_ms=25))
    report = tmp_path / "v.json"
    proc = _start(["validate", "--port", server.url, "--images", str(images), "--out", str(report)], tmp_path)
    start = server.device.records_sent
    _wait_for(proc, lambda: server.device.records_sent >= start + 12, "uploads answered")
    stdout, stderr = _burst(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    data = json.loads(report.read_text())  # it used to be missing
    assert data["interrupted"] is True and data["partial"] is True
    board = data["boards"][0]
    assert 0 < board["compared"] < 60
    assert f"{board['compared']} of 60 images compared" in _one_line(stderr)
    assert f"partial report {report}" in _one_line(stderr)
    assert "PARTIAL" in stdout


def test_a_burst_of_ctrl_c_during_monitor_ends_with_the_summary(tmp_path):
    csv_path = tmp_path / "m.csv"
    proc = _start(["monitor", "--port", "sim", "--csv", str(csv_path)], tmp_path)
    _wait_for(proc, lambda: csv_path.exists() and csv_path.read_text().count("\n") >= 4, "results in the CSV")
    stdout, stderr = _burst(proc)
    assert proc.returncode in (0, 130), stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    rows = csv_path.read_text().splitlines()
    assert all(r.count(",") == rows[0].count(",") for r in rows)  # no row cut
    m = re.search(r"results\s+(\d+) in", stdout)
    assert m and int(m.group(1)) == len(rows) - 1  # the summary counts what the file holds


def test_a_process_started_with_sigint_ignored_keeps_ignoring_it(tmp_path):
    """A script's background job (`gendertool monitor ... &`) starts with SIGINT ignored: the
    Ctrl-C policy does not take that away."""
    env = {**os.environ, "NO_COLOR": "1", "GENDERTOOL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([_exe(), "monitor", "--port", "sim", "-n", "6"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    stdout, stderr = _burst(proc, 5, 0.05)
    assert proc.returncode == 0, stderr
    assert stdout.count("#") == 6 and "Ctrl-C" not in stdout
