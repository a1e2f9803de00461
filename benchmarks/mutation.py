"""Mutation testing of the code behind the tool's verdicts, with cosmic-ray (``pip install -e ".[mutation]"``).

Each group names a module, the functions in it whose output users trust (bit-exact, PASS,
latency figures, "the model is sound", the flash plan) and the tests that cover them. The
script exports the committed tree (``git archive``) into a scratch folder, so the working copy
is never mutated, lets cosmic-ray mutate only those functions (a seeded sample of at most
``--max`` mutants per group), runs the group's tests against each mutant (one process, ``-x``)
and prints every survivor: a small bug no test noticed.

    python benchmarks/mutation.py                      # every group, 40 mutants each
    python benchmarks/mutation.py --group protocol --max 0   # all mutants of one group
    python benchmarks/mutation.py --rev HEAD~3 --budget-s 600  # an older commit, time-boxed

Slow (a pytest run per mutant), so not part of CI: run it when changing one of these modules.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Group:
    module: str
    functions: tuple[str, ...]  # "func" or "Class.method"; empty: the whole module
    tests: tuple[str, ...]


GROUPS: dict[str, Group] = {
    "protocol": Group("host/gendertool/protocol.py", ("decode_frame", "decode_line", "encode_record", "StreamParser.feed",
                                                        "UploadReceiver.feed", "UploadReceiver.crc_ok"),
                      ("tests/test_protocol.py", "tests/test_protocol_fuzz.py")),
    "validate": Group("host/gendertool/model/validate.py", ("compare_outputs", "build_report", "ImageResult.identical",
                                                              "ImageResult.max_diff"),
                      ("tests/test_validate_host.py", "tests/test_device_validate.py")),
    "device_validate": Group("host/gendertool/device/validate.py",
                             ("check_device_model", "connect_board", "validate_board", "BoardValidation.passed",
                              "BoardValidation.parity_pct", "BoardValidation.parity", "read_selftest"),
                             ("tests/test_device_validate.py",)),
    "bench": Group("host/gendertool/device/bench.py", ("run_bench", "check_request", "summary_mismatches"),
                   ("tests/test_bench.py", "tests/test_bench_stats.py")),
    "bench_results": Group("host/gendertool/device/bench_results.py", ("summarize", "BenchResult.complete"),
                           ("tests/test_bench.py", "tests/test_bench_stats.py")),
    "preprocess": Group("host/gendertool/model/preprocess.py", ("quant_lut", "quantize", "crop_box", "crop_rect", "_axis_taps",
                                                                 "crop_resize", "normalize"),
                        ("tests/test_preprocess.py", "tests/test_firmware_host.py")),
    "model_info": Group("host/gendertool/model/info.py", ("firmware_arena_bytes", "arena_budget"),
                        ("tests/test_model.py", "tests/test_arena_plan.py")),
    "model_checks": Group("host/gendertool/model/checks.py", ("check_model", "_check_indices", "_buffer_bytes",
                                                               "_check_quantisation", "_check_softmax"),
                          ("tests/test_model.py", "tests/test_arena_plan.py")),
    "fbverify": Group("host/gendertool/model/verify.py", (), ("tests/test_fbverify.py", "tests/test_model.py")),
    "manifest": Group("host/gendertool/project/manifest.py", ("plan_flash", "parse_offset"), ("tests/test_flash.py",)),
    "flash": Group("host/gendertool/device/flash.py", ("check_flashable",), ("tests/test_flash.py",)),
    "ports": Group("host/gendertool/device/ports.py", ("resolve_port",), ("tests/test_flash.py", "tests/test_ports.py")),
}


def _spans(source: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(first, last) line of every listed function or method."""
    tree = ast.parse(source)
    found: dict[str, tuple[int, int]] = {}

    def body(fn) -> tuple[int, int]:
        # the body only: a mutated annotation (postponed, never evaluated) is no bug
        stmts = fn.body
        if len(stmts) > 1 and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant):
            stmts = stmts[1:]  # the docstring
        return stmts[0].lineno, fn.end_lineno or fn.lineno

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = body(node)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{sub.name}"] = body(sub)
    missing = [n for n in names if n not in found]
    if missing:
        print(f"  note: not in the module (skipped): {', '.join(missing)}")
    return [found[n] for n in names if n in found]


def _export(rev: str, dest: Path) -> None:
    data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def _config(group: Group, timeout: float) -> str:
    tests = " ".join(group.tests)
    cmd = f"{sys.executable} -m pytest -x -q -p no:cacheprovider --no-header -o addopts= {tests}"
    return (
        "[cosmic-ray]\n"
        f'module-path = "{group.module}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{cmd}"\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


def run_group(name: str, group: Group, tree: Path, args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(killed, survived, other outcomes, not run) for one group; survivors are printed."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    present = tuple(t for t in group.tests if (tree / t).exists())  # an older rev may lack a newer test file
    if not present:
        print(f"== {name}: none of its tests is in this tree; skipped")
        return 0, 0, 0, 0
    group = Group(group.module, group.functions, present)
    cfg = tree / f"cr-{name}.toml"
    db = tree / f"cr-{name}.sqlite"
    cfg.write_text(_config(group, args.timeout))
    env = {**os.environ, "PYTHONPATH": str(tree / "host")}
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(cfg), str(db)], cwd=tree, env=env, check=True,
                   capture_output=True)
    spans = _spans((tree / group.module).read_text(), group.functions) if group.functions else []
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        items = list(wdb.pending_work_items)

        def inside(item) -> bool:
            row = item.mutations[0].start_pos[0]
            return not spans or any(a <= row <= b for a, b in spans)

        chosen = [i for i in items if inside(i)]
        if args.max and len(chosen) > args.max:
            chosen = random.Random(f"{args.seed}:{name}").sample(chosen, args.max)
        keep = {i.job_id for i in chosen}
        skip = [i.job_id for i in items if i.job_id not in keep]
        wdb.set_multiple_results(skip, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    print(f"== {name}: {len(keep)} of {len(items)} mutants ({group.module}; tests: {' '.join(group.tests)})", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "cosmic_ray.cli", "exec", str(cfg), str(db)], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=args.budget_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        print(f"  time budget of {args.budget_s:.0f} s spent: the rest of this group is not run")
    killed = survived = other = 0
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        results = {job: r for job, r in wdb.results}
        for item in wdb.work_items:
            r = results.get(item.job_id)
            if item.job_id not in keep or r is None:
                continue
            if r.worker_outcome != WorkerOutcome.NORMAL:
                other += 1
            elif r.test_outcome == TestOutcome.KILLED:
                killed += 1
            elif r.test_outcome == TestOutcome.SURVIVED:
                survived += 1
                m = item.mutations[0]
                print(f"  SURVIVED {m.module_path}:{m.start_pos[0]} {m.operator_name} #{m.occurrence}")
                for line in (r.diff or "").splitlines():
                    if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
                        print(f"      {line}")
            else:
                other += 1
        pending = len(keep) - killed - survived - other
    print(f"  {name}: killed {killed}, survived {survived}, other {other} (incompetent/timeout), not run {pending}",
          flush=True)
    return killed, survived, other, pending


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", choices=sorted(GROUPS), help="only these groups (repeatable)")
    ap.add_argument("--rev", default="HEAD", help="the commit to mutate (default HEAD; uncommitted edits are not seen)")
    ap.add_argument("--max", type=int, default=40, help="mutants per group, a seeded sample (0: all)")
    ap.add_argument("--seed", default="gendertool")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one mutant's test run may take")
    ap.add_argument("--budget-s", type=float, default=1200.0, help="seconds one group may take in all")
    ap.add_argument("--keep", action="store_true", help="keep the scratch tree (its cr-*.sqlite sessions)")
    args = ap.parse_args(argv)
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        print('cosmic-ray is not installed: pip install -e ".[mutation]"', file=sys.stderr)
        return 2
    tree = Path(tempfile.mkdtemp(prefix="gt-mutation-"))
    t0 = time.monotonic()
    totals = [0, 0, 0, 0]
    try:
        _export(args.rev, tree)
        for name in args.group or list(GROUPS):
            for k, v in enumerate(run_group(name, GROUPS[name], tree, args)):
                totals[k] += v
    finally:
        if args.keep:
            print(f"scratch tree kept: {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)
    killed, survived, other, pending = totals
    print(f"TOTAL killed {killed}, survived {survived}, other {other}, not run {pending} "
          f"({time.monotonic() - t0:.0f} s, rev {args.rev})")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
