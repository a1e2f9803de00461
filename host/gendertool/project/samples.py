"""The sample images compiled into the firmware: loading, names, their true labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gendertool.errors import BuildError
from gendertool.model.preprocess import load_rgb, preprocess
from gendertool.model.runtime import TflmRunner
from gendertool.project.carray import c_identifier, c_string, hex_lines
from gendertool.resources import resource_path

if TYPE_CHECKING:  # pragma: no cover


    from gendertool.model.info import ModelInfo


MAX_SAMPLES = 16  # the selftest record lists at most 16 samples (docs/protocol.md)
MAX_SAMPLE_SIDE = 640  # same bound as uploads; samples live in flash as raw RGB888


def load_samples(paths: list[Path]) -> list[tuple[str, Any]]:

    if not paths:
        raise BuildError("no sample images: the firmware needs at least one for its self-test")
    if len(paths) > MAX_SAMPLES:
        raise BuildError(f"{len(paths)} sample images; the firmware takes at most {MAX_SAMPLES}")
    images = []
    for path in paths:
        rgb = load_rgb(path)
        if max(rgb.shape[:2]) > MAX_SAMPLE_SIDE:
            raise BuildError(
                f"{path}: sample image is {rgb.shape[1]}x{rgb.shape[0]}; at most {MAX_SAMPLE_SIDE} px a side "
                "(it is stored uncompressed in flash)"
            )
        images.append((path.stem, rgb))
    return images


def sample_truth(name: str, labels) -> int:
    """True class of a built-in sample named ``<label>_...`` (firmware/samples' rule), else -1."""
    return next((k for k, label in enumerate(labels) if name.startswith(f"{label}_")), -1)


def default_sample_paths() -> list[Path]:

    folder = resource_path("firmware") / "samples"
    return sorted(p for p in folder.glob("*.png"))


def samples_context(model: "ModelInfo", images: list[tuple[str, Any]], arena: int | None) -> list[dict]:
    import numpy as np


    _, height, width, _ = model.input.shape
    runner = TflmRunner(model.data, arena_size=arena)
    out = []
    for name, rgb in images:
        q = preprocess(rgb, model.preprocessing, height, width, model.input.scale, model.input.zero_point)
        scores = np.asarray(runner.invoke(q), dtype=np.int8).reshape(-1)
        out.append(
            {
                "name": name,
                "name_c": c_string(name),
                "ident": c_identifier(name),
                "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]),
                "rgb_hex": hex_lines(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()),
                "expected": [int(v) for v in scores],
                "expected_class": int(np.argmax(scores)),
                "truth": sample_truth(name, model.labels),
            }
        )
    return out
