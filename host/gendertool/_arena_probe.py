"""Measure a model's TFLM tensor arena in a child process.

Parent side: :func:`measure_arena_host` runs ``python -m gendertool._arena_probe``, feeds the
model on stdin and reads the figure back; results are cached by sha256 (and TFLM version) in
``$GENDERTOOL_CACHE_DIR/arena``. A crash of the TFLM runtime (SIGABRT from a failed
TFLITE_CHECK, SIGSEGV) only ends the child and becomes a ModelError.

Child side (:func:`main`): builds ``tflite_micro.runtime.Interpreter`` once with a generous
arena (never a search over arena sizes: too-small arenas in one process corrupt TFLM's temp
allocator and crash later), runs one inference on a zero input, calls ``print_allocations()``
and reports "Arena allocation total N bytes", which TFLM prints on the C-level streams.
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

PROBE_SCHEMA = 1
DEFAULT_PROBE_ARENA = 32 * 1024 * 1024  # generous: the figure comes from the recording allocator
TIMEOUT_S = 180.0
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


def run_probe(data: bytes, arena_size: int = DEFAULT_PROBE_ARENA, timeout: float = TIMEOUT_S) -> dict:
    """Run the child once; returns its report dict or raises ModelError on crash/failure."""
    cmd = [sys.executable, "-m", "gendertool._arena_probe", "--arena", str(arena_size)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
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
    total = _TOTAL_RE.findall(proc.stdout + proc.stderr)
    if not total:
        raise ModelError("the TFLM host runtime did not report its arena allocation")
    report["arena_total"] = int(total[-1])
    return report


def _last_stage(log: str) -> str | None:
    stages = re.findall(r"@GTSTAGE (.+)", log)
    return stages[-1].strip() if stages else None


def measure_arena_host(data: bytes, sha256: str, where: str = "model") -> int:
    """Arena bytes the TFLM host runtime (64-bit) needs for this model; cached by sha256."""
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
    total = report["arena_total"]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".arena.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"sha256": sha256, "arena_host_bytes": total, "tflm": tflm_version()}, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs speed
    return total


# ---------------------------------------------------------------------------------------------
# child


def _stage(name: str) -> None:
    # stderr is unbuffered: the parent still sees the stage if the runtime aborts right after
    os.write(2, f"@GTSTAGE {name}\n".encode())


def main(argv: list[str] | None = None) -> int:
    import argparse
    import ctypes

    parser = argparse.ArgumentParser(prog="python -m gendertool._arena_probe")
    parser.add_argument("--arena", type=int, default=DEFAULT_PROBE_ARENA)
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
        interp.print_allocations()
        ctypes.CDLL(None).fflush(None)  # the C-level stdio buffers hold the report
        report["output"] = np.asarray(interp.get_output(0)).tolist()
    except Exception as exc:  # noqa: BLE001 - everything goes back to the parent as text
        report["error"] = f"{type(exc).__name__}: {exc}".strip()
        emit()
        return 3
    emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
