"""PlatformIO pre-script of the repository's top-level platformio.ini.

`pio run` at the repository root builds the firmware for the default model: this script
renders the project with gendertool's renderer (the same one `gendertool build` uses) into
``.pio/gendertool/<env>/`` and runs PlatformIO on that rendered project, whose own
platformio.ini (templates/platformio.ini.j2) pins the platform and board settings. The
root environment itself compiles nothing, so the repository root needs no CMakeLists.txt,
sdkconfig or src folder.

The logic lives in plain functions (``render``, ``nested_command``) so tests can call them
without SCons; ``main(env)`` runs only when PlatformIO executes this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Targets PlatformIO adds internally; the nested run gets only the ones the user asked for.
_INTERNAL_TARGETS = {"buildprog", "checkprogsize", "sizedata", "nobuild", "idedata"}


def rendered_dir(project_dir: Path, env_name: str) -> Path:
    return Path(project_dir) / ".pio" / "gendertool" / env_name


def render(project_dir: Path, env_name: str, *, board: str, model: str | None = None, input_source: str = "sample",
           labels: str | None = None) -> Path:
    """Render the firmware for ``board`` into ``.pio/gendertool/<env>``; return that folder.

    Uses gendertool in-process when this Python can import it (gendertool installed in
    PlatformIO's Python), else the `gendertool` command (``GENDERTOOL`` names another one).
    """
    out = rendered_dir(project_dir, env_name)
    # A source checkout without `pip install -e .` still finds the package next to this file.
    host = str(Path(project_dir) / "host")
    try:
        sys.path.insert(0, host)
        from gendertool.project.build import build as gt_build
        from gendertool.errors import GendertoolError
        from gendertool.model.sources import parse_labels
    except ImportError:
        gt_build = None
    finally:
        if sys.path and sys.path[0] == host:
            sys.path.pop(0)
    if gt_build is not None:
        try:
            gt_build(model or None, board=board, out_dir=out, input_source=input_source,
                     labels=parse_labels(labels) if labels else None, compile=False)
        except GendertoolError as exc:
            raise SystemExit(f"gendertool: {exc}") from None
        except ImportError as exc:  # gendertool found but its dependencies are not in this Python
            missing = exc
        else:
            return out
    else:
        missing = None
    cmd = os.environ.get("GENDERTOOL", "gendertool").split()
    args = cmd + ["build", "--no-compile", "--board", board, "--out", str(out), "--input", input_source]
    if model:
        args += ["--model", model]
    if labels:
        args += ["--labels", labels]
    try:
        code = subprocess.call(args)
    except FileNotFoundError:
        raise SystemExit(
            "gendertool is needed to render the firmware: `pip install -e .` in the repository "
            f"(PlatformIO's Python {sys.executable} could not import it{': ' + str(missing) if missing else ''})"
        ) from None
    if code != 0:
        raise SystemExit(f"gendertool could not render the firmware (exit {code})")
    return out


def nested_command(python: str, rendered: Path, env_name: str, targets: list[str], upload_port: str | None = None,
                   verbose: bool = False) -> list[str]:
    """The `pio run` command that builds the rendered project (same targets, same env name)."""
    cmd = [python, "-m", "platformio", "run", "-d", str(rendered), "-e", env_name]
    for target in targets:
        if target not in _INTERNAL_TARGETS and not target.startswith("__"):
            cmd += ["-t", target]
    if upload_port:
        cmd += ["--upload-port", upload_port]
    if verbose:
        cmd.append("-v")
    return cmd


def _option(env, name: str, default: str | None = None) -> str | None:
    value = env.GetProjectOption(name, default)
    value = value.strip() if isinstance(value, str) else value
    return value or default


def main(env) -> None:  # pragma: no cover - runs inside PlatformIO's SCons
    from SCons.Script import ARGUMENTS, COMMAND_LINE_TARGETS  # noqa: PLC0415

    env_name = env.subst("$PIOENV")
    project_dir = Path(env.subst("$PROJECT_DIR"))
    board = _option(env, "custom_gendertool_board", env_name)
    print(f"gendertool: rendering the firmware for {board} into {rendered_dir(project_dir, env_name)}")
    out = render(
        project_dir,
        env_name,
        board=board,
        model=_option(env, "custom_gendertool_model"),
        input_source=_option(env, "custom_gendertool_input", "sample"),
        labels=_option(env, "custom_gendertool_labels"),
    )
    cmd = nested_command(
        env.subst("$PYTHONEXE"),
        out,
        board,
        list(COMMAND_LINE_TARGETS),
        upload_port=env.subst("$UPLOAD_PORT") or None,
        verbose=bool(int(ARGUMENTS.get("PIOVERBOSE", 0))),
    )
    print("gendertool: " + " ".join(cmd))
    env.Exit(subprocess.call(cmd))


try:
    Import("env")  # type: ignore[name-defined]  # noqa: F821 - provided by SCons
except NameError:
    pass
else:  # pragma: no cover
    main(env)  # type: ignore[name-defined]  # noqa: F821
