"""Commands: build (render the firmware project for a model and board, compile it)."""

from __future__ import annotations

import re
import time
from collections import deque
from pathlib import Path
from typing import Optional

import typer

from gendertool.present.console import console, err_console
from gendertool.project.manifest import DEFAULT_BUILD_DIR

from .options import (
    complete_backends,
    complete_boards,
    complete_inputs,
    complete_models,
)
from .root import app

# Toolchain lines kept on screen under the progress line.
SHOWN_LINES = 8
# Lines shown after a failed compile (the full output is in OUT/build.log).
FAILURE_LINES = 15
# ninja's "[12/980] Building C object ..." gives a real fraction of the work done.
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
# Without a terminal (CI logs, pipes): a line on stderr this often while a step runs silently.
HEARTBEAT_S = 5.0


@app.command("build")
def build(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model file or profile name (default: the shipped model).",
                                         autocompletion=complete_models),
    board: str = typer.Option("xiao_esp32s3", "--board", "-b", help="Target board (xiao_esp32s3, xiao_esp32s3_sense, ...).",
                             autocompletion=complete_boards),
    out: Path = typer.Option(DEFAULT_BUILD_DIR, "--out", "-o", help="Folder for the rendered project, its build and the manifest."),
    backend: str = typer.Option("pio", "--backend", metavar="pio|idf", help="pio (PlatformIO, espressif32 @ 6.13.0) or idf (idf.py, ESP-IDF v5.5.3).",
                                autocompletion=complete_backends),
    input_source: str = typer.Option("sample", "--input", metavar="sample|upload|camera", help="Default input source: sample, upload or camera (Sense board).",
                                     autocompletion=complete_inputs),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels overriding the model's, e.g. female,male."),
    no_compile: bool = typer.Option(False, "--no-compile", help="Only render the project (offline, deterministic)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel compile jobs (PlatformIO)."),
) -> None:
    """Render the ESP-IDF + TFLM firmware for a model and compile it; writes OUT/gendertool-build.json for `flash`."""
    from gendertool.errors import BuildError
    from gendertool.project import build as builder

    builder.check_options(backend, input_source, jobs)
    label_list = None
    if labels is not None:
        from gendertool.model.sources import parse_labels

        label_list = parse_labels(labels)

    view = _BuildView()
    try:
        with view:
            result = builder.build(
                model,
                board=board,
                out_dir=out,
                backend=backend,
                input_source=input_source,
                labels=label_list,
                compile=not no_compile,
                jobs=jobs,
                on_line=view.line,
                on_stage=view.stage,
            )
    except BuildError:
        view.show_failure()
        raise
    except KeyboardInterrupt:  # rendering says how far it got itself (errors.Interrupted)
        from gendertool.errors import Interrupted

        raise Interrupted(f"stopped while {view.step}; no firmware was produced, the rendered project stays in "
                          f"{out} (run the build again)") from None
    _present(result)


class _BuildView:
    """Progress on stderr: a spinner with the current step, ninja's [n/total], the last lines.

    Without a terminal: one line per step, then a heartbeat line every HEARTBEAT_S seconds
    saying the step is still running, for how long, and how far the toolchain got.
    """

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=200)
        self.step = "starting"
        self.count = 0
        self.fraction: tuple[int, int] | None = None
        self.compiled = 0  # PlatformIO prints "Compiling <object>" without a total
        self.started = time.monotonic()
        self._live = None
        self._last_draw = 0.0
        self.step_started = self.started
        self._stop = None
        self._beat = None

    def __enter__(self):
        if err_console.is_terminal:
            from rich.live import Live

            self._live = Live(console=err_console, refresh_per_second=8, transient=True)
            self._live.__enter__()
        else:
            import threading

            self._stop = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, name="build-heartbeat", daemon=True)
            self._beat.start()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None
        return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            err_console.print(self.heartbeat_line(), markup=False, highlight=False, soft_wrap=True)

    def heartbeat_line(self, now: Optional[float] = None) -> str:
        now = time.monotonic() if now is None else now
        step = int(now - self.step_started)
        total = int(now - self.started)
        if self.fraction:
            done = f", at [{self.fraction[0]}/{self.fraction[1]}]"
        elif self.compiled:
            done = f", {self.compiled} compiled"
        else:
            done = ""
        return (f"  ... still {self.step}: {step // 60}:{step % 60:02d} in this step, {total // 60}:{total % 60:02d} in all, "
                f"{self.count} toolchain lines{done}")

    def stage(self, text: str) -> None:
        from rich.markup import escape

        if text.startswith("warning: "):
            message = f"[yellow]warning:[/] {escape(text[len('warning: '):])}"
        else:
            self.step = text
            self.step_started = time.monotonic()
            message = f"[dim]- {escape(text)}[/]"
        # Steps stay in the scrollback; the live area only shows the current one.
        (self._live.console if self._live is not None else err_console).print(message, highlight=False, soft_wrap=True)
        self._draw(force=True)

    def line(self, text: str) -> None:
        self.lines.append(text)
        self.count += 1
        m = _NINJA_STEP.match(text)
        if m:
            self.fraction = (int(m.group(1)), int(m.group(2)))
        elif text.startswith("Compiling "):
            self.compiled += 1
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        from rich.console import Group
        from rich.spinner import Spinner

        from gendertool.present.tables import log_panel

        elapsed = int(now - self.started)
        if self.fraction:
            progress = f" [{self.fraction[0]}/{self.fraction[1]}]"
        else:
            progress = f" [{self.compiled} compiled]" if self.compiled else ""
        head = Spinner("dots", text=f"{self.step}{progress}  {elapsed // 60}:{elapsed % 60:02d}  ({self.count} lines)")
        self._live.update(Group(head, log_panel(self.lines, title="toolchain output", height=SHOWN_LINES)))

    def show_failure(self) -> None:
        if not self.lines:
            return
        err_console.print("[dim]last toolchain output:[/]")
        for line in list(self.lines)[-FAILURE_LINES:]:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _arena_text(memory) -> str:
    """Where the arena goes and the internal-RAM margin, e.g. 'internal RAM (239,616 bytes); internal
    RAM: about 230,218 bytes for the arena, 9,398 short (...)'."""
    where = {"internal": "internal RAM", "psram": "PSRAM"}.get(memory.arena_region or "", "nowhere")
    return f"{memory.arena_bytes:,} bytes in {where}; {memory.margin_text()}"


def _present(result) -> None:
    from gendertool.present.tables import format_bytes, kv_table

    rows: list[tuple[str, object]] = [
        ("project", str(result.out_dir)),
        ("board", result.board),
        ("model", f"{result.model_name} (sha256 {result.model_sha256[:12]})"),
        ("files", f"{len(result.written)} written, {len(result.unchanged)} unchanged"),
    ]
    if result.memory is not None:
        rows.append(("arena", _arena_text(result.memory)))
    if not result.compiled:
        rows.append(("compiled", "no (--no-compile)"))
        console.print(kv_table(rows, title="rendered"))
        return
    rows.append(("backend", result.backend))
    sizes = result.sizes
    if sizes is not None:
        if sizes.flash_bytes is not None:
            total = f" of {format_bytes(sizes.flash_total)}" if sizes.flash_total else ""
            rows.append(("flash", f"{format_bytes(sizes.flash_bytes)}{total}"))
        if sizes.dram_bytes is not None:
            total = f" of {format_bytes(sizes.dram_total)}" if sizes.dram_total else ""
            rows.append(("static RAM", f"{format_bytes(sizes.dram_bytes)}{total}"))
        if sizes.iram_bytes is not None:
            rows.append(("IRAM", format_bytes(sizes.iram_bytes)))
    for img in result.manifest.get("images", []):
        rows.append((img["name"], f"{img['offset']:#07x}  {img['path']}"))
    if result.manifest.get("merged"):
        rows.append(("merged", f"0x00000  {result.manifest['merged']['path']}"))
    rows.append(("manifest", str(result.manifest_path)))
    rows.append(("log", str(result.log_path)))
    console.print(kv_table(rows, title="built"))
