"""Issue 11.2: hostile streams through StreamParser and DeviceClient (CI-sized; the >= 10,000-stream
run with its figures is benchmarks/fuzz_streams.py). Generator and checker: tests/stream_fuzz.py."""

from __future__ import annotations

import io
import random

from gendertool import protocol as p

import stream_fuzz as fz


def test_fuzzed_streams_lose_no_record_raise_nothing_and_echo_no_control_character():
    fig = fz.run(1000, seed=11, max_pieces=10)
    assert fig.ok, (fig.summary(), fig.first_failures)
    assert fig.records_embedded > 2000 and fig.log_lines > 1000  # the streams did carry both
    assert fig.recovered_parser == fig.recovered_client == fig.records_embedded
    assert fig.exceptions == fig.hangs == fig.control_echoed == fig.documented_errors == 0
    assert fig.max_buffered <= p.MAX_LINE


def test_the_checker_counts_a_lost_record_and_an_echoed_control_character(monkeypatch):
    rng = random.Random(1)
    stream = fz.make_stream(rng, max_pieces=3)
    missing = p.encode_record(p.Ack("never sent", False))
    fig = fz.Figures()
    fz.run_one(fz.Stream(stream.data, [*stream.expected, missing], False), rng, fig)
    assert fig.lost == 2  # once by the parser, once by the client

    from rich.console import Console

    def plain():
        buf = io.StringIO()
        return Console(file=buf, force_terminal=False, width=200), buf

    monkeypatch.setattr(fz, "_console", plain)
    fig = fz.Figures()
    esc = fz.Stream(p.encode_record(p.Ack("\x1b[2J", False)), [p.encode_record(p.Ack("\x1b[2J", False))], False)
    fz.run_one(esc, rng, fig)
    assert fig.control_echoed > 0 and fig.lost == 0
