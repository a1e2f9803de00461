"""Issue 20.2 and 20.3: a failed write is never a success and never a traceback.

Writing standard output and every output file is part of the command: stdout on /dev/full or
on a full file system is one line on stderr and exit 2 (CPython's buffered stdout reports a
large write the disk cut short as complete, so the check writes to the descriptor itself); a
closed pipe (``| head``) ends the command quietly with 141 (128 + SIGPIPE, as shells report);
``monitor --csv`` on a full disk keeps whole rows, says how many the file holds and shows the
summary; ``model fix-padding -o`` into a read-only folder, a full disk or a path under a file
is one clear line; bench on a full disk never names more samples than its bench.json holds.
``monitor --csv`` with a device or a pipe (/dev/stdout, /dev/full, ``-``) never reads it back.

Real file systems where the machine allows it: a tiny tmpfs (``mount`` needs root, else the
test is skipped), /dev/full, a read-only tmpfs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/full and tmpfs are Linux's")

STDOUT_FULL = "error: cannot write to standard output: No space left on device"


def _exe() -> str:
    local = Path(sys.executable).parent / "gendertool"
    exe = str(local) if local.exists() else shutil.which("gendertool")
    assert exe, "the gendertool console script must be installed"
    return exe


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "GENDERTOOL_CACHE_DIR": str(tmp_path / "cache")}


def _run(args, tmp_path: Path, *, stdout=subprocess.PIPE, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([_exe(), *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          env=_env(tmp_path), timeout=timeout, cwd=tmp_path)


def _mount_tmpfs(where: Path, options: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    return where


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs, ``fill(free_kib)`` leaves about that much room."""
    where = _mount_tmpfs(tmp_path / "tiny", "size=64k")

    def fill(free_kib: int) -> Path:
        pad = where / "pad"
        pad.write_bytes(b"")
        total = shutil.disk_usage(where).total
        pad.write_bytes(b"\0" * max(0, total - free_kib * 1024))
        return where

    yield fill
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    where = _mount_tmpfs(tmp_path / "ro", "ro,size=64k")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def images(tmp_path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    for i in range(24):  # the --json report: more than the 8 KB a nearly full disk takes
        label = ("female", "male")[i % 2]
        (tmp_path / "imgs" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / label / f"i{i}.png")
    return tmp_path / "imgs"


def _commands(tmp_path: Path, images: Path) -> dict[str, list]:
    return {
        "inspect": ["inspect"],
        "inspect --json": ["inspect", "--json"],
        "model list": ["model", "list"],
        "ports": ["ports"],
        "validate --json": ["validate", "--images", images, "--json"],
        "convert": ["convert", "-o", tmp_path / "conv" / "model_data"],
        "bench --json": ["bench", "--port", "sim", "-n", "300", "--warmup", "0", "--out", tmp_path / "b", "--json"],
        "monitor --json": ["monitor", "--port", "sim", "-n", "2", "--json"],
        "build --help": ["build", "--help"],
        "build --no-compile": ["build", "--no-compile", "--out", tmp_path / "fw"],
        "validate": ["validate", "--images", images],
    }


# --------------------------------------------------------------------------- standard output


@pytest.mark.parametrize("name", ["inspect", "inspect --json", "model list", "ports", "validate", "validate --json",
                                  "convert", "bench --json", "monitor --json", "build --help", "build --no-compile"])
def test_stdout_on_dev_full_is_one_line_and_exit_2(tmp_path, images, name):
    with open("/dev/full", "w") as full:
        r = _run(_commands(tmp_path, images)[name], tmp_path, stdout=full)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == STDOUT_FULL
    assert r.stderr.count(STDOUT_FULL) == 1


@pytest.mark.parametrize("name", ["inspect --json", "validate --json", "bench --json"])
def test_stdout_into_a_full_file_system_is_not_a_success(tmp_path, images, tiny_fs, name):
    where = tiny_fs(8)  # room for about 8 KB: each JSON is larger
    target = where / "out.json"
    with open(target, "w") as fh:
        r = _run(_commands(tmp_path, images)[name], tmp_path, stdout=fh)
    assert r.returncode == 2, r.stderr  # it was 0, with the JSON cut at 8 KB
    assert r.stderr.strip().splitlines()[-1] == STDOUT_FULL and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["inspect --json", "model list", "bench --json", "monitor --json"])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, images, name):
    args = _commands(tmp_path, images)[name]
    proc = subprocess.Popen([_exe(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(tmp_path), cwd=tmp_path)
    proc.stdout.close()  # the reader is gone before the first byte (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=180) == 141, err
    assert err == "" or ("Traceback" not in err and "error" not in err), err


def test_stderr_on_dev_full_still_exits_non_zero(tmp_path):
    with open("/dev/full", "w") as full:
        r = subprocess.run([_exe(), "inspect", "no-such.tflite"], stdout=subprocess.PIPE, stderr=full,
                           env=_env(tmp_path), timeout=60)
    assert r.returncode == 2 and r.stdout == b""


# --------------------------------------------------------------------------- monitor --csv


def _summary_row(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(key + " "):
            return line[len(key):].strip()
    return ""


def test_monitor_csv_on_a_full_disk_keeps_whole_rows_and_the_summary(tmp_path, tiny_fs):
    where = tiny_fs(4)
    target = where / "m.csv"
    r = _run(["monitor", "--port", "sim", "-n", "200", "--csv", target], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"error: cannot write {target}: No space left on device" in r.stderr
    assert target.read_bytes().endswith(b"\r\n")  # the row the disk cut is taken back: it was `...,11024,Tru`
    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert rows and all(row["simulated"] == "True" for row in rows)
    assert "Monitor summary" in r.stdout  # it was a traceback from the CSV writer's close
    shown = int(_summary_row(r.stdout, "results").split()[0])
    assert _summary_row(r.stdout, "csv") == f"{target} (holds {len(rows)} of these {shown} results)"


@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_monitor_csv_on_stdout(tmp_path, target):
    r = _run(["monitor", "--port", "sim", "-n", "3", "--csv", target], tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(r.stdout.splitlines()))  # stdout is the CSV and nothing else
    assert len(rows) == 3 and rows[0]["run"] and "p_female" in rows[0]
    assert not (tmp_path / "-").exists()
    assert "Monitor summary" in r.stderr and "standard output" in _summary_row(r.stderr, "csv")


def test_monitor_csv_on_dev_full_is_one_line(tmp_path):
    r = _run(["monitor", "--port", "sim", "-n", "3", "--csv", "/dev/full"], tmp_path, timeout=60)
    assert r.returncode == 2 and "error: cannot write /dev/full: No space left on device" in r.stderr
    assert "Traceback" not in r.stderr


def test_monitor_csv_on_stderr_is_refused_before_connecting(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        r = subprocess.run([_exe(), "monitor", "--port", "socket://127.0.0.1:9", "--csv", "/dev/stderr"],
                           stdout=subprocess.PIPE, stderr=err, text=True, env=_env(tmp_path), timeout=60)
    assert r.returncode == 2
    assert "cannot write --csv /dev/stderr: that is standard error" in log.read_text()


def test_monitor_csv_into_a_named_pipe_is_never_read_back(tmp_path):
    import threading

    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(open(fifo).read().splitlines()), daemon=True)
    reader.start()
    r = _run(["monitor", "--port", "sim", "-n", "2", "--csv", fifo], tmp_path, timeout=60)
    reader.join(timeout=30)
    assert r.returncode == 0, r.stderr
    assert got and got[0].startswith("run,t,seq") and len(got) == 3


# --------------------------------------------------------------------------- model fix-padding -o


@pytest.fixture
def needs_padding(tmp_path) -> Path:
    from tflite_fab import tiny_model

    src = tmp_path / "m.tflite"
    src.write_bytes(tiny_model())
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["cat", "dog"]}))
    return src


def test_fix_padding_into_a_read_only_folder(cli, needs_padding, read_only_dir):
    r = cli("model", "fix-padding", needs_padding, "-o", read_only_dir / "fixed.tflite")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"cannot write into {read_only_dir} (Read-only file system)" in r.stderr


def test_fix_padding_under_a_file(cli, needs_padding, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = cli("model", "fix-padding", needs_padding, "-o", tmp_path / "afile" / "fixed.tflite")
    assert r.exit_code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in r.stderr


def test_fix_padding_on_a_full_disk_leaves_nothing(cli, needs_padding, tiny_fs):
    where = tiny_fs(0)
    r = cli("model", "fix-padding", needs_padding, "-o", where / "fixed.tflite")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "No space left on device" in r.stderr and "nothing written" in r.stderr
    assert sorted(p.name for p in where.iterdir()) == ["pad"]


# --------------------------------------------------------------------------- bench on a full disk


def test_bench_on_a_full_disk_names_what_its_report_holds(tmp_path, tiny_fs):
    out = tiny_fs(12) / "b"
    r = _run(["bench", "--port", "sim", "-n", "400", "--warmup", "0", "--out", out], tmp_path)
    assert r.returncode == 2, r.stderr
    data = json.loads((out / "bench.json").read_text())
    held = data["completed"]
    err = r.stderr.replace("\n", "")
    assert "No space left on device" in err
    done = int(err.split(" of 400 runs completed")[0].rsplit("(", 1)[1])
    assert held < done  # the samples arrived, the disk took only some
    assert f"only the first {held} samples are in {out / 'bench.json'}" in err
    assert f"bench.json: {out / 'bench.json'} (INCOMPLETE: {held} of 400 runs, not the {done} shown above" in \
        r.stdout.replace("\n", "")
    assert not (out / "latency_hist.png").exists()  # no plot of runs its bench.json does not hold


def test_monitor_csv_into_dev_null_with_stderr_there_too(tmp_path):
    with open(os.devnull, "w") as null:
        r = subprocess.run([_exe(), "monitor", "--port", "sim", "-n", "2", "--csv", os.devnull], stdout=subprocess.PIPE,
                           stderr=null, text=True, env=_env(tmp_path), timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count("#") == 2  # /dev/null is no one's log: written to, not refused
