"""Run a toolchain command, streaming its output to a callback and a log file."""

from __future__ import annotations

import collections
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gendertool.errors import BuildError

# --------------------------------------------------------------------------- process runner


def run_streaming(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Any = None,
    on_line: LineCallback | None = None,
    timeout: float | None = None,
) -> tuple[int, list[str]]:
    """Run ``cmd``, passing each output line (stdout+stderr) to ``on_line`` and ``log``.

    Returns (exit code, last lines). A timeout kills the process and returns code -9.
    Raises FileNotFoundError when the program does not exist.
    """
    import threading

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    if log is not None:
        log.write("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n")
        log.flush()
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=str(cwd) if cwd else None,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    timer = None
    timed_out = threading.Event()
    if timeout is not None:

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, _kill)
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\r\n")
            tail.append(line)
            if log is not None:
                log.write(line + "\n")
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if log is not None:
            log.flush()
    return (-9 if timed_out.is_set() else code), list(tail)


LOG_NAME = "build.log"


TAIL_LINES = 200


LineCallback = Callable[[str], None]


class ToolchainMissing(BuildError):
    """The compiler toolchain is not installed and cannot be installed here."""


def tool_env(**extra: str) -> dict[str, str]:
    # Line-buffered output so progress streams live through the pipe.
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def no_toolchain(what: str, out: Path, hint: str) -> ToolchainMissing:
    return ToolchainMissing(f"{what}; the rendered project is in {out} ({hint})")


def first_error_line(lines: Sequence[str]) -> str | None:
    for line in lines:
        if re.search(r"\berror\b", line, re.IGNORECASE) and not line.lstrip().startswith("="):
            return line.strip()
    return None
