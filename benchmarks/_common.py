"""Helpers shared by the benchmark scripts (run as ``python benchmarks/X.py``: this folder is on sys.path)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def gendertool_cmd() -> list[str]:
    """argv prefix for the installed CLI: the venv's script next to this Python, else PATH, else ``-m``."""
    exe = Path(sys.executable).with_name("gendertool")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("gendertool")
    return [found] if found else [sys.executable, "-m", "gendertool"]
