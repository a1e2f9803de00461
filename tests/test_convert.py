"""gendertool convert / gendertool.project.carray: the C array compiles to exactly the model's bytes."""

from __future__ import annotations

import hashlib
import re
import subprocess

import pytest

from gendertool.project.carray import c_array_source, hex_lines
from tflite_fab import tiny_model

from conftest import have_cmd

needs_gxx = pytest.mark.skipif(not have_cmd("g++"), reason="g++ not installed")

_DUMP_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"

int main(int argc, char** argv) {
  if (argc != 2) return 1;
  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;
  FILE* f = std::fopen(argv[1], "wb");
  if (!f) return 2;
  std::fwrite(g_model_data, 1, g_model_data_len, f);
  return std::fclose(f) == 0 ? 0 : 4;
}
"""


def _compile_and_dump(src_dir, tmp_path) -> bytes:
    main = tmp_path / "dump_main.cc"
    main.write_text(_DUMP_MAIN)
    exe = tmp_path / "dump"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O0", f"-I{src_dir}",
         str(main), str(src_dir / "model_data.cc"), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    out = tmp_path / "dumped.bin"
    subprocess.run([str(exe), str(out)], check=True)
    return out.read_bytes()


def test_convert_help(cli):
    res = cli("convert", "--help")
    assert res.exit_code == 0 and "--output" in res.stdout


@needs_gxx
def test_default_model_round_trips_through_gxx(cli, default_model, tmp_path):
    out = tmp_path / "gen"
    res = cli("convert", str(default_model), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert _compile_and_dump(out, tmp_path) == default_model.read_bytes()


@needs_gxx
@pytest.mark.parametrize("size", [1, 15, 16, 17, 1000])
def test_odd_sizes_round_trip(tmp_path, size):
    data = bytes((i * 37 + 11) & 0xFF for i in range(size))
    header, source = c_array_source(data, "g_model_data", "test banner")
    (tmp_path / "model_data.h").write_text(header)
    (tmp_path / "model_data.cc").write_text(source)
    assert _compile_and_dump(tmp_path, tmp_path) == data


def test_banner_names_model_and_sha256(cli, tmp_path):
    model = tmp_path / "tiny_net.tflite"
    data = tiny_model()
    model.write_bytes(data)
    out = tmp_path / "gen"
    assert cli("convert", str(model), "-o", str(out)).exit_code == 0
    sha = hashlib.sha256(data).hexdigest()
    for name in ("model_data.h", "model_data.cc"):
        text = (out / name).read_text()
        first = text.splitlines()[:2]
        assert first[0].startswith("//") and "tiny_net" in first[0]
        assert first[1] == f"// Model sha256: {sha}"
    cc = (out / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_data[] = {" in cc
    assert f"const unsigned int g_model_data_len = {len(data)};" in cc


def test_output_is_deterministic(cli, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model())
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("convert", str(model), "-o", str(a)).exit_code == 0
    assert cli("convert", str(model), "-o", str(b)).exit_code == 0
    for name in ("model_data.h", "model_data.cc"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    before = (a / "model_data.cc").stat().st_mtime_ns
    assert cli("convert", str(model), "-o", str(a)).exit_code == 0
    assert (a / "model_data.cc").stat().st_mtime_ns == before  # unchanged content: not rewritten


def test_hex_lines_format():
    data = bytes(range(20))
    lines = hex_lines(data).splitlines()
    assert lines[0] == "  " + ", ".join(f"0x{i:02x}" for i in range(16)) + ","
    assert lines[1] == "  0x10, 0x11, 0x12, 0x13,"
    assert hex_lines(b"") == ""
    # every byte value, parsed back
    allb = bytes(range(256)) * 3
    assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", hex_lines(allb))) == allb


def test_convert_rejects_a_bad_model(cli, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all, just text")
    res = cli("convert", str(bad), "-o", str(tmp_path / "gen"))
    assert res.exit_code == 2 and "not a TFLite flatbuffer" in res.stderr
    assert not (tmp_path / "gen").exists()


def test_convert_unwritable_output(cli, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = cli("convert", str(model), "-o", str(blocker / "sub"))
    assert res.exit_code == 2 and "cannot write the C array" in res.stderr
