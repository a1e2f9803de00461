"""Checks that a decoded model will run under TFLM on the board (before any runtime touches it)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gendertool.errors import ModelError
from gendertool.model.flatbuffer import (
    ELEMENT_BYTES,
    TFLITE_SCHEMA_VERSION,
    decode_name,
    dtype_name,
    op_name,
    tensor_scales,
    tensor_shape,
    tensor_zero_points,
    tflite_schema,
)
from gendertool.model.resolver import TFLM_SOURCE, resolver_method

if TYPE_CHECKING:  # pragma: no cover
    pass


# TFLM CalculateSoftmaxParams (int8): PreprocessSoftmaxScaling(beta, input_scale, 5) computes
# min(beta * input_scale * 2^(31 - 5), 2^31 - 1) and QuantizeMultiplierGreaterThanOne aborts
# (TFLITE_CHECK_GT(multiplier, 1.)) unless that is > 1. Both operands are float32 in the model.
_SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
_SOFTMAX_MAX_MULTIPLIER = float((1 << 31) - 1)


# ---------------------------------------------------------------------------------------------
# checks


def check_model(model, data: bytes, where: str = "model") -> None:
    """Semantic checks: everything TFLM and the generated firmware rely on."""
    if model.version != TFLITE_SCHEMA_VERSION:
        raise ModelError(f"{where}: TFLite schema version {model.version}; TFLM reads version {TFLITE_SCHEMA_VERSION} only")
    subgraphs = model.subgraphs or []
    if not subgraphs:
        raise ModelError(f"{where}: the model has no subgraph")
    if len(subgraphs) > 1:
        raise ModelError(
            f"{where}: the model has {len(subgraphs)} subgraphs; gendertool supports single-subgraph "
            "classifiers only (no control flow such as WHILE/IF/CALL_ONCE)"
        )
    _check_indices(model, data, where)
    sg = subgraphs[0]
    tensors = sg.tensors
    # a damaged vector offset reads back as None: that is a model with no inputs, not a crash
    ins = [] if sg.inputs is None else list(sg.inputs)
    outs = [] if sg.outputs is None else list(sg.outputs)
    if len(ins) != 1 or len(outs) != 1:
        raise ModelError(f"{where}: the model has {len(ins)} inputs and {len(outs)} outputs; an image classifier has one of each")
    tin, tout = tensors[ins[0]], tensors[outs[0]]
    din, dout = dtype_name(tin.type), dtype_name(tout.type)
    if din != "int8" or dout != "int8":
        if din == dout:
            kind = f"a {din} model (input and output are {din})"
        else:
            kind = f"a mixed model (input {din}, output {dout})"
        raise ModelError(
            f"{where}: {kind}; gendertool needs a fully INT8-quantised model with int8 input and output"
        )
    shape = tensor_shape(tin)
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
        raise ModelError(f"{where}: input shape {list(shape)}; expected [1, H, W, 3] (one RGB image)")
    oshape = tensor_shape(tout)
    if not oshape or oshape[-1] < 1 or math.prod(oshape) != oshape[-1]:
        raise ModelError(f"{where}: output shape {list(oshape)}; expected [1, classes]")
    if oshape[-1] < 2:
        # argmax over one score always picks it and its softmax is always 1.0: no decision
        raise ModelError(
            f"{where}: the model has 1 output class; a classifier needs at least 2 (with one output every "
            "image gets the same class at probability 1.0). A single sigmoid output (the probability of "
            "one class) must be exported as 2 softmax outputs"
        )
    for role, t in (("input", tin), ("output", tout)):
        scales = tensor_scales(t)
        if len(scales) != 1 or not (math.isfinite(scales[0]) and scales[0] > 0):
            raise ModelError(f"{where}: the {role} tensor needs one positive quantisation scale, it has {scales}")
    _check_operators(model, where)
    _check_quantisation(model, where)
    _check_softmax(model, where)


def _check_indices(model, data: bytes, where: str) -> None:
    n_codes = len(model.operatorCodes or [])
    n_buffers = len(model.buffers or [])
    sg = model.subgraphs[0]
    tensors = sg.tensors or []
    n_t = len(tensors)
    if not tensors:
        raise ModelError(f"{where}: corrupt model: the subgraph has no tensors")
    for role, idx in (("input", sg.inputs), ("output", sg.outputs)):
        for i in [] if idx is None else idx:
            if not 0 <= int(i) < n_t:
                raise ModelError(f"{where}: corrupt model: subgraph {role} refers to tensor {int(i)} of {n_t}")
    for k, op in enumerate(sg.operators or []):
        if not 0 <= op.opcodeIndex < n_codes:
            raise ModelError(f"{where}: corrupt model: operator {k} uses operator code {op.opcodeIndex} of {n_codes}")
        for i in list(op.inputs if op.inputs is not None else []) + list(op.outputs if op.outputs is not None else []):
            if not -1 <= int(i) < n_t:
                raise ModelError(f"{where}: corrupt model: operator {k} refers to tensor {int(i)} of {n_t}")
    for k, t in enumerate(tensors):
        if not 0 <= t.buffer < n_buffers:
            raise ModelError(f"{where}: corrupt model: tensor {k} uses buffer {t.buffer} of {n_buffers}")
        buf = model.buffers[t.buffer]
        nbytes = _buffer_bytes(buf, len(data), where, t.buffer)
        if not nbytes:
            continue
        shape = tensor_shape(t)
        dtype = dtype_name(t.type)
        if any(d < 0 for d in shape):
            raise ModelError(f"{where}: corrupt model: constant tensor {k} ({decode_name(t.name)!r}) has shape {list(shape)}")
        per = ELEMENT_BYTES.get(dtype)
        if per is None:
            continue  # strings and resources have no fixed size
        need = math.ceil(math.prod(shape) * per)
        if nbytes != need:
            raise ModelError(
                f"{where}: corrupt model: constant tensor {k} ({decode_name(t.name)!r}, {dtype} {list(shape)}) "
                f"needs {need} bytes but its buffer holds {nbytes}"
            )


def _buffer_bytes(buf, file_size: int, where: str, index: int) -> int:
    if buf.data is not None and len(buf.data):
        return len(buf.data)
    if buf.offset > 1:  # models > 2 GB keep data after the flatbuffer: offset/size into the file
        if buf.offset + buf.size > file_size:
            raise ModelError(f"{where}: the TFLite file is truncated or corrupt: buffer {index} data ends past the end of the file")
        return int(buf.size)
    return 0


def _check_operators(model, where: str) -> None:

    missing: dict[str, int] = {}
    for op in model.subgraphs[0].operators or []:
        name, custom, _ = op_name(model, op)
        if resolver_method(name, custom) is None:
            label = f"custom operator {name!r}" if custom else name
            missing[label] = missing.get(label, 0) + 1
    if missing:
        names = ", ".join(f"{k} (x{n})" for k, n in missing.items())
        raise ModelError(
            f"{where}: TFLM's MicroMutableOpResolver has no Add* method for {names} "
            f"({TFLM_SOURCE}); the firmware cannot run this model"
        )


def _check_quantisation(model, where: str) -> None:
    sg = model.subgraphs[0]
    for k, t in enumerate(sg.tensors):
        scales = tensor_scales(t)
        dtype = dtype_name(t.type)
        if dtype in ("int8", "int16") and not scales:
            # TFLM's quantised kernels read params.scale unconditionally (a trial crash: SIGABRT)
            raise ModelError(f"{where}: {dtype} tensor {k} ({decode_name(t.name)!r}) has no quantisation scale")
        if scales and len(tensor_zero_points(t)) != len(scales):
            raise ModelError(
                f"{where}: tensor {k} ({decode_name(t.name)!r}) has {len(scales)} quantisation scales but "
                f"{len(tensor_zero_points(t))} zero points"
            )
        bad = [s for s in scales if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ModelError(
                f"{where}: tensor {k} ({decode_name(t.name)!r}) has an invalid quantisation scale {bad[0]!r}; "
                "TFLM would fail or abort computing its multipliers"
            )


def softmax_multiplier(beta: float, input_scale: float) -> float:
    """The real multiplier TFLM's int8 softmax quantises (must be > 1, see module constants)."""
    m = beta * input_scale * float(1 << (31 - _SOFTMAX_SCALED_DIFF_INTEGER_BITS))
    return m if m != m else min(m, _SOFTMAX_MAX_MULTIPLIER)  # NaN stays NaN (std::min keeps it)


def _check_softmax(model, where: str) -> None:
    fb = tflite_schema()
    sg = model.subgraphs[0]
    for k, op in enumerate(sg.operators or []):
        name, custom, _ = op_name(model, op)
        if custom or name != "SOFTMAX" or op.inputs is None or not len(op.inputs):
            continue
        t = sg.tensors[int(op.inputs[0])]
        if dtype_name(t.type) != "int8":
            continue
        scales = tensor_scales(t)
        scale = scales[0] if scales else 0.0
        # TFLM reads beta from SoftmaxOptions; without options it stays 0.
        beta = float(op.builtinOptions.beta) if isinstance(op.builtinOptions, fb.SoftmaxOptionsT) else 0.0
        if not softmax_multiplier(beta, scale) > 1.0:
            raise ModelError(
                f"{where}: the SOFTMAX (operator {k}) input {decode_name(t.name)!r} has scale {scale:.3g} and beta "
                f"{beta:g}: beta x scale must exceed 2^-26 ({2.0 ** -26:.3g}) or TFLM aborts in "
                "QuantizeMultiplierGreaterThanOne (CalculateSoftmaxParams) at AllocateTensors; "
                "the model is probably untrained or badly calibrated"
            )
