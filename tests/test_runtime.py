"""gendertool.model.runtime: TFLM host runtime vs ai-edge-litert, dequantisation, probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from gendertool.model.info import TensorInfo, load_model, load_model_bytes
from gendertool.model.runtime import LiteRtRunner, TflmRunner, dequantize, softmax_probs
from tflite_fab import tiny_model


def _inputs(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(n)]


def test_tiny_model_tflm_matches_litert_reference():
    data = tiny_model()
    tflm, ref = TflmRunner(data), LiteRtRunner(data, "reference")
    for x in _inputs((1, 8, 8, 3), 20):
        a, b = tflm.invoke(x), ref.invoke(x)
        assert a.dtype == np.int8 and a.shape == (1, 2)
        np.testing.assert_array_equal(a, b)


def test_default_model_tflm_matches_litert_reference(default_model):
    info = load_model(default_model, measure_arena=False)
    tflm = TflmRunner(info, arena_size=1 << 20)
    ref = LiteRtRunner(info, "reference")
    outs = []
    for x in _inputs(info.input.shape, 4, seed=1):
        a = tflm.invoke(x)
        np.testing.assert_array_equal(a, ref.invoke(x))
        outs.append(a)
    assert outs[0].shape == (1, info.classes)


def test_runners_accept_unbatched_input():
    data = tiny_model()
    x = _inputs((1, 8, 8, 3), 1)[0]
    tflm = TflmRunner(data)
    np.testing.assert_array_equal(tflm.invoke(x[0]), tflm.invoke(x))


def test_runners_reject_wrong_input():
    tflm = TflmRunner(tiny_model())
    with pytest.raises(ValueError, match="int8"):
        tflm.invoke(np.zeros((1, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        tflm.invoke(np.zeros((1, 4, 4, 3), dtype=np.int8))


@pytest.mark.parametrize("kernels", ["default", "builtin"])
def test_other_litert_kernels_run(kernels):
    runner = LiteRtRunner(tiny_model(), kernels)
    assert runner.invoke(_inputs((1, 8, 8, 3), 1)[0]).shape == (1, 2)


def test_unknown_kernels():
    with pytest.raises(ValueError, match="reference"):
        LiteRtRunner(tiny_model(), "fast")


def test_dequantize():
    q = np.array([-128, -1, 0, 127], dtype=np.int8)
    np.testing.assert_allclose(dequantize(q, 0.5, -1), [-63.5, 0.0, 0.5, 64.0])
    assert dequantize(q, 0.5, -1).dtype == np.float32


def test_softmax_probs_from_softmax_output():
    out = TensorInfo("probs", (1, 2), "int8", 1 / 256, -128)
    p = softmax_probs(np.array([[127, -128]], dtype=np.int8), out)
    np.testing.assert_allclose(p, [[255 / 256, 0.0]])


def test_softmax_probs_from_logits():
    out = TensorInfo("logits", (1, 3), "int8", 0.1, 0)
    p = softmax_probs(np.array([[10, 0, -10]], dtype=np.int8), out)
    e = np.exp([1.0, 0.0, -1.0])
    np.testing.assert_allclose(p, [e / e.sum()], rtol=1e-6)
    assert p.sum() == pytest.approx(1.0)


def test_probs_of_tiny_model_sum_to_one():
    info = load_model_bytes(tiny_model(), measure_arena=False)
    q = TflmRunner(info).invoke(_inputs((1, 8, 8, 3), 1, seed=5)[0])
    assert softmax_probs(q, info.output).sum() == pytest.approx(1.0, abs=2 / 256)
