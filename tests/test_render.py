"""render_project: complete, deterministic, incremental, banner on every generated file,
the op resolver holds exactly the model's operators, clear errors for impossible requests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gendertool.boards import get_board
from gendertool.errors import BuildError, GendertoolError
from gendertool.project.render import build_context, c_string, make_environment, render_project
from gendertool.resources import resource_path

from tflite_fab import tiny_model

BOARDS = ["xiao_esp32s3", "xiao_esp32s3_sense"]
TEMPLATES = resource_path("templates")
FIRMWARE_MAIN = resource_path("firmware") / "main"


@pytest.fixture(scope="module")
def model():
    from gendertool.model.info import load_model

    return load_model(None)


@pytest.fixture(scope="module")
def tiny():
    from gendertool.model.info import load_model_bytes

    return load_model_bytes(tiny_model(height=16, width=16, classes=3), name="tiny", labels=["a", "b", "c"])


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("board", BOARDS)
def test_render_is_complete_and_deterministic(model, board, tmp_path):
    b = get_board(board)
    first = render_project(model, b, tmp_path / "a")
    second = render_project(model, b, tmp_path / "b")
    tree_a, tree_b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert tree_a == tree_b, "same inputs must give the same bytes"
    assert len(first.written) == len(tree_a) and not first.unchanged
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in second.written) == sorted(tree_b)
    # every template rendered to its mirrored path, every firmware source copied
    expected = {p.relative_to(TEMPLATES).as_posix()[:-3] for p in TEMPLATES.rglob("*.j2")}
    expected |= {"main/" + p.name for p in FIRMWARE_MAIN.iterdir() if p.is_file()}
    assert set(tree_a) == expected
    for name in ("CMakeLists.txt", "main/CMakeLists.txt", "main/idf_component.yml", "sdkconfig.defaults",
                 "sdkconfig.defaults.esp32s3", "partitions.csv", "main/Kconfig.projbuild", "platformio.ini"):
        assert name in tree_a


def test_rerender_rewrites_only_changed_files(model, tmp_path):
    b = get_board("xiao_esp32s3")
    render_project(model, b, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = render_project(model, b, tmp_path)
    assert again.written == [] and len(again.unchanged) == len(before)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # a different option changes only the files that depend on it
    changed = render_project(model, b, tmp_path, options={"inference_period_ms": 250})
    assert [p.relative_to(tmp_path).as_posix() for p in changed.written] == ["main/Kconfig.projbuild"]
    # a hand-edited generated file is put back
    (tmp_path / "main" / "op_resolver.h").write_text("// edited\n")
    fixed = render_project(model, b, tmp_path, options={"inference_period_ms": 250})
    assert [p.relative_to(tmp_path).as_posix() for p in fixed.written] == ["main/op_resolver.h"]


def test_every_generated_file_has_the_banner(model, tmp_path):
    render_project(model, get_board("xiao_esp32s3_sense"), tmp_path, input_source="camera")
    generated = [p.relative_to(TEMPLATES).as_posix()[:-3] for p in TEMPLATES.rglob("*.j2")]
    for rel in generated:
        head = "\n".join((tmp_path / rel).read_text(encoding="utf-8").splitlines()[:4])
        assert model.sha256 in head and model.name in head, f"{rel} lacks the banner"


@pytest.mark.parametrize("which", ["model", "tiny"])
def test_op_resolver_adds_exactly_the_models_operators(which, model, tiny, tmp_path):
    m = model if which == "model" else tiny
    render_project(m, get_board("xiao_esp32s3"), tmp_path)
    text = (tmp_path / "main" / "op_resolver.h").read_text()
    added = re.findall(r"resolver\.(Add\w+)\(\)", text)
    assert sorted(added) == sorted({op.resolver_method for op in m.operators})
    assert len(added) == len(set(added))
    assert f"constexpr unsigned kNumOps = {len(added)};" in text
    assert "AllOpsResolver" not in text.replace("no AllOpsResolver", "")


def test_camera_only_on_camera_boards(model, tmp_path):
    with pytest.raises(GendertoolError, match="board xiao_esp32s3 has no camera.*xiao_esp32s3_sense"):
        render_project(model, get_board("xiao_esp32s3"), tmp_path, input_source="camera")
    plain = build_context(model, get_board("xiao_esp32s3"))
    sense = build_context(model, get_board("xiao_esp32s3_sense"), input_source="camera")
    env = make_environment()
    assert "esp32-camera" not in env.get_template("main/idf_component.yml.j2").render(**plain)
    assert "espressif/esp32-camera" in env.get_template("main/idf_component.yml.j2").render(**sense)
    assert "camera_provider.cc" in env.get_template("main/CMakeLists.txt.j2").render(**sense)
    assert "camera_provider.cc" not in env.get_template("main/CMakeLists.txt.j2").render(**plain)
    assert "default APP_INPUT_CAMERA" in env.get_template("main/Kconfig.projbuild.j2").render(**sense)


def test_bad_requests_are_clear_errors(model, tmp_path):
    b = get_board("xiao_esp32s3")
    with pytest.raises(GendertoolError, match="unknown input source 'webcam'"):
        render_project(model, b, tmp_path, input_source="webcam")
    with pytest.raises(GendertoolError, match="unknown render option.*colour"):
        render_project(model, b, tmp_path, options={"colour": "red"})
    with pytest.raises(GendertoolError, match="arena_placement must be"):
        render_project(model, b, tmp_path, options={"arena_placement": "sram"})
    with pytest.raises(BuildError, match="no sample images"):
        render_project(model, b, tmp_path, options={"samples": []})


def test_unreadable_sample_is_an_image_error(model, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(GendertoolError, match="broken.png: not a readable image"):
        render_project(model, get_board("xiao_esp32s3"), tmp_path / "out", options={"samples": [bad]})


def test_model_too_big_for_the_flash(model, tmp_path):
    import dataclasses

    huge = dataclasses.replace(model, size=7 * 1024 * 1024)
    with pytest.raises(BuildError, match="do not fit the xiao_esp32s3 app partition"):
        build_context(huge, get_board("xiao_esp32s3"))


def test_partition_grows_with_the_model(model, tiny, tmp_path):
    small = build_context(tiny, get_board("xiao_esp32s3"))["app"]["app_partition_bytes"]
    big = build_context(model, get_board("xiao_esp32s3"))["app"]["app_partition_bytes"]
    assert small % 0x10000 == 0 and big % 0x10000 == 0
    assert big > small >= 1024 * 1024
    assert big >= 1_536 * 1024 + model.size


def test_strict_undefined_catches_a_missing_key(model):
    import jinja2

    ctx = build_context(model, get_board("xiao_esp32s3"))
    del ctx["components"]
    with pytest.raises(jinja2.UndefinedError):
        make_environment().get_template("main/idf_component.yml.j2").render(**ctx)


@pytest.mark.parametrize(
    "text,literal",
    [
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("new\nline", r'"new\nline"'),
        ("é1", r'"\303\2511"'),
        ("what??=", r'"what\?\?="'),
    ],
)
def test_c_string_escapes(text, literal):
    assert c_string(text) == literal


@pytest.mark.parametrize("board", BOARDS)
def test_main_cmakelists_builds_every_source(model, board, tmp_path):
    b = get_board(board)
    render_project(model, b, tmp_path, input_source="camera" if b.has_camera else "sample")
    text = (tmp_path / "main" / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"(\w+\.cc)"', text))
    present = {p.name for p in (tmp_path / "main").glob("*.cc")}
    expected = present if b.has_camera else present - {"camera_provider.cc"}
    assert listed == expected
    assert "idf_component_register(" in text


def test_sample_limits(model, tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGB", (700, 20)).save(big)
    with pytest.raises(BuildError, match="big.png: sample image is 700x20; at most 640 px a side"):
        render_project(model, get_board("xiao_esp32s3"), tmp_path / "a", options={"samples": [big]})
    small = tmp_path / "s.png"
    Image.new("RGB", (8, 8)).save(small)
    with pytest.raises(BuildError, match="17 sample images; the firmware takes at most 16"):
        render_project(model, get_board("xiao_esp32s3"), tmp_path / "b", options={"samples": [small] * 17})


def test_custom_samples_and_esp_nn_option(model, tmp_path):
    from PIL import Image

    one = tmp_path / "grey square.png"
    Image.new("RGB", (30, 20), (128, 128, 128)).save(one)
    render_project(model, get_board("xiao_esp32s3"), tmp_path / "p", options={"samples": [one], "esp_nn": False})
    samples = (tmp_path / "p" / "main" / "sample_images.cc").read_text()
    assert '{"grey square", 30, 20, kgrey_square' in samples
    assert "constexpr int kNumSampleImages = 1;" in (tmp_path / "p" / "main" / "sample_images.h").read_text()
    sdk = (tmp_path / "p" / "sdkconfig.defaults").read_text().splitlines()
    assert "CONFIG_NN_ANSI_C=y" in sdk and "CONFIG_NN_OPTIMIZED=y" not in sdk


def test_sidecar_crop_mode_reaches_the_model_settings(model, tmp_path):
    import json

    from gendertool.model.info import load_model
    from gendertool.model.preprocess import Preprocessing, load_rgb, preprocess
    from gendertool.project.samples import default_sample_paths
    from gendertool.model.runtime import TflmRunner

    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "whole.tflite"
    path.write_bytes(tiny_model(height=16, width=16, classes=2))
    pre = Preprocessing(crop_fraction=0.9, crop="none")
    (folder / "whole.json").write_text(json.dumps({"labels": ["a", "b"], "preprocessing": pre.to_dict()}))
    whole = load_model(path)
    assert whole.preprocessing == pre

    b = get_board("xiao_esp32s3")
    render_project(whole, b, tmp_path / "w")
    render_project(model, b, tmp_path / "c")
    settings = (tmp_path / "w" / "main" / "model_settings.h").read_text()
    assert "constexpr CropMode kCropMode = CropMode::kWholeFrame;" in settings and "kCenterSquare" not in settings
    assert '#include "image_preprocess.h"' in settings  # where gt::CropMode is declared
    assert model.preprocessing.crop == "center"
    assert "constexpr CropMode kCropMode = CropMode::kCenterSquare;" in (tmp_path / "c" / "main" / "model_settings.h").read_text()

    # the built-in samples' expected scores come from the same (stretched) pixels
    runner = TflmRunner(whole.data)
    samples = build_context(whole, b)["samples"]
    for s, p in zip(samples, default_sample_paths(), strict=True):
        q = preprocess(load_rgb(p), pre, 16, 16, whole.input.scale, whole.input.zero_point)
        assert s["expected"] == [int(v) for v in runner.invoke(q).reshape(-1)]


def test_every_crop_mode_has_a_firmware_enumerator():
    from gendertool.model.preprocess import CROP_MODES
    from gendertool.project.render import CROP_MODES_CPP

    assert sorted(CROP_MODES_CPP) == sorted(CROP_MODES)
    header = (FIRMWARE_MAIN / "image_preprocess.h").read_text()
    enum = re.search(r"enum class CropMode : uint8_t \{(.*?)\};", header, re.S).group(1)
    assert re.findall(r"^\s*(k\w+),", enum, re.M) == list(CROP_MODES_CPP.values())  # same order as CROP_MODE in test_firmware_host
