"""Board registry: names, hardware facts, camera pins, sdkconfig fragments, errors."""

from __future__ import annotations

import pytest

from gendertool.boards import BOARDS, Board, get_board
from gendertool.errors import GendertoolError


def test_xiao_esp32s3_facts():
    b = get_board("xiao_esp32s3")
    assert (b.idf_target, b.pio_board, b.flash_size_mb, b.psram_mb, b.psram_mode) == ("esp32s3", "seeed_xiao_esp32s3", 8, 8, "octal")
    assert b.camera is None and not b.has_camera


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_facts_agree_with_esptool_and_with_each_other(name):
    from esptool.loader import ESPRESSIF_VID
    from esptool.targets.esp32s3 import ESP32S3ROM

    b = get_board(name)
    # the USB ids the port finder matches are esptool's own for the S3's USB-Serial/JTAG
    assert b.usb_vid_pid == (ESPRESSIF_VID, ESP32S3ROM.USB_JTAG_SERIAL_PID)
    # the sdkconfig fragment says what the facts say
    assert b.sdkconfig[f"CONFIG_ESPTOOLPY_FLASHSIZE_{b.flash_size_mb}MB"] == "y"
    if b.psram_mb:
        assert b.sdkconfig[{"octal": "CONFIG_SPIRAM_MODE_OCT", "quad": "CONFIG_SPIRAM_MODE_QUAD"}[b.psram_mode]] == "y"


def test_app_partition_is_what_the_rendered_partition_table_leaves(tmp_path):
    """The largest app partition = flash - where templates/partitions.csv.j2 starts the app."""
    import csv

    from gendertool.model.info import load_model
    from gendertool.project.render import render_project

    b = get_board("xiao_esp32s3")
    render_project(load_model(None), b, tmp_path / "p")
    rows = [r for r in csv.reader((tmp_path / "p" / "partitions.csv").read_text().splitlines())
            if r and not r[0].startswith("#")]
    (app,) = [[c.strip() for c in r] for r in rows if r[1].strip() == "app"]
    assert b.app_partition_bytes == b.flash_size_mb * 1024 * 1024 - int(app[3], 16)


def test_sense_has_seeed_camera_pins():
    cam = get_board("xiao_esp32s3_sense").camera
    assert cam is not None and cam.sensor == "OV2640"
    pins = (cam.pwdn, cam.reset, cam.xclk, cam.sccb_sda, cam.sccb_scl, cam.vsync, cam.href, cam.pclk)
    assert pins == (-1, -1, 10, 40, 39, 38, 47, 13)
    assert (cam.d7, cam.d6, cam.d5, cam.d4, cam.d3, cam.d2, cam.d1, cam.d0) == (48, 11, 12, 14, 16, 18, 17, 15)
    used = [p for p in pins + (cam.d0, cam.d1, cam.d2, cam.d3, cam.d4, cam.d5, cam.d6, cam.d7) if p >= 0]
    assert len(used) == len(set(used)), "a GPIO is assigned twice"


def test_devkitc_is_registered_and_boards_are_frozen():
    b = get_board("esp32s3_devkitc1_n8r8")
    assert b.pio_board == "esp32-s3-devkitc-1" and b.psram_mode == "octal"
    with pytest.raises(AttributeError):
        b.name = "x"  # type: ignore[misc]
    assert all(isinstance(v, Board) and v.name == k for k, v in BOARDS.items())


def test_default_and_spelling_variants():
    assert get_board().name == "xiao_esp32s3"
    assert get_board("XIAO-ESP32S3-Sense").name == "xiao_esp32s3_sense"


def test_unknown_board_lists_valid_names():
    with pytest.raises(GendertoolError) as err:
        get_board("esp32c3")
    msg = str(err.value)
    assert "unknown board 'esp32c3'" in msg
    for name in BOARDS:
        assert name in msg
