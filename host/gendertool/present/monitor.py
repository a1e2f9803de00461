"""The monitor's terminal view: the live region (latest result, latency, classes, log), its lines, the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gendertool.device.monitor import (
    MonitorSink,
    json_row,
    result_row,
    row_labels,
    sample_verdict,
)
from gendertool.present.console import console, err_console
from gendertool.present.progress import live_view
from gendertool.present.tables import format_duration, format_ms, kv_table, log_panel
from gendertool.protocol import arena_warning
from gendertool.text import count


def verdict_text(v) -> str:
    """`  sample NAME (true LABEL) ok|WRONG` for a built-in sample, '' otherwise."""
    if v is None:
        return ""
    if v.truth is None:
        return f"  sample {v.name} (true label unknown)"
    return f"  sample {v.name} (true {v.truth}) {'ok' if v.correct else 'WRONG'}"


class MonitorView:
    """Draws a monitor session: a live view on a terminal, plain lines otherwise."""

    def __init__(self, *, json_out, csv_out, text_results: bool, run: str = "") -> None:

        self.run = run
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

                view.session = session
                if view.json_out is not None or view.csv_out is not None:
                    row = result_row(r, session.hello)
                    if view.json_out is not None:
                        view.json_out.write(json_row(row, row_labels(session.hello, row), view.run))
                    if view.csv_out is not None:
                        view.csv_out.write(row)
                if view.text_results and (view._live is None or not console.is_terminal):
                    console.print(
                        f"#{r.seq:<6} {r.label:<10} {r.confidence:6.1%}  invoke {r.invoke_us / 1000:7.2f} ms  pre {r.pre_us / 1000:6.2f} ms"
                        + verdict_text(sample_verdict(r, session.hello)),
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


        s = self.session
        if s is None:
            return log_panel([], height=10)
        r = s.latest
        rows = []
        if r is not None:

            rows += [
                ("result", f"#{r.seq}  {r.label}  (class {r.class_index})" + verdict_text(sample_verdict(r, s.hello))),
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


def present_monitor_summary(summary, out, csv_file: Path | None, csv_out: Any = None) -> None:

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
        where = "standard output" if csv_out is not None and csv_out.to_stdout else str(csv_file)
        kept = csv_out.writer.count if csv_out is not None and csv_out.writer is not None else 0
        if csv_out is not None and kept < summary.results:  # a write failed: say what the file holds
            where += f" (holds {kept} of these {summary.results} results)"
        rows.append(("csv", where))
    if summary.interrupted:
        rows.append(("stopped", "Ctrl-C"))
    out.print(kv_table(rows, title="Monitor summary"))
