"""A model shaped like the Seeed card's deployed gender graph (tests/tflite_fab.seed_shaped_model:
7 fused 3x3 CONV_2D + MEAN + FULLY_CONNECTED + LOGISTIC) through every step: inspect, build
--no-compile, the virtual device (monitor, bench --port) and validate (host and --port)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gendertool.model.preprocess import Preprocessing

from tflite_fab import SEED_CHANNELS, SEED_STRIDES, seed_shaped_model

SEEED = {"labels": ["female", "male"], "preprocessing": Preprocessing(
    mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), channel_order="bgr").to_dict()}


@pytest.fixture(scope="module")
def seed_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    path = folder / "seed.tflite"
    path.write_bytes(seed_shaped_model())
    (folder / "seed.json").write_text(json.dumps(SEEED))
    return path


@pytest.fixture(scope="module")
def seed_info(seed_path):
    from gendertool.model.info import load_model

    return load_model(seed_path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("seed_imgs")
    rng = np.random.default_rng(9)
    for i in range(6):
        label = ("female", "male")[i % 2]
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(48 + 8 * i, 64, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_the_graph_has_the_cards_shape_and_figures(seed_info):
    """5.46 M MACs as the issue gives for the card's deployed graph; the parameters are this
    graph's weights and biases (30,610) plus MEAN's two axes."""
    from gendertool.model.flatbuffer import parse_model

    assert [op.name for op in seed_info.operators] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "LOGISTIC"]
    assert [op.count for op in seed_info.operators] == [7, 1, 1, 1]
    assert seed_info.macs == 5_455_936 and round(seed_info.macs / 1e6, 2) == 5.46
    assert seed_info.parameters == 30_612
    m = parse_model(seed_info.data)
    sg = m.subgraphs[0]
    convs = [op for op in sg.operators if op.opcodeIndex == 0]
    assert [sg.tensors[op.outputs[0]].shape[-1] for op in convs] == list(SEED_CHANNELS)
    assert [op.builtinOptions.strideH for op in convs] == list(SEED_STRIDES)
    assert seed_info.output.scale == 1 / 256 and seed_info.output.zero_point == -128  # TFLM's int8 LOGISTIC output


def test_inspect(cli, seed_path):
    r = cli("inspect", str(seed_path))
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "LOGISTIC" in text and "AddLogistic" in text and "5,455,936" in text and "channels BGR" in text
    doc = json.loads(cli("inspect", str(seed_path), "--json").stdout)
    assert doc["macs"] == 5_455_936 and doc["labels"] == ["female", "male"]
    assert doc["arena"]["firmware_bytes"] > doc["arena"]["host_bytes"] > 0


def test_build_no_compile(cli, seed_path, tmp_path):
    r = cli("build", "--no-compile", "--model", str(seed_path), "--out", str(tmp_path / "fw"))
    assert r.exit_code == 0, r.output
    main = tmp_path / "fw" / "main"
    assert "AddLogistic()" in (main / "op_resolver.h").read_text()
    settings = (main / "model_settings.h").read_text()
    assert "constexpr ChannelOrder kChannelOrder = ChannelOrder::kBgr;" in settings
    assert "constexpr int kNumClasses = 2;" in settings


def test_sim_results_are_the_reference(seed_info):
    from gendertool.device.link import DeviceClient
    from gendertool.model.preprocess import preprocess
    from gendertool.model.runtime import TflmRunner
    from gendertool.device.sim import SimDevice, SimServer
    from gendertool.device.transport import open_port

    server = SimServer(SimDevice(seed_info, autostart=False, boot_delay_s=0.05, period_ms=20)).start()
    client = DeviceClient(open_port(server.url), reconnect_timeout=5)
    rng = np.random.default_rng(2)
    runner = TflmRunner(seed_info.data)
    try:
        seen = set()
        for _ in range(4):
            rgb = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
            res = client.infer_rgb(rgb)
            q = preprocess(rgb, seed_info.preprocessing, 64, 64, seed_info.input.scale, seed_info.input.zero_point)
            assert list(res.scores) == runner.invoke(q).reshape(-1).tolist()
            seen.add(tuple(res.scores))
    finally:
        client.close()
        server.close()
    assert len(seen) > 1  # the random weights still tell inputs apart


def test_monitor_and_bench_on_the_virtual_device(cli, seed_info, tmp_path):
    from gendertool.device.sim import SimDevice, SimServer

    server = SimServer(SimDevice(seed_info, boot_delay_s=0.05, period_ms=10)).start()
    try:
        r = cli("monitor", "--port", server.url, "--count", "3", "--json")
        assert r.exit_code == 0, r.output
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(rows) == 3 and all(row["label"] in ("female", "male") for row in rows)
        # a LOGISTIC output is read as it is: one sigmoid per class
        for row in rows:
            assert row["probs"] == pytest.approx([(s + 128) / 256 for s in row["scores"]], abs=1e-4)
        r = cli("bench", "--port", server.url, "-n", "10", "--warmup", "0", "--out", str(tmp_path), "--no-plots")
    finally:
        server.close()
    assert r.exit_code == 0, r.output
    assert "SIMULATED latency" in r.stdout and "estimate: no comparison on a virtual device" in r.stdout
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["completed"] == 10 and data["model"]["sha256"] == seed_info.sha256


def test_validate_host_and_port(cli, seed_path, seed_info, images):
    from gendertool.device.sim import SimDevice, SimServer

    r = cli("validate", "--model", str(seed_path), "--images", str(images), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["labels"] == ["female", "male"] and len(doc["images"]) == 6
    for im in doc["images"]:  # LiteRT agrees with TFLM on every runtime it ran (power-of-two scales)
        assert len(im["scores"]) >= 2 and all(v == im["scores"]["tflm"] for v in im["scores"].values())

    server = SimServer(SimDevice(seed_info, boot_delay_s=0.05, period_ms=20)).start()
    try:
        r = cli("validate", "--port", server.url, "--model", str(seed_path), "--images", str(images), "--json")
    finally:
        server.close()
    assert r.exit_code == 0, r.output
    (board,) = json.loads(r.stdout)["boards"]
    assert board["parity_pct"] == 100.0 and board["uploaded"] == 6
