"""Flashing on the terminal: per-image progress bars, the several-board view, the result tables."""

from __future__ import annotations

from gendertool.device.esptool_log import FlashReporter
from gendertool.device.flash import FlashResult
from gendertool.present.console import console, err_console
from gendertool.present.progress import byte_progress
from gendertool.present.tables import format_bytes, format_duration, kv_table


class RichFlashReporter:
    """esptool progress as Rich bars on stderr, one per image."""

    def __init__(self, verbose: bool) -> None:

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

        parts = []
        for name, task_id in self.tasks.items():
            task = self.progress.tasks[task_id]
            parts.append(f"{name} {format_bytes(task.completed)} of {format_bytes(task.total or 0)}")
        return ", ".join(parts)


def present_flash(result: "FlashResult") -> None:
    from rich.table import Table


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


class BoardsFlashProgress:
    """Parallel flashes: one Rich progress line per board on stderr (all images of it in bytes)."""

    def __init__(self, ports: list[str], plan, verbose: bool) -> None:

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


def present_flash_boards(boards, plan) -> None:
    from rich.markup import escape
    from rich.table import Table


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
