"""Where a model comes from: the shipped default, a file, or a registered profile.

A model travels with its labels and its preprocessing (crop, resize, channel order, mean/std). For a file
they come from a sidecar ``<stem>.json`` beside it (``{"labels": [...], "preprocessing":
{...}}``), else from ``<stem>.labels.txt`` / ``labels.txt`` (one label per line). A profile
(``seeed-gender``) names a downloadable model with its checksum, labels and preprocessing;
``gendertool model pull NAME`` caches it and ``--model NAME`` then uses the cached file.

Pure standard library + :mod:`gendertool.model.preprocess` (no numpy/tflite at import time).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gendertool.errors import GendertoolError, ModelError, NetworkError
from gendertool.model.preprocess import Preprocessing
from gendertool.resources import resource_path

DEFAULT_MODEL_FILE = "gender_mbv2_035_64.tflite"
CACHE_ENV = "GENDERTOOL_CACHE_DIR"
# Bounds a download whose server lies about (or omits) its length.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0

# The Seeed gender model's input, by its training config and a measurement (issue 13):
# - Seeed-Studio/ModelAssistant configs/classification/mobnetv2_0.35_rep_1bx16_300e_custom.py
#   inherits mobnetv2_1.0_1bx16_300e_custom.py, whose model-level data_preprocessor
#   (mmdet.DetDataPreprocessor, mean 0, std 255, no bgr_to_rgb) is the one training uses (the
#   top-level one with to_rgb=True is overridden); LoadImageFromFile (mmcv) reads BGR;
# - the card's float weights (from a public port) on 183 portraits, centre crop: RGB + ImageNet
#   mean/std 49.7 % (chance), RGB + x/255 51.4 %, BGR + ImageNet 67.2 %, BGR + x/255 62.8 %
#   (67.2 % once quantised to INT8 with x/255 input, 68.3 % on face crops).
SEEED_GENDER = Preprocessing(
    mean=(0.0, 0.0, 0.0),
    std=(255.0, 255.0, 255.0),
    crop="center",
    resize="bilinear",
    channel_order="bgr",
)


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--model`` value: the file plus what travels with it."""

    path: Path
    name: str
    labels: tuple[str, ...]  # empty: unknown here, the model loader names them class_0..class_{N-1}
    preprocessing: Preprocessing
    profile: str | None  # registered profile name, or None for a plain file
    labels_source: str = "default"  # "sidecar" | "labels.txt" | "profile" | "default" (for reports)


@dataclass(frozen=True)
class Profile:
    """A downloadable model with everything needed to run it."""

    name: str
    url: str
    checksum: str  # "md5:<hex>" as the publisher gives it
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    description: str
    note: str = ""

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc

    @property
    def file_name(self) -> str:
        return f"{self.name}.tflite"

    @property
    def algorithm(self) -> str:
        return self.checksum.split(":", 1)[0]

    @property
    def digest(self) -> str:
        return self.checksum.split(":", 1)[1].lower()


PROFILES: dict[str, Profile] = {
    "seeed-gender": Profile(
        name="seeed-gender",
        url=(
            "https://files.seeedstudio.com/sscma/model_zoo/classification/gender/"
            "mbv2_0.35_rep_gender_int8_sha1_2bc5677615f8aeb41bffe21e25de6d01f91c3a41.tflite"
        ),
        # From the zoo's classification/gender/mbv2_0_35_64.json. The SHA-1 in the file name
        # is shared with the vela file, so it is not this file's hash.
        checksum="md5:853967d1e961a9fdef02122437efa239",
        # (female, male): a public port reads them so, and on the portraits above the reversed
        # order scores 33 %. The card's 'Not a person', 'Person' is copied from its
        # person-classification sibling (same template, same algorithm link).
        labels=("female", "male"),
        preprocessing=SEEED_GENDER,
        description="Seeed SenseCraft model zoo: MobileNetV2 0.35 Rep, 64x64x3 INT8, gender (2 classes)",
        note=(
            "the card lists the classes as 'Not a person', 'Person', a copy error from its "
            "person-classification sibling; the outputs are (female, male). Input: BGR, x / 255, "
            "centre crop (the training config's normalisation and mmcv's BGR loading)"
        ),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise GendertoolError(f"unknown model profile {name!r}; registered profiles: {', '.join(sorted(PROFILES))}") from None


def cache_dir() -> Path:
    """Folder holding pulled models: ``$GENDERTOOL_CACHE_DIR/models`` or ``~/.cache/gendertool/models``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "gendertool"
    return base / "models"


def cached_path(name: str) -> Path:
    return cache_dir() / get_profile(name).file_name


def default_model_path() -> Path:
    return resource_path("models") / DEFAULT_MODEL_FILE


# ---------------------------------------------------------------------------------------------
# labels


def check_labels(labels: Iterable[str], origin: str) -> tuple[str, ...]:
    """Validate a label list: non-empty strings, no duplicates, at least one."""
    out = []
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise GendertoolError(f"{origin}: label {i + 1} is not a string ({label!r})")
        label = label.strip()
        if not label:
            raise GendertoolError(f"{origin}: label {i + 1} is empty")
        if label in out:
            raise GendertoolError(f"{origin}: label {label!r} appears twice")
        out.append(label)
    if not out:
        raise GendertoolError(f"{origin}: no labels given")
    return tuple(out)


def parse_labels(text: str) -> tuple[str, ...]:
    """Parse the ``--labels`` option: comma-separated, spaces around names stripped."""
    return check_labels(text.split(","), f"--labels {text!r}")


def _read_labels_txt(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the labels file ({exc})") from exc
    lines = [line.strip() for line in text.splitlines()]
    try:
        return check_labels([line for line in lines if line], str(path))
    except GendertoolError as exc:
        raise ModelError(str(exc)) from None


def _read_sidecar(path: Path) -> tuple[tuple[str, ...] | None, Preprocessing]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the model's sidecar ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: the model's sidecar is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: the model's sidecar must be a JSON object")
    labels = None
    if "labels" in data:
        if not isinstance(data["labels"], list):
            raise ModelError(f"{path}: 'labels' must be a list of strings")
        try:
            labels = check_labels(data["labels"], f"{path} 'labels'")
        except GendertoolError as exc:
            raise ModelError(str(exc)) from None
    pre = Preprocessing()
    if "preprocessing" in data:
        if not isinstance(data["preprocessing"], dict):
            raise ModelError(f"{path}: 'preprocessing' must be an object")
        try:
            pre = Preprocessing.from_dict(data["preprocessing"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{path}: bad 'preprocessing' ({exc})") from exc
    return labels, pre


def _from_file(path: Path) -> ModelSource:
    if not path.exists():
        hint = ""
        if len(path.parts) == 1 and not path.suffix:
            hint = f" (and not a registered profile: {', '.join(sorted(PROFILES))})"
        raise ModelError(f"{path}: no such file{hint}")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    labels: tuple[str, ...] = ()
    origin = "default"
    pre = Preprocessing()
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        side_labels, pre = _read_sidecar(sidecar)
        if side_labels is not None:
            labels, origin = side_labels, "sidecar"
    if not labels:
        for candidate in (path.with_name(f"{path.stem}.labels.txt"), path.with_name("labels.txt")):
            if candidate.is_file():
                labels, origin = _read_labels_txt(candidate), "labels.txt"
                break
    return ModelSource(path=path, name=path.stem, labels=labels, preprocessing=pre, profile=None, labels_source=origin)


def _from_profile(profile: Profile) -> ModelSource:
    path = cache_dir() / profile.file_name
    if not path.is_file():
        raise GendertoolError(
            f"model profile {profile.name!r} is not downloaded yet: run `gendertool model pull {profile.name}`"
        )
    actual = file_digest(path, profile.algorithm)
    if actual != profile.digest:
        raise ModelError(
            f"{path}: cached {profile.name} is damaged ({profile.algorithm} {actual}, expected {profile.digest}); "
            f"run `gendertool model pull {profile.name} --force`"
        )
    return ModelSource(
        path=path,
        name=profile.name,
        labels=profile.labels,
        preprocessing=profile.preprocessing,
        profile=profile.name,
        labels_source="profile",
    )


def resolve(spec: str | Path | None) -> ModelSource:
    """Turn a ``--model`` value into a :class:`ModelSource`.

    ``None`` is the shipped default model; a registered profile name is its cached download
    (an existing file of the same name wins); anything else is a file path.
    """
    if spec is None:
        return _from_file(default_model_path())
    if isinstance(spec, str):
        if not spec.strip():
            raise ModelError("--model is empty")
        if spec in PROFILES and not Path(spec).exists():
            return _from_profile(PROFILES[spec])
    return _from_file(Path(spec).expanduser())


# ---------------------------------------------------------------------------------------------
# download


def file_digest(path: Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def is_cached(name: str) -> bool:
    """True when the profile's file is in the cache with the right checksum."""
    profile = get_profile(name)
    path = cache_dir() / profile.file_name
    return path.is_file() and file_digest(path, profile.algorithm) == profile.digest


class _WriteError(Exception):
    pass


def _write(out, chunk: bytes, tmp: Path) -> None:
    # kept apart from network errors: a full disk is not "offline"
    try:
        out.write(chunk)
    except OSError as exc:
        raise _WriteError(f"cannot write {tmp.parent}: {exc.strerror or exc}") from None


def pull_model(
    name: str,
    *,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download a profile's model into the cache, verify its checksum, return its path.

    An already cached file with the right checksum is kept unless ``force``. ``progress`` is
    called with (bytes so far, total or None). The file appears atomically or not at all.
    """
    profile = get_profile(name)
    dest = cache_dir() / profile.file_name
    if not force and is_cached(name):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GendertoolError(f"cannot create the model cache {dest.parent}: {exc}") from exc

    where = f"cannot download {profile.name} from {profile.host}"
    request = urllib.request.Request(profile.url, headers={"User-Agent": "gendertool"})
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{profile.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(profile.algorithm)
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    done = 0
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        done += len(chunk)
                        if done > MAX_DOWNLOAD_BYTES:
                            raise NetworkError(f"{where}: the server sent more than {MAX_DOWNLOAD_BYTES} bytes")
                        h.update(chunk)
                        _write(out, chunk, tmp)
                        if progress is not None:
                            progress(done, total)
            except _WriteError as exc:
                raise GendertoolError(f"{where}: {exc}") from None
            except urllib.error.HTTPError as exc:
                raise NetworkError(f"{where}: HTTP {exc.code} {exc.reason} for {profile.url}") from None
            except urllib.error.URLError as exc:
                raise NetworkError(f"{where}: {exc.reason}; you are offline or the host is unreachable") from None
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, cut short mid-transfer
                raise NetworkError(f"{where}: {exc}; you are offline or the host is unreachable") from None
        if total is not None and done != total:
            raise NetworkError(f"{where}: transfer cut short ({done} of {total} bytes)")
        actual = h.hexdigest()
        if actual != profile.digest:
            raise NetworkError(
                f"downloaded {profile.name} from {profile.host} but its {profile.algorithm} is {actual}, "
                f"expected {profile.digest}; the file was discarded"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
