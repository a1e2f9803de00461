"""Commands: flash (esptool v5 API), ports (serial ports) and monitor (live results from a running firmware)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.present.console import console, err_console

from .options import AFTER_CHOICES, BEFORE_CHOICES, complete_after, complete_before, complete_dirs, port_option, resolve_ports
from .root import app

if TYPE_CHECKING:
    from gendertool.device.flash import FlashResult


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
    from gendertool.device.flash import flash, flash_boards
    from gendertool.project.manifest import plan_flash

    plan = plan_flash(build, merged=merged)
    ports = resolve_ports(port)
    if len(ports) == 1:
        view = _RichFlashReporter(verbose)
        try:
            with view as reporter:
                result = flash(plan, ports[0], baud=baud, reporter=reporter, **options)
        except KeyboardInterrupt:
            raise _flash_interrupted(ports[0], view.stage, view.written()) from None
        _present_flash(result)
        return
    with _BoardsFlashProgress(ports, plan, verbose) as progress:
        boards = flash_boards(plan, ports, baud=baud, reporter_for=progress.reporter_for, **options)
        progress.finish(boards)
    _present_boards(boards, plan)
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
    from gendertool.device.flash import erase
    from gendertool.present.tables import format_duration

    (port,) = resolve_ports([port] if port else [], several=False)
    view = _RichFlashReporter(verbose)
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


class _RichFlashReporter:
    """esptool progress as Rich bars on stderr, one per image."""

    def __init__(self, verbose: bool) -> None:
        from gendertool.device.esptool_log import FlashReporter
        from gendertool.present.progress import byte_progress

        self.verbose = verbose
        self.progress = byte_progress(err_console)
        self.tasks: dict[str, int] = {}
        self.started = False
        self.stage = "starting"
        outer = self

        class _Reporter(FlashReporter):
            def stage(self, text: str) -> None:
                outer.stage = text

            def message(self, text: str) -> None:
                if outer.verbose:
                    outer.progress.console.print(text, style="dim", markup=False, highlight=False)

            def warning(self, text: str) -> None:
                outer.progress.console.print(f"esptool: {text}", style="yellow", markup=False, highlight=False)

            def progress(self, image, done: int, total: int) -> None:
                task = outer.tasks.get(image.name)
                if not outer.started:
                    outer.progress.start()
                    outer.started = True
                if task is None:
                    task = outer.progress.add_task(f"{image.name:<15} @ {image.offset:#08x}", total=total)
                    outer.tasks[image.name] = task
                outer.progress.update(task, completed=done, total=total)

        self.reporter = _Reporter()

    def __enter__(self):
        return self.reporter

    def __exit__(self, *exc) -> None:
        if self.started:
            self.progress.stop()

    def written(self) -> str:
        """'app 40 of 812 KiB, ...' for the images esptool has started on."""
        from gendertool.present.tables import format_bytes

        parts = []
        for name, task_id in self.tasks.items():
            task = self.progress.tasks[task_id]
            parts.append(f"{name} {format_bytes(task.completed)} of {format_bytes(task.total or 0)}")
        return ", ".join(parts)


def _flash_interrupted(port: str, stage: str, written: str):
    """Ctrl-C during a flash: what state the board is in, and what to do."""
    from gendertool.errors import Interrupted

    if stage in ("writing", "verifying", "resetting") or written:
        state = (f"the board's flash may hold a partly written image ({written or 'write started'}): "
                 "run `gendertool flash` again before using it")
    else:
        state = "nothing was written to the board"
    return Interrupted(f"{port}: stopped while {stage}; {state}")


def _present_flash(result: "FlashResult") -> None:
    from rich.table import Table

    from gendertool.present.tables import format_bytes, format_duration, kv_table

    console.print(
        kv_table(
            [
                ("port", result.port),
                ("chip", f"{result.description}"),
                ("features", ", ".join(result.features)),
                ("MAC", result.mac),
            ],
            title="Flashed",
        )
    )
    table = Table(box=None, pad_edge=False)
    table.add_column("image")
    table.add_column("offset", justify="right")
    table.add_column("size", justify="right")
    table.add_column("file")
    for img in result.images:
        table.add_row(img.name, f"{img.offset:#08x}", format_bytes(img.size), str(img.path))
    console.print(table)
    done = "wrote and verified" if result.verified else "wrote (MD5 per image; second read-back skipped: --no-verify)"
    reset = {"no-reset": "left in the ROM loader", "no-reset-stub": "left in the flasher stub",
             "soft-reset": "soft reset"}.get(result.reset_mode, "reset into the app")
    console.print(
        f"{done} {format_bytes(result.bytes_written)} in {format_duration(result.write_seconds)} "
        f"({format_bytes(result.throughput)}/s); total {format_duration(result.total_seconds)}; "
        f"{reset} ({result.reset_mode})"
    )
    if result.forced:
        console.print("--force: forced past the image and flash-size checks; the warnings above say what they found")


class _BoardsFlashProgress:
    """Parallel flashes: one Rich progress line per board on stderr (all images of it in bytes)."""

    def __init__(self, ports: list[str], plan, verbose: bool) -> None:
        from gendertool.present.progress import byte_progress

        self.verbose = verbose
        self.progress = byte_progress(err_console)
        width = max(len(p) for p in ports)
        self.label = {p: p.ljust(width) for p in ports}
        self.tasks = {p: self.progress.add_task(f"{self.label[p]}  connecting", total=plan.total_bytes) for p in ports}
        # bytes of the images before each one: a board's line spans all of its images
        self.before: dict[str, int] = {}
        offset = 0
        for img in plan.images:
            self.before[img.name] = offset
            offset += img.size

    def reporter_for(self, port: str):
        from gendertool.device.esptool_log import FlashReporter

        outer, task, label = self, self.tasks[port], self.label[port]

        class _Reporter(FlashReporter):
            def message(self, text: str) -> None:
                if outer.verbose:
                    outer.progress.console.print(f"{port}: {text}", style="dim", markup=False, highlight=False)

            def warning(self, text: str) -> None:
                outer.progress.console.print(f"{port}: esptool: {text}", style="yellow", markup=False, highlight=False)

            def stage(self, text: str) -> None:
                outer.progress.update(task, description=f"{label}  {text}")

            def progress(self, image, done: int, total: int) -> None:
                share = image.size * done // total if total > 0 else image.size
                outer.progress.update(
                    task, description=f"{label}  writing {image.name}", completed=outer.before.get(image.name, 0) + share
                )

        return _Reporter()

    def finish(self, boards) -> None:
        for b in boards:
            self.progress.update(self.tasks[b.port], description=f"{self.label[b.port]}  {'done' if b.ok else 'FAILED'}")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def _present_boards(boards, plan) -> None:
    from rich.markup import escape
    from rich.table import Table

    from gendertool.present.tables import format_bytes, format_duration

    table = Table(title=f"Flashed {format_bytes(plan.total_bytes)} ({len(plan.images)} images) onto {len(boards)} boards")
    for col in ("port", "chip", "MAC", "time", "throughput", "status"):
        table.add_column(col, justify="right" if col in ("time", "throughput") else "left")
    for b in boards:
        r = b.result
        if b.ok:
            table.add_row(escape(b.port), escape(r.description), r.mac, format_duration(b.seconds),
                          f"{format_bytes(r.throughput)}/s", "[green]OK[/]")
        else:  # the message itself is in the error that ends the command
            table.add_row(escape(b.port), "-", "-", format_duration(b.seconds), "-", "[red]error[/]")
    console.print(table)
    ok = sum(b.ok for b in boards)
    console.print(f"{ok} of {len(boards)} boards written, verified and reset into the app")
