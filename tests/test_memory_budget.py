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
from gendertool.project.manifest import Sizes
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


# The XIAO ESP32S3's internal RAM for the arena before a build, item by item (issue 20, item 7):
# memory_layout.c's heap run, the stand-in link's static RAM, the PSRAM DMA pool, the task
# stacks (Kconfig defaults), the USB-Serial-JTAG buffers and the allowances.
XIAO_FOR_ARENA = 399_120 - (57_011 + 28_275 + 32) - 32_768 - (3_584 + 2 * 1_280 + 3_584 + 2 * 1_536 + 2_048 + 16_384) \
    - 8_192 - 8 * 400 - 8_192


def test_figures_and_their_arithmetic():
    # SOC_DIRAM_DRAM_LOW up to APP_USABLE_DRAM_END (SOC_ROM_STACK_START - SOC_ROM_STACK_SIZE)
    assert mb.INTERNAL_DIRAM_RUN_BYTES == 0x3FCE9710 - 0x3FC88000 == 399_120
    budget = mb.internal_budget(get_board("xiao_esp32s3"))
    assert budget.arena_bytes == XIAO_FOR_ARENA == 230_218
    assert budget.firmware_bytes == sum(i.bytes for i in budget.items) and not budget.static_measured
    assert mb.psram_heap_bytes(get_board("xiao_esp32s3")) == 8 * 1024 * 1024 - 16 * 1024


def test_the_old_guess_let_an_arena_through_that_internal_ram_cannot_hold():
    # 239,616 bytes: under the former 262,144-byte guess, over what ESP-IDF's figures leave
    info, fit = _fit(232)
    assert info.arena_bytes == 239_616
    assert fit.ok and fit.arena_region == "psram" and fit.internal_margin == XIAO_FOR_ARENA - 239_616 == -9_398
    (warning,) = fit.warnings
    assert "does not fit in the about 230,218 bytes of internal RAM the firmware has for it (9,398 short" in warning
    _, forced = _fit(232, arena_placement="internal")
    assert not forced.ok and "forced into internal RAM" in forced.errors[0]


def test_camera_board_keeps_the_cameras_internal_dma_buffer_free():
    plain = mb.internal_budget(get_board("xiao_esp32s3"))
    sense = mb.internal_budget(get_board("xiao_esp32s3_sense"))
    extra = {i.what: i.bytes for i in sense.items if i not in plain.items}
    # ll_cam_calc_rgb_dma for 320x240 RGB565: 3,840-byte nodes, 15,360-byte halves, within 32 KiB
    assert mb.camera_dma_buffer_bytes() == 30_720
    assert extra["camera: esp32-camera internal DMA buffer (QVGA RGB565, not its PSRAM mode)"] == 30_720
    assert plain.arena_bytes - sense.arena_bytes == 30_720 + 2_048 + 1_024 + 400


def test_the_builds_size_report_replaces_the_stand_in_figures():
    board = get_board("xiao_esp32s3")
    measured = mb.internal_budget(board, sizes=Sizes(iram_bytes=50_000, dram_bytes=20_000))
    assert measured.static_measured
    assert measured.arena_bytes == XIAO_FOR_ARENA + (57_011 - 50_000) + (28_275 - 20_000)
    partly = mb.internal_budget(board, sizes=Sizes(dram_bytes=32_404))  # PlatformIO reports RAM only
    assert not partly.static_measured and partly.arena_bytes == XIAO_FOR_ARENA + 28_275 - 32_404
    info = load_model_bytes(tiny_model(height=64, width=64), name="m64")
    assert "static .data/.bss measured by the build, IRAM code estimated" in mb.check_fit(
        info, board, sizes=Sizes(dram_bytes=32_404)).margin_text()


def test_the_rendered_sdkconfigs_task_stacks_count():
    board = get_board("xiao_esp32s3")
    bigger = mb.internal_budget(board, sdkconfig={"CONFIG_ESP_MAIN_TASK_STACK_SIZE": "8192", "CONFIG_APP_TASK_STACK_SIZE": "32768"})
    assert bigger.arena_bytes == XIAO_FOR_ARENA - (8192 - 3584) - (32768 - 16384)
    item = next(i for i in bigger.items if "CONFIG_ESP_MAIN_TASK_STACK_SIZE" in i.what)
    assert item.source == "rendered sdkconfig"


def test_app_figures_agree_with_the_firmwares_kconfig():
    import re

    from conftest import REPO

    text = (REPO / "templates" / "main" / "Kconfig.projbuild.j2").read_text()
    for key, default in [(k, d) for k, d, _, _ in mb.TASK_STACKS if k.startswith("CONFIG_APP_")] + list(mb.SERIAL_BUFFERS):
        m = re.search(rf"config {key[len('CONFIG_'):]}\n(?:.*\n)*?\s+default (\d+)", text)
        assert m and int(m.group(1)) == default, key
    rendered = (REPO / "templates" / "sdkconfig.defaults.j2").read_text() + (REPO / "templates" / "sdkconfig.defaults.esp32s3.j2").read_text()
    for key, *_ in mb.TASK_STACKS:  # the templates leave them at their defaults: what the budget assumes
        assert key not in rendered, key
    sdk = (REPO / "templates" / "sdkconfig.defaults.esp32s3.j2").read_text()
    assert "CONFIG_ESP32S3_INSTRUCTION_CACHE_32KB=y" in sdk  # all IRAM code in SRAM1, as the budget counts
    assert "CONFIG_ESP32S3_DATA_CACHE_64KB=y" in sdk  # SRAM2 is cache, not heap


def test_inspect_and_build_say_the_margin(cli, model_file, tmp_path):
    r = cli("inspect", model_file(64))
    out = " ".join(r.stdout.split())
    assert r.exit_code == 0 and "internal RAM: about 230,218 bytes for the arena" in out and "to spare" in out
    doc = json.loads(cli("inspect", model_file(232), "--json").stdout)["memory"]
    assert doc["internal_margin_bytes"] == -9_398 and doc["internal_budget"]["for_arena_bytes"] == 230_218
    assert {i["what"].split(" (")[0] for i in doc["internal_budget"]["items"]} >= {"USB-Serial-JTAG driver ring buffers"}
    r = cli("build", "--no-compile", "--model", model_file(232), "--out", tmp_path / "out")
    out = " ".join(r.stdout.split())
    assert r.exit_code == 0 and "239,616 bytes in PSRAM; internal RAM: about 230,218 bytes for the arena, 9,398 short" in out


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
    assert "1,156,096-byte tensor arena does not fit in the about 230,218 bytes of internal RAM" in warning
    assert "goes to PSRAM" in warning and "octal SPI bus at 80 MHz" in warning and "slower" in warning
    assert fit.psram_used == 1_156_096 + 640 * 640 * 3


def test_2048_input_fits_nowhere():
    info, fit = _fit(2048)
    assert info.arena_bytes == 18_457_600  # the figure
    assert not fit.ok and fit.arena_region is None
    (err,) = fit.errors
    assert "the 18,457,600-byte tensor arena fits nowhere" in err
    assert "about 230,218 bytes of internal RAM" in err and "8,372,224 bytes of PSRAM heap (8 MB, board registry)" in err
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
