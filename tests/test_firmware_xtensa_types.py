"""The portable firmware sources under the Xtensa toolchain's integer types.

The esp toolchains (GCC 13/14 for ESP-IDF 5.x) define int32_t as `long` and uint32_t as
`unsigned long`; on x86-64 glibc they are `int`/`unsigned int`. Code that passes a uint32_t
to "%u", an int32_t* where an int* is expected, or relies on overloads picking the 32-bit
types compiles on the host and fails on the device (-Wformat is an error under ESP-IDF's
-Werror=all). Here the host's glibc typedef headers are shadowed so that the 32-bit types
are the Xtensa ones, and every portable source (hand-written and generated) is
syntax-checked with -Werror. Only C library typedefs are replaced, never ESP-IDF or TFLM.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="host g++ not installed")

FLAGS = ["-std=gnu++17", "-Wall", "-Wextra", "-Werror", "-Wformat=2", "-fsyntax-only"]

INTN = """#ifndef GT_XT_INTN
#define GT_XT_INTN
#include <bits/types.h>
typedef __int8_t int8_t;
typedef __int16_t int16_t;
typedef long int int32_t;
typedef __int64_t int64_t;
#endif
"""
UINTN = """#ifndef GT_XT_UINTN
#define GT_XT_UINTN
#include <bits/types.h>
typedef __uint8_t uint8_t;
typedef __uint16_t uint16_t;
typedef unsigned long int uint32_t;
typedef __uint64_t uint64_t;
#endif
"""
PROBE = """#include <cstdint>
#include <type_traits>
static_assert(std::is_same<int32_t, long>::value, "int32_t is long");
static_assert(std::is_same<uint32_t, unsigned long>::value, "uint32_t is unsigned long");
"""


@pytest.fixture(scope="module")
def xtensa_flags(tmp_path_factory) -> list[str]:
    shim = tmp_path_factory.mktemp("xtensa_types")
    (shim / "bits").mkdir()
    (shim / "bits" / "stdint-intn.h").write_text(INTN)
    (shim / "bits" / "stdint-uintn.h").write_text(UINTN)
    probe = shim / "probe.h"
    probe.write_text(PROBE)
    flags = [*FLAGS, f"-I{shim}", "-include", str(probe)]
    check = subprocess.run(["g++", *flags, "-x", "c++", "-"], input="int main() { return 0; }\n", capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"cannot shadow this C library's stdint typedefs: {check.stderr.strip()[:200]}")
    return flags


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from gendertool.boards import get_board
    from gendertool.model.info import load_model
    from gendertool.project.render import render_project

    out = tmp_path_factory.mktemp("xtensa_project")
    render_project(load_model(None), get_board("xiao_esp32s3_sense"), out, input_source="camera")
    return out


def test_the_shim_catches_a_uint32_printed_with_percent_u(xtensa_flags, tmp_path):
    bad = tmp_path / "bad.cc"
    bad.write_text('#include <cstdint>\n#include <cstdio>\nint main() { uint32_t v = 1; std::printf("%u", v); }\n')
    proc = subprocess.run(["g++", *xtensa_flags, str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "format" in proc.stderr


@pytest.mark.parametrize(
    "name",
    ["image_preprocess.cc", "protocol.cc", "app_controller.cc", "tx_queue.cc", "arena_setup.cc", "model_settings.cc", "sample_images.cc", "model_data.cc"],
)
def test_portable_sources_compile_with_xtensa_integer_types(xtensa_flags, project, name):
    main = project / "main"
    src = main / name
    proc = subprocess.run(["g++", *xtensa_flags, f"-I{main}", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
