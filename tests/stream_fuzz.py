"""Seeded generator and checker of hostile device streams (issue 11.2), shared by
tests/test_stream_fuzz.py (a CI-sized run) and benchmarks/fuzz_streams.py (>= 10,000 streams).

A stream is built line by line so the records that must survive are known exactly: a valid
record on its own line, or glued behind junk without a newline, is expected back when its
whole line fits the protocol's line bound. Around them: cut records, records with a flipped
byte, random binary, NUL runs, oversize lines, escape-laden text, and lines ending in CRLF.
Every stream goes through StreamParser and through DeviceClient (over a scripted transport,
sometimes while a command waits for its reply), in random chunks; every log line and record
text is printed through the CLI's console to check that no control character comes out.
"""

from __future__ import annotations

import io
import random
import re
import signal
import time
from dataclasses import dataclass, field

from gendertool import protocol as p

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = ("\x1b[2J", "\x1b]0;t\x07", "\x9b6n", "\x00", "\x07", "\u202e", "\x7f", "\r", "\x08", "\x1bP", "\x90")


class Hang(Exception):
    pass


@dataclass
class Figures:
    streams: int = 0
    bytes: int = 0
    records_embedded: int = 0  # valid records the streams carried (each expected back twice: parser + client)
    recovered_parser: int = 0
    recovered_client: int = 0
    lost: int = 0
    wrong: int = 0  # a record that was not sent, or out of order
    exceptions: int = 0  # anything but the documented DeviceError
    documented_errors: int = 0
    hangs: int = 0
    control_echoed: int = 0
    max_buffered: int = 0
    log_lines: int = 0
    seconds: float = 0.0
    first_failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.first_failures) < 5:
            self.first_failures.append(what)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.exceptions or self.hangs or self.control_echoed)

    def summary(self) -> str:
        return (f"{self.streams} streams, {self.bytes / 1e6:.1f} MB; {self.records_embedded} valid records embedded, "
                f"recovered {self.recovered_parser} by StreamParser and {self.recovered_client} by DeviceClient; "
                f"lost {self.lost}, wrong {self.wrong}; exceptions {self.exceptions} (documented DeviceError "
                f"{self.documented_errors}), hangs {self.hangs}, control characters echoed {self.control_echoed}; "
                f"{self.log_lines} log lines shown; largest parser buffer {self.max_buffered} B "
                f"(bound {p.MAX_LINE}); {self.seconds:.1f} s")


def _text(rng: random.Random, n: int = 12) -> str:
    parts = [rng.choice("abcdefgh xyz_-.:/") for _ in range(rng.randint(0, n))]
    for _ in range(rng.randint(0, 3)):
        parts.insert(rng.randint(0, len(parts)), rng.choice(HOSTILE))
    return "".join(parts)


def _record(rng: random.Random) -> p.Record:
    k = rng.randrange(6)
    u32 = lambda: rng.randrange(2**32)  # noqa: E731
    if k == 0:
        return p.Result(u32(), rng.choice(p.SOURCES), rng.randint(-1, 9), rng.randint(0, 1), _text(rng),
                        (rng.randint(-128, 127), rng.randint(-128, 127)), (0.25, 0.75), u32(), u32(), rng.random() < 0.5)
    if k == 1:
        n = rng.randint(1, p.BSAMPLE_BATCH)
        return p.BenchSample(u32(), tuple(u32() for _ in range(n)), tuple(u32() for _ in range(n)), False)
    if k == 2:
        code = rng.choice([c for c in p.ERROR_CODES if c != p.BUSY])  # busy is the documented error, not data
        return p.ErrorRecord(code, _text(rng, 6), _text(rng, 30), False)
    if k == 3:
        return p.Ack(rng.choice(["info", "start", "stop", "bench", _text(rng, 6)]), False)
    if k == 4:
        return p.ProfileOp(u32(), _text(rng, 10), u32(), rng.random() < 0.5, False)
    return hello(rng)


def hello(rng: random.Random) -> p.Hello:
    return p.Hello(
        p.PROTO_VERSION, "0.1.0", _text(rng, 10), "esp32s3", _text(rng, 16), "ab" * 32, (_text(rng, 6), _text(rng, 6)),
        (1, 64, 64, 3), 0.0078125, 0, 0.00390625, -128, 180000, 170000, 250000, 8000000, 240, "v5.5.5", "1.3.8",
        "1.1.2", 8, "sample", True, False, sample_names=(_text(rng, 8), _text(rng, 8)), sample_truth=(0, -1),
    )


def _junk(rng: random.Random, n: int) -> bytes:
    """Bytes without a newline or a marker: binary, NUL runs, escape-laden text."""
    k = rng.randrange(4)
    if k == 0:
        data = rng.randbytes(n)
    elif k == 1:
        data = b"\x00" * n
    elif k == 2:
        data = "".join(_text(rng, 8) for _ in range(4)).encode("utf-8") * (n // 16 + 1)
    else:
        data = b"\x1b[0;32mI (%d) app: " % rng.randrange(10**6) + b"\x9b\x1b]0;x\x07" * (n // 8)
    data = data.replace(b"\n", b" ").replace(p.MARKER, b"@gt ")
    return (data + b"." * (n - len(data)))[:n]  # exactly n: an oversize line must be oversize


@dataclass
class Stream:
    data: bytes
    expected: list[bytes]  # wire encodings of the records that must come back, in order
    info_reply: bool  # an `ack info` + `hello` pair is in the stream, for a waiting command


def make_stream(rng: random.Random, max_line: int = p.MAX_LINE, max_pieces: int = 40) -> Stream:
    out = bytearray()
    expected: list[bytes] = []
    info_reply = rng.random() < 0.3
    pieces = rng.randint(1, max_pieces)
    info_at = rng.randrange(pieces) if info_reply else -1
    for i in range(pieces):
        eol = b"\r\n" if rng.random() < 0.3 else b"\n"
        kind = rng.random()
        if i == info_at:
            for rec in (p.Ack("info", False), hello(rng)):
                line = p.encode_record(rec)
                out += line
                expected.append(line)
            continue
        rec_line = p.encode_record(_record(rng))
        body = rec_line[:-1] + eol  # the record, with this line's ending
        if kind < 0.35:  # a record on its own line
            out += body
            expected.append(rec_line)
        elif kind < 0.5:  # junk (binary, NULs, escapes) glued in front on the same line
            junk = _junk(rng, rng.randint(1, 600))
            out += junk + body
            if len(junk) + len(body) - len(eol) + (1 if eol == b"\r\n" else 0) <= max_line:
                expected.append(rec_line)
        elif kind < 0.6:  # a record cut short (a reset), then a whole one on the same line
            cut = rng.randint(1, len(rec_line) - 2)
            nxt = p.encode_record(_record(rng))
            out += rec_line[:cut] + nxt[:-1] + eol
            if cut + len(nxt) - 1 + (1 if eol == b"\r\n" else 0) <= max_line:
                expected.append(nxt)
        elif kind < 0.7:  # one byte of a record flipped (never its newline): dropped, never misread
            bad = bytearray(body)
            j = rng.randrange(len(rec_line) - 1)
            bad[j] ^= rng.randint(1, 255)
            if bad[j] == 0x0A:  # a flip to newline splits the line: still no valid record
                bad[j] = 0x0B
            out += bad
        elif kind < 0.8:  # an oversize line (binary or text), perhaps ending in a record
            junk = _junk(rng, rng.randint(max_line + 1, 3 * max_line))
            out += junk + (body if rng.random() < 0.5 else eol)
        elif kind < 0.9:  # a junk line: binary, NUL run, escape sequences
            out += _junk(rng, rng.randint(1, 300)) + eol
        else:  # random bytes, newlines included
            out += rng.randbytes(rng.randint(1, 200)).replace(p.MARKER, b"@gt ") + eol
    if rng.random() < 0.2:  # ends in the middle of a record
        tail = p.encode_record(_record(rng))
        out += tail[: rng.randint(1, len(tail) - 1)]
    return Stream(bytes(out), expected, info_reply)


def chunks_of(rng: random.Random, data: bytes) -> list[bytes]:
    out, k = [], 0
    while k < len(data):
        step = rng.choice((1, 7, 64, 512, 4096, rng.randint(1, 3000)))
        out.append(data[k : k + step])
        k += step
    return out


class ScriptedTransport:
    """What DeviceClient needs of a Transport: the stream's chunks, then silence."""

    port = "fuzz://stream"

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written = bytearray()

    def read(self, timeout=None) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def write(self, data: bytes) -> None:
        self.written += data

    def reconnect(self, timeout: float = 10.0, **kw) -> None:
        raise AssertionError("a scripted stream never drops")

    def close(self) -> None:
        pass


def _console():
    from gendertool.present.console import SafeConsole

    buf = io.StringIO()
    return SafeConsole(file=buf, force_terminal=False, width=200, highlight=False, emoji=False), buf


def _show(console, items) -> None:
    """What the monitor would print: log lines (escaped, bounded) and every record string field."""
    from gendertool.device.monitor import SHOWN_LINE
    from gendertool.text import shown_line

    lines = []
    for it in items:
        if isinstance(it, p.LogLine):
            lines.append(shown_line(it.text, SHOWN_LINE))
        elif hasattr(it, "SPEC"):
            lines.append(" ".join(str(v) for v in p.record_to_dict(it).values()))
    if lines:  # one print per stream: Rich's layout is the slow part, the escaping is the same
        console.print("\n".join(lines), markup=False, soft_wrap=True)


def run_one(stream: Stream, rng: random.Random, figures: Figures, *, hang_s: float = 10.0) -> None:
    from gendertool.errors import DeviceError
    from gendertool.device.link import DeviceClient

    figures.streams += 1
    figures.bytes += len(stream.data)
    figures.records_embedded += len(stream.expected)
    console, buf = _console()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_s)
    try:
        # 1. the parser alone
        parser = p.StreamParser()
        got = []
        for c in chunks_of(rng, stream.data):
            items = parser.feed(c)
            figures.max_buffered = max(figures.max_buffered, parser.buffered)
            got += items
        _check(figures, "parser", stream, got)
        _show(console, got)
        # 2. DeviceClient, sometimes with a command waiting for its reply in the noise
        client = DeviceClient(ScriptedTransport(chunks_of(rng, stream.data)))
        expected = stream.expected
        items = []
        if stream.info_reply:  # `info` takes its ack and the next hello; the rest come through poll()
            h = client.info(timeout=hang_s / 2)
            expected, consumed = _without_reply(expected)
            if p.encode_record(h) != consumed:
                figures.wrong += 1
                figures.fail(f"info() returned {p.encode_record(h)[:60]!r}, not {consumed[:60]!r}")
            _show(console, [h])
        while client.transport.chunks or client._fresh or client._backlog:
            items += client.poll(0)
        _check(figures, "client", Stream(stream.data, expected, False), items)
        if stream.info_reply:
            figures.recovered_client += 2
        _show(console, items)
        figures.log_lines += sum(isinstance(x, p.LogLine) for x in got)
    except Hang:
        figures.hangs += 1
        figures.fail("hang")
    except DeviceError as exc:  # the documented error (the client's own checks)
        figures.documented_errors += 1
        figures.fail(f"DeviceError: {exc}")
        figures.lost += len(stream.expected)
    except Exception as exc:  # noqa: BLE001 - counting them is the point
        figures.exceptions += 1
        figures.fail(f"{type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    bad = UNSAFE.findall(buf.getvalue())
    if bad:
        figures.control_echoed += len(bad)
        figures.fail(f"echoed {bad[:3]!r}")


def _alarm(signum, frame):
    raise Hang()


_ACK_INFO = p.encode_record(p.Ack("info", False))


def _without_reply(expected: list[bytes]) -> tuple[list[bytes], bytes]:
    """``expected`` less what DeviceClient.info() consumes (the first ack of info, the next hello)."""
    rest = list(expected)
    i = rest.index(_ACK_INFO)
    del rest[i]
    j = next(k for k in range(i, len(rest)) if rest[k].startswith(b"@GT hello "))
    return rest, rest.pop(j)


def _check(figures: Figures, who: str, stream: Stream, got: list) -> None:
    lines = [p.encode_record(x) for x in got if not isinstance(x, p.LogLine)]
    want = [p.encode_record(p.decode_line(x)) for x in stream.expected]  # floats travel with fixed decimals
    if lines == want:
        if who == "parser":
            figures.recovered_parser += len(want)
        else:
            figures.recovered_client += len(want)
        return
    from collections import Counter

    missing = list((Counter(want) - Counter(lines)).elements())
    extra = list((Counter(lines) - Counter(want)).elements())
    figures.lost += len(missing)
    figures.wrong += len(extra) or (0 if missing else 1)  # same records, other order
    figures.fail(f"{who}: missing {len(missing)}, unexpected {len(extra)}: {(missing or extra)[:1]!r}")


def run(streams: int, seed: int = 0, max_pieces: int = 40) -> Figures:
    rng = random.Random(seed)
    figures = Figures()
    t0 = time.perf_counter()
    for _ in range(streams):
        run_one(make_stream(rng, max_pieces=max_pieces), rng, figures)
    figures.seconds = time.perf_counter() - t0
    return figures
