"""Model resolution: default model, files with sidecar / labels.txt, registered profiles, --labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gendertool.model import sources as profiles
from gendertool.errors import GendertoolError, ModelError
from gendertool.model.preprocess import Preprocessing

REPO = Path(__file__).resolve().parent.parent


def _model(folder: Path, stem: str = "m", data: bytes = b"TFL3 not really") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.tflite"
    path.write_bytes(data)
    return path


# --- default model ---------------------------------------------------------------------------


def test_default_model_path_is_in_models():
    assert profiles.default_model_path() == REPO / "models" / "gender_mbv2_035_64.tflite"


def test_resolve_none_reads_default_model_and_sidecar(tmp_path, monkeypatch):
    models = tmp_path / "models"
    path = _model(models, "gender_mbv2_035_64")
    pre = Preprocessing(crop_fraction=0.8, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    (models / "gender_mbv2_035_64.json").write_text(json.dumps({"labels": ["female", "male"], "preprocessing": pre.to_dict(), "name": "x"}))
    monkeypatch.setattr(profiles, "resource_path", lambda name: tmp_path / name)
    src = profiles.resolve(None)
    assert src.path == path
    assert src.name == "gender_mbv2_035_64"
    assert src.labels == ("female", "male")
    assert src.labels_source == "sidecar"
    assert src.preprocessing == pre
    assert src.profile is None


def test_resolve_none_missing_default(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "resource_path", lambda name: tmp_path / name)
    with pytest.raises(ModelError, match=r"gender_mbv2_035_64\.tflite: no such file"):
        profiles.resolve(None)


# --- files ------------------------------------------------------------------------------------


def test_file_without_sidecar_has_no_labels_and_default_preprocessing(tmp_path):
    path = _model(tmp_path)
    src = profiles.resolve(path)
    assert src.labels == ()
    assert src.labels_source == "default"
    assert src.preprocessing == Preprocessing()
    # str specs behave like Path specs
    assert profiles.resolve(str(path)) == src


@pytest.mark.parametrize("crop", ["none", "center", None])
def test_sidecar_crop_mode_is_read(tmp_path, crop):
    path = _model(tmp_path)
    pre = {"crop_fraction": 0.9} | ({} if crop is None else {"crop": crop})
    (tmp_path / "m.json").write_text(json.dumps({"preprocessing": pre}))
    assert profiles.resolve(path).preprocessing == Preprocessing(crop_fraction=0.9, crop=crop or "center")


def test_stem_labels_txt_wins_over_labels_txt(tmp_path):
    path = _model(tmp_path)
    (tmp_path / "labels.txt").write_text("x\ny\n")
    assert profiles.resolve(path).labels == ("x", "y")
    (tmp_path / "m.labels.txt").write_text(" cat \n\ndog\n")
    src = profiles.resolve(path)
    assert src.labels == ("cat", "dog")
    assert src.labels_source == "labels.txt"


def test_sidecar_labels_win_over_labels_txt(tmp_path):
    path = _model(tmp_path)
    (tmp_path / "m.labels.txt").write_text("x\ny\n")
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["a", "b"]}))
    assert profiles.resolve(path).labels == ("a", "b")


def test_sidecar_without_labels_falls_back_to_labels_txt(tmp_path):
    path = _model(tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"preprocessing": {"mean": [0, 0, 0], "std": [255, 255, 255]}}))
    (tmp_path / "labels.txt").write_text("x\ny\n")
    src = profiles.resolve(path)
    assert src.labels == ("x", "y")
    assert src.preprocessing.std == (255.0, 255.0, 255.0)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"labels": "female,male"}', "'labels' must be a list of strings"),
        ('{"labels": ["a", "a"]}', "label 'a' appears twice"),
        ('{"labels": ["a", " "]}', "label 2 is empty"),
        ('{"labels": ["a", 3]}', "label 2 is not a string"),
        ('{"labels": []}', "no labels given"),
        ('{"preprocessing": {"std": [0, 1, 1]}}', "bad 'preprocessing' (std must be positive)"),
        ('{"preprocessing": {"crop": "top"}}', "bad 'preprocessing' (crop must be one of 'center', 'none', not 'top')"),
        ('{"preprocessing": {"resize": "nearest"}}', "bad 'preprocessing' (only 'bilinear' resize is implemented"),
        ('{"preprocessing": {"channel_order": "rbg"}}',
         "bad 'preprocessing' (channel_order must be one of 'rgb', 'bgr', not 'rbg')"),
        ('{"preprocessing": {"channel_order": "BGR"}}',
         "bad 'preprocessing' (channel_order must be one of 'rgb', 'bgr', not 'BGR')"),
        ('{"preprocessing": [1]}', "'preprocessing' must be an object"),
    ],
)
def test_malformed_sidecar(tmp_path, content, message):
    path = _model(tmp_path)
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(ModelError) as info:
        profiles.resolve(path)
    assert message in str(info.value)
    assert "m.json" in str(info.value)


def test_malformed_labels_txt(tmp_path):
    path = _model(tmp_path)
    (tmp_path / "labels.txt").write_text("a\nb\na\n")
    with pytest.raises(ModelError, match=r"labels\.txt: label 'a' appears twice"):
        profiles.resolve(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelError, match=r"nope\.tflite: no such file$"):
        profiles.resolve(tmp_path / "nope.tflite")
    with pytest.raises(ModelError, match="not a file"):
        profiles.resolve(tmp_path)
    with pytest.raises(ModelError, match=r"no such file \(and not a registered profile: seeed-gender\)"):
        profiles.resolve("seeed-gendr")
    with pytest.raises(ModelError, match="empty"):
        profiles.resolve("")


def test_missing_model_through_cli(cli, tmp_path):
    # any command taking --model reports the same message; validate is this issue's
    (tmp_path / "imgs" / "female").mkdir(parents=True)
    r = cli("validate", "--model", tmp_path / "nope.tflite", "--images", tmp_path / "imgs")
    assert r.exit_code == 2
    assert "nope.tflite: no such file" in r.stderr
    assert "Traceback" not in r.output


# --- profiles ---------------------------------------------------------------------------------


def test_seeed_profile_is_the_cards_file():
    """What can be checked without the network: a well-formed https URL of a .tflite file on the
    host the messages name, and an md5 checksum (the pull tests check that it is enforced)."""
    import re
    from urllib.parse import urlsplit

    p = profiles.get_profile("seeed-gender")
    u = urlsplit(p.url)
    assert u.scheme == "https" and u.netloc == p.host and u.path.endswith(".tflite") and not u.query
    assert re.fullmatch(r"md5:[0-9a-f]{32}", p.checksum) and p.digest == p.checksum[4:]
    # the training config's x / 255 on mmcv's BGR images, centre crop (evidence in profiles.py)
    assert p.labels == ("female", "male")
    assert p.preprocessing == Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), crop="center",
                                            resize="bilinear", channel_order="bgr")
    assert "'Not a person', 'Person'" in p.note and "copy error" in p.note


def test_unknown_profile():
    with pytest.raises(GendertoolError, match="unknown model profile 'nope'; registered profiles: seeed-gender"):
        profiles.get_profile("nope")


def test_profile_not_pulled_yet():
    with pytest.raises(GendertoolError, match=r"run `gendertool model pull seeed-gender`"):
        profiles.resolve("seeed-gender")


def _fake_profile(monkeypatch, data: bytes) -> profiles.Profile:
    from dataclasses import replace

    p = replace(profiles.PROFILES["seeed-gender"], checksum="md5:" + hashlib.md5(data).hexdigest())
    monkeypatch.setitem(profiles.PROFILES, "seeed-gender", p)
    return p


def test_cached_profile_resolves_with_profile_labels(monkeypatch):
    data = b"model bytes"
    p = _fake_profile(monkeypatch, data)
    profiles.cache_dir().mkdir(parents=True, exist_ok=True)
    profiles.cached_path("seeed-gender").write_bytes(data)
    src = profiles.resolve("seeed-gender")
    assert src.path == profiles.cache_dir() / "seeed-gender.tflite"
    assert src.name == "seeed-gender"
    assert src.profile == "seeed-gender"
    assert src.labels == p.labels
    assert src.preprocessing == p.preprocessing
    assert src.labels_source == "profile"
    assert profiles.is_cached("seeed-gender")


def test_damaged_cache_is_reported(monkeypatch):
    _fake_profile(monkeypatch, b"model bytes")
    profiles.cache_dir().mkdir(parents=True, exist_ok=True)
    profiles.cached_path("seeed-gender").write_bytes(b"model bytez")
    assert not profiles.is_cached("seeed-gender")
    with pytest.raises(ModelError, match=r"cached seeed-gender is damaged .*gendertool model pull seeed-gender --force"):
        profiles.resolve("seeed-gender")


def test_existing_file_named_like_a_profile_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seeed-gender").write_bytes(b"x")
    src = profiles.resolve("seeed-gender")
    assert src.profile is None
    assert src.path == Path("seeed-gender")


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENDERTOOL_CACHE_DIR", str(tmp_path / "c"))
    assert profiles.cache_dir() == tmp_path / "c" / "models"
    monkeypatch.delenv("GENDERTOOL_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert profiles.cache_dir() == tmp_path / ".cache" / "gendertool" / "models"


# --- --labels ---------------------------------------------------------------------------------


def test_parse_labels_strips_spaces():
    assert profiles.parse_labels(" female , male ") == ("female", "male")
    assert profiles.parse_labels("Not a person,Person") == ("Not a person", "Person")


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,,b", "label 2 is empty"),
        ("a,b,", "label 3 is empty"),
        ("", "label 1 is empty"),
        ("a, a", "label 'a' appears twice"),
    ],
)
def test_parse_labels_rejects(text, message):
    with pytest.raises(GendertoolError) as info:
        profiles.parse_labels(text)
    assert str(info.value) == f"--labels {text!r}: {message}"


# --- CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("model", "--help"), ("model", "pull", "--help"), ("model", "list", "--help")])
def test_help(cli, args):
    r = cli(*args)
    assert r.exit_code == 0
    assert "Usage" in r.stdout


def test_model_list(cli):
    r = cli("model", "list")
    assert r.exit_code == 0
    assert "seeed-gender" in r.stdout
    assert "female, male" in r.stdout and "BGR" in r.stdout
    assert "'Not a person', 'Person', a copy error" in " ".join(r.stdout.split())
    r = cli("model", "list", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    (entry,) = doc["profiles"]
    assert entry["name"] == "seeed-gender"
    assert entry["cached"] is False
    assert entry["checksum"] == profiles.PROFILES["seeed-gender"].checksum
    assert entry["labels"] == ["female", "male"]
    assert entry["preprocessing"] == {"crop_fraction": 1.0, "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0],
                                      "crop": "center", "resize": "bilinear", "channel_order": "bgr"}
    assert doc["cache_dir"] == str(profiles.cache_dir())


def test_model_list_shows_the_shipped_default_model(cli):
    """issue 20, item 9: the model used without --model is listed, first, as shipped."""
    shipped = profiles.default_model_path()
    r = cli("model", "list")
    assert r.exit_code == 0
    first = next(line for line in r.stdout.splitlines() if "female, male" in line)
    assert f"{shipped.stem} (default)" in first and "shipped" in first
    doc = json.loads(cli("model", "list", "--json").stdout)
    assert doc["default"]["name"] == shipped.stem and doc["default"]["path"] == str(shipped)
    assert doc["default"]["checksum"] == f"md5:{profiles.file_digest(shipped)}" and doc["default"]["labels"] == ["female", "male"]
    assert [p["name"] for p in doc["profiles"]] == ["seeed-gender"]  # the registered ones, as before


def test_model_pull_unknown_profile(cli):
    r = cli("model", "pull", "nope")
    assert r.exit_code == 2
    assert "unknown model profile 'nope'; registered profiles: seeed-gender" in r.stderr
