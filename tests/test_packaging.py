"""Packaging: the console script, a light start-up path, and package data in a built wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_console_script_help_runs():
    # the script sits beside the interpreter running the tests (venv not necessarily activated)
    local = Path(sys.executable).parent / "gendertool"
    exe = str(local) if local.exists() else shutil.which("gendertool")
    assert exe, "the gendertool console script must be installed by the set-up command"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("inspect", "convert", "validate", "build", "flash", "monitor", "sim", "bench"):
        assert command in proc.stdout


def test_cli_start_imports_no_heavy_runtime():
    code = (
        "import sys; import gendertool.cli; "
        "heavy = [m for m in ('tensorflow', 'tflite_micro', 'ai_edge_litert', 'esptool', 'matplotlib', 'platformio') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at CLI start-up: {proc.stdout.strip()}"


def test_operations_never_import_the_presentation_layer():
    import ast

    pkg = REPO / "host" / "gendertool"
    upper = ("gendertool.cli", "gendertool.present", "gendertool.present.plots")
    offenders = []
    for path in sorted(pkg.glob("*.py")):
        if path.stem in ("__main__", "present", "plots"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == u or n.startswith(u + ".") for n in names for u in upper):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_version(cli):
    from gendertool import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_unknown_command_is_a_usage_error(cli):
    result = cli("no-such-command")
    assert result.exit_code == 2
    assert "No such command" in result.output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = list(out.glob("gendertool-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_ships_firmware_templates_and_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for tracked in ("firmware", "templates", "models"):
        files = subprocess.run(
            ["git", "ls-files", tracked], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        files = [f for f in files if not f.endswith(".keep")]
        assert files, f"nothing tracked under {tracked}/"
        for f in files:
            assert f"gendertool/_data/{f}" in names, f"{f} is missing from the wheel"
    assert "gendertool/_data/docs/protocol.md" in names
    assert "gendertool/data/latency_calibration.json" in names  # gendertool.model.estimate reads it at run time


def test_resources_resolve_from_an_unpacked_wheel(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "from gendertool.resources import resource_path as r; "
        "print(r('firmware')); print(r('templates')); print(r('models'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.split():
        path = Path(line)
        assert path.is_relative_to(tmp_path / "gendertool" / "_data"), path
        assert path.is_dir()


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    setup = [line for line in readme.splitlines() if line.startswith("pip install ")]
    tests = [line for line in readme.splitlines() if line.startswith("pytest")]
    assert setup and tests, "README must give the set-up and test commands on lines of their own"
    # .ci/run reads these very lines; make sure it still does and treats exit code 5 as failure
    assert "grep -m1 -E '^pip install ' README.md" in ci
    assert "grep -m1 -E '^pytest( |$)' README.md" in ci
    assert '"$rc" -eq 5' in ci
