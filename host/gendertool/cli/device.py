"""Commands: flash (esptool v5 API), ports (serial ports) and monitor (live results from a running firmware)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.protocol import arena_warning

from ._app import app, console, err_console
from ._options import port_option, resolve_ports

if TYPE_CHECKING:
    from gendertool.flash import FlashResult


@app.command("flash")
def flash_cmd(
    port: list[str] = port_option(
        several=True, kinds="Serial port of the board (flashed in parallel with the others)"
    ),
    build: Optional[Path] = typer.Option(
        None, "--build", "-b", help="Build folder holding gendertool-build.json (default: ./build)."
    ),
    baud: int = typer.Option(460800, "--baud", help="Baud rate after the flasher stub is running."),
    merged: bool = typer.Option(False, "--merged", help="Write the single merged image instead of the separate ones."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show esptool's own messages."),
) -> None:
    """Write a build (bootloader, partition table, app) to an ESP32-S3, verify it and reset into the app."""
    from gendertool.flash import flash, flash_boards, plan_flash

    plan = plan_flash(build, merged=merged)
    ports = resolve_ports(port)
    if len(ports) == 1:
        view = _RichFlashReporter(verbose)
        try:
            with view as reporter:
                result = flash(plan, ports[0], baud=baud, reporter=reporter)
        except KeyboardInterrupt:
            raise _flash_interrupted(ports[0], view.stage, view.written()) from None
        _present_flash(result)
        return
    with _BoardsFlashProgress(ports, plan, verbose) as progress:
        boards = flash_boards(plan, ports, baud=baud, reporter_for=progress.reporter_for)
        progress.finish(boards)
    _present_boards(boards, plan)
    failed = [b for b in boards if not b.ok]
    if failed:
        from gendertool.errors import DeviceError

        names = "; ".join(f"{b.port}: {b.error}" for b in failed)
        raise DeviceError(f"flashing failed on {len(failed)} of {len(boards)} boards: {names}")


class _RichFlashReporter:
    """esptool progress as Rich bars on stderr, one per image."""

    def __init__(self, verbose: bool) -> None:
        from gendertool.flash import FlashReporter
        from gendertool.present import byte_progress

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
        from gendertool.present import format_bytes

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


class _BoardsFlashProgress:
    """Parallel flashes: one Rich progress line per board on stderr (all images of it in bytes)."""

    def __init__(self, ports: list[str], plan, verbose: bool) -> None:
        from gendertool.present import byte_progress

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
        from gendertool.flash import FlashReporter

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

    from gendertool.present import format_bytes, format_duration

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


# --------------------------------------------------------------------------- ports


@app.command("ports")
def ports_cmd(
    as_json: bool = typer.Option(False, "--json", help="A JSON list on stdout instead of the table."),
) -> None:
    """List the serial ports, marking the ESP32-S3 native USB ones (303a:1001) that --port defaults to."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from gendertool.transport import list_serial_ports

    ports = list_serial_ports()
    if as_json:
        console.print_json(json.dumps([p.to_dict() for p in ports]))
        return
    if not ports:
        err_console.print("no serial ports found; plug the board in with a data cable (charge-only cables have no data lines)")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("device", "VID:PID", "description", "ESP32-S3"):
        table.add_column(col)
    for p in ports:
        table.add_row(escape(p.device), p.vid_pid or "-", escape(p.description or "-"), "native USB" if p.esp32s3 else "")
    console.print(table)
    if not any(p.esp32s3 for p in ports):
        err_console.print(
            "no ESP32-S3 native USB port (303a:1001) among them: give a USB-UART bridge's port with --port, "
            "or check the board's cable"
        )


# --------------------------------------------------------------------------- monitor


@app.command("monitor")
def monitor_cmd(
    port: Optional[str] = port_option(),
    count: Optional[int] = typer.Option(None, "--count", "-n", help="Stop after N results (default: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per result on stdout, nothing else there."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Append results to this CSV file as they arrive."),
    timeout: float = typer.Option(
        10.0, "--timeout", "-t", help="Seconds to wait for a vanished port to return, or for a silent device, before giving up."
    ),
    elf: Optional[Path] = typer.Option(None, "--elf", help="Firmware ELF for decoding panic backtraces (default: from the build manifest)."),
    build: Optional[Path] = typer.Option(None, "--build", "-b", help="Build folder whose manifest names the ELF (default: ./build if present)."),
    source: Optional[str] = typer.Option(None, "--source", metavar="sample|camera", help="Input source to select on the device: sample or camera."),
    panic: bool = typer.Option(False, "--panic", help="Test the panic decoding: once connected, make the device abort (it reboots); see docs/first-board-run.md."),
    no_record_timeout: float = typer.Option(
        10.0, "--no-record-timeout",
        help="Seconds a port may send bytes without one valid record (noise, other firmware, ROM bootloader) before giving up."),
) -> None:
    """Follow the firmware's results live: class, confidence, latency percentiles, FPS; Ctrl-C for a summary."""
    import sys

    from gendertool.errors import DeviceError, GendertoolError
    from gendertool.monitor import check_options, new_run_id, run_monitor
    from gendertool.present import JsonLinesWriter

    if as_json and csv_file is not None:
        raise GendertoolError("choose one of --json and --csv")
    check_options(count=count, timeout=timeout, source=source, no_record_timeout=no_record_timeout)
    (port,) = resolve_ports([port] if port else [], several=False)
    elf_path = elf if elf is not None else _elf_from_build(build)
    if elf is not None and not elf.is_file():
        raise GendertoolError(f"--elf {elf} does not exist")

    writer_csv = _MonitorCsv(csv_file, new_run_id()) if csv_file is not None else None
    json_out = JsonLinesWriter(sys.stdout) if as_json else None
    sink = _MonitorView(json_out=json_out, csv_out=writer_csv, text_results=not as_json)
    try:
        with sink.live():
            summary = run_monitor(port, sink.sink, count=count, timeout=timeout, source=source, elf=elf_path,
                                  no_record_timeout=no_record_timeout, panic=panic)
    except BrokenPipeError:
        # stdout closed by the reader (`| head`): stop quietly, like other Unix tools
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    finally:
        if writer_csv is not None:
            writer_csv.close()
    _present_summary(summary, err_console if as_json else console, csv_file)
    if summary.error:
        raise DeviceError(summary.error)


class _MonitorCsv:
    """``monitor --csv``: the class columns come from the device's labels, so the file gets its
    header when the hello arrives; results that come before it wait in memory."""

    def __init__(self, path: Path, run: str) -> None:
        from gendertool.monitor import CSV_HEAD, CSV_TAIL

        self.path, self.run = path, run
        self.writer = None
        self.labels: tuple[str, ...] = ()
        self.pending: list[dict] = []
        # before connecting: a file we cannot write, or one with other columns, fails now
        header = _csv_header(path)
        if header is not None and (tuple(header[:len(CSV_HEAD)]) != CSV_HEAD or tuple(header[-len(CSV_TAIL):]) != CSV_TAIL):
            self._refuse(f"{path} already has different columns ({','.join(header)}); choose another file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            open(path, "a", encoding="utf-8").close()
        except OSError as exc:
            self._refuse(exc.strerror or str(exc))

    def _refuse(self, why: str):
        from gendertool.errors import GendertoolError

        raise GendertoolError(f"cannot write --csv {self.path}: {why}")

    def start(self, labels) -> None:
        from gendertool.monitor import csv_fields
        from gendertool.present import CsvAppender

        if self.writer is not None:
            return
        try:
            self.writer = CsvAppender(self.path, csv_fields(labels))
        except (ValueError, OSError) as exc:
            self._refuse(str(exc))
        self.labels = tuple(labels)
        for row in self.pending:
            self.write(row)
        self.pending.clear()

    def write(self, row: dict) -> None:
        from gendertool.monitor import csv_row

        if self.writer is None:
            self.pending.append(row)
            return
        self.writer.write(csv_row(row, self.labels, self.run))

    def close(self) -> None:
        if self.writer is None and self.pending:  # no hello ever came: number the classes
            self.start(tuple(f"class_{i}" for i in range(len(self.pending[0].get("probs") or ()))))
        if self.writer is not None:
            self.writer.close()


def _csv_header(path: Path) -> Optional[list[str]]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            first = fh.readline()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError:
        return None  # the open for appending says why
    return next(csv.reader([first])) if first.strip() else None


def _elf_from_build(build: Optional[Path]) -> Optional[Path]:
    """The ELF named by the build manifest, if a build is there (monitoring needs no build)."""
    from gendertool.errors import BuildError
    from gendertool.flash import DEFAULT_BUILD_DIR, load_build_manifest

    if build is None and not (DEFAULT_BUILD_DIR / "gendertool-build.json").is_file():
        return None
    try:
        path, data = load_build_manifest(build)
    except BuildError:
        if build is not None:
            raise
        return None
    elf = data.get("elf")
    return path.parent / elf if isinstance(elf, str) and elf else None


def _verdict_text(v) -> str:
    """`  sample NAME (true LABEL) ok|WRONG` for a built-in sample, '' otherwise."""
    if v is None:
        return ""
    if v.truth is None:
        return f"  sample {v.name} (true label unknown)"
    return f"  sample {v.name} (true {v.truth}) {'ok' if v.correct else 'WRONG'}"


class _MonitorView:
    """Draws a monitor session: a live view on a terminal, plain lines otherwise."""

    def __init__(self, *, json_out, csv_out, text_results: bool) -> None:
        from gendertool.monitor import MonitorSink

        self.json_out = json_out
        self.csv_out = csv_out
        self.text_results = text_results
        self.session = None
        self._live = None
        self.live_enabled = err_console.is_terminal
        view = self

        class _Sink(MonitorSink):
            def hello(self, h) -> None:
                if view.csv_out is not None:
                    view.csv_out.start(h.labels)
                sim = " [virtual device: latency is this computer's]" if h.simulated else ""
                arena = f", arena in {h.arena_in}" if h.arena_in else ""
                view._say(f"connected: {h.board} fw {h.fw}, model {h.model} ({h.model_sha256[:12]}), labels {', '.join(h.labels)}{arena}{sim}", "cyan")
                warning = arena_warning(h.arena_in)
                if warning:
                    view._say(f"WARNING: {warning}", "bold red")

            def result(self, r, session) -> None:
                from gendertool.monitor import result_row, sample_verdict

                view.session = session
                if view.json_out is not None or view.csv_out is not None:
                    row = result_row(r, session.hello)
                    if view.json_out is not None:
                        view.json_out.write(row)
                    if view.csv_out is not None:
                        view.csv_out.write(row)
                if view.text_results and (view._live is None or not console.is_terminal):
                    console.print(
                        f"#{r.seq:<6} {r.label:<10} {r.confidence:6.1%}  invoke {r.invoke_us / 1000:7.2f} ms  pre {r.pre_us / 1000:6.2f} ms"
                        + _verdict_text(sample_verdict(r, session.hello)),
                        soft_wrap=True,
                        markup=False,
                        highlight=False,
                    )
                view._refresh()

            def log(self, text: str) -> None:
                if view._live is None:
                    err_console.print(text, style="dim", markup=False, highlight=False)

            def status(self, text: str) -> None:
                view._say(text, "yellow")

            def panic(self, report) -> None:
                view._panic(report)

            def device_error(self, rec) -> None:
                view._say(f"device error {rec.code} ({rec.cmd or 'spontaneous'}): {rec.message}", "red")

            def tick(self, session) -> None:
                view.session = session
                view._refresh()

        self.sink = _Sink()

    def live(self):
        from contextlib import contextmanager

        from gendertool.present import live_view

        @contextmanager
        def _cm():
            with live_view(err_console, enabled=self.live_enabled, refresh_per_second=8) as live:
                self._live = live if self.live_enabled else None
                try:
                    yield
                finally:
                    if self._live is not None:
                        self._live.update(self._render(), refresh=True)
                    self._live = None

        return _cm()

    def _say(self, text: str, style: str) -> None:
        err_console.print(text, style=style, markup=False, highlight=False)

    def _panic(self, report) -> None:
        lines = [report.reason, report.backtrace]
        if report.decoded:
            for f in report.frames:
                where = f"{f.function} at {f.location}" if f.function else "(not in the ELF)"
                lines.append(f"  {f.pc}: {where}")
                lines.extend(f"    (inlined by) {x}" for x in f.inlined)
        if report.corrupted:
            lines.append("  (backtrace corrupted: the stack was overwritten)")
        if report.hint:
            lines.append(f"hint: {report.hint}")
        err_console.print("\n".join(lines), style="bold red", markup=False, highlight=False)

    def _refresh(self) -> None:
        if self._live is not None and self.session is not None:
            self._live.update(self._render())

    def _render(self):
        from rich.table import Table

        from gendertool.present import format_ms, kv_table, log_panel

        s = self.session
        if s is None:
            return log_panel([], height=10)
        r = s.latest
        rows = []
        if r is not None:
            from gendertool.monitor import sample_verdict

            rows += [
                ("result", f"#{r.seq}  {r.label}  (class {r.class_index})" + _verdict_text(sample_verdict(r, s.hello))),
                ("confidence", f"{r.confidence:.1%}"),
                ("invoke", f"{r.invoke_us / 1000:.2f} ms"),
            ]
        rows += [
            ("invoke p50/p90", f"{format_ms(s.invoke.p50, 2)} / {format_ms(s.invoke.p90, 2)} ms"),
            ("pre p50", f"{format_ms(s.pre.p50, 2)} ms"),
            ("FPS", f"{s.rate.rate():.1f}"),
            ("results", f"{s.results}" + (f"  (lost {s.lost})" if s.lost else "")),
            ("classes", "  ".join(f"{k} {v}" for k, v in s.classes.most_common())),
        ]
        if s.disconnects:
            rows.append(("port lost", f"{s.disconnects}, back {s.reconnects}"))
        arena_in = getattr(s.hello, "arena_in", "")
        if arena_in:  # where the arena is changes every latency above (issue 21)
            rows.append(("arena", f"in {arena_in}" + ("  WARNING: slower than internal RAM" if arena_warning(arena_in) else "")))
        if r is not None and r.simulated:
            rows.append(("", "virtual device: host latency"))
        grid = Table.grid(expand=True, padding=(0, 2))
        grid.add_column(ratio=2)
        grid.add_column(ratio=3)
        grid.add_row(kv_table(rows, title=f"monitor {s.port}"), log_panel(s.logs, height=10))
        return grid


def _present_summary(summary, out, csv_file: Optional[Path]) -> None:
    from gendertool.present import format_duration, format_ms, kv_table

    from gendertool.wording import count

    inv, pre = summary.invoke_ms, summary.pre_ms
    rows = [
        ("port", summary.port + ("  (virtual device: latency is this computer's)" if summary.simulated else "")),
        ("results", f"{summary.results} in {format_duration(summary.seconds)} (connecting included)"),
        # a rate needs two results; over the span it is measured on, not the whole session
        ("FPS", f"{summary.fps:.1f} (first to last result, {format_duration(summary.span_s)})" if summary.results >= 2
         else "- (needs two results)"),
    ]
    if inv:
        rows.append(("invoke ms", f"p50 {format_ms(inv['p50'], 2)}  p90 {format_ms(inv['p90'], 2)}  p99 {format_ms(inv['p99'], 2)}  mean {format_ms(inv['mean'], 2)}  min {format_ms(inv['min'], 2)}  max {format_ms(inv['max'], 2)}"))
    if pre:
        rows.append(("preprocess ms", f"p50 {format_ms(pre['p50'], 2)}  p90 {format_ms(pre['p90'], 2)}"))
    if summary.classes:
        total = sum(summary.classes.values())
        rows.append(("classes", "  ".join(f"{k} {v} ({v / total:.0%})" for k, v in sorted(summary.classes.items()))))
    lost = summary.lost + summary.parser.get("bad_crc", 0) + summary.parser.get("bad_frame", 0) + summary.parser.get("overlong", 0) + summary.parser.get("partial", 0)
    rows.append(("lost / damaged", f"{summary.lost} missing seq, parser {summary.parser.get('bad_crc', 0)} bad crc, {summary.parser.get('bad_frame', 0)} bad frame, {summary.parser.get('overlong', 0)} overlong, {summary.parser.get('partial', 0)} cut" if lost else "none"))
    if summary.samples_right or summary.samples_wrong:
        n = summary.samples_right + summary.samples_wrong
        rows.append(("sample checks", f"{summary.samples_right}/{n} right" + (f", {summary.samples_wrong} WRONG" if summary.samples_wrong else "")))
    if summary.disconnects:
        rows.append(("port lost", f"{count(summary.disconnects, 'time')}, back {count(summary.reconnects, 'time')}"))
    arena_in = summary.device.get("arena_in", "")
    if arena_in:
        warning = arena_warning(arena_in)
        rows.append(("arena", f"in {arena_in}" + (f"  WARNING: {warning}" if warning else "")))
    if summary.panics:
        rows.append(("panics", str(summary.panics)))
    if csv_file is not None:
        rows.append(("csv", str(csv_file)))
    if summary.interrupted:
        rows.append(("stopped", "Ctrl-C"))
    out.print(kv_table(rows, title="Monitor summary"))
