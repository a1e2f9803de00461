"""Compile firmware/main/protocol.cc on the host (g++ -std=c++17 -Wall -Wextra -Werror) and
check it against the shared vectors: the C++ encoder must write the exact record bytes, the
command parser/line reader and the upload receiver must agree with tests/vectors."""

from __future__ import annotations

import base64
import json
import subprocess
import zlib
from pathlib import Path

import pytest

from conftest import REPO, have_cmd

VEC = REPO / "tests" / "vectors"
FW = REPO / "firmware" / "main"

pytestmark = pytest.mark.skipif(not have_cmd("g++"), reason="g++ not installed")


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (VEC / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _c_str(s: str | None) -> str:
    if s is None:
        return "nullptr"
    return '"' + "".join("\\%03o" % b for b in s.encode("utf-8")) + '"'


def _c_bool(v: bool) -> str:
    return "true" if v else "false"


def _c_double(v: float) -> str:
    return repr(float(v))


def _record_code(i: int, vec: dict) -> str:
    t, f = vec["type"], vec["fields"]
    sim = _c_bool(f["simulated"])
    if t == "ack":
        return f"ok = gt::write_ack(w, {_c_str(f['cmd'])}, {sim});"
    if t == "error":
        return f"ok = gt::write_error(w, {_c_str(f['code'])}, {_c_str(f['cmd'])}, {_c_str(f['message'])}, {sim});"
    if t == "hello":
        labels = ", ".join(_c_str(x) for x in f["labels"]) or "nullptr"
        shape = ", ".join(str(x) for x in f["input"])
        return f"""
        static const char* const labels{i}[] = {{{labels}}};
        static const int32_t shape{i}[] = {{{shape}}};
        static const char* const names{i}[] = {{{", ".join(_c_str(x) for x in f["sample_names"]) or "nullptr"}}};
        static const int32_t truth{i}[] = {{{", ".join(str(x) for x in f["sample_truth"]) or "0"}}};
        gt::HelloInfo h{{}};
        h.fw = {_c_str(f['fw'])}; h.board = {_c_str(f['board'])}; h.chip = {_c_str(f['chip'])};
        h.model = {_c_str(f['model'])}; h.model_sha256 = {_c_str(f['model_sha256'])};
        h.labels = labels{i}; h.num_labels = {len(f['labels'])};
        h.input_shape = shape{i}; h.input_dims = {len(f['input'])};
        h.in_scale = static_cast<float>({_c_double(f['in_scale'])}); h.in_zp = {f['in_zp']};
        h.out_scale = static_cast<float>({_c_double(f['out_scale'])}); h.out_zp = {f['out_zp']};
        h.device = gt::DeviceStatus{{{f['arena_bytes']}u, {f['arena_used']}u, {f['heap_internal']}u, {f['heap_psram']}u,
                                     {f['cpu_mhz']}u, {_c_str(f['idf'])}, {_c_str(f['arena_in'])}, {_c_bool(f['camera'])},
                                     {f['tx_dropped']}u}};
        h.tflm = {_c_str(f['tflm'])}; h.esp_nn = {_c_str(f['esp_nn'])};
        h.samples = {f['samples']}u; h.source = {_c_str(f['source'])};
        h.sample_names = names{i}; h.sample_truth = truth{i};
        h.running = {_c_bool(f['running'])}; h.simulated = {sim};
        ok = gt::write_hello(w, h);"""
    if t == "result":
        scores = ", ".join(str(x) for x in f["scores"])
        probs = ", ".join(f"static_cast<float>({_c_double(x)})" for x in f["probs"])
        return f"""
        static const int8_t scores{i}[] = {{{scores}}};
        static const float probs{i}[] = {{{probs}}};
        gt::ResultInfo r{{}};
        r.seq = {f['seq']}u; r.source = {_c_str(f['source'])}; r.sample = {f['sample']};
        r.class_index = {f['class']}; r.label = {_c_str(f['label'])};
        r.scores = scores{i}; r.probs = probs{i}; r.num_classes = {len(f['scores'])};
        r.pre_us = {f['pre_us']}u; r.invoke_us = {f['invoke_us']}u; r.simulated = {sim};
        ok = gt::write_result(w, r);"""
    if t == "bsample":
        pre = ", ".join(f"{x}u" for x in f["pre_us"])
        us = ", ".join(f"{x}u" for x in f["invoke_us"])
        return f"""
        static const uint32_t pre{i}[] = {{{pre}}};
        static const uint32_t us{i}[] = {{{us}}};
        ok = gt::write_bsample(w, {f['first']}u, pre{i}, us{i}, {len(f['invoke_us'])}, {sim});"""
    if t == "bsummary":
        return f"""
        gt::BenchSummaryInfo s{{{f['n']}u, {f['warmup']}u, {f['min_us']}u, {f['max_us']}u,
                                {_c_double(f['mean_us'])}, {f['total_us']}u, {sim}, {_c_str(f['arena_in'])},
                                {_c_bool(f['camera'])}, {f['tx_dropped']}u}};
        ok = gt::write_bsummary(w, s);"""
    if t == "progress":
        return f"ok = gt::write_progress(w, {_c_str(f['cmd'])}, {f['done']}u, {f['total']}u, {sim});"
    if t == "input":
        raw = base64.b64decode(f["data"])
        data = ", ".join(str(b - 256 if b > 127 else b) for b in raw)
        return f"""
        static const int8_t in{i}[] = {{{data}}};
        ok = gt::write_input(w, {f['seq']}u, {f['offset']}u, {f['total']}u, in{i}, {len(raw)}, {sim});"""
    if t == "profile":
        return (f"ok = gt::write_profile(w, {f['node']}u, {_c_str(f['op'])}, {f['us']}u, "
                f"{_c_bool(f['estimated'])}, {sim});")
    if t == "psummary":
        return (f"ok = gt::write_psummary(w, {f['nodes']}u, {f['total_us']}u, {f['invoke_us']}u, "
                f"{_c_bool(f['estimated'])}, {sim});")
    if t == "selftest":
        ents = ", ".join(
            f"{{{e['sample']}, {e['expect']}, {e['got']}, {e['diff']}, {_c_bool(e['ok'])}}}" for e in f["results"]
        )
        arr = f"static const gt::SelftestEntry e{i}[] = {{{ents}}};" if f["results"] else f"const gt::SelftestEntry* e{i} = nullptr;"
        return f"""
        {arr}
        ok = gt::write_selftest(w, {_c_bool(f['pass'])}, {f['n']}u, {f['failed']}u, e{i}, {len(f['results'])}, {sim});"""
    raise AssertionError(t)


def _upload_code(i: int, u: dict) -> str:
    chunks = [bytes.fromhex(c) for c in u["chunks"]]
    lines = [f"  {{ // {u['name']}", f"    static uint8_t buf{i}[{u['declared_len']}];", "    gt::UploadReceiver rx;",
             f"    rx.begin(buf{i}, {u['declared_len']}u, 0x{u['declared_crc']}u);", "    size_t used = 0;"]
    for j, c in enumerate(chunks):
        data = ", ".join(str(b) for b in c)
        lines.append(f"    {{ static const uint8_t c[] = {{{data}}}; used += rx.feed(c, sizeof c); }}")
    lines.append('    const char* st = !rx.complete() ? "incomplete" : rx.crc_ok() ? "ok" : "upload_crc";')
    lines.append(f'    std::printf("%s %zu\\n", st, used);')
    lines.append("  }")
    return "\n".join(lines)


DRIVER_HEAD = r"""
#include <cstdio>
#include <cstring>
#include "protocol.h"

static void print_word(const char* s) {
  std::putchar('"');
  for (const unsigned char* p = reinterpret_cast<const unsigned char*>(s); *p; ++p) {
    if (*p == '"' || *p == '\\') { std::putchar('\\'); std::putchar(*p); }
    else if (*p < 0x20 || *p >= 0x7f) std::printf("\\u%04x", *p);
    else std::putchar(*p);
  }
  std::putchar('"');
}

static void print_command(const gt::Command& c) {
  if (c.error) {
    std::printf("{\"error\":\"%s\",\"word\":", c.error);
    print_word(c.word);
    std::printf("}\n");
    return;
  }
  std::printf("{\"cmd\":\"%s\"", gt::cmd_name(c.cmd));
  switch (c.cmd) {
    case gt::Cmd::kSource: std::printf(",\"source\":\"%s\"", gt::source_name(c.source)); break;
    case gt::Cmd::kBench: std::printf(",\"n\":%u,\"warmup\":%u", (unsigned)c.n, (unsigned)c.warmup); break;
    case gt::Cmd::kInfo:
      if (c.proto != 0) std::printf(",\"proto\":%u", (unsigned)c.proto);
      break;
    case gt::Cmd::kInput:
      if (c.once) std::printf(",\"once\":true"); else std::printf(",\"every\":%u", (unsigned)c.every);
      break;
    case gt::Cmd::kInfer:
      std::printf(",\"w\":%u,\"h\":%u,\"len\":%u,\"crc\":\"%08x\"", (unsigned)c.w, (unsigned)c.h,
                  (unsigned)c.len, (unsigned)c.crc);
      break;
    default: break;
  }
  std::printf("}\n");
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (std::strcmp(argv[1], "commands") == 0) {
    static gt::LineReader reader;
    int ch;
    while ((ch = std::getchar()) != EOF) {
      if (reader.push(static_cast<char>(ch))) {
        gt::Command c;
        if (reader.take(&c)) print_command(c);
      }
    }
    return 0;
  }
  if (std::strcmp(argv[1], "crc") == 0) {
    std::printf("%08x %08x\n", (unsigned)gt::crc32("123456789", 9),
                (unsigned)gt::crc32_update(gt::crc32("12345", 5), "6789", 4));
    return 0;
  }
  if (std::strcmp(argv[1], "overflow") == 0) {
    static gt::RecordWriter w;
    static char big[3000];
    std::memset(big, 'a', sizeof big - 1);
    bool a = gt::write_error(w, "internal", "", big, false);
    std::printf("%d %zu %d\n", a ? 1 : 0, w.size(), w.overflowed() ? 1 : 0);
    big[1900] = 0;
    bool b = gt::write_error(w, "internal", "", big, false);
    std::printf("%d %zu %d\n", b ? 1 : 0, w.size(), w.overflowed() ? 1 : 0);
    return 0;
  }
  static gt::RecordWriter w;
  bool ok = false;
  if (std::strcmp(argv[1], "uploads") == 0) {
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fwproto")
    records = _load("records.jsonl")
    body = [DRIVER_HEAD]
    body += [_upload_code(i, u) for i, u in enumerate(_load("uploads.jsonl"))]
    body.append("    return 0;\n  }")
    for i, vec in enumerate(records):
        body.append(f"  {{ {_record_code(i, vec)}\n    if (!ok) {{ std::printf(\"FAIL\\n\"); }} "
                    f"else {{ std::fwrite(w.data(), 1, w.size(), stdout); }} }}")
    body.append("  (void)ok;\n  return 0;\n}\n")
    src = out / "driver.cc"
    src.write_text("\n".join(body), encoding="utf-8")
    exe = out / "driver"
    cmd = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", f"-I{FW}", str(FW / "protocol.cc"), str(src),
           "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run(exe: Path, mode: str, stdin: bytes = b"") -> bytes:
    proc = subprocess.run([str(exe), mode], input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_protocol_sources_compile_standalone_without_esp_idf():
    text = (FW / "protocol.h").read_text() + (FW / "protocol.cc").read_text()
    for banned in ("esp_", "freertos", "tensorflow"):
        assert f"#include <{banned}" not in text and f'#include "{banned}' not in text


def test_crc32_matches_zlib(driver):
    a, b = _run(driver, "crc").split()
    assert int(a, 16) == zlib.crc32(b"123456789") == 0xCBF43926
    assert int(b, 16) == zlib.crc32(b"123456789")


def test_encoder_reproduces_every_record_vector_byte_for_byte(driver):
    records = _load("records.jsonl")
    out = _run(driver, "records").decode("utf-8").splitlines(keepends=True)
    assert len(out) == len(records)
    for vec, got in zip(records, out):
        assert got == vec["line"], vec["name"]


def test_command_parser_matches_vectors(driver):
    cmds = _load("commands.jsonl")
    stdin = b"".join(c["line"].encode("utf-8") for c in cmds)
    out = [json.loads(x) for x in _run(driver, "commands", stdin).decode().splitlines()]
    assert out == [c["expect"] for c in cmds]


def test_line_reader_recovers_after_an_overlong_line_without_newline_split(driver):
    stdin = b"x" * 5000 + b"\n" + b"\n\n" + b"bench 3 1\r\n"
    out = [json.loads(x) for x in _run(driver, "commands", stdin).decode().splitlines()]
    assert out == [{"error": "line_too_long", "word": ""}, {"cmd": "bench", "n": 3, "warmup": 1}]


def test_upload_receiver_matches_vectors(driver):
    ups = _load("uploads.jsonl")
    out = _run(driver, "uploads").decode().splitlines()
    assert [(u["expect"], u["used"]) for u in ups] == [(x.split()[0], int(x.split()[1])) for x in out]


def test_writer_refuses_to_emit_a_record_over_the_bound(driver):
    over, fits = _run(driver, "overflow").decode().splitlines()
    assert over.split() == ["0", "0", "1"]
    ok, size, flag = fits.split()
    assert ok == "1" and flag == "0" and 1900 < int(size) <= 2047
