"""gendertool.model.rewrite: explicit PAD for the convs esp-nn mis-pads (espressif/esp-nn#31)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gendertool.model.flatbuffer import parse_model

from gendertool.model import espnn
from gendertool.errors import ModelError
from gendertool.model.rewrite import explicit_conv_padding
from tflite_fab import tiny_model, unpack


def _flagged(data: bytes) -> list[int]:
    return [e.node for e in espnn.model_scratch(parse_model(data)) if e.problem == espnn.READS_PAST_INPUT]


def _same_outputs(a: bytes, b: bytes, n: int = 32) -> bool:
    from gendertool.model.runtime import LiteRtRunner, TflmRunner

    ta, tb, lb = TflmRunner(a), TflmRunner(b), LiteRtRunner(b, "reference")
    rng = np.random.default_rng(3)
    for _ in range(n):
        x = rng.integers(-128, 128, size=(1, *ta.input_shape[1:]), dtype=np.int8)
        ya = ta.invoke(x)
        if not (np.array_equal(ya, tb.invoke(x)) and np.array_equal(ya, lb.invoke(x))):
            return False
    return True


def _buffers_aligned(data: bytes) -> bool:
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAs(data, 0)
    base = np.frombuffer(data, np.uint8).ctypes.data
    return all(
        (m.Buffers(i).DataAsNumpy().ctypes.data - base) % 16 == 0
        for i in range(m.BuffersLength()) if m.Buffers(i).DataLength()
    )


def test_tiny_stride2_conv_gets_an_explicit_pad_with_identical_outputs():
    data = tiny_model()  # 3x3 stride 2 SAME over 8x8: pads 0 + 1
    assert _flagged(data) == [0]
    new, done = explicit_conv_padding(data)
    assert [(c.node, c.pads) for c in done] == [(0, (0, 1, 0, 1))]
    m = unpack(new)
    ops = m.subgraphs[0].operators
    names = [m.operatorCodes[o.opcodeIndex].builtinCode for o in ops]
    from ai_edge_litert import schema_py_generated as fb

    assert names[:2] == [fb.BuiltinOperator.PAD, fb.BuiltinOperator.CONV_2D]
    assert ops[1].builtinOptions.padding == fb.Padding.VALID
    assert list(m.subgraphs[0].tensors[ops[1].inputs[0]].shape) == [1, 9, 9, 3]
    assert _flagged(new) == [] and _buffers_aligned(new)
    assert _same_outputs(data, new)
    # idempotent: nothing left to rewrite
    assert explicit_conv_padding(new) == (new, [])


def test_symmetric_padding_is_left_alone():
    data = tiny_model(height=9, width=9)  # total pad 2 -> 1 + 1, which the kernel mirrors
    assert _flagged(data) == []
    assert explicit_conv_padding(data) == (data, [])


def test_default_model_stem(default_model):
    data = default_model.read_bytes()
    new, done = explicit_conv_padding(data)
    if not done:  # the shipped model already carries the explicit PAD
        assert _flagged(data) == []
        return
    assert [c.pads for c in done] == [(0, 1, 0, 1)] and _flagged(new) == []
    assert _buffers_aligned(new) and _same_outputs(data, new, 8)


def test_fix_padding_command_writes_model_and_sidecar(cli, tmp_path):
    src = tmp_path / "m.tflite"
    src.write_bytes(tiny_model())
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["cat", "dog"]}))
    out = tmp_path / "out" / "fixed.tflite"
    r = cli("model", "fix-padding", src, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["convs"] == [{"node": 0, "pads": [0, 1, 0, 1]}] and doc["identical"] == doc["compared"] > 0
    side = json.loads((tmp_path / "out" / "fixed.json").read_text())
    assert side["labels"] == ["cat", "dog"] and doc["sha256_before"] in side["source"]
    assert _flagged(out.read_bytes()) == []
    # inspect of the fixed model has no ESP-NN warning, the original has one
    assert "ESP-NN warning" in cli("inspect", src).stdout
    assert "ESP-NN warning" not in cli("inspect", out).stdout
    r2 = cli("model", "fix-padding", out, "-o", tmp_path / "again.tflite")
    assert r2.exit_code == 0 and "nothing written" in r2.stdout and not (tmp_path / "again.tflite").exists()


@pytest.mark.parametrize(
    "target, message",
    [
        ("x.bin", "the output must be a .tflite file path"),
        ("m.tflite", "choose an output path other than the model itself"),
    ],
)
def test_fix_padding_bad_output_is_one_clear_error(cli, tmp_path, target, message):
    src = tmp_path / "m.tflite"
    src.write_bytes(tiny_model())
    before = src.read_bytes()
    r = cli("model", "fix-padding", src, "-o", tmp_path / target)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert src.read_bytes() == before


def test_flagged_node_that_is_not_a_conv_is_refused(monkeypatch):
    data = tiny_model()
    monkeypatch.setattr(espnn, "model_scratch", lambda d: [espnn.NodeScratch(1, "MEAN", 8, "none", espnn.READS_PAST_INPUT)])
    with pytest.raises(ModelError, match="node 1 .* is flagged but is not a 4-D SAME CONV_2D"):
        explicit_conv_padding(data)
