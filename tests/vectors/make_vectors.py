"""Regenerate the shared protocol test vectors (tests/vectors/*.jsonl).

Run: /tmp/dev/bin/python tests/vectors/make_vectors.py
Record lines come from the Python encoder and are checked byte for byte against the C++
encoder by tests/test_firmware_protocol.py; every stream's expected parse and counters
below are written out by hand, not computed by the parser under test.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from gendertool import protocol as p

HERE = Path(__file__).resolve().parent
SHA = "3f" * 32


def f32(*xs: float) -> tuple[float, ...]:
    """Probabilities are float32 on both sides: vectors hold float32-exact values."""
    return tuple(float(np.float32(x)) for x in xs)


RECORDS = [
    ("ack_start", p.Ack("start", False)),
    ("ack_sim", p.Ack("infer", True)),
    ("error_crc", p.ErrorRecord("upload_crc", "infer", "upload CRC 0badf00d != 12345678, not inferred", False)),
    ("error_escapes", p.ErrorRecord("unknown_cmd", "b\"a\\d", "tab\there\nnew \x01 ctl @GT marker", False)),
    ("error_spontaneous", p.ErrorRecord("camera_failed", "", "esp_camera_fb_get() returned NULL", False)),
    (
        "hello_device",
        p.Hello(2, "0.1.0", "xiao_esp32s3", "esp32s3", "gender_mbv2_035_64", SHA, ("female", "male"), (1, 64, 64, 3),
                0.0078125, -1, 0.00390625, -128, 262144, 181234, 301020, 8123456, 240, "v5.5.5", "1.3.4", "1.1.2", 4,
                "sample", True, False,
                ("female_art-4979554", "female_girl-1037886", "male_ai-generated-7934910", "x@\u00e9"), (0, 0, 1, -1),
                arena_in="internal", camera=False, tx_dropped=0),
    ),
    (
        # the arena fell back to PSRAM, the camera runs, and 17 lines were dropped while the host did not read
        "hello_psram_camera",
        p.Hello(2, "0.1.0", "xiao_esp32s3_sense", "esp32s3", "m", SHA, ("female", "male"), (1, 64, 64, 3),
                0.0078125, -1, 0.00390625, -128, 400000, 390000, 120000, 7000000, 240, "v5.5.3", "1.3.8", "1.1.2", 0,
                "camera", True, False, (), (), arena_in="psram", camera=True, tx_dropped=17),
    ),
    (
        "hello_utf8_labels",
        p.Hello(2, "0.1.0-dev", "sim", "host", "m", SHA, ("femme", "homme \u00e9t\u00e9", "\u5973\u6027", "a\"b"),
                (1, 96, 96, 3), float(np.float32(0.0235294122)), 12, float(np.float32(1e-05)), 0, 100000, 0, 0, 0, 0, "", "", "", 0, "upload", False, True,
                arena_in="host"),
    ),
    (
        "result_sample",
        p.Result(7, "sample", 2, 1, "male", (-100, 100), f32(0.0, 1.0), 812, 45678, False),
    ),
    (
        "result_upload",
        p.Result(4294967295, "upload", -1, 0, "female", (25, -25), f32(0.6225, 0.3775), 0, 123, True),
    ),
    ("result_rounding", p.Result(0, "camera", -1, 1, "male", (-1, 0), f32(0.49995, 0.50005), 1, 2, False)),
    ("bsample_one", p.BenchSample(0, (812,), (45678,), False)),
    ("bsample_batch", p.BenchSample(32, tuple(800 + 3 * i for i in range(32)), tuple(45000 + 37 * i for i in range(32)),
                                    False)),
    # the longest bsample a device can send: a full batch of the largest uint32 times
    ("bsample_max", p.BenchSample(4294967295, (4294967295,) * 32, (4294967295,) * 32, True)),
    ("bsummary", p.BenchSummary(100, 10, 45001, 46999, 45678.5, 4567850, False, "internal", False, 0)),
    ("bsummary_round", p.BenchSummary(3, 0, 1, 2, 1.25, 4, True, "host", False, 0)),
    ("bsummary_psram_camera", p.BenchSummary(32, 400, 61000, 64000, 62000.0, 1984000, False, "psram", True, 4294967295)),
    ("progress_bench", p.Progress("bench", 25, 440, False)),
    ("progress_selftest", p.Progress("selftest", 4294967295, 4294967295, True)),
    # input tensor pieces: base64 padding of 1, 2 and 3 bytes, and the largest piece a device sends
    ("input_one_byte", p.InputChunk(7, 0, 3, "gA==", False)),
    ("input_two_bytes", p.InputChunk(7, 1, 3, "AH8=", False)),
    ("input_three_bytes", p.InputChunk(0, 0, 3, "/wGA", True)),
    *[(f"input_chunk_{k}", c) for k, c in enumerate(
        p.InputChunk.chunks(4294967295, bytes((i * 7 + 128) & 0xFF for i in range(12288)), False)) if k in (0, 11)],
    ("profile_op", p.ProfileOp(0, "CONV_2D", 1234, False, False)),
    ("profile_est", p.ProfileOp(63, "DEPTHWISE_CONV_2D", 0, True, True)),
    ("psummary", p.ProfileSummary(64, 45000, 45678, False, False)),
    (
        "selftest_pass",
        p.SelfTest(True, 2, 0, (p.SelfTestEntry(0, 0, 0, 0, True), p.SelfTestEntry(1, 1, 1, 1, True)), False),
    ),
    (
        "selftest_fail",
        p.SelfTest(False, 3, 1, (p.SelfTestEntry(0, 0, 0, 0, True), p.SelfTestEntry(1, 1, 0, 37, False),
                                 p.SelfTestEntry(2, 1, 1, 0, True)), False),
    ),
    ("selftest_empty", p.SelfTest(True, 0, 0, (), True)),
]


def T(s: str) -> dict:
    return {"t": s}


def X(b: bytes) -> dict:
    return {"x": b.hex()}


def line(name: str) -> str:
    return dict((n, p.encode_record(r)) for n, r in RECORDS)[name].decode("utf-8")


def rec(name: str) -> dict:
    r = dict(RECORDS)[name]
    return {"record": r.TYPE, "fields": p.record_to_dict(r)}


def frame(body: bytes, crc: int | None = None) -> bytes:
    c = zlib.crc32(body) if crc is None else crc
    return b"@GT " + body + b"*%08x\n" % c


def streams() -> list[dict]:
    ack, res, bs = line("ack_start"), line("result_sample"), line("bsample_one")
    log1 = "I (312) gendertool: model ready, arena 181234 bytes"
    log_color = "\x1b[0;32mI (1021) app: source=sample\x1b[0m"
    s: list[dict] = []

    def add(name, chunks, expect, stats, max_line=p.MAX_LINE):
        s.append({"name": name, "chunks": chunks, "max_line": max_line, "expect": expect, "stats": stats})

    add("single_record", [T(ack)], [rec("ack_start")], {"records": 1})
    add("interleaved_logs", [T(log1 + "\n" + res + log_color + "\r\n" + ack)],
        [{"log": log1}, rec("result_sample"), {"log": log_color}, rec("ack_start")],
        {"records": 2, "log_lines": 2})
    add("crlf", [T(ack.replace("\n", "\r\n") + "I (5) x: y\r\n")], [rec("ack_start"), {"log": "I (5) x: y"}],
        {"records": 1, "log_lines": 1})
    add("split_every_byte", [T(c) for c in res], [rec("result_sample")], {"records": 1})
    add("split_inside_crc_and_crlf", [T(ack[:-5]), T(ack[-5:-1] + "\r"), T("\n")], [rec("ack_start")], {"records": 1})
    add("partial_line_pending", [T(ack + res[:40])], [rec("ack_start")], {"records": 1})
    add("blank_lines_skipped", [T("\n\r\n   \n" + ack + "\n")], [rec("ack_start")], {"records": 1})
    add("log_without_newline_then_record", [T("I (9) wifi: connecting..." + ack)],
        [{"log": "I (9) wifi: connecting..."}, rec("ack_start")], {"records": 1, "log_lines": 1})
    add("reset_mid_record_then_record", [T(res[:60]), T(ack)], [rec("ack_start")], {"records": 1, "partial": 1})
    add("reset_mid_record_rom_banner", [T(res[:60]), T("ESP-ROM:esp32s3-20210327\r\n"), T(ack)],
        [rec("ack_start")], {"records": 1, "bad_frame": 1})
    add("two_cut_records_then_log_prefix", [T("boot" + res[:30] + bs[:20] + ack)],
        [{"log": "boot"}, rec("ack_start")], {"records": 1, "log_lines": 1, "partial": 2})
    add("garbage_binary", [X(bytes(range(256)).replace(b"\n", b"")), T("\n" + ack)],
        [{"log": bytes(range(256)).replace(b"\n", b"").decode("utf-8", "replace")}, rec("ack_start")],
        {"records": 1, "log_lines": 1})
    add("garbage_between_records", [T(ack), X(b"\x00\xff\xfe@G@GT\x80"), T(ack)],
        [rec("ack_start"), {"log": "\x00\ufffd\ufffd@G@GT\ufffd"}, rec("ack_start")], {"records": 2, "log_lines": 1})
    bad = bytearray(ack.encode())
    bad[12] ^= 0x01  # flip one payload bit
    add("bad_crc", [X(bytes(bad)), T(ack)], [rec("ack_start")], {"records": 1, "bad_crc": 1})
    add("uppercase_crc_rejected", [T(ack[:-9] + ack[-9:-1].upper() + "\n")], [], {"bad_frame": 1})
    add("missing_crc", [T('@GT ack {"cmd":"x","simulated":false}\n')], [], {"bad_frame": 1})
    add("bad_type_token", [X(frame(b'Ack {"cmd":"x","simulated":false}'))], [], {"bad_frame": 1})
    add("payload_not_json", [X(frame(b"ack {cmd:x}"))], [], {"bad_frame": 1})
    add("payload_not_object", [X(frame(b"ack [1,2]"))], [], {"bad_frame": 1})
    add("payload_bad_utf8", [X(frame(b'ack {"cmd":"\xff","simulated":false}'))], [], {"bad_frame": 1})
    add("unknown_type_skipped", [X(frame(b'wifi {"rssi":-40}')), T(ack)], [rec("ack_start")],
        {"records": 1, "unknown_type": 1})
    add("unknown_keys_ignored", [X(frame(b'ack {"cmd":"start","future":[1,{"a":2}],"simulated":false}'))],
        [rec("ack_start")], {"records": 1})
    add("missing_field", [X(frame(b'ack {"cmd":"start"}'))], [], {"bad_record": 1})
    add("wrong_field_kind", [X(frame(b'ack {"cmd":1,"simulated":false}')), X(frame(b'ack {"cmd":"x","simulated":0}'))],
        [], {"bad_record": 2})
    add("bsample_arrays_differ",
        [X(frame(b'bsample {"first":0,"pre_us":[800,801],"invoke_us":[45000],"simulated":false}'))], [], {"bad_record": 1})
    add("bsample_without_pre_us", [X(frame(b'bsample {"first":0,"invoke_us":[45000],"simulated":false}'))], [],
        {"bad_record": 1})
    add("key_order_free", [X(frame(b'ack {"simulated":false, "cmd":"start"}'))], [rec("ack_start")], {"records": 1})
    add("overlong_line_dropped", [T("x" * 5000 + "\n"), T(ack)], [rec("ack_start")], {"records": 1, "overlong": 1})
    add("overlong_split", [T("y" * 1500), T("y" * 1500), T("y" * 1500 + ack), T(ack)], [rec("ack_start")],
        {"records": 1, "overlong": 1})
    add("line_at_bound_kept", [T("L" * 64 + "\n"), T("M" * 65 + "\n"), T(ack)], [{"log": "L" * 64}, rec("ack_start")],
        {"records": 1, "log_lines": 1, "overlong": 1}, max_line=64)
    add("overlong_record_dropped", [T(res)], [], {"overlong": 1}, max_line=64)
    add("marker_inside_string_escaped", [T(line("error_escapes"))], [rec("error_escapes")], {"records": 1})
    # version 2
    add("input_not_base64", [X(frame(b'input {"seq":1,"offset":0,"total":3,"data":"@@@@","simulated":false}'))], [],
        {"bad_record": 1})
    add("input_past_the_tensor", [X(frame(b'input {"seq":1,"offset":2,"total":3,"data":"AAA=","simulated":false}'))], [],
        {"bad_record": 1})
    # a version 1 hello still parses (the host then names the version mismatch instead of waiting for a hello)
    v1 = dict(rec("hello_device")["fields"], proto=1)
    for k in ("arena_in", "camera", "tx_dropped"):
        del v1[k]
    v1_body = b"hello " + json.dumps(v1, separators=(",", ":"), ensure_ascii=False).encode()
    add("hello_v1_without_v2_keys", [X(frame(v1_body))],
        [{"record": "hello", "fields": dict(v1, arena_in="", camera=False, tx_dropped=0)}], {"records": 1})
    return s


def commands() -> list[dict]:
    c: list[dict] = []

    def add(name, line_, expect):
        c.append({"name": name, "line": line_, "expect": expect})

    for w in ("ping", "info", "start", "stop", "profile", "selftest", "reset", "panic"):
        add(w, w + "\n", {"cmd": w})
    for src in p.SOURCES:
        add("source_" + src, f"source {src}\n", {"cmd": "source", "source": src})
    add("bench", "bench 100 10\n", {"cmd": "bench", "n": 100, "warmup": 10})
    add("bench_bounds", "bench 10000 1000\n", {"cmd": "bench", "n": 10000, "warmup": 1000})
    add("bench_min", "bench 1 0\n", {"cmd": "bench", "n": 1, "warmup": 0})
    add("infer", "infer 64 64 12288 0a1b2c3d\n", {"cmd": "infer", "w": 64, "h": 64, "len": 12288, "crc": "0a1b2c3d"})
    add("infer_max", "infer 640 640 1228800 FFFFFFFF\n",
        {"cmd": "infer", "w": 640, "h": 640, "len": 1228800, "crc": "ffffffff"})
    add("crlf_and_spaces", "  bench   5  2 \r\n", {"cmd": "bench", "n": 5, "warmup": 2})
    add("unknown", "fly away\n", {"error": "unknown_cmd", "word": "fly"})
    add("unknown_truncated_word", "abcdefghijklmnopqrstuvwxyz\n", {"error": "unknown_cmd", "word": "abcdefghijklmnop"})
    add("case_sensitive", "INFO\n", {"error": "unknown_cmd", "word": "INFO"})
    add("unknown_non_ascii_word", "h\u00e9\x01llo\tx 1\n", {"error": "unknown_cmd", "word": "h???llo?x"})
    add("info_extra_arg", "info now\n", {"error": "bad_args", "word": "info"})
    # version 2: the host says its protocol version; the device checks it when it answers
    add("info_proto", "info 2\n", {"cmd": "info", "proto": 2})
    add("info_proto_other", "info 3\n", {"cmd": "info", "proto": 3})
    add("info_proto_zero", "info 0\n", {"error": "bad_args", "word": "info"})
    add("info_two_args", "info 2 2\n", {"error": "bad_args", "word": "info"})
    add("input_once", "input once\n", {"cmd": "input", "once": True})
    add("input_every", "input 5\n", {"cmd": "input", "every": 5})
    add("input_off", "input 0\n", {"cmd": "input", "every": 0})
    add("input_max", "input 1000\n", {"cmd": "input", "every": 1000})
    add("input_too_many", "input 1001\n", {"error": "bad_args", "word": "input"})
    add("input_missing", "input\n", {"error": "bad_args", "word": "input"})
    add("input_word", "input twice\n", {"error": "bad_args", "word": "input"})
    add("source_bad", "source usb\n", {"error": "bad_args", "word": "source"})
    add("source_missing", "source\n", {"error": "bad_args", "word": "source"})
    add("bench_zero", "bench 0 1\n", {"error": "bad_args", "word": "bench"})
    add("bench_too_many", "bench 10001 0\n", {"error": "bad_args", "word": "bench"})
    add("bench_warmup_too_many", "bench 10 1001\n", {"error": "bad_args", "word": "bench"})
    add("bench_negative", "bench -5 1\n", {"error": "bad_args", "word": "bench"})
    add("bench_plus", "bench +5 1\n", {"error": "bad_args", "word": "bench"})
    add("bench_not_number", "bench ten 1\n", {"error": "bad_args", "word": "bench"})
    add("bench_overflow", "bench 99999999999 1\n", {"error": "bad_args", "word": "bench"})
    add("bench_one_arg", "bench 10\n", {"error": "bad_args", "word": "bench"})
    add("infer_too_large", "infer 641 10 19230 00000000\n", {"error": "too_large", "word": "infer"})
    add("infer_zero", "infer 0 10 0 00000000\n", {"error": "bad_args", "word": "infer"})
    add("infer_len_mismatch", "infer 64 64 12287 00000000\n", {"error": "bad_args", "word": "infer"})
    add("infer_short_crc", "infer 2 2 12 abc\n", {"error": "bad_args", "word": "infer"})
    add("infer_bad_crc_hex", "infer 2 2 12 0000000g\n", {"error": "bad_args", "word": "infer"})
    add("infer_missing_args", "infer 2 2\n", {"error": "bad_args", "word": "infer"})
    add("line_too_long", "bench " + "1" * 200 + "\n", {"error": "line_too_long", "word": ""})
    add("line_at_bound", "ping" + " " * 124 + "\n", {"cmd": "ping"})
    add("line_over_bound", "ping" + " " * 125 + "\n", {"error": "line_too_long", "word": ""})
    add("line_at_bound_crlf", "ping" + " " * 124 + "\r\n", {"cmd": "ping"})
    # DeviceClient's barrier after a reply timeout: the reply echoes the word (docs/protocol.md §4)
    add("sync_barrier", "sync0123abcd\n", {"error": "unknown_cmd", "word": "sync0123abcd"})
    return c


def uploads() -> list[dict]:
    px = bytes((i * 37 + 11) & 0xFF for i in range(2 * 3 * 3))
    crc = zlib.crc32(px)
    u = []

    def add(name, w, h, dlen, dcrc, chunks, expect, used):
        u.append({"name": name, "w": w, "h": h, "declared_len": dlen, "declared_crc": "%08x" % dcrc,
                  "chunks": [c.hex() for c in chunks], "expect": expect, "used": used})

    add("ok_one_chunk", 2, 3, 18, crc, [px], "ok", 18)
    add("ok_split_with_trailing_bytes", 2, 3, 18, crc, [px[:5], px[5:17], px[17:] + b"ping\n"], "ok", 18)
    corrupt = bytearray(px)
    corrupt[7] ^= 0x40
    add("corrupted", 2, 3, 18, crc, [bytes(corrupt)], "upload_crc", 18)
    add("incomplete", 2, 3, 18, crc, [px[:10]], "incomplete", 10)
    return u


def main() -> None:
    def dump(name: str, rows: list[dict]) -> None:
        with open(HERE / name, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    dump("records.jsonl", [{"name": n, "type": r.TYPE, "fields": p.record_to_dict(r), "line": p.encode_record(r).decode()}
                           for n, r in RECORDS])
    dump("streams.jsonl", streams())
    dump("commands.jsonl", commands())
    dump("uploads.jsonl", uploads())


if __name__ == "__main__":
    main()
