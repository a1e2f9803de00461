"""gendertool.model.preprocess: the crop modes of a model's Preprocessing, validated and carried through
preprocess() and the sidecar dict (the firmware side is tests/test_firmware_host.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gendertool.model.preprocess import Preprocessing, crop_rect, crop_resize, preprocess, quant_lut


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
    centre = preprocess(rgb, Preprocessing(), 8, 8, 1 / 128, 0)
    whole = preprocess(rgb, Preprocessing(crop="none"), 8, 8, 1 / 128, 0)
    assert centre.shape == whole.shape == (1, 8, 8, 3)
    # by hand: 128 -> (128 - 127.5) / 127.5 * 128 = 0.502 -> 1; 0 -> -128; 255 -> 128 -> clamped 127
    np.testing.assert_array_equal(centre, np.ones((1, 8, 8, 3), np.int8))  # the centre square is all mid-grey
    # the whole 60 px wide frame on 8 columns: column o samples x = 7.5 o + 3.25, never across an edge
    cols = np.array([-128, -128, -128, 1, 1, 127, 127, 127], np.int8)
    np.testing.assert_array_equal(whole, np.broadcast_to(cols[None, None, :, None], (1, 8, 8, 3)))


# --- the quantisation table against an independent reference ---------------------------------


def reference_lut(mean, std, scale, zero_point) -> np.ndarray:
    """clamp(round_half_away((v - mean) / std / scale) + zp) in exact decimal arithmetic."""
    from decimal import ROUND_HALF_UP, Decimal, localcontext

    rows = []
    with localcontext() as ctx:
        ctx.prec = 60  # exact for every tie below: the float inputs are binary fractions
        for m, s in zip(mean, std):
            row = []
            for v in range(256):
                x = (Decimal(v) - Decimal(m)) / Decimal(s) / Decimal(scale)
                q = int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP)) + zero_point  # HALF_UP: ties away from 0
                row.append(min(max(q, -128), 127))
            rows.append(row)
    return np.array(rows, dtype=np.int8)


# (mean, std, scale, zp): x = v/2 ties upwards at odd v; (v-255)/2 ties downwards; v-127.5 is a tie
# at every v, on both sides of zero; the last two clamp at both ends
TIES = [
    ((0.0, 255.0, 127.5), (1.0, 1.0, 0.5), 2.0, 0),
    ((0.0, 255.0, 127.5), (2.0, 2.0, 1.0), 1.0, -14),
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.5, 3),
    ((255.0, 255.0, 255.0), (1.0, 1.0, 1.0), 0.5, -3),
]


@pytest.mark.parametrize("mean, std, scale, zp", TIES)
def test_quant_lut_rounds_exact_ties_away_from_zero(mean, std, scale, zp):
    lut = quant_lut(Preprocessing(mean=mean, std=std), scale, zp)
    np.testing.assert_array_equal(lut, reference_lut(mean, std, scale, zp))


def test_tie_cases_are_ties_and_pin_the_rounding():
    ref = reference_lut(*TIES[0])
    # v=1 -> 0.5 -> 1 (truncation: 0); v=254 in (v-255)/2 -> -0.5 -> -1; v=0 in v-127.5 -> -127.5 -> -128
    assert (ref[0][1], ref[0][3], ref[1][254], ref[1][252], ref[2][0], ref[2][255], ref[2][128]) == (1, 2, -1, -2, -128, 127, 1)


@pytest.mark.parametrize("pre, scale, zp", [
    (Preprocessing(), 0.018658447, -14),
    (Preprocessing(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)), 0.0171247, 5),
    (Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)), 1 / 255, -128),
])
def test_quant_lut_matches_the_reference_away_from_ties(pre, scale, zp):
    from decimal import Decimal

    ref = reference_lut(pre.mean, pre.std, scale, zp)
    lut = quant_lut(pre, scale, zp)
    for c in range(3):
        for v in range(256):
            x = (Decimal(v) - Decimal(pre.mean[c])) / Decimal(pre.std[c]) / Decimal(scale)
            if abs(abs(x) % 1 - Decimal("0.5")) < Decimal("1e-9"):
                continue  # within float error of a tie: the exact cases are tested above
            assert lut[c][v] == ref[c][v], (c, v, x)


def test_normalize_is_the_direct_float_formula():
    pre = Preprocessing(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    rgb = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    got = __import__("gendertool.model.preprocess", fromlist=["normalize"]).normalize(rgb.astype(np.uint8), pre)
    for c in range(3):
        want = [(v - pre.mean[c]) / pre.std[c] for v in rgb[..., c].ravel()]
        np.testing.assert_allclose(got[..., c].ravel(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape, dtype", [((4, 4, 3, 1), np.uint8), ((4, 4), np.uint8), ((4, 4, 4), np.uint8),
                                          ((4, 4, 3), np.float32)])
def test_crop_resize_refuses_what_is_not_an_rgb_image(shape, dtype):
    from gendertool.errors import ImageError

    with pytest.raises(ImageError, match=r"expected an HxWx3 uint8 RGB image, got shape"):
        crop_resize(np.zeros(shape, dtype), 2, 2)
