"""`gendertool validate` on the host: accuracy, confusion, TFLM-vs-LiteRT parity, bad inputs."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gendertool.model.preprocess import Preprocessing, load_rgb, preprocess
from gendertool.model.validate import ImageResult, RuntimeInfo, SkippedFile, build_report, compare_outputs, validate_host

from tflite_fab import tiny_model


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small valid int8 classifier (16x16x3 -> 2) with its labels sidecar."""
    folder = tmp_path_factory.mktemp("model")
    path = folder / "tiny.tflite"
    path.write_bytes(tiny_model(height=16, width=16, classes=2, seed=3))
    pre = Preprocessing(crop_fraction=0.9, mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0))
    (folder / "tiny.json").write_text(json.dumps({"labels": ["female", "male"], "preprocessing": pre.to_dict()}))
    return path


def _image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 40 * seed % 256)], axis=-1)
    noise = rng.integers(0, 60, size=(h, w, 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).convert(mode).save(path)


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])


@pytest.fixture
def images(tmp_path) -> Path:
    """female/ and male/ with synthetic images of several formats, plus files to skip."""
    root = tmp_path / "imgs"
    (root / "female").mkdir(parents=True)
    (root / "male").mkdir()
    _image(root / "female" / "f1.png", (40, 60), 1)
    _image(root / "female" / "f2.jpg", (100, 80), 2)
    _image(root / "female" / "f3.png", (33, 33), 3, mode="L")
    _image(root / "male" / "m1.png", (64, 64), 4, mode="RGBA")
    _image(root / "male" / "m2.jpg", (120, 90), 5)
    _image(root / "male" / "m3.bmp", (17, 29), 6)
    (root / "female" / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    _truncated_jpeg(root / "male" / "cut.jpg")
    (root / "male" / "notes.txt").write_text("not an image")
    (root / "male" / ".DS_Store").write_bytes(b"\0\0")  # hidden: ignored
    (root / "README.md").write_text("loose non-image files at the top are ignored")
    return root


# --- the comparison and report building (shared with the device path) ------------------------


def test_compare_outputs():
    same = compare_outputs(np.array([[-3, 7]], np.int8), [-3, 7])
    assert same.identical and same.max_diff == 0 and same.same_class
    c = compare_outputs(np.array([-128, 127], np.int8), np.array([127, -128], np.int8))
    assert not c.identical and c.max_diff == 255 and not c.same_class  # no int8 wrap-around
    c = compare_outputs([10, 5, 0], [9, 5, 3])
    assert (c.identical, c.max_diff, c.same_class) == (False, 3, True)
    for a, b in (([10, 5], [11, 5]), ([-128, 3], [-128, 2]), ([127], [126])):  # "bit-exact" has no tolerance
        c = compare_outputs(a, b)
        assert (c.identical, c.max_diff, c.same_class) == (False, 1, True)
    with pytest.raises(ValueError, match="cannot compare outputs of 2 and 3 scores"):
        compare_outputs([1, 2], [1, 2, 3])
    lone = ImageResult(path="a/1", label="a", scores={"tflm": (1, 2)}, predicted={"tflm": "b"}, comparisons={})
    assert lone.identical and lone.max_diff == 0  # nothing compared: no difference invented


def _result(path, label, ref, dev, labels=("a", "b")):
    return ImageResult(
        path=path,
        label=label,
        scores={"tflm": tuple(ref), "device": tuple(dev)},
        predicted={"tflm": labels[int(np.argmax(ref))], "device": labels[int(np.argmax(dev))]},
        comparisons={"device": compare_outputs(ref, dev)},
    )


def test_build_report_counts():
    imgs = [
        _result("a/1", "a", [5, -5], [5, -5]),
        _result("a/2", "a", [-1, 1], [1, -1]),
        _result("b/1", "b", [-9, 9], [-7, 9]),
    ]
    rep = build_report(
        model={"name": "m", "sha256": "0" * 64},
        images_dir="x",
        labels=("a", "b"),
        runtimes=[RuntimeInfo("tflm", "ref kernels"), RuntimeInfo("device", "ESP-NN")],
        images=imgs,
        skipped=[SkippedFile("a/bad.jpg", "broken")],
        elapsed_s=1.0,
    )
    tflm, dev = rep.runtime("tflm"), rep.runtime("device")
    assert (tflm.correct, tflm.total, tflm.confusion) == (2, 3, ((1, 1), (0, 1)))
    assert (dev.correct, dev.total, dev.confusion) == (3, 3, ((2, 0), (0, 1)))
    (par,) = rep.parity
    assert (par.reference, par.candidate, par.compared, par.identical, par.max_diff, par.same_class) == ("tflm", "device", 3, 1, 2, 2)
    assert (par.reference_kernels, par.candidate_kernels) == ("ref kernels", "ESP-NN")
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["images"][1]["identical"] is False and doc["images"][1]["max_diff"] == 2
    assert doc["skipped"] == [{"path": "a/bad.jpg", "reason": "broken"}]


# --- the host operation -----------------------------------------------------------------------


def test_report_matches_litert_run_directly(tiny, images):
    """Each image's scores are the model's output on the reference preprocessing."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    seen = []
    rep = validate_host(images, tiny, progress=lambda done, total: seen.append((done, total)))
    assert [r.name for r in rep.runtimes] == ["tflm", "litert:reference"]
    assert sorted(im.path for im in rep.images) == ["female/f1.png", "female/f2.jpg", "female/f3.png", "male/m1.png", "male/m2.jpg", "male/m3.bmp"]
    assert sorted(s.path for s in rep.skipped) == ["female/broken.jpg", "male/cut.jpg", "male/notes.txt"]
    assert all("not a readable image" in s.reason for s in rep.skipped)
    assert seen[-1] == (9, 9) and len(seen) == 9  # every candidate file, skipped ones included

    it = Interpreter(model_content=tiny.read_bytes(), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = inp["quantization"]
    pre = Preprocessing(crop_fraction=0.9, mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0))
    for im in rep.images:
        x = preprocess(load_rgb(images / im.path), pre, 16, 16, scale, zp)
        it.set_tensor(inp["index"], x)
        it.invoke()
        expected = tuple(int(v) for v in it.get_tensor(out["index"]).ravel())
        assert im.scores["litert:reference"] == expected
        assert im.predicted["litert:reference"] == ("female", "male")[int(np.argmax(expected))]
        assert im.comparisons["litert:reference"].identical == (im.scores["tflm"] == expected)


def test_cli_tables(cli, tiny, images):
    r = cli("validate", "--model", tiny, "--images", images)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "accuracy" in out and "confusion" in out
    assert "int8 output parity with tflm" in out
    assert "OpResolverType.BUILTIN_REF (reference kernels)" in out
    assert "TFLM host runtime" in out
    assert "6 images" in out
    warn = " ".join(r.stderr.split())
    assert "skipped 3 files that are not readable images:" in warn
    for name in ("female/broken.jpg", "male/cut.jpg", "male/notes.txt"):
        assert name in warn
    assert ".DS_Store" not in r.output and "README.md" not in r.output


def test_cli_json_is_consistent(cli, tiny, images):
    r = cli("validate", "--model", tiny, "--images", images, "--json", "-k", "reference", "-k", "default", "-k", "builtin")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # exactly one JSON document on stdout
    assert doc["labels"] == ["female", "male"]
    assert doc["model"]["name"] == "tiny" and len(doc["model"]["sha256"]) == 64
    assert [rt["name"] for rt in doc["runtimes"]] == ["tflm", "litert:reference", "litert:default", "litert:builtin"]
    kernels = {rt["name"]: rt["kernels"] for rt in doc["runtimes"]}
    assert "XNNPACK" in kernels["litert:default"]
    assert "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in kernels["litert:builtin"]
    assert len(doc["images"]) == 6
    for rt in doc["runtimes"]:
        correct = sum(im["predicted"][rt["name"]] == im["label"] for im in doc["images"])
        assert rt["correct"] == correct and rt["total"] == 6
        assert rt["accuracy"] == pytest.approx(correct / 6)
        assert sum(map(sum, rt["confusion"])) == 6
        assert [sum(row) for row in rt["confusion"]] == [3, 3]
    for p in doc["parity"]:
        name = p["candidate"]
        same = [im["scores"][name] == im["scores"]["tflm"] for im in doc["images"]]
        assert p["identical"] == sum(same) and p["compared"] == 6
        assert p["max_diff"] == max(
            max(abs(a - b) for a, b in zip(im["scores"][name], im["scores"]["tflm"])) for im in doc["images"]
        )
    for im in doc["images"]:
        assert all(len(s) == 2 and all(-128 <= v <= 127 for v in s) for s in im["scores"].values())
    assert {s["path"] for s in doc["skipped"]} == {"female/broken.jpg", "male/cut.jpg", "male/notes.txt"}


def test_limit_takes_labels_in_turn(cli, tiny, images):
    r = cli("validate", "--model", tiny, "--images", images, "--json", "--limit", "4")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    # sorted per label, then one from each label in turn: broken, cut, f1, m1
    assert [im["path"] for im in doc["images"]] == ["female/f1.png", "male/m1.png"]
    assert [s["path"] for s in doc["skipped"]] == ["female/broken.jpg", "male/cut.jpg"]
    r = cli("validate", "--model", tiny, "--images", images, "--limit", "0")
    assert r.exit_code == 2
    assert "--limit must be at least 1, got 0" in r.stderr


def test_labels_override(cli, tiny, tmp_path):
    root = tmp_path / "abc"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        _image(root / label / "x.png", (20, 20), len(label))
    r = cli("validate", "--model", tiny, "--images", root, "--labels", "cat, dog", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == ["cat", "dog"]


def test_bad_labels_option(cli, tiny, images):
    r = cli("validate", "--model", tiny, "--images", images, "--labels", "female,,male")
    assert r.exit_code == 2
    assert "--labels 'female,,male': label 2 is empty" in r.stderr
    r = cli("validate", "--model", tiny, "--images", images, "--labels", "a,b,c")
    assert r.exit_code == 2
    assert "a, b, c" in r.stderr and "Traceback" not in r.output


def test_subfolder_not_a_label(cli, tiny, images):
    (images / "cat").mkdir()
    r = cli("validate", "--model", tiny, "--images", images)
    assert r.exit_code == 2
    msg = " ".join(r.stderr.split())
    assert "sub-folder(s) 'cat' are not labels of the model; its labels are: female, male" in msg
    assert "--labels" in msg


def test_folder_problems(cli, tiny, tmp_path):
    r = cli("validate", "--model", tiny, "--images", tmp_path / "nope")
    assert r.exit_code == 2 and "nope: no such folder" in r.stderr
    (tmp_path / "file.png").write_bytes(b"x")
    r = cli("validate", "--model", tiny, "--images", tmp_path / "file.png")
    assert r.exit_code == 2 and "not a folder" in r.stderr
    flat = tmp_path / "flat"
    flat.mkdir()
    _image(flat / "a.png", (10, 10), 1)
    r = cli("validate", "--model", tiny, "--images", flat)
    assert r.exit_code == 2
    assert (f"{flat}: 1 image lies directly in the folder (a.png); images go in one sub-folder per label: "
            f"{flat / 'female'}/, {flat / 'male'}/") in " ".join(r.stderr.split())  # fmt: skip
    (flat / "a.png").unlink()
    r = cli("validate", "--model", tiny, "--images", flat)
    assert r.exit_code == 2
    assert "no label sub-folders; expected one sub-folder per label: female, male" in " ".join(r.stderr.split())
    empty = tmp_path / "empty"
    (empty / "female").mkdir(parents=True)
    (empty / "male").mkdir()
    r = cli("validate", "--model", tiny, "--images", empty)
    assert r.exit_code == 2
    assert "no files in the label sub-folders (female, male)" in " ".join(r.stderr.split())
    bad = tmp_path / "bad"
    (bad / "male").mkdir(parents=True)
    (bad / "male" / "a.jpg").write_bytes(b"garbage")
    (bad / "male" / "b.txt").write_text("text")
    r = cli("validate", "--model", tiny, "--images", bad)
    assert r.exit_code == 2
    assert "no readable images (2 files skipped: male/a.jpg, male/b.txt; male/a.jpg: not a readable image" in " ".join(r.stderr.split())
    assert "Traceback" not in r.output


def test_loose_image_at_top_is_reported(tiny, images):
    _image(images / "loose.png", (20, 20), 9)
    rep = validate_host(images, tiny)
    where = f"images go in one sub-folder per label: {images / 'female'}/, {images / 'male'}/"
    assert SkippedFile("loose.png", f"outside the label sub-folders; {where}", "outside") in rep.skipped


def test_loose_image_and_empty_label_folder_warn_through_cli(cli, tiny, images):
    _image(images / "loose.png", (20, 20), 9)
    for f in (images / "male").iterdir():
        f.unlink()
    r = cli("validate", "--model", tiny, "--images", images)
    assert r.exit_code == 0, r.stderr
    err = " ".join(r.stderr.split())
    assert "warning: label folder male/ is empty: no image of class 'male' is validated" in err
    assert (f"warning: skipped 1 image outside the label sub-folders (loose.png): images go in one "
            f"sub-folder per label: {images / 'female'}/, {images / 'male'}/") in err  # fmt: skip
    assert err.count("loose.png") == 1  # not also called unreadable


def test_unknown_kernels(cli, tiny, images):
    r = cli("validate", "--model", tiny, "--images", images, "--kernels", "fast")
    assert r.exit_code == 2
    assert "unknown kernel set 'fast'; choose from: reference, default, builtin" in r.stderr


def test_bad_sidecar_through_cli(cli, tmp_path, images):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model(height=16, width=16))
    (tmp_path / "m.json").write_text('{"labels": ["female", "female"]}')
    r = cli("validate", "--model", model, "--images", images)
    assert r.exit_code == 2
    assert "label 'female' appears twice" in r.stderr


def test_help(cli):
    r = cli("validate", "--help")
    assert r.exit_code == 0
    assert "--images" in r.stdout and "--kernels" in r.stdout


# --- real portraits with the shipped model ----------------------------------------------------


def test_portraits_with_default_model(cli, portraits, default_model, tmp_path):
    root = tmp_path / "p"
    for label in ("female", "male"):
        (root / label).mkdir(parents=True)
        for src in sorted((portraits / label).glob("*.jpg"))[:5]:
            shutil.copy(src, root / label / src.name)
    (root / "female" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    r = cli("validate", "--images", root, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["model"]["path"] == str(default_model)
    assert len(doc["images"]) == 10
    assert [s["path"] for s in doc["skipped"]] == ["female/corrupt.jpg"]
    ref = doc["parity"][0]
    assert ref["candidate"] == "litert:reference" and ref["compared"] == 10
    # ESP-NN and TFLM's reference kernels agree bit for bit; LiteRT's reference kernels should too
    assert ref["identical"] == 10, ref


def test_progress_bar_only_on_long_runs_in_a_terminal(monkeypatch):
    from rich.console import Console

    from gendertool.cli import validate as cli_validate

    for total, terminal, shown in ((30, True, True), (5, True, False), (30, False, False)):
        buf = io.StringIO()
        monkeypatch.setattr(cli_validate, "err_console", Console(file=buf, force_terminal=terminal, width=100))
        with cli_validate._progress() as update:
            for done in range(1, total + 1):
                update(done, total)
        assert ("validating" in buf.getvalue()) is shown, (total, terminal)


def test_sidecar_crop_none_is_what_validate_runs(tmp_path, images):
    """A sidecar saying crop "none": every image is stretched whole into the input, as on the device."""
    from gendertool.model.info import load_model
    from gendertool.model.runtime import TflmRunner

    folder = tmp_path / "whole"
    folder.mkdir()
    path = folder / "whole.tflite"
    path.write_bytes(tiny_model(height=16, width=16, classes=2, seed=3))
    pre = Preprocessing(crop_fraction=0.9, mean=(120.0, 110.0, 100.0), std=(60.0, 60.0, 60.0), crop="none")
    (folder / "whole.json").write_text(json.dumps({"labels": ["female", "male"], "preprocessing": pre.to_dict()}))
    info = load_model(path, measure_arena=False)
    assert info.preprocessing == pre

    rep = validate_host(images, path)
    runner = TflmRunner(info.data)
    square = Preprocessing(crop_fraction=0.9, mean=pre.mean, std=pre.std)
    differs = 0
    for im in rep.images:
        rgb = load_rgb(images / im.path)
        args = (16, 16, info.input.scale, info.input.zero_point)
        assert im.scores["tflm"] == tuple(int(v) for v in runner.invoke(preprocess(rgb, pre, *args)).ravel())
        differs += im.scores["tflm"] != tuple(int(v) for v in runner.invoke(preprocess(rgb, square, *args)).ravel())
    assert differs  # the non-square images score differently once stretched
