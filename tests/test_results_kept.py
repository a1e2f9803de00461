"""Issue 11.1: a failed or interrupted run never destroys or hides results.

bench.json is only written once a sample arrived, a complete earlier report moves to
bench.prev.json (plots along), Ctrl-C prints what was done and where the partial report is
(exit 130, tested in-process and with a real SIGINT), and an --out that cannot be written is
one clear message before the device is touched.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from gendertool.device import bench

from gendertool.device import bench_results
from conftest import REPO, closed_port_url, noise_images


def _bench(cli, port, out, *extra):
    return cli("bench", "--port", port, "--warmup", "0", "--out", out, *extra)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_run_that_receives_nothing_writes_nothing(cli, tmp_path):
    first = _bench(cli, "sim", tmp_path, "-n", "20")
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"bench.json", "latency_hist.png"}
    r = _bench(cli, closed_port_url(), tmp_path, "-n", "20")
    assert r.exit_code == 2 and "0 of 20 runs completed" in r.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # report and its plot untouched
    assert _load(tmp_path / "bench.json")["completed"] == 20


def test_a_missing_port_writes_no_folder(cli, tmp_path):
    out = tmp_path / "new"
    r = _bench(cli, "/dev/ttyFOO", out, "-n", "5")
    assert r.exit_code == 2 and "/dev/ttyFOO" in r.stderr and "not found" in r.stderr
    assert not out.exists()


def test_a_partial_run_keeps_the_complete_one_as_prev(cli, sim_server, tmp_path):
    from gendertool.device.sim import SimFaults

    assert _bench(cli, "sim", tmp_path, "-n", "30", "--profile").exit_code == 0
    complete = (tmp_path / "bench.json").read_bytes()
    hist, ops = (tmp_path / "latency_hist.png").read_bytes(), (tmp_path / "operators.png").read_bytes()
    server = sim_server(autostart=False, faults=SimFaults(disconnect_after=8))
    r = _bench(cli, server.url, tmp_path, "-n", "200")
    assert r.exit_code == 2
    assert (tmp_path / "bench.prev.json").read_bytes() == complete
    assert (tmp_path / "latency_hist.prev.png").read_bytes() == hist
    assert (tmp_path / "operators.prev.png").read_bytes() == ops
    # the partial run's own plot only: the old operator chart is not left beside it
    assert not (tmp_path / "operators.png").exists()
    new = _load(tmp_path / "bench.json")
    assert new["complete"] is False and 0 < new["completed"] < 200

    # a second partial run replaces the partial one, never the kept complete report
    server2 = sim_server(autostart=False, faults=SimFaults(disconnect_after=5))
    assert _bench(cli, server2.url, tmp_path, "-n", "200").exit_code == 2
    assert (tmp_path / "bench.prev.json").read_bytes() == complete


def test_keep_previous_leaves_no_stale_plot_beside_an_incomplete_replacement(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"kind": bench_results.KIND, "complete": False}))
    (tmp_path / "latency_hist.png").write_bytes(b"old")
    assert bench.keep_previous(tmp_path / "bench.json") is None
    assert not (tmp_path / "latency_hist.png").exists() and not (tmp_path / "bench.prev.json").exists()


def _interrupt_after(monkeypatch, samples: int):
    """Ctrl-C as the progress callback sees the ``samples``-th sample (inside the run)."""
    from gendertool.cli import bench as cli_bench

    real = cli_bench.BoardProgress.__call__

    def progress(self, port, phase, done, total):
        real(self, port, phase, done, total)
        if phase == "bench" and done >= samples:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench.BoardProgress, "__call__", progress)


def test_ctrl_c_in_process_prints_the_samples_so_far_and_keeps_them(cli, tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 64)
    r = _bench(cli, "sim", tmp_path, "-n", "5000")
    assert r.exit_code == 130, r.output
    data = _load(tmp_path / "bench.json")
    done = data["completed"]
    assert data["interrupted"] is True and data["complete"] is False and 64 <= done < 5000
    assert len(data["samples"]) == done and data["stats"]["invoke_us"]["n"] == done
    # the statistics of those samples on stdout, and where they are on stderr
    assert "Invoke()" in r.stdout and f"INTERRUPTED: {done} of 5000 runs" in r.stdout
    msg = r.stderr.replace("\n", "")
    assert f"interrupted (Ctrl-C): sim: {done} of 5000 runs done, partial report {tmp_path / 'bench.json'}" in msg
    assert "Traceback" not in r.output
    assert not (tmp_path / "latency_hist.png").exists()  # no plot claims to be a full run's


def test_ctrl_c_before_any_sample_writes_nothing(cli, tmp_path, monkeypatch):
    from gendertool.cli import bench as cli_bench

    def progress(self, port, phase, done, total):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench.BoardProgress, "__call__", progress)
    r = _bench(cli, "sim", tmp_path / "b", "-n", "50")
    assert r.exit_code == 130
    assert "sim: 0 of 50 runs done, nothing written" in r.stderr
    assert not (tmp_path / "b").exists()


def test_ctrl_c_with_several_boards_keeps_each_boards_samples(cli, sim_server, tmp_path, monkeypatch):
    """Ctrl-C reaches the main thread only; the boards in threads are told and save theirs."""
    import threading

    a, b = sim_server(), sim_server()
    from gendertool.device import transport
    real_join = threading.Thread.join
    calls = {"n": 0}

    def join(self, timeout=None):
        # the main thread's first wait for the boards: let them run a moment, then Ctrl-C
        if threading.current_thread() is threading.main_thread() and self.name.startswith("board-") and calls["n"] == 0:
            calls["n"] += 1
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(
                    (tmp_path / bench.port_slug(s.url) / "bench.json").exists() for s in (a, b)):
                time.sleep(0.05)
            raise KeyboardInterrupt
        return real_join(self, timeout)

    monkeypatch.setattr(transport.threading.Thread, "join", join)
    r = cli("bench", "--port", a.url, "--port", b.url, "-n", "5000", "--warmup", "0", "--out", tmp_path)
    assert r.exit_code == 130, r.output
    for s in (a, b):
        data = _load(tmp_path / bench.port_slug(s.url) / "bench.json")
        assert data["interrupted"] is True and 0 < data["completed"] < 5000
        assert f"{s.url}: {data['completed']} of 5000 runs done" in r.stderr.replace("\n", "")
    assert "all boards" in r.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_sigint_to_a_running_bench(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "host"), "NO_COLOR": "1", "COLUMNS": "200",
           "GENDERTOOL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gendertool", "bench", "--port", "sim", "-n", "10000", "--warmup", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a shell's background job ignores it
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "bench.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    data = _load(out / "bench.json")
    assert data["interrupted"] is True and data["completed"] > 0
    assert f"{data['completed']} of 10000 runs done, partial report" in stderr.replace("\n", "")
    assert "Invoke()" in stdout and "Traceback" not in stderr


def test_out_is_an_existing_file(cli, tmp_path):
    f = tmp_path / "report"
    f.write_text("mine")
    r = _bench(cli, "sim", f, "-n", "5")
    assert r.exit_code == 2 and f"--out {f} is a file" in r.stderr.replace("\n", "")
    assert f.read_text() == "mine" and "Traceback" not in r.output


def test_out_in_a_read_only_folder(cli, tmp_path, monkeypatch):
    # root writes through chmod 0555, so the read-only mount is simulated where the write happens
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(bench.tempfile, "mkstemp", refuse)
    r = _bench(cli, "sim", tmp_path / "ro", "-n", "5")
    assert r.exit_code == 2
    assert "cannot write into" in r.stderr and "Read-only file system" in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "ro").exists()


def test_full_disk_while_writing_bench_json(cli, tmp_path, monkeypatch):
    """ENOSPC on the write: one clear message, exit 2, the earlier report intact, no temp file left."""
    assert _bench(cli, "sim", tmp_path, "-n", "10").exit_code == 0
    before = (tmp_path / "bench.json").read_bytes()
    import gendertool.files as files

    real_fdopen = files.os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    r = _bench(cli, "sim", tmp_path, "-n", "10", "--no-plots")
    assert r.exit_code == 2, r.output
    assert "No space left on device" in r.stderr and "Traceback" not in r.output
    assert "10 of 10 runs completed" in r.stderr.replace("\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.prev.json", "latency_hist.prev.png"]
    assert (tmp_path / "bench.prev.json").read_bytes() == before
    assert "bench.json:" not in r.stdout  # no path is named as holding this run


def test_full_disk_while_writing_a_plot(cli, tmp_path, monkeypatch):
    import matplotlib.figure

    def full(self, path, **kw):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    r = _bench(cli, "sim", tmp_path, "-n", "10")
    assert r.exit_code == 2 and "cannot write plot" in r.stderr and "No space left" in r.stderr
    assert not (tmp_path / "latency_hist.png").exists()
    assert _load(tmp_path / "bench.json")["complete"] is True


@pytest.fixture
def small_images(tmp_path):
    return noise_images(tmp_path / "imgs", 6, (48, 40), seed=3)


def test_ctrl_c_during_host_validate_prints_the_images_compared(cli, small_images, tmp_path, monkeypatch):
    from gendertool.cli import validate as cli_validate

    def update(self, done, total):
        if done >= 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_validate._progress, "update", update)
    out = tmp_path / "host.json"
    r = cli("validate", "--images", small_images, "--out", out)
    assert r.exit_code == 130, r.output
    assert "4 images from" in r.stdout and "interrupted (Ctrl-C) after 4 of 6 images" in r.stdout
    assert (f"4 of 6 images compared on this computer (female 3 of 3, male 1 of 3); partial report {out}"
            in r.stderr.replace("\n", ""))
    doc = json.loads(out.read_text())
    assert doc["partial"] is True and len(doc["images"]) == 4


def test_host_validate_report_file(cli, small_images, tmp_path):
    out = tmp_path / "host.json"
    r = cli("validate", "--images", small_images, "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["partial"] is False and len(doc["images"]) == 6


# --------------------------------------------------------------------------- build


def test_full_disk_while_rendering_says_how_far_and_the_next_render_repairs(tmp_path, monkeypatch):
    from gendertool import files
    from gendertool.boards import get_board
    from gendertool.errors import BuildError
    from gendertool.model.info import load_model_bytes
    from gendertool.project.render import render_project

    from tflite_fab import tiny_model

    model = load_model_bytes(tiny_model(height=16, width=16, classes=2), name="tiny", labels=["a", "b"])
    board = get_board("xiao_esp32s3")
    clean = render_project(model, board, tmp_path / "clean")
    total = len(clean.files)
    real = files.write_bytes_atomic
    calls = {"n": 0}

    def fill_up(path, data):
        calls["n"] += 1
        if calls["n"] > 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(files, "write_bytes_atomic", fill_up)
    with pytest.raises(BuildError, match=rf"No space left on device; 7 of {total} project files are in place .*run the build again"):
        render_project(model, board, tmp_path / "p")
    assert sum(1 for p in (tmp_path / "p").rglob("*") if p.is_file()) == 7  # whole files only, no temp left
    monkeypatch.setattr(files, "write_bytes_atomic", real)
    again = render_project(model, board, tmp_path / "p")
    assert len(again.written) == total - 7 and len(again.unchanged) == 7

    def tree(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert tree(tmp_path / "p") == tree(tmp_path / "clean")


def test_full_disk_during_build_cli(cli, tmp_path, monkeypatch):
    from gendertool import files

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_bytes_atomic", full)
    r = cli("build", "--no-compile", "--out", tmp_path / "p")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "No space left on device; 0 of " in r.stderr.replace("\n", "") and "run the build again" in r.stderr


def test_ctrl_c_while_rendering_and_while_compiling(cli, tmp_path, monkeypatch):
    from gendertool import files
    from gendertool.project import build as builder

    real = files.write_bytes_atomic
    calls = {"n": 0}

    def slow(path, data):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(files, "write_bytes_atomic", slow)
    r = cli("build", "--no-compile", "--out", tmp_path / "p")
    assert r.exit_code == 130
    import re

    assert re.search(r"interrupted \(Ctrl-C\): while rendering: \d+ of \d+ project files are in place", r.stderr)

    monkeypatch.setattr(files, "write_bytes_atomic", real)

    def compiling(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "build_pio", compiling)
    r = cli("build", "--out", tmp_path / "p")
    assert r.exit_code == 130
    assert "no firmware was produced, the rendered project stays in" in r.stderr.replace("\n", "")
