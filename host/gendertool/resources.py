"""Locate the files that ship with gendertool (firmware sources, templates, models, docs).

From a built wheel they live in ``gendertool/_data``; from an editable install or a source
checkout they are the repository's top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_WHEEL_DATA = _PACKAGE_DIR / "_data"
_REPO_ROOT = _PACKAGE_DIR.parent.parent

# name -> path relative to the repository root (the wheel maps each to _data/<name>)
_LAYOUT = {
    "firmware": "firmware",
    "templates": "templates",
    "models": "models",
    "docs/protocol.md": "docs/protocol.md",
    "vectors": "tests/vectors",
}


# name -> path inside the package (shipped as package data in the wheel and in a checkout alike)
_PACKAGE_DATA = {
    "latency_calibration": "data/latency_calibration.json",  # gendertool.model.estimate's points
}


def resource_path(name: str) -> Path:
    """Return the path of a shipped resource (``firmware``, ``templates``, ``models``,
    ``latency_calibration``, ...)."""
    if name in _PACKAGE_DATA:
        return _PACKAGE_DIR / _PACKAGE_DATA[name]
    rel = _LAYOUT[name]
    wheel = _WHEEL_DATA / name
    if wheel.exists():
        return wheel
    return _REPO_ROOT / rel


def repo_root() -> Path | None:
    """The source checkout this package runs from, or None when installed from a wheel."""
    return _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").is_file() else None
