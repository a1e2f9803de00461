"""Build and edit small INT8 TFLite models with the flatbuffers object API (no TensorFlow).

``tiny_model()`` is a valid classifier (CONV_2D -> MEAN -> FULLY_CONNECTED -> SOFTMAX) that
the TFLM host runtime runs; ``edit(data, fn)`` unpacks any model to ``ModelT``, lets ``fn``
change it and packs it again with the ``TFL3`` identifier. Tests derive malformed models
from these instead of shipping binary fixtures.
"""

from __future__ import annotations

from collections.abc import Callable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb


def pack(model: "fb.ModelT") -> bytes:
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def unpack(data: bytes) -> "fb.ModelT":
    return fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))


def edit(data: bytes, fn: Callable[["fb.ModelT"], None]) -> bytes:
    model = unpack(data)
    fn(model)
    return pack(model)


def _quant(scale, zero_point, dim: int = 0) -> "fb.QuantizationParametersT":
    q = fb.QuantizationParametersT()
    q.scale = [float(s) for s in np.atleast_1d(scale)]
    q.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
    q.quantizedDimension = dim
    return q


def _opcode(code: int, version: int = 1) -> "fb.OperatorCodeT":
    oc = fb.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)
    oc.version = version
    return oc


def tiny_model(
    height: int = 8,
    width: int = 8,
    channels: int = 3,
    classes: int = 2,
    filters: int = 4,
    softmax_input_scale: float = 1 / 16,
    seed: int = 0,
) -> bytes:
    """A small valid INT8 classifier: [1,H,W,C] int8 -> [1,classes] int8 probabilities."""
    rng = np.random.default_rng(seed)
    m = fb.ModelT()
    m.version = 3
    m.description = "gendertool test model"
    m.operatorCodes = [
        _opcode(fb.BuiltinOperator.CONV_2D, 3),
        _opcode(fb.BuiltinOperator.MEAN, 2),
        _opcode(fb.BuiltinOperator.FULLY_CONNECTED, 4),
        _opcode(fb.BuiltinOperator.SOFTMAX, 2),
    ]
    buffers = [fb.BufferT()]  # buffer 0 is the conventional empty buffer

    def buf(arr: np.ndarray) -> int:
        b = fb.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8)
        buffers.append(b)
        return len(buffers) - 1

    tensors = []

    def tensor(name, shape, ttype, quant=None, buffer=0) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = list(shape)
        t.type = ttype
        t.buffer = buffer
        t.quantization = quant
        tensors.append(t)
        return len(tensors) - 1

    # Power-of-two scales: every multiplier product is exact in float and double, so TFLM
    # and LiteRT's reference kernels (which differ in that precision) agree bit for bit.
    in_scale = 1.0 / 128
    oh, ow = (height + 1) // 2, (width + 1) // 2
    w_scale = 2.0 ** -rng.integers(7, 10, filters)
    conv_w = rng.integers(-127, 128, (filters, 3, 3, channels), dtype=np.int8)
    conv_b = rng.integers(-500, 500, filters, dtype=np.int32)
    conv_out_scale = 1.0 / 16
    fc_w_scale = 1.0 / 128
    fc_w = rng.integers(-127, 128, (classes, filters), dtype=np.int8)
    fc_b = rng.integers(-200, 200, classes, dtype=np.int32)

    t_in = tensor("input", (1, height, width, channels), fb.TensorType.INT8, _quant(in_scale, 0))
    t_cw = tensor("conv/w", conv_w.shape, fb.TensorType.INT8, _quant(w_scale, [0] * filters, 0), buf(conv_w))
    t_cb = tensor("conv/b", conv_b.shape, fb.TensorType.INT32, _quant(w_scale * in_scale, [0] * filters, 0), buf(conv_b))
    t_co = tensor("conv/out", (1, oh, ow, filters), fb.TensorType.INT8, _quant(conv_out_scale, -128))
    t_ax = tensor("mean/axes", (2,), fb.TensorType.INT32, None, buf(np.array([1, 2], dtype=np.int32)))
    t_mo = tensor("mean/out", (1, filters), fb.TensorType.INT8, _quant(conv_out_scale, -128))
    t_fw = tensor("fc/w", fc_w.shape, fb.TensorType.INT8, _quant(fc_w_scale, 0), buf(fc_w))
    t_fb = tensor("fc/b", fc_b.shape, fb.TensorType.INT32, _quant(fc_w_scale * conv_out_scale, 0), buf(fc_b))
    t_fo = tensor("logits", (1, classes), fb.TensorType.INT8, _quant(softmax_input_scale, 0))
    t_out = tensor("probs", (1, classes), fb.TensorType.INT8, _quant(1.0 / 256, -128))

    def op(index, inputs, outputs, opt_type=0, opts=None) -> "fb.OperatorT":
        o = fb.OperatorT()
        o.opcodeIndex = index
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        o.builtinOptionsType = opt_type
        o.builtinOptions = opts
        return o

    conv_opts = fb.Conv2DOptionsT()
    conv_opts.padding = fb.Padding.SAME
    conv_opts.strideW = conv_opts.strideH = 2
    conv_opts.dilationWFactor = conv_opts.dilationHFactor = 1
    conv_opts.fusedActivationFunction = fb.ActivationFunctionType.RELU6
    mean_opts = fb.ReducerOptionsT()
    mean_opts.keepDims = False
    fc_opts = fb.FullyConnectedOptionsT()
    sm_opts = fb.SoftmaxOptionsT()
    sm_opts.beta = 1.0

    sg = fb.SubGraphT()
    sg.name = "main"
    sg.tensors = tensors
    sg.inputs = [t_in]
    sg.outputs = [t_out]
    sg.operators = [
        op(0, (t_in, t_cw, t_cb), (t_co,), fb.BuiltinOptions.Conv2DOptions, conv_opts),
        op(1, (t_co, t_ax), (t_mo,), fb.BuiltinOptions.ReducerOptions, mean_opts),
        op(2, (t_mo, t_fw, t_fb), (t_fo,), fb.BuiltinOptions.FullyConnectedOptions, fc_opts),
        op(3, (t_fo,), (t_out,), fb.BuiltinOptions.SoftmaxOptions, sm_opts),
    ]
    m.subgraphs = [sg]
    m.buffers = buffers
    return pack(m)


# The Seeed gender card's deployed INT8 graph (issue 13): 7 fused 3x3 CONV_2D (channels
# 16, 16, 16, 16, 32, 32, 32; strides 2, 1, 2, 1, 2, 1, 1) + MEAN + FULLY_CONNECTED + LOGISTIC.
SEED_CHANNELS = (16, 16, 16, 16, 32, 32, 32)
SEED_STRIDES = (2, 1, 2, 1, 2, 1, 1)


def seed_shaped_model(
    height: int = 64,
    width: int = 64,
    classes: int = 2,
    channels: tuple[int, ...] = SEED_CHANNELS,
    strides: tuple[int, ...] = SEED_STRIDES,
    seed: int = 0,
) -> bytes:
    """An INT8 model of the seed's shape with random weights: [1,H,W,3] int8 -> LOGISTIC [1,classes]
    (one sigmoid per class, output scale 1/256, zero point -128, as TFLM's int8 LOGISTIC needs)."""
    rng = np.random.default_rng(seed)
    m = fb.ModelT()
    m.version = 3
    m.description = "gendertool seed-shaped test model"
    m.operatorCodes = [
        _opcode(fb.BuiltinOperator.CONV_2D, 3),
        _opcode(fb.BuiltinOperator.MEAN, 2),
        _opcode(fb.BuiltinOperator.FULLY_CONNECTED, 4),
        _opcode(fb.BuiltinOperator.LOGISTIC, 2),
    ]
    buffers = [fb.BufferT()]
    tensors: list = []

    def buf(arr: np.ndarray) -> int:
        b = fb.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8)
        buffers.append(b)
        return len(buffers) - 1

    def tensor(name, shape, ttype, quant=None, buffer=0) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, list(shape), ttype, buffer, quant
        tensors.append(t)
        return len(tensors) - 1

    def op(index, inputs, outputs, opt_type=0, opts=None) -> "fb.OperatorT":
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = opt_type, opts
        return o

    # power-of-two scales keep TFLM and LiteRT bit-identical (see tiny_model)
    act_scale = 1.0 / 64
    x_scale, x = 1.0 / 256, tensor("input", (1, height, width, 3), fb.TensorType.INT8, _quant(1.0 / 256, -128))
    h, w, cin = height, width, 3
    ops = []
    for i, (cout, stride) in enumerate(zip(channels, strides)):
        h, w = -(-h // stride), -(-w // stride)
        # smaller weights for wider fan-in keep the activations inside the int8 range
        w_scale = 2.0 ** -rng.integers(8, 10, cout) / (1 if cin == 3 else 2)
        wt = rng.integers(-127, 128, (cout, 3, 3, cin), dtype=np.int8)
        bias = rng.integers(-2000, 2000, cout, dtype=np.int32)
        t_w = tensor(f"conv{i}/w", wt.shape, fb.TensorType.INT8, _quant(w_scale, [0] * cout, 0), buf(wt))
        t_b = tensor(f"conv{i}/b", bias.shape, fb.TensorType.INT32, _quant(w_scale * x_scale, [0] * cout, 0), buf(bias))
        t_o = tensor(f"conv{i}/out", (1, h, w, cout), fb.TensorType.INT8, _quant(act_scale, -128))
        opts = fb.Conv2DOptionsT()
        opts.padding = fb.Padding.SAME
        opts.strideW = opts.strideH = stride
        opts.dilationWFactor = opts.dilationHFactor = 1
        opts.fusedActivationFunction = fb.ActivationFunctionType.RELU
        ops.append(op(0, (x, t_w, t_b), (t_o,), fb.BuiltinOptions.Conv2DOptions, opts))
        x, x_scale, cin = t_o, act_scale, cout
    t_ax = tensor("mean/axes", (2,), fb.TensorType.INT32, None, buf(np.array([1, 2], dtype=np.int32)))
    t_mo = tensor("mean/out", (1, cin), fb.TensorType.INT8, _quant(act_scale, -128))
    mean_opts = fb.ReducerOptionsT()
    mean_opts.keepDims = False
    ops.append(op(1, (x, t_ax), (t_mo,), fb.BuiltinOptions.ReducerOptions, mean_opts))
    fc_w = rng.integers(-127, 128, (classes, cin), dtype=np.int8)
    fc_b = rng.integers(-400, 400, classes, dtype=np.int32)
    t_fw = tensor("fc/w", fc_w.shape, fb.TensorType.INT8, _quant(1.0 / 128, 0), buf(fc_w))
    t_fb = tensor("fc/b", fc_b.shape, fb.TensorType.INT32, _quant(act_scale / 128, 0), buf(fc_b))
    t_fo = tensor("logits", (1, classes), fb.TensorType.INT8, _quant(1.0 / 16, 0))
    ops.append(op(2, (t_mo, t_fw, t_fb), (t_fo,), fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT()))
    t_out = tensor("sigmoid", (1, classes), fb.TensorType.INT8, _quant(1.0 / 256, -128))
    ops.append(op(3, (t_fo,), (t_out,)))

    sg = fb.SubGraphT()
    sg.name, sg.tensors, sg.inputs, sg.outputs, sg.operators = "main", tensors, [0], [t_out], ops
    m.subgraphs = [sg]
    m.buffers = buffers
    return pack(m)
