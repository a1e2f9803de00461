"""Commands: flash (esptool v5 API) and monitor (live results from a running firmware)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ._app import app, console, err_console

if TYPE_CHECKING:
    from gendertool.flash import FlashResult


@app.command("flash")
def flash_cmd(
    port: Optional[str] = typer.Option(
        None, "--port", "-p", envvar="GENDERTOOL_PORT", help="Serial port of the board (default: the one ESP32-S3 on USB)."
    ),
    build: Optional[Path] = typer.Option(
        None, "--build", "-b", help="Build folder holding gendertool-build.json (default: ./build)."
    ),
    baud: int = typer.Option(460800, "--baud", help="Baud rate after the flasher stub is running."),
    merged: bool = typer.Option(False, "--merged", help="Write the single merged image instead of the separate ones."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show esptool's own messages."),
) -> None:
    """Write a build (bootloader, partition table, app) to an ESP32-S3, verify it and reset into the app."""
    from gendertool.flash import flash, plan_flash

    plan = plan_flash(build, merged=merged)
    with _RichFlashReporter(verbose) as reporter:
        result = flash(plan, port, baud=baud, reporter=reporter)
    _present_flash(result)


class _RichFlashReporter:
    """esptool progress as Rich bars on stderr, one per image."""

    def __init__(self, verbose: bool) -> None:
        from gendertool.flash import FlashReporter
        from gendertool.present import byte_progress

        self.verbose = verbose
        self.progress = byte_progress(err_console)
        self.tasks: dict[str, int] = {}
        self.started = False
        outer = self

        class _Reporter(FlashReporter):
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


def _present_flash(result: "FlashResult") -> None:
    from rich.table import Table

    from gendertool.present import format_bytes, format_duration, kv_table

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
    console.print(
        f"wrote and verified {format_bytes(result.bytes_written)} in {format_duration(result.write_seconds)} "
        f"({format_bytes(result.throughput)}/s); total {format_duration(result.total_seconds)}; "
        f"reset into the app ({result.reset_mode})"
    )
