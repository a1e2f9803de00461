"""gendertool.protocol against the shared vectors (tests/vectors) and the doc's rules."""

from __future__ import annotations

import json
import math
import zlib

import pytest

from conftest import REPO
from gendertool import protocol as p

VEC = REPO / "tests" / "vectors"


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (VEC / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _chunks(vec: dict) -> list[bytes]:
    return [c["t"].encode("utf-8") if "t" in c else bytes.fromhex(c["x"]) for c in vec["chunks"]]


def _as_expect(item) -> dict:
    if isinstance(item, p.LogLine):
        return {"log": item.text}
    return {"record": item.TYPE, "fields": p.record_to_dict(item)}


def _close(a, b, kind: str) -> bool:
    if kind in ("f4", "f1"):
        return abs(a - b) <= 0.5 * 10 ** -int(kind[1:]) + 1e-12
    if kind == "g":
        return math.isclose(a, b, rel_tol=1e-8)
    return a == b


RECORDS = _load("records.jsonl")
STREAMS = _load("streams.jsonl")
COMMANDS = _load("commands.jsonl")


def test_vectors_cover_every_record_type_and_error_case():
    assert {v["type"] for v in RECORDS} == set(p.RECORD_TYPES)
    counters = set()
    for s in STREAMS:
        counters |= {k for k, v in s["stats"].items() if v}
    assert {"overlong", "bad_frame", "bad_crc", "unknown_type", "bad_record", "partial"} <= counters
    assert {c["expect"].get("error") for c in COMMANDS} >= {"unknown_cmd", "bad_args", "too_large", "line_too_long"}


def test_doc_example_line_is_valid():
    doc = (REPO / "docs" / "protocol.md").read_text()
    example = next(line for line in doc.splitlines() if line.startswith("@GT ack"))
    assert p.decode_line(example.encode()) == p.Ack("start", False)
    body = example[4 : example.rindex("*")].encode()
    assert example.endswith("*%08x" % zlib.crc32(body))


@pytest.mark.parametrize("vec", RECORDS, ids=[v["name"] for v in RECORDS])
def test_record_vector_encode_and_decode(vec):
    line = vec["line"].encode("utf-8")
    rec = p.record_from_dict(vec["type"], vec["fields"])
    assert p.encode_record(rec) == line
    back = p.decode_line(line)
    assert type(back) is type(rec)
    assert p.encode_record(back) == line  # decoding then encoding is stable
    for key, attr, kind in rec.SPEC:
        a, b = getattr(back, attr), getattr(rec, attr)
        if kind == "[f4]":
            assert all(_close(x, y, "f4") for x, y in zip(a, b)) and len(a) == len(b)
        else:
            assert _close(a, b, kind) if kind in ("f4", "f1", "g") else a == b, key
    assert len(line) <= p.MAX_RECORD + 1


@pytest.mark.parametrize("vec", STREAMS, ids=[v["name"] for v in STREAMS])
def test_stream_vector_whole_and_split(vec):
    chunks = _chunks(vec)
    expected_stats = {k: 0 for k in ("records", "log_lines", "overlong", "bad_frame", "bad_crc", "unknown_type",
                                     "bad_record", "partial")}
    expected_stats.update(vec["stats"])

    def run(pieces: list[bytes]):
        parser = p.StreamParser(max_line=vec["max_line"])
        out = []
        for c in pieces:
            out += parser.feed(c)
            assert parser.buffered <= vec["max_line"]
        stats = parser.stats.as_dict()
        return [_as_expect(x) for x in out], {k: stats[k] for k in expected_stats}, parser

    got, stats, parser = run(chunks)
    assert got == vec["expect"]
    assert stats == expected_stats
    assert parser.stats.bytes == sum(map(len, chunks))
    # the same bytes fed one at a time parse the same
    whole = b"".join(chunks)
    got1, stats1, _ = run([whole[i : i + 1] for i in range(len(whole))])
    assert (got1, stats1) == (got, stats)


@pytest.mark.parametrize("vec", COMMANDS, ids=[c["name"] for c in COMMANDS])
def test_command_vector(vec):
    reader = p.CommandReader()
    data = vec["line"].encode("utf-8")
    cmds, used = reader.push_line_bytes(data)
    assert used == len(data)
    assert [c.as_dict() for c in cmds] == [vec["expect"]]
    if "cmd" in vec["expect"] and vec["line"] == vec["line"].strip() + "\n" and "  " not in vec["line"]:
        # canonical lines are what the host sends
        args = ["once" if k == "once" else v for k, v in vec["expect"].items() if k not in ("cmd", "crc", "len", "w", "h")]
        if vec["expect"]["cmd"] != "infer":
            assert p.encode_command(vec["expect"]["cmd"], *args) == data


def test_sync_barrier_is_the_vector_line_and_rejects_other_tokens():
    vec = next(c for c in COMMANDS if c["name"] == "sync_barrier")
    assert p.encode_sync(vec["expect"]["word"]) == vec["line"].encode()
    for bad in ("sync0123abc", "sync0123ABCD", "ping", "sync0123abcd0"):
        with pytest.raises(ValueError, match=r"is not 'sync' \+ 8 lowercase hex digits"):
            p.encode_sync(bad)


def test_upload_vectors():
    for u in _load("uploads.jsonl"):
        rx = p.UploadReceiver(u["declared_len"], int(u["declared_crc"], 16))
        used = sum(rx.feed(bytes.fromhex(c)) for c in u["chunks"])
        state = "incomplete" if not rx.complete else "ok" if rx.crc_ok else "upload_crc"
        assert (state, used) == (u["expect"], u["used"]), u["name"]


def test_encode_infer_matches_parse():
    payload = bytes(range(12))
    line = p.encode_infer(2, 2, payload)
    cmd = p.parse_command(line)
    assert cmd.args == {"w": 2, "h": 2, "len": 12, "crc": "%08x" % zlib.crc32(payload)}
    with pytest.raises(ValueError, match="outside 1..640"):
        p.encode_infer(641, 1, bytes(641 * 3))
    with pytest.raises(ValueError, match="expected 12"):
        p.encode_infer(2, 2, bytes(11))


def test_marker_in_strings_is_escaped_so_records_stay_parseable():
    rec = p.ErrorRecord("internal", "", "x @GT ack {} *12345678", False)
    line = p.encode_record(rec)
    assert line.count(p.MARKER) == 1
    assert p.StreamParser().feed(line) == [rec]


def test_non_finite_floats_encode_as_null_and_decode_as_nan():
    rec = p.Result(1, "sample", 0, 0, "a", (1,), (math.nan,), 0, 0, False)
    line = p.encode_record(rec)
    assert b'"probs":[null]' in line
    assert math.isnan(p.decode_line(line).probs[0])


def test_parser_rejects_tiny_bound():
    with pytest.raises(ValueError):
        p.StreamParser(max_line=4)


def test_reset_counts_a_pending_partial_record_once():
    parser = p.StreamParser()
    parser.feed(b'@GT result {"seq":1')
    parser.reset()
    parser.reset()
    assert parser.stats.partial == 1
    assert parser.feed(b"I (1) boot\n") == [p.LogLine("I (1) boot")]


def test_bsample_arrays_must_have_one_length():
    with pytest.raises(ValueError, match="2 pre_us but 1 invoke_us"):
        p.BenchSample(0, (800, 801), (45000,), False)
    with pytest.raises(ValueError, match="bsample"):
        p.record_from_dict("bsample", {"first": 0, "pre_us": [1], "invoke_us": [], "simulated": False})
    with pytest.raises(p.FrameError, match="bad_record"):
        p.decode_line(b"@GT " + _frame_body(b'bsample {"first":0,"pre_us":[],"invoke_us":[5],"simulated":true}'))


def _frame_body(body: bytes) -> bytes:
    return body + b"*%08x\n" % zlib.crc32(body)


def test_every_digit_of_the_crc_is_checked():
    """Each of the 8 hex digits, replaced by each other hex digit, is a bad_crc (not a record)."""
    line = p.encode_record(p.Ack("info", False)).rstrip(b"\n")
    star = line.rindex(b"*")
    assert p.decode_line(line) == p.Ack("info", False)
    for pos in range(star + 1, star + 9):
        for digit in b"0123456789abcdef":
            if digit == line[pos]:
                continue
            bad = line[:pos] + bytes([digit]) + line[pos + 1 :]
            with pytest.raises(p.FrameError) as info:
                p.decode_line(bad)
            assert info.value.kind == "bad_crc", (pos - star, chr(digit))


def test_crc_is_the_zlib_crc32_of_type_and_payload():
    # an independent computation of the trailer: zlib over everything between "@GT " and "*"
    import zlib

    line = p.encode_record(p.Ack("bench", True))
    body = line[len(b"@GT ") : line.rindex(b"*")]
    assert line.endswith(b"*%08x\n" % zlib.crc32(body)) and body.startswith(b"ack {")


def test_frame_without_a_type_and_a_crlf_line():
    body = b'ack{"cmd":"x","simulated":false}'  # no space after the type
    with pytest.raises(p.FrameError, match="no record type"):
        p.decode_line(b"@GT %s*%08x" % (body, zlib.crc32(body)))
    line = p.encode_record(p.Ack("info", False))
    assert p.decode_line(line.rstrip(b"\n") + b"\r\n") == p.Ack("info", False)  # a CRLF terminal


def test_max_buffered_is_the_longest_unfinished_line():
    parser = p.StreamParser(max_line=256)
    parser.feed(b"x" * 40)
    parser.feed(b"y" * 60)  # 100 pending
    parser.feed(b"\n" + b"z" * 30)  # line done, 30 pending
    assert parser.stats.max_buffered == 100 and parser.buffered == 30
