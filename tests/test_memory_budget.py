"""Memory limits checked before anything is compiled: arena vs internal RAM / PSRAM per board,
the hello record vs the protocol line, one-class models (issue 11, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gendertool.project import memory as mb
from gendertool.boards import get_board
from gendertool.errors import GendertoolError, ModelError
from gendertool.model.info import load_model_bytes
from tflite_fab import tiny_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """write(side) -> path of a square tiny model (cached per side)."""
    root = tmp_path_factory.mktemp("models")
    made: dict[int, Path] = {}

    def write(side: int, classes: int = 2) -> Path:
        key = side * 100 + classes
        if key not in made:
            path = root / f"m{side}_{classes}.tflite"
            path.write_bytes(tiny_model(height=side, width=side, classes=classes))
            made[key] = path
        return made[key]

    return write


def _fit(side: int, board: str = "xiao_esp32s3", **kw):
    info = load_model_bytes(tiny_model(height=side, width=side), name=f"m{side}")
    return info, mb.check_fit(info, get_board(board), **kw)


def test_figures_and_their_arithmetic():
    # 0x3FC88000-0x3FCE0000 less the SPIRAM DMA reserve and the firmware's estimated share
    assert mb.INTERNAL_DIRAM_RUN_BYTES == 360_448
    assert mb.INTERNAL_ARENA_BYTES == 360_448 - 32_768 - 65_536 == 262_144
    assert mb.psram_heap_bytes(get_board("xiao_esp32s3")) == 8 * 1024 * 1024 - 16 * 1024


def test_small_arena_goes_to_internal_ram():
    info, fit = _fit(64)
    assert fit.ok and fit.arena_region == "internal" and not fit.warnings
    assert fit.arena_bytes == info.arena_bytes
    assert fit.allocations[0] == mb.Allocation("tensor arena", info.arena_bytes, "internal")


def test_psram_only_fit_warns_naming_the_speed_cost():
    info, fit = _fit(512)  # 1,156,096-byte arena
    assert info.arena_bytes == 1_156_096
    assert fit.ok and fit.arena_region == "psram"
    (warning,) = fit.warnings
    assert "1,156,096-byte tensor arena does not fit in the about 262,144 bytes of internal RAM" in warning
    assert "goes to PSRAM" in warning and "octal SPI bus at 80 MHz" in warning and "slower" in warning
    assert fit.psram_used == 1_156_096 + 640 * 640 * 3


def test_2048_input_fits_nowhere():
    info, fit = _fit(2048)
    assert info.arena_bytes == 18_457_600  # the figure
    assert not fit.ok and fit.arena_region is None
    (err,) = fit.errors
    assert "the 18,457,600-byte tensor arena fits nowhere" in err
    assert "about 262,144 bytes of internal RAM" in err and "8,372,224 bytes of PSRAM heap (8 MB, board registry)" in err
    with pytest.raises(ModelError, match="fits nowhere"):
        fit.raise_if_unfit()


def test_camera_frames_and_model_copy_count_against_psram():
    info, plain = _fit(512)
    _, sense = _fit(512, "xiao_esp32s3_sense", model_in_psram=True)
    extra = {a.what: a.bytes for a in sense.allocations if a not in plain.allocations}
    assert extra == {"camera frame buffers (2 x 320x240 RGB565)": 307_200, "model copy (APP_MODEL_IN_PSRAM)": info.size}
    assert sense.psram_used == plain.psram_used + 307_200 + info.size


def test_forced_internal_placement_that_does_not_fit_is_an_error():
    _, fit = _fit(512, arena_placement="internal")
    assert not fit.ok and "forced into internal RAM (arena_placement=internal)" in fit.errors[0]
    _, forced_psram = _fit(64, arena_placement="psram")
    assert forced_psram.ok and forced_psram.arena_region == "psram" and not forced_psram.warnings


def test_arena_just_over_what_psram_leaves_is_refused():
    info, _ = _fit(64)
    board = get_board("xiao_esp32s3")
    left = mb.psram_heap_bytes(board) - 640 * 640 * 3
    assert mb.check_fit(info, board, arena_bytes=left).ok
    assert not mb.check_fit(info, board, arena_bytes=left + 1).ok


def test_inspect_reports_the_fit(cli, model_file):
    r = cli("inspect", model_file(2048), "--json")
    assert r.exit_code == 0, r.stderr
    mem = json.loads(r.stdout)["memory"]
    assert mem["fits"] is False and mem["arena_bytes"] == 18_457_600 and mem["arena_region"] is None
    assert "memory_layout.c" in mem["sources"]["internal"] and "board registry" in mem["sources"]["psram"]
    r = cli("inspect", model_file(512))
    assert r.exit_code == 0 and "PSRAM" in r.stdout and "warning:" in r.stdout
    r = cli("inspect", model_file(2048))
    assert r.exit_code == 0 and "does not fit:" in r.stdout


def test_build_refuses_an_arena_that_fits_nowhere_before_rendering(cli, model_file, tmp_path):
    out = tmp_path / "out"
    r = cli("build", "--no-compile", "--model", model_file(2048), "--out", out)
    assert r.exit_code == 2
    assert "error:" in r.stderr and "18,457,600-byte tensor arena fits nowhere" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() or not any(out.rglob("*"))  # nothing rendered


def test_build_warns_when_the_arena_fits_only_in_psram(cli, model_file, tmp_path):
    r = cli("build", "--no-compile", "--model", model_file(512), "--out", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert "warning:" in r.stderr and "goes to PSRAM" in r.stderr and "slower" in r.stderr


def test_hello_over_the_protocol_line_is_refused_at_build(cli, model_file, tmp_path):
    labels = ",".join(c * 1200 for c in "ab")
    out = tmp_path / "out"
    r = cli("build", "--no-compile", "--model", model_file(16), "--labels", labels, "--out", out)
    assert r.exit_code == 2
    assert "hello record would be" in r.stderr and "2,046-byte record line" in r.stderr
    assert "2 labels, 2,400 characters, longest 1,200" in r.stderr
    assert not out.exists() or not any(out.rglob("*"))


def test_hello_size_is_the_real_encoded_record():
    from gendertool import protocol as p
    from gendertool.project.render import check_hello_fits, firmware_hello

    board = get_board("xiao_esp32s3")
    info = load_model_bytes(tiny_model(height=16, width=16), name="m", labels=["x" * 700, "y" * 700])
    names = ["x_one", "y_two", "other"]
    hello = firmware_hello(info, board, 4096, names)
    assert p.decode_line(p.encode_record(hello).rstrip(b"\n")) == hello
    assert hello.sample_names == tuple(names) and hello.sample_truth == (-1, -1, -1) and hello.samples == 3
    short = load_model_bytes(tiny_model(height=16, width=16), name="m", labels=["x", "y"])
    assert firmware_hello(short, board, 4096, names).sample_truth == (0, 1, -1)  # "<label>_..." names
    size = check_hello_fits(info, board, 4096, names)
    assert size == len(p.encode_record(hello)) - 1 <= p.MAX_RECORD
    # one character more than the line has room for pushes the same record over it
    longer = load_model_bytes(tiny_model(height=16, width=16), name="m", labels=["x" * (700 + p.MAX_RECORD - size + 1), "y" * 700])
    with pytest.raises(GendertoolError, match="over the protocol's 2,046-byte record line"):
        check_hello_fits(longer, board, 4096, names)
    # the sample names are in the record too: longer ones push it over as well
    with pytest.raises(GendertoolError, match="or the sample names"):
        check_hello_fits(info, board, 4096, ["x_one" + "n" * (p.MAX_RECORD - size + 1), "y_two", "other"])


def test_one_class_model_is_refused_with_the_reason(cli, model_file):
    r = cli("inspect", model_file(16, classes=1))
    assert r.exit_code == 2
    assert "the model has 1 output class; a classifier needs at least 2" in r.stderr
    assert "2 softmax outputs" in r.stderr
