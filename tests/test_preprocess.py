"""gendertool.preprocess: the crop modes of a model's Preprocessing, validated and carried through
preprocess() and the sidecar dict (the firmware side is tests/test_firmware_host.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gendertool.preprocess import Preprocessing, crop_rect, crop_resize, preprocess, quant_lut, quantize


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop": "top"}, "crop must be one of 'center', 'none', not 'top'"),
        ({"crop": "None"}, "crop must be one of 'center', 'none', not 'None'"),
        ({"crop": None}, "crop must be one of 'center', 'none', not None"),
        ({"resize": "nearest"}, "only 'bilinear' resize is implemented, not 'nearest'"),
        ({"crop": "none", "crop_fraction": 0.05}, "crop_fraction must be within [0.1, 1.0]"),
    ],
)
def test_bad_preprocessing_is_refused_with_its_reason(kwargs, message):
    with pytest.raises(ValueError) as info:
        Preprocessing(**kwargs)
    assert str(info.value) == message


def test_crop_rect_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="crop must be one of 'center', 'none', not 'whole'"):
        crop_rect(10, 20, 1.0, "whole")


@pytest.mark.parametrize("crop", ["center", "none"])
def test_dict_round_trip_keeps_the_crop(crop):
    pre = Preprocessing(crop_fraction=0.85, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), crop=crop)
    assert pre.to_dict()["crop"] == crop
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_sidecar_without_crop_means_centre_square():
    assert Preprocessing.from_dict({"crop_fraction": 0.9}).crop == "center"


def test_preprocess_applies_the_profiles_crop():
    # 20 x 60 frame: left third dark, middle mid-grey, right third bright
    rgb = np.zeros((20, 60, 3), dtype=np.uint8)
    rgb[:, 20:40] = 128
    rgb[:, 40:] = 255
    for crop in ("center", "none"):
        pre = Preprocessing(crop=crop)
        got = preprocess(rgb, pre, 8, 8, 1 / 128, 0)
        want = quantize(crop_resize(rgb, 8, 8, 1.0, crop), quant_lut(pre, 1 / 128, 0))[None, ...]
        np.testing.assert_array_equal(got, want)
    centre = preprocess(rgb, Preprocessing(), 8, 8, 1 / 128, 0)
    whole = preprocess(rgb, Preprocessing(crop="none"), 8, 8, 1 / 128, 0)
    assert len(np.unique(centre)) == 1  # the centre square is all mid-grey
    assert whole[0, :, 0].min() == -128 and whole[0, :, -1].max() == 127  # both edges of the frame kept
