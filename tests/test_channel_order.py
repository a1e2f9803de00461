"""Channel order (Preprocessing.channel_order, "rgb" or "bgr") carried everywhere preprocessing
goes: the reference, the sidecar, the rendered firmware constants, the virtual device, validate
(host and --port) and inspect. The g++-built firmware side is in tests/test_firmware_host.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from gendertool.model.preprocess import CHANNEL_ORDERS, Preprocessing, crop_resize, normalize, preprocess, quant_lut, quantize, to_channel_order
from gendertool.resources import resource_path

from tflite_fab import tiny_model

BGR = Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), channel_order="bgr")


@pytest.mark.parametrize("value", ["BGR", "rbg", "", None, 1, "grb"])
def test_unknown_channel_order_is_refused_with_its_own_message(value):
    with pytest.raises(ValueError) as info:
        Preprocessing(channel_order=value)
    assert str(info.value) == f"channel_order must be one of 'rgb', 'bgr', not {value!r}"
    with pytest.raises(ValueError, match="channel_order must be one of"):
        to_channel_order(np.zeros((2, 2, 3), np.uint8), value)


def test_default_is_rgb_and_the_dict_round_trips():
    assert Preprocessing().channel_order == "rgb"
    assert Preprocessing.from_dict({}).channel_order == "rgb"  # older sidecars
    assert Preprocessing.from_dict(BGR.to_dict()) == BGR
    assert BGR.to_dict()["channel_order"] == "bgr"


def test_bgr_reverses_the_tensor_channels():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    rgb_pre = Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
    as_rgb = preprocess(rgb, rgb_pre, 8, 8, 1 / 255, -128)
    as_bgr = preprocess(rgb, BGR, 8, 8, 1 / 255, -128)
    np.testing.assert_array_equal(as_bgr, as_rgb[..., ::-1])
    assert not np.array_equal(as_bgr, as_rgb)
    # mean/std are per tensor channel: tensor channel 0 of a BGR model is blue
    pre = Preprocessing(mean=(1.0, 2.0, 3.0), std=(10.0, 20.0, 30.0), channel_order="bgr")
    px = np.array([[[100, 150, 200]]], np.uint8)
    np.testing.assert_allclose(normalize(px, pre)[0, 0], [(200 - 1) / 10, (150 - 2) / 20, (100 - 3) / 30], rtol=1e-6)
    lut = quant_lut(pre, 0.05, 3)
    assert quantize(px, lut, "bgr")[0, 0].tolist() == [lut[0][200], lut[1][150], lut[2][100]]


def test_every_channel_order_has_a_firmware_enumerator():
    from gendertool.project.render import CHANNEL_ORDERS_CPP

    assert sorted(CHANNEL_ORDERS_CPP) == sorted(CHANNEL_ORDERS)
    header = (resource_path("firmware") / "main" / "image_preprocess.h").read_text()
    enum = re.search(r"enum class ChannelOrder : uint8_t \{(.*?)\};", header, re.S).group(1)
    # same order as CHANNEL_ORDER in test_firmware_host
    assert re.findall(r"^\s*(k\w+),", enum, re.M) == list(CHANNEL_ORDERS_CPP.values())


def _bgr_model(tmp_path, name="bgr", seed=2):
    folder = tmp_path / name
    folder.mkdir()
    path = folder / f"{name}.tflite"
    path.write_bytes(tiny_model(height=16, width=16, classes=2, seed=seed))
    (folder / f"{name}.json").write_text(json.dumps({"labels": ["female", "male"], "preprocessing": BGR.to_dict()}))
    return path


def test_sidecar_channel_order_reaches_the_firmware_constants(tmp_path):
    from gendertool.boards import get_board
    from gendertool.model.info import load_model
    from gendertool.project.render import render_project

    info = load_model(_bgr_model(tmp_path), measure_arena=False)
    assert info.preprocessing == BGR
    info = load_model(_bgr_model(tmp_path, "bgr2"))  # rendering needs the arena
    render_project(info, get_board("xiao_esp32s3"), tmp_path / "p")
    settings = (tmp_path / "p" / "main" / "model_settings.h").read_text()
    assert "constexpr ChannelOrder kChannelOrder = ChannelOrder::kBgr;" in settings
    assert "kChannelOrder" in (tmp_path / "p" / "main" / "input_provider.cc").read_text()


def test_inspect_shows_the_channel_order(cli, tmp_path):
    path = _bgr_model(tmp_path)
    r = cli("inspect", str(path), "--no-arena")
    assert r.exit_code == 0, r.output
    assert "channels BGR" in " ".join(r.stdout.split())
    r = cli("inspect", str(path), "--no-arena", "--json")
    assert json.loads(r.stdout)["preprocessing"]["channel_order"] == "bgr"


def test_inspect_refuses_an_unknown_channel_order(cli, tmp_path):
    path = _bgr_model(tmp_path)
    path.with_suffix(".json").write_text(json.dumps({"preprocessing": {"channel_order": "brg"}}))
    r = cli("inspect", str(path), "--no-arena")
    assert r.exit_code == 2
    msg = " ".join(r.stderr.split())
    assert "bad 'preprocessing' (channel_order must be one of 'rgb', 'bgr', not 'brg')" in msg
    assert "Traceback" not in r.output


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(4)
    for i, label in enumerate(("female", "male", "female", "male")):
        (root / label).mkdir(exist_ok=True)
        px = rng.integers(0, 256, size=(24 + i * 5, 30, 3), dtype=np.uint8)
        px[..., 0] //= 4  # make R and B differ so the order matters
        Image.fromarray(px).save(root / label / f"{i}.png")
    return root


def test_validate_host_feeds_bgr(tmp_path, images):
    from gendertool.model.info import load_model
    from gendertool.model.preprocess import load_rgb
    from gendertool.model.runtime import TflmRunner
    from gendertool.model.validate import validate_host

    path = _bgr_model(tmp_path)
    rep = validate_host(images, path)
    info = load_model(path, measure_arena=False)
    runner = TflmRunner(info.data)
    as_rgb = Preprocessing(mean=BGR.mean, std=BGR.std)
    args = (16, 16, info.input.scale, info.input.zero_point)
    differs = 0
    for im in rep.images:
        rgb = load_rgb(images / im.path)
        assert im.scores["tflm"] == tuple(int(v) for v in runner.invoke(preprocess(rgb, BGR, *args)).ravel())
        differs += im.scores["tflm"] != tuple(int(v) for v in runner.invoke(preprocess(rgb, as_rgb, *args)).ravel())
    assert differs
    assert rep.model["preprocessing"]["channel_order"] == "bgr"


def test_validate_text_names_the_channel_order(cli, tmp_path, images):
    r = cli("validate", "--model", str(_bgr_model(tmp_path)), "--images", str(images))
    assert r.exit_code == 0, r.output
    assert "preprocessing: crop center x 1, bilinear, channels BGR, mean 0/0/0 std 255/255/255" in " ".join(r.stdout.split())


def test_sim_and_validate_port_feed_bgr(cli, tmp_path, images):
    from gendertool.model.info import load_model
    from gendertool.model.runtime import TflmRunner
    from gendertool.device.sim import SimDevice, SimServer

    path = _bgr_model(tmp_path)
    info = load_model(path, measure_arena=False)
    dev = SimDevice(info, autostart=False, boot_delay_s=0.05, period_ms=20)
    rgb = np.random.default_rng(3).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    q = preprocess(rgb, BGR, 16, 16, info.input.scale, info.input.zero_point)
    np.testing.assert_array_equal(dev._preprocess(rgb), q)
    np.testing.assert_array_equal(q[0], quantize(crop_resize(rgb, 16, 16), quant_lut(BGR, info.input.scale,
                                                                                       info.input.zero_point), "bgr"))
    assert TflmRunner(info.data).invoke(q).shape[-1] == 2

    server = SimServer(dev).start()
    try:
        r = cli("validate", "--port", server.url, "--model", str(path), "--images", images, "--json")
    finally:
        server.close()
    assert r.exit_code == 0, r.output
    (board,) = json.loads(r.stdout)["boards"]
    assert board["parity_pct"] == 100.0 and board["uploaded"] == 4
    assert board["report"]["model"]["preprocessing"]["channel_order"] == "bgr"
