"""Command: monitor (live results, latency and the device log)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.files import is_device_or_pipe
from gendertool.present.console import console, err_console

from .options import complete_bench_inputs, complete_dirs, port_option, resolve_ports
from .root import app

if TYPE_CHECKING:
    pass


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
    build: Optional[Path] = typer.Option(None, "--build", help="Build folder whose manifest names the ELF (default: ./build if present).",
                                         autocompletion=complete_dirs),
    source: Optional[str] = typer.Option(None, "--source", metavar="sample|camera", help="Input source to select on the device: sample or camera.",
                                         autocompletion=complete_bench_inputs),
    panic: bool = typer.Option(False, "--panic", help="Test the panic decoding: once connected, make the device abort (it reboots); see docs/first-board-run.md."),
    no_record_timeout: float = typer.Option(
        10.0, "--no-record-timeout",
        help="Seconds a port may send bytes without one valid record (noise, other firmware, ROM bootloader) before giving up."),
    web: bool = typer.Option(False, "--web", help="Also show the session live in the browser: the input the model ran on, results, latency, controls."),
    web_host: str = typer.Option("127.0.0.1", "--web-host", help="Address the page listens on (loopback by default; anything else lets others drive the device)."),
    web_port: int = typer.Option(0, "--web-port", help="Port of the page (0: a free one; the URL is printed)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the browser (with --web)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The device's model, to rebuild and re-check its input on the host (--web; default: the shipped model)."),
    web_input: int = typer.Option(
        10, "--web-input", metavar="N",
        help="With --web: the device sends its int8 input tensor with every Nth result (about 17 KB each on the link; 0: never)."),
) -> None:
    """Follow the firmware's results live: class, confidence, latency percentiles, FPS; Ctrl-C for a summary."""
    from gendertool.present.monitor import MonitorView, present_monitor_summary
    import sys

    from gendertool.device.monitor import (
        TeeSink,
        check_options,
        new_run_id,
        run_monitor,
    )
    from gendertool.errors import DeviceError, GendertoolError
    from gendertool.files import JsonLinesWriter

    if as_json and csv_file is not None:
        raise GendertoolError("choose one of --json and --csv")
    check_options(count=count, timeout=timeout, source=source, no_record_timeout=no_record_timeout)
    (port,) = resolve_ports([port] if port else [], several=False)
    elf_path = elf if elf is not None else _elf_from_build(build)
    if elf is not None and not elf.is_file():
        raise GendertoolError(f"--elf {elf} does not exist")

    if not web and (open_browser or model is not None):
        raise GendertoolError(f"{'--open' if open_browser else '--model'} needs --web")
    run_id = new_run_id()  # the CSV's and the JSON lines' `run`: appended runs stay apart
    writer_csv = _MonitorCsv(csv_file, run_id) if csv_file is not None else None
    machine_stdout = as_json or (writer_csv is not None and writer_csv.to_stdout)  # then the text goes to stderr
    json_out = JsonLinesWriter(sys.stdout) if as_json else None
    sink = MonitorView(json_out=json_out, csv_out=writer_csv, text_results=not machine_stdout, run=run_id)
    csv_error = None
    page = None
    try:
        if web:
            page = _start_page(port, web_host, web_port, model, open_browser, web_input)
        with sink.live():
            summary = run_monitor(port, sink.sink if page is None else TeeSink(sink.sink, page.sink), count=count,
                                  timeout=timeout, source=source, elf=elf_path, no_record_timeout=no_record_timeout,
                                  control=None if page is None else page.control, panic=panic)
    finally:  # a closed or full stdout ends here too: gendertool.cli.main says it (a closed pipe quietly)
        try:
            if writer_csv is not None:
                try:
                    writer_csv.close()
                except GendertoolError as exc:  # rows that waited for a hello that never came
                    csv_error = str(exc)
        finally:
            if page is not None:
                page.close()
    present_monitor_summary(summary, err_console if machine_stdout else console, csv_file, writer_csv)
    if summary.error or csv_error:
        raise DeviceError("; ".join(e for e in (summary.error, csv_error) if e))


def _start_page(port: str, host: str, web_port: int, model: Optional[str], open_browser: bool, input_every: int):
    """`--web`: serve the page (before connecting, so a busy address fails first) and say where."""
    from gendertool.present.web import WebSession

    page = WebSession(port, host=host, web_port=web_port, model=model, input_every=input_every)
    if page.warning:
        err_console.print(page.warning, style="bold yellow", markup=False, highlight=False)
    err_console.print(f"live page: {page.url}  (Ctrl-C stops the monitor and the page)", style="cyan",
                      markup=False, highlight=False, soft_wrap=True)
    if open_browser:
        import webbrowser

        if not webbrowser.open(page.url):
            err_console.print(f"could not open a browser; open {page.url} yourself", style="yellow", markup=False)
    return page


class _MonitorCsv:
    """``monitor --csv``: the class columns come from the device's labels, so the file gets its
    header when the hello arrives; results that come before it wait in memory."""

    def __init__(self, path: Path, run: str) -> None:
        from gendertool.device.monitor import CSV_HEAD, CSV_TAIL

        self.path, self.run = path, run
        self.writer = None
        self.labels: tuple[str, ...] = ()
        self.pending: list[dict] = []
        # `-`, or a path that is this process's stdout (/dev/stdout): the CSV is the output
        null = _is_devnull(path)
        self.to_stdout = str(path) == "-" or (not null and _same_file(path, 1))
        if self.to_stdout:
            return
        if not null and _same_file(path, 2):
            self._refuse("that is standard error, where the device log and the status lines go; "
                         "`--csv -` writes the CSV to standard output")
        if is_device_or_pipe(path):  # never read back, never opened twice
            return
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
        import sys

        from gendertool.device.monitor import csv_fields
        from gendertool.files import CsvAppender

        if self.writer is not None:
            return
        try:
            self.writer = CsvAppender(self.path, csv_fields(labels), stream=sys.stdout if self.to_stdout else None)
        except (ValueError, OSError) as exc:
            self._refuse(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        self.labels = tuple(labels)
        for row in self.pending:
            self.write(row)
        self.pending.clear()

    def write(self, row: dict) -> None:
        from gendertool.device.monitor import csv_row

        if self.writer is None:
            self.pending.append(row)
            return
        self.writer.write(csv_row(row, self.labels, self.run))

    def close(self) -> None:
        if self.writer is None and self.pending:  # no hello ever came: number the classes
            self.start(tuple(f"class_{i}" for i in range(len(self.pending[0].get("probs") or ()))))
        if self.writer is not None:
            self.writer.close()


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` is the file open as ``fd`` (``/dev/stdout`` is standard output)."""
    import os

    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except (OSError, ValueError):
        return False


def _is_devnull(path: Path) -> bool:
    import os

    try:
        return os.path.samestat(os.stat(path), os.stat(os.devnull))
    except OSError:
        return False


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
    from gendertool.project.manifest import DEFAULT_BUILD_DIR, load_build_manifest

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






