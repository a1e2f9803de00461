"""Packaging: the console script, a light start-up path, the layers of the package and their
imports, and package data in a built wheel."""

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


# --------------------------------------------------------------------------- layers
# The package's layers, lowest first: each imports only layers below it (or itself). The base
# is the modules at the package root; __main__ is the entry point and may import cli.
LAYERS = ("base", "model", "project", "device", "present", "cli")
HEAVY = ("tflite_micro", "ai_edge_litert", "esptool", "matplotlib", "platformio", "tensorflow")


def _module_name(path: Path, pkg: Path) -> str:
    parts = list(path.relative_to(pkg).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["gendertool", *parts])


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else 0


def _import_graph():
    """Every import between gendertool modules: (importer, imported, line, at top level)."""
    import ast

    pkg = REPO / "host" / "gendertool"
    modules = {_module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))}
    edges = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        # the top of a file: its body, and `if TYPE_CHECKING:` / try blocks at that level
        top = {id(n) for b in tree.body for n in ([b] + (list(ast.walk(b)) if isinstance(b, (ast.If, ast.Try)) else []))}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    if path.name != "__init__.py":
                        base = base[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t.startswith("gendertool") and t != mod and t != "gendertool":
                    edges.append((mod, t, node.lineno, id(node) in top))
    return modules, edges


def test_layers_import_only_downwards():
    modules, edges = _import_graph()
    assert {m.split(".")[1] for m in modules if m.count(".") >= 2} <= set(LAYERS), "a sub-package outside the layer list"
    up = [f"{a}:{line} imports {b}" for a, b, line, _ in edges
          if _layer(b) > _layer(a) and a != "gendertool.__main__"]  # fmt: skip
    assert up == []


def test_no_import_circles():
    modules, edges = _import_graph()
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in edges:
        graph.setdefault(a, set()).add(b)
    # depth-first search for a back edge; report the circle it closes
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [])
    assert circles == []


def test_imports_between_our_modules_sit_at_the_top():
    """Only cli/ imports our modules inside functions (to keep --help fast)."""
    modules, edges = _import_graph()
    inside = [f"{a}:{line} imports {b}" for a, b, line, top in edges if not top and not a.startswith("gendertool.cli")]
    assert inside == []


def test_the_graph_checker_sees_what_it_must(tmp_path):
    """The checks above cannot pass vacuously: the graph has every layer and many edges."""
    modules, edges = _import_graph()
    assert {_layer(m) for m in modules} == set(range(len(LAYERS)))
    assert len(edges) > 150
    assert ("gendertool.device.monitor", "gendertool.device.link") in {(a, b) for a, b, _, _ in edges}
    assert ("gendertool.cli", "gendertool.cli.bench") in {(a, b) for a, b, _, _ in edges}


def test_library_imports_no_heavy_package_at_import_time():
    """Heavy third-party packages are imported inside the functions that need them."""
    code = (
        "import sys, pkgutil, importlib, gendertool\n"
        "for m in pkgutil.walk_packages(gendertool.__path__, 'gendertool.'):\n"
        "    if m.name != 'gendertool.__main__': importlib.import_module(m.name)\n"
        f"print(','.join(h for h in {HEAVY!r} if h in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported when importing the package: {proc.stdout.strip()}"


def test_pio_prebuild_imports_resolve():
    """scripts/pio_prebuild.py imports gendertool inside try/except ImportError and falls back to
    the CLI: a moved name would silently change its path. Import exactly what it imports."""
    import ast

    tree = ast.parse((REPO / "scripts" / "pio_prebuild.py").read_text())
    wanted = [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
              and (n.module or "").startswith("gendertool") for a in n.names]  # fmt: skip
    assert ("gendertool.project.build", "build") in wanted
    import importlib

    for module, name in wanted:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


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
