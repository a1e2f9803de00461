"""The shipped default model: I/O contract, sidecar, model card checksum, held-out accuracy,
framing and hair (masking) checks."""

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
    from gendertool.model.info import load_model

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
    from gendertool.model.preprocess import Preprocessing

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
    from gendertool.model.preprocess import list_images

    expected = sorted(
        f"{p.parent.name}/{p.name}" for p in list_images(portraits) if mod.is_heldout(p.name)
    )
    assert sorted(HELDOUT.read_text().split()) == expected


# Issue 10's bar for portraits like these (its hidden-set target), and per-class recall.
TARGET = 0.92
MIN_RECALL = 0.80


@pytest.fixture(scope="module")
def heldout_run(portraits, info):
    """Held-out split through the firmware preprocessing on TFLM and LiteRT reference kernels."""
    from gendertool.model.preprocess import load_rgb, preprocess
    from gendertool.model.runtime import LiteRtRunner, TflmRunner

    tflm = TflmRunner(info.data)
    lite = LiteRtRunner(info.data, kernels="reference")
    correct = identical = total = 0
    per_class = np.zeros((2, 2), int)  # [class] -> (correct, n)
    for rel in HELDOUT.read_text().split():
        label = info.labels.index(rel.split("/")[0])
        x = preprocess(load_rgb(portraits / rel), info.preprocessing, 64, 64, info.input.scale, info.input.zero_point)
        q = tflm.invoke(x)
        ok = int(np.argmax(q) == label)
        correct += ok
        per_class[label] += (ok, 1)
        identical += int(np.array_equal(q, lite.invoke(x)))
        total += 1
    return correct, identical, total, per_class


def test_heldout_figures_match_the_card(heldout_run):
    correct, identical, total, _ = heldout_run
    metrics = json.loads((MODELS / "gender_mbv2_035_64.metrics.json").read_text())
    assert total == metrics["heldout_images"] >= 100
    assert identical == total, f"TFLM vs LiteRT reference kernels: {identical}/{total} bit-identical"
    # deterministic kernels: the recorded figure must reproduce exactly
    assert correct / total == pytest.approx(metrics["heldout_accuracy_int8_tflm"], abs=1e-9)
    assert f"{100 * correct / total:.1f} %" in CARD.read_text()


def test_heldout_int8_accuracy_and_recall_meet_the_bar(heldout_run):
    correct, _, total, per_class = heldout_run
    assert correct / total >= TARGET, f"held-out INT8 accuracy {correct}/{total} = {correct / total:.3f}"
    for name, (ok, n) in zip(("female", "male"), per_class):
        assert ok / n >= MIN_RECALL, f"{name} recall {ok}/{n}"


def test_out_of_distribution_figures_reproduce(portraits, info):
    """Every out-of-distribution figure of the card (face crops from the shipped landmarks,
    grey, desaturated, colour casts; per class) recomputed on TFLM: exactly the recorded counts."""
    from gendertool.model.preprocess import load_rgb, quant_lut, quantize
    from gendertool.model.runtime import TflmRunner

    tm = _train_script()
    rels = HELDOUT.read_text().split()
    faces = json.loads((MODELS / "heldout_faces.json").read_text())["landmarks"]
    assert set(faces) == set(rels)
    found = np.array([faces[r] is not None for r in rels])
    marks = np.array([faces[r] or [[0, 0]] * 5 for r in rels], float)
    labels = np.array([info.labels.index(r.split("/")[0]) for r in rels])
    conds = tm.ood_conditions([load_rgb(portraits / r) for r in rels], found, marks)
    lut = quant_lut(info.preprocessing, info.input.scale, info.input.zero_point)
    tflm = TflmRunner(info.data)
    recorded = json.loads((MODELS / "gender_mbv2_035_64.metrics.json").read_text())["ood"]
    assert set(conds) == set(recorded)
    for name, (views, keep) in conds.items():
        pred = np.array([np.argmax(tflm.invoke(quantize(v, lut)[None])) for v in views])
        got = tm.class_counts(pred, labels[keep])
        assert got == recorded[name], name
        assert got["female_correct"] / got["female_n"] >= MIN_RECALL and got["male_correct"] / got["male_n"] >= MIN_RECALL, name


# Issue 18's framing and hair checks on the held-out portraits (its hidden-set goals: each
# framing >= 80 %, the widest within 8 points of the tightest), per class as well.
FRAMING_MIN = 0.80
FRAMING_SPREAD = 0.08


def test_framing_and_masking_checks_meet_the_bar_and_are_in_the_card():
    """The re-framed (1.0/1.5/2.2x the face box) and masked (hair, clothes and background
    replaced by studio grey) held-out figures: recorded for every framing, each at least 80 %
    with both recalls at least 80 %, the widest framing within 8 points of the tightest, and
    every count printed in the card. test_out_of_distribution_figures_reproduce recomputes
    each of these counts from the photos."""
    tm = _train_script()
    recorded = json.loads((MODELS / "gender_mbv2_035_64.metrics.json").read_text())["ood"]
    card = " ".join(CARD.read_text().split())
    zooms = tm.REFRAME_ZOOMS
    assert zooms[0] == 1.0 and zooms[-1] >= 2.0
    for kind in ("face", "masked"):
        acc = {}
        for z in zooms:
            d = recorded[f"{kind}_x{z}"]
            acc[z] = d["correct"] / d["n"]
            assert d["n"] >= 150, (kind, z)
            assert acc[z] >= FRAMING_MIN, (kind, z, acc[z])
            for name in ("female", "male"):
                assert d[f"{name}_correct"] / d[f"{name}_n"] >= FRAMING_MIN, (kind, z, name)
                assert f"({d[f'{name}_correct']}/{d[f'{name}_n']})" in card, (kind, z, name)
            assert f"{100 * acc[z]:.1f} % ({d['correct']}/{d['n']})" in card, (kind, z)
        assert acc[zooms[0]] - acc[zooms[-1]] <= FRAMING_SPREAD, (kind, acc)


# Post-hoc diagnostic (computed after v3's held-out read, reported in the card): the held-out
# photos with their hair, framed at exactly 1.0/1.5/2.2x the face box on a grey card
# (train_model.padded_face_crop). zoom -> (correct, female correct, male correct) of 83 + 73.
PADDED_FRAMING = {1.0: (142, 73, 69), 1.5: (149, 79, 70), 2.2: (135, 74, 61)}


def test_padded_framing_diagnostic_reproduces(portraits, info):
    from gendertool.model.preprocess import load_rgb, quant_lut, quantize
    from gendertool.model.runtime import TflmRunner

    tm = _train_script()
    rels = HELDOUT.read_text().split()
    faces = json.loads((MODELS / "heldout_faces.json").read_text())["landmarks"]
    assert all(faces[r] is not None for r in rels)
    labels = np.array([info.labels.index(r.split("/")[0]) for r in rels])
    rgbs = [load_rgb(portraits / r) for r in rels]
    lut = quant_lut(info.preprocessing, info.input.scale, info.input.zero_point)
    tflm = TflmRunner(info.data)
    card = " ".join(CARD.read_text().split())
    for zoom, (ok, ok_f, ok_m) in PADDED_FRAMING.items():
        views = [tm.padded_face_crop(rgb, np.array(faces[r], float), zoom) for rgb, r in zip(rgbs, rels)]
        pred = np.array([np.argmax(tflm.invoke(quantize(v, lut)[None])) for v in views])
        got = tm.class_counts(pred, labels)
        assert (got["correct"], got["female_correct"], got["male_correct"]) == (ok, ok_f, ok_m), zoom
        assert f"{100 * ok / len(rels):.1f} % ({ok}/{len(rels)})" in card, zoom


def test_builtin_samples_are_classified_right(info):
    """The firmware's four built-in samples (held-out portraits, named <label>_...): the
    shipped model gets each one right, as monitor's verdicts show on the device."""
    from gendertool.model.preprocess import load_rgb, preprocess
    from gendertool.project.samples import sample_truth
    from gendertool.model.runtime import TflmRunner

    tflm = TflmRunner(info.data)
    samples = sorted((REPO / "firmware" / "samples").glob("*.png"))
    assert len(samples) == 4
    for path in samples:
        truth = sample_truth(path.stem, info.labels)
        assert truth >= 0, path.name
        x = preprocess(load_rgb(path), info.preprocessing, 64, 64, info.input.scale, info.input.zero_point)
        assert int(np.argmax(tflm.invoke(x))) == truth, path.name
