"""StreamParser fuzzed with hypothesis: never raises, never buffers beyond its bound, loses no
intact record, and parses any chunking of a stream exactly like the whole stream."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gendertool import protocol as p

MAX_LINE = 256  # small bound so overlong lines are common

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
ints = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)

records = st.one_of(
    st.builds(p.Ack, texts, st.booleans()),
    st.builds(p.ErrorRecord, st.sampled_from(p.ERROR_CODES), texts, texts, st.booleans()),
    st.builds(
        p.Result, u32, st.sampled_from(p.SOURCES), st.integers(-1, 9), st.integers(0, 9), texts,
        st.lists(st.integers(-128, 127), min_size=1, max_size=4).map(tuple),
        st.lists(st.floats(0, 1, width=32), min_size=1, max_size=4).map(tuple),
        u32, u32, st.booleans(),
    ),  # fmt: skip
    # parallel arrays of one length: (pre_us, invoke_us) pairs split in two
    st.lists(st.tuples(u32, u32), min_size=1, max_size=8).flatmap(
        lambda runs: st.builds(p.BenchSample, u32, st.just(tuple(a for a, _ in runs)), st.just(tuple(b for _, b in runs)),
                               st.booleans())
    ),
    st.builds(p.ProfileOp, u32, texts, u32, st.booleans(), st.booleans()),
)
garbage = st.binary(max_size=40).filter(lambda b: b"\n" not in b)
log_text = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=60)


def _feed_all(parser: p.StreamParser, chunks: list[bytes]) -> list:
    out = []
    for c in chunks:
        out += parser.feed(c)
        assert parser.buffered <= parser.max_line
    assert parser.stats.max_buffered <= parser.max_line
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.integers(0, 4000), max_size=12))
def test_arbitrary_bytes_never_crash_and_chunking_does_not_matter(data, cuts):
    whole = p.StreamParser(max_line=MAX_LINE)
    a = _feed_all(whole, [data])
    split = p.StreamParser(max_line=MAX_LINE)
    b = _feed_all(split, _split(data, cuts))
    assert a == b
    sa, sb = whole.stats.as_dict(), split.stats.as_dict()
    sa.pop("max_buffered"), sb.pop("max_buffered")  # depends on the chunking by nature
    assert sa == sb


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(records, st.one_of(st.none(), garbage, log_text), st.booleans()),
        min_size=1,
        max_size=25,
    ),
    st.lists(st.integers(0, 100000), max_size=20),
)
def test_records_between_garbage_and_logs_are_never_lost(items, cuts):
    """Garbage/log text either glued in front of a record or on its own line: records survive."""
    stream = bytearray()
    sent = []
    for rec, noise, own_line in items:
        if isinstance(noise, str):
            noise = noise.encode("utf-8")
        line = p.encode_record(rec)
        if noise is not None:
            stream += noise + (b"\n" if own_line else b"")
        # max_line counts the bytes before the newline
        if len(line) - 1 + (0 if own_line or noise is None else len(noise)) <= MAX_LINE:
            sent.append(rec)
        stream += line
    parser = p.StreamParser(max_line=MAX_LINE)
    out = _feed_all(parser, _split(bytes(stream), cuts))
    got = [x for x in out if not isinstance(x, p.LogLine)]
    # floats travel with 4 decimals: compare through the wire encoding
    assert [p.encode_record(x) for x in got] == [p.encode_record(p.decode_line(p.encode_record(r))) for r in sent]
    assert parser.stats.bad_crc == parser.stats.bad_record == parser.stats.unknown_type == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=10), st.data())
def test_a_corrupted_byte_never_yields_a_wrong_record(recs, data):
    """Flip one byte anywhere: the damaged record is dropped (counted), the others survive."""
    lines = [p.encode_record(r) for r in recs]
    k = data.draw(st.integers(0, len(lines) - 1))
    pos = data.draw(st.integers(0, len(lines[k]) - 2))  # not the newline
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(lines[k])
    bad[pos] ^= flip
    stream = b"".join(lines[:k]) + bytes(bad) + b"\n" + b"".join(lines[k + 1 :])
    parser = p.StreamParser()
    got = [x for x in _feed_all(parser, [stream]) if not isinstance(x, p.LogLine)]
    good = [p.encode_record(p.decode_line(x)) for x in lines]
    enc = [p.encode_record(x) for x in got]
    others = good[:k] + good[k + 1 :]
    # CRC-32 catches every single-byte error and its trailer is lowercase hex only: a damaged
    # line can never decode, not even to a record equal to the good one
    assert enc == others
    s = parser.stats
    # counted, or (marker damaged) shown as a log line
    assert s.bad_crc + s.bad_frame + s.bad_record + s.unknown_type + s.partial + s.log_lines >= 1
