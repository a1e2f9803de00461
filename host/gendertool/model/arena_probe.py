"""Measure a model's TFLM tensor arena in a child process.

Parent side: :func:`measure_arena_host` runs ``python -m gendertool.model.arena_probe``, feeds the
model on stdin and reads the figure back; results are cached by sha256 (and TFLM version) in
``$GENDERTOOL_CACHE_DIR/arena``. A crash of the TFLM runtime (SIGABRT from a failed
TFLITE_CHECK, SIGSEGV) only ends the child and becomes a ModelError.

Child side (:func:`main`): builds ``tflite_micro.runtime.Interpreter`` once with a generous
arena, runs one inference on a zero input, calls ``print_allocations()`` and reads "Arena
allocation total N bytes" from its own C-level stdout/stderr (fd redirection). That total
misses temporaries kernels allocate while preparing, so the child then searches the smallest
arena that works, each trial in a forked grandchild: too-small arenas in one process corrupt
TFLM's temp allocator ("All temp buffers must be freed ...") and crash it later.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from gendertool.errors import ModelError
from gendertool.files import write_json_atomic

PROBE_SCHEMA = 2
DEFAULT_PROBE_ARENA = 32 * 1024 * 1024  # generous: the figure comes from the recording allocator
TIMEOUT_S = 180.0
ALIGN_SLACK = 16
_TOTAL_RE = re.compile(rb"Arena allocation total (\d+) bytes")
_MARK = "@GTPROBE "


def _cache_file(sha256: str, tflm_version: str) -> Path:
    root = os.environ.get("GENDERTOOL_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "gendertool"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", tflm_version)
    return base / "arena" / f"{sha256}-tflm{safe}-p{PROBE_SCHEMA}.json"


def tflm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tflite-micro")
    except PackageNotFoundError:
        return "unknown"


def run_probe(
    data: bytes, arena_size: int = DEFAULT_PROBE_ARENA, timeout: float = TIMEOUT_S, search: bool = True
) -> dict:
    """Run the child once; returns its report dict or raises ModelError on crash/failure.

    Report keys: ``arena_total`` (print_allocations), ``arena_min`` (smallest working arena,
    when ``search``), ``output`` (int8 scores for a zero input).
    """
    cmd = [sys.executable, "-m", "gendertool.model.arena_probe", "--arena", str(arena_size)]
    if not search:
        cmd.append("--no-search")
    # one BLAS thread: the child forks trial processes, which must not inherit a thread pool
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ModelError(f"the TFLM host runtime did not finish within {timeout:.0f} s on this model") from None
    report = None
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK.encode()):
            report = json.loads(line[len(_MARK) :])
    log = (proc.stderr + proc.stdout).decode("utf-8", "replace")
    tflm_lines = [
        ln.strip() for ln in log.splitlines()
        if ln.strip() and not ln.startswith(("@GT", "[RecordingMicroAllocator]"))
    ]  # fmt: skip
    detail = f": {tflm_lines[-1]}" if tflm_lines else ""
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        stage = (report or {}).get("stage") or _last_stage(log)
        raise ModelError(
            f"the TFLM host runtime crashed ({sig}) while {stage or 'loading the model'}{detail}; "
            "the firmware would crash the same way"
        )
    if report is None:
        raise ModelError(f"the TFLM arena probe failed (exit code {proc.returncode}){detail}")
    if report.get("error"):
        raise ModelError(f"the TFLM host runtime rejected the model while {report.get('stage')}: {report['error']}{detail}")
    if "arena_total" not in report:
        raise ModelError("the TFLM host runtime did not report its arena allocation")
    return report


def _last_stage(log: str) -> str | None:
    stages = re.findall(r"@GTSTAGE (.+)", log)
    return stages[-1].strip() if stages else None


def measure_arena_host(data: bytes, sha256: str, where: str = "model") -> int:
    """Arena bytes the TFLM host runtime (64-bit) needs for this model; cached by sha256.

    The smallest arena (16-byte steps) with which the host runtime allocates and invokes the
    model; never below print_allocations()' "Arena allocation total".
    """
    cache = _cache_file(sha256, tflm_version())
    try:
        cached = json.loads(cache.read_text())
        if cached.get("sha256") == sha256 and isinstance(cached.get("arena_host_bytes"), int):
            return cached["arena_host_bytes"]
    except (OSError, ValueError):
        pass
    try:
        report = run_probe(data)
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None
    # +16: one arena-start alignment unit; fresh processes needed up to 16 bytes more than
    # the forked search found (heap placement of the host's arena buffer)
    total = max(int(report.get("arena_min", 0)) + ALIGN_SLACK, int(report["arena_total"]))
    try:
        write_json_atomic(cache, {"sha256": sha256, "arena_host_bytes": total, "tflm": tflm_version()}, indent=None)
    except OSError:
        pass  # a read-only cache only costs speed
    return total


# ---------------------------------------------------------------------------------------------
# child


def _stage(name: str) -> None:
    # stderr is unbuffered: the parent still sees the stage if the runtime aborts right after
    os.write(2, f"@GTSTAGE {name}\n".encode())


def _capture_c_output(fn) -> bytes:
    """Run ``fn`` with the C-level stdout and stderr sent to a file; return (and echo) it."""
    import ctypes

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    libc.fflush(None)
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            fn()
            libc.fflush(None)  # TFLM prints through C stdio; its buffers hold the report
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        tmp.seek(0)
        out = tmp.read()
    os.write(2, out)  # the parent sees the same log
    return out


def _fits(runtime, data: bytes, x, size: int) -> bool:
    """Does ``size`` bytes of arena work? Tried in a forked grandchild: a too-small arena
    corrupts TFLM's allocator state, so every trial gets a fresh process."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the grandchild
        code = 1
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            interp = runtime.Interpreter.from_bytes(data, arena_size=size)
            interp.set_input(x, 0)
            interp.invoke()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _smallest_arena(runtime, data: bytes, x, recorded: int, ceiling: int) -> int:
    """Smallest working arena (16-byte steps) at or above the recorded total.

    The recorded total misses temporaries that kernels allocate while preparing (a few
    hundred bytes on tiny models) and the arena's start alignment.
    """
    step = 16
    lo = recorded - step  # assumed too small: the recording allocator counts what was placed
    hi = recorded
    grow = max(1024, recorded // 8)
    while not _fits(runtime, data, x, hi):
        lo, hi = hi, min(hi + grow, ceiling)
        grow *= 2
        if lo >= ceiling:
            return ceiling
    while hi - lo > step:
        mid = lo + (hi - lo) // 2 // step * step
        if _fits(runtime, data, x, mid):
            hi = mid
        else:
            lo = mid
    return hi


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gendertool.model.arena_probe")
    parser.add_argument("--arena", type=int, default=DEFAULT_PROBE_ARENA)
    parser.add_argument("--no-search", action="store_true", help="skip the smallest-arena search")
    args = parser.parse_args(argv)
    data = sys.stdin.buffer.read()
    report: dict = {"stage": "importing the TFLM runtime"}

    def emit() -> None:
        sys.stdout.flush()
        os.write(1, (_MARK + json.dumps(report) + "\n").encode())

    try:
        _stage(report["stage"])
        import numpy as np
        from tflite_micro.python.tflite_micro import runtime

        report["stage"] = "allocating tensors"
        _stage(report["stage"])
        interp = runtime.Interpreter.from_bytes(data, arena_size=args.arena)
        details = interp.get_input_details(0)
        report["stage"] = "running one inference"
        _stage(report["stage"])
        zp = details["quantization_parameters"]["zero_points"]
        x = np.full(tuple(details["shape"]), int(zp[0]) if len(zp) else 0, dtype=details["dtype"])
        interp.set_input(x, 0)
        interp.invoke()
        report["stage"] = "reporting allocations"
        _stage(report["stage"])
        totals = _TOTAL_RE.findall(_capture_c_output(interp.print_allocations))
        report["output"] = np.asarray(interp.get_output(0)).tolist()
        if totals:
            report["arena_total"] = int(totals[-1])
            if not args.no_search and hasattr(os, "fork"):
                report["stage"] = "searching the smallest working arena"
                _stage(report["stage"])
                report["arena_min"] = _smallest_arena(runtime, data, x, report["arena_total"], args.arena)
    except Exception as exc:  # noqa: BLE001 - everything goes back to the parent as text
        report["error"] = f"{type(exc).__name__}: {exc}".strip()
        emit()
        return 3
    report["stage"] = "done"
    emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
