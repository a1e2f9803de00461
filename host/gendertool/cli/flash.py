"""Commands: flash (esptool v5 API), ports (serial ports) and monitor (live results from a running firmware)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.present.console import console, err_console

from .options import (
    AFTER_CHOICES,
    BEFORE_CHOICES,
    complete_after,
    complete_before,
    complete_dirs,
    port_option,
    resolve_ports,
)
from .root import app

if TYPE_CHECKING:
    pass


def _before_option():
    return typer.Option(
        "auto", "--before", metavar="MODE", autocompletion=complete_before,
        help=f"esptool's reset before connecting: {', '.join(BEFORE_CHOICES)}; "
        "auto: usb-reset on the native USB port, default-reset on a UART bridge.")


def _after_option(when: str, note: str = ""):
    return typer.Option(
        "hard-reset", "--after", metavar="MODE", autocompletion=complete_after,
        help=f"esptool's reset {when}: {', '.join(AFTER_CHOICES)}{note}.")


@app.command("flash")
def flash_cmd(
    port: list[str] = port_option(
        several=True, kinds="Serial port of the board (flashed in parallel with the others)"
    ),
    build: Optional[Path] = typer.Option(
        None, "--build", help="Build folder holding gendertool-build.json (default: ./build).", autocompletion=complete_dirs
    ),
    baud: int = typer.Option(460800, "--baud", help="Baud rate after the flasher stub is running."),
    merged: bool = typer.Option(False, "--merged", help="Write the single merged image instead of the separate ones."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show esptool's own messages."),
    force: bool = typer.Option(
        False, "--force",
        help="Write even what is refused: files that are not ESP32-S3 images, a build for more flash than the chip has "
        "(also esptool's --force: its own safety checks are skipped)."),
    no_verify: bool = typer.Option(
        False, "--no-verify",
        help="Skip the second read-back of every region (esptool still checks each image's MD5 right after writing it)."),
    before: str = _before_option(),
    after: str = _after_option("after writing", " (hard-reset starts the app; no-reset stays in the loader)"),
) -> None:
    """Write a build (bootloader, partition table, app) to an ESP32-S3, verify it and reset into the app."""
    flash_build(port, build, baud=baud, merged=merged, verbose=verbose,
                force=force, verify=not no_verify, before=before, after=after)


def flash_build(port: list[str], build: Optional[Path], *, baud: int, merged: bool = False, verbose: bool = False,
                **options) -> None:
    """`flash` itself (also the flash step of `run`): plan, write, present; errors raise."""
    from gendertool.present.flash import BoardsFlashProgress, RichFlashReporter, present_flash, present_flash_boards
    from gendertool.device.flash import flash, flash_boards
    from gendertool.project.manifest import plan_flash

    plan = plan_flash(build, merged=merged)
    ports = resolve_ports(port)
    if len(ports) == 1:
        view = RichFlashReporter(verbose)
        try:
            with view as reporter:
                result = flash(plan, ports[0], baud=baud, reporter=reporter, **options)
        except KeyboardInterrupt:
            raise _flash_interrupted(ports[0], view.stage, view.written()) from None
        present_flash(result)
        return
    with BoardsFlashProgress(ports, plan, verbose) as progress:
        boards = flash_boards(plan, ports, baud=baud, reporter_for=progress.reporter_for, **options)
        progress.finish(boards)
    present_flash_boards(boards, plan)
    failed = [b for b in boards if not b.ok]
    if failed:
        from gendertool.errors import DeviceError

        names = "; ".join(f"{b.port}: {b.error}" for b in failed)
        raise DeviceError(f"flashing failed on {len(failed)} of {len(boards)} boards: {names}")


@app.command("erase")
def erase_cmd(
    port: Optional[str] = port_option(kinds="Serial port of the board"),
    before: str = _before_option(),
    after: str = _after_option("when done"),
    force: bool = typer.Option(False, "--force", help="esptool's --force: skip its flash-encryption and secure-boot checks."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show esptool's own messages."),
) -> None:
    """Erase the board's whole flash (esptool's erase-flash): firmware, partition table, NVS; `flash` writes it again."""
    from gendertool.present.flash import RichFlashReporter
    from gendertool.device.flash import erase
    from gendertool.present.tables import format_duration

    (port,) = resolve_ports([port] if port else [], several=False)
    view = RichFlashReporter(verbose)
    try:
        with view as reporter, err_console.status(f"erasing the flash of {port}..."):
            result = erase(port, before=before, after=after, force=force, reporter=reporter)
    except KeyboardInterrupt:
        from gendertool.errors import Interrupted

        state = ("the flash may be partly erased: run `gendertool erase` or `gendertool flash` again"
                 if view.stage in ("erasing", "resetting") else "nothing was erased")
        raise Interrupted(f"{port}: stopped while {view.stage}; {state}") from None
    console.print(f"erased the whole flash of {result.description} on {result.port} (MAC {result.mac}) "
                  f"in {format_duration(result.seconds)}; reset: {result.reset_mode}")




def _flash_interrupted(port: str, stage: str, written: str):
    """Ctrl-C during a flash: what state the board is in, and what to do."""
    from gendertool.errors import Interrupted

    if stage in ("writing", "verifying", "resetting") or written:
        state = (f"the board's flash may hold a partly written image ({written or 'write started'}): "
                 "run `gendertool flash` again before using it")
    else:
        state = "nothing was written to the board"
    return Interrupted(f"{port}: stopped while {stage}; {state}")






