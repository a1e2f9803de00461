"""Command: run (build, flash and monitor in one go, as `idf.py flash monitor` or
`pio run -t upload -t monitor` do). Each step is the command of that name, invoked with the
options given here and its own defaults for the rest; the first step that fails ends the run
with its own message."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gendertool.present.console import err_console

from .options import (
    BEFORE_CHOICES,
    MODEL_HELP,
    complete_after,
    complete_backends,
    complete_before,
    complete_boards,
    complete_dirs,
    complete_inputs,
    complete_models,
    port_option,
    resolve_ports,
)
from .root import app

STEPS = ("build", "flash", "monitor")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP, autocompletion=complete_models),
    board: str = typer.Option("xiao_esp32s3", "--board", "-b", help="Target board.", autocompletion=complete_boards),
    out: Path = typer.Option(Path("build"), "--out", "-o", help="Build folder (as `build --out`, `flash --build`).",
                             autocompletion=complete_dirs),
    backend: str = typer.Option("pio", "--backend", metavar="pio|idf", help="pio (PlatformIO) or idf (idf.py).",
                                autocompletion=complete_backends),
    input_source: str = typer.Option("sample", "--input", metavar="sample|upload|camera",
                                     help="Default input source of the firmware.", autocompletion=complete_inputs),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel compile jobs (PlatformIO)."),
    port: Optional[str] = port_option(kinds="Serial port of the board to flash and then monitor"),
    baud: int = typer.Option(460800, "--baud", help="Flashing baud rate after the flasher stub is running."),
    force: bool = typer.Option(False, "--force", help="As `flash --force`."),
    no_verify: bool = typer.Option(False, "--no-verify", help="As `flash --no-verify`."),
    before: str = typer.Option("auto", "--before", metavar="MODE", autocompletion=complete_before,
                               help=f"As `flash --before`: {', '.join(BEFORE_CHOICES)}."),
    after: str = typer.Option("hard-reset", "--after", metavar="MODE",
                              autocompletion=complete_after,
                              help="As `flash --after`; monitor needs the app running (hard-reset or watchdog-reset)."),
    count: Optional[int] = typer.Option(None, "--count", "-n", help="Monitor: stop after N results (default: until Ctrl-C)."),
    timeout: float = typer.Option(10.0, "--timeout", "-t", help="Monitor: as `monitor --timeout`."),
) -> None:
    """Build, flash and monitor in one go (like `idf.py flash monitor`); stops at the first step that fails, with its message."""
    from gendertool.device.flash import check_flashable, check_reset_modes
    from gendertool.errors import GendertoolError

    # What would only fail after a long compile fails now: the port, the flash options.
    (port,) = resolve_ports([port] if port else [], several=False)
    check_flashable(port, baud)
    check_reset_modes(before, after)
    if after not in ("hard-reset", "watchdog-reset"):
        raise GendertoolError(f"--after {after} leaves the board without the app running, so there is nothing to "
                              "monitor; use hard-reset or watchdog-reset, or `gendertool flash` alone")

    # each step as its command line: the command parses it and fills in its own defaults
    steps = {
        "build": _argv(model=model, board=board, out=out, backend=backend, input=input_source, jobs=jobs),
        "flash": _argv(port=port, build=out, baud=baud, force=force, no_verify=no_verify, before=before, after=after),
        "monitor": _argv(port=port, build=out, count=count, timeout=timeout),
    }
    group = ctx.parent.command if ctx.parent is not None else None
    for i, name in enumerate(STEPS, 1):
        err_console.rule(f"[bold]{i}/{len(STEPS)} {name}[/]", align="left")
        command = group.get_command(ctx, name) if group is not None else None
        if command is None:  # pragma: no cover - the commands are registered on the same app
            raise RuntimeError(f"no {name} command registered")
        with command.make_context(name, steps[name], parent=ctx.parent) as sub:
            command.invoke(sub)


def _argv(**options) -> list[str]:
    """``--name value`` for each option given (True: the bare flag; None/False: left out)."""
    argv: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv
