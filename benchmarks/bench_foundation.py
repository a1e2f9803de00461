"""Foundation figures: CLI start and Tab-completion time, inspect time (cold / cached arena), convert vs ``xxd -i``.

    python benchmarks/bench_foundation.py [MODEL] [--runs N]

Prints medians of N subprocess runs (wall clock). Nothing is asserted: the goals are
``gendertool --help`` < 0.3 s, a completion request as fast, and ``convert`` no slower than ``xxd -i``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import gendertool_cmd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "gender_mbv2_035_64.tflite"


def _time(cmd: list[str], runs: int, env: dict | None = None, fresh_cache: bool = False, stdout=None) -> list[float]:
    times = []
    for _ in range(runs):
        run_env = dict(os.environ if env is None else env)
        with tempfile.TemporaryDirectory() as cache:
            if fresh_cache:
                run_env["GENDERTOOL_CACHE_DIR"] = cache
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=run_env)
            times.append(time.perf_counter() - t0)
    return times


def _fmt(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1000:8.1f} ms  (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, n={len(times)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    gt = gendertool_cmd()
    model = args.model.resolve()
    print(f"model: {model} ({model.stat().st_size:,} bytes)")

    help_t = _time([*gt, "--help"], args.runs)
    print(f"gendertool --help            {_fmt(help_t)}")
    # what the shell runs on every Tab once completion is installed
    tab_env = dict(os.environ, _GENDERTOOL_COMPLETE="complete_bash", COMP_WORDS="gendertool bench --", COMP_CWORD="2")
    tab_t = _time(gt, args.runs, env=tab_env)
    print(f"completion (Tab, bash)       {_fmt(tab_t)}")

    cold = _time([*gt, "inspect", str(model), "--json"], max(3, args.runs // 2), fresh_cache=True)
    print(f"inspect (cold arena probe)   {_fmt(cold)}")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GENDERTOOL_CACHE_DIR=cache)
        subprocess.run([*gt, "inspect", str(model), "--json"], check=True, stdout=subprocess.DEVNULL, env=env)
        warm = _time([*gt, "inspect", str(model), "--json"], args.runs, env=env)
    print(f"inspect (cached arena)       {_fmt(warm)}")

    with tempfile.TemporaryDirectory() as out:
        conv = _time([*gt, "convert", str(model), "-o", out], args.runs)
        # in-process formatting alone (what the firmware renderer calls)
        sys.path.insert(0, str(REPO / "host"))
        from gendertool.project.carray import c_array_source

        data = model.read_bytes()
        fmt_t = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            c_array_source(data, "g_model_data", "banner")
            fmt_t.append(time.perf_counter() - t0)
    print(f"gendertool convert (process) {_fmt(conv)}")
    print(f"c_array_source (in-process)  {_fmt(fmt_t)}")
    if shutil.which("xxd"):
        with open(os.devnull, "wb") as null:
            xxd = _time(["xxd", "-i", str(model)], args.runs, stdout=null)
        print(f"xxd -i                       {_fmt(xxd)}")
        print(f"ratio convert/xxd (process)  {statistics.median(conv) / statistics.median(xxd):.2f}")
        print(f"ratio c_array_source/xxd     {statistics.median(fmt_t) / statistics.median(xxd):.2f}")
    else:
        print("xxd -i                       not installed (apt-get install xxd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
