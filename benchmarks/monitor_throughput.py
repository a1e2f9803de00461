"""Throughput of `gendertool monitor` against the virtual device over real TCP (results/s).

The virtual device replays cached results with no period (``replay=True, period_ms=0``)
so the figure measures the host side: socket reads, StreamParser, statistics, and the
--json / --csv writers. Optional garbage between records checks nothing is lost.

    python benchmarks/monitor_throughput.py [-n 20000] [--garbage-every 1]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

from gendertool.device.monitor import MonitorSink, csv_fields, csv_row, new_run_id, result_row, run_monitor
from gendertool.files import CsvAppender, JsonLinesWriter
from gendertool.device.sim import SimDevice, SimFaults, SimServer


class _Writers(MonitorSink):
    def __init__(self, labels, json_out=None, csv_out=None) -> None:
        self.labels, self.json_out, self.csv_out = labels, json_out, csv_out
        self.run = new_run_id()

    def result(self, r, session) -> None:
        if self.json_out or self.csv_out:
            row = result_row(r)
            if self.json_out:
                self.json_out.write(row)
            if self.csv_out:
                self.csv_out.write(csv_row(row, self.labels, self.run))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="results per run")
    ap.add_argument("--garbage-every", type=int, default=1, help="garbage bytes before every Nth record (0: none)")
    args = ap.parse_args()

    device = SimDevice(period_ms=0, replay=True, faults=SimFaults(garbage_every=args.garbage_every, seed=1))
    with SimServer(device) as server, tempfile.TemporaryDirectory() as tmp:
        for mode in ("stats only", "--json", "--csv"):
            buf = io.StringIO()
            csv_out = CsvAppender(Path(tmp) / f"{mode.strip('-')}.csv", csv_fields(device.model.labels)) if mode == "--csv" else None
            sink = _Writers(device.model.labels, JsonLinesWriter(buf) if mode == "--json" else None, csv_out)
            t0 = time.perf_counter()
            summary = run_monitor(server.url, sink, count=args.n, timeout=10)
            dt = time.perf_counter() - t0
            if csv_out:
                csv_out.close()
            if mode == "--json":
                seqs = [json.loads(line)["seq"] for line in buf.getvalue().splitlines()]
                assert len(seqs) == args.n
            print(
                f"{mode:<11} {summary.results} results in {dt:.2f} s = {summary.results / dt:,.0f} results/s; "
                f"missing seq {summary.lost}, parser {json.dumps({k: v for k, v in summary.parser.items() if v and k not in ('bytes', 'lines', 'records', 'log_lines', 'max_buffered')})}"
            )


if __name__ == "__main__":
    main()
