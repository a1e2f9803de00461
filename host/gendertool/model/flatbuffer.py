"""Read a TFLite flatbuffer: verify, decode to the object API, names, shapes and per-operator cost.

The lowest layer of model handling: every analysis works on the ``ModelT`` decoded here
(once per command, carried by :class:`gendertool.model.info.ModelInfo`)."""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

from gendertool.errors import ModelError
from gendertool.model.verify import FlatbufferError, verify_tflite

if TYPE_CHECKING:  # pragma: no cover
    pass


TFLITE_SCHEMA_VERSION = 3


ELEMENT_BYTES = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
    "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
    "complex64": 8, "complex128": 16, "int4": 0.5, "uint4": 0.5, "int2": 0.25,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# parsing


def tflite_schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_DTYPES: dict[int, str] | None = None
_OPS: dict[int, str] | None = None


def dtype_name(code: int) -> str:
    global _DTYPES
    if _DTYPES is None:
        _DTYPES = {k: v.lower() for k, v in _enum_names(tflite_schema().TensorType).items()}
    return _DTYPES.get(code, f"type_{code}")


def builtin_name(code: int) -> str:
    global _OPS
    if _OPS is None:
        _OPS = _enum_names(tflite_schema().BuiltinOperator)
    return _OPS.get(code, f"BUILTIN_{code}")


def parse_model(data: bytes, where: str = "model"):
    """Structure checks, then decode to the flatbuffers object API (``ModelT``)."""

    if len(data) < 8:
        raise ModelError(f"{where}: not a TFLite model: only {len(data)} bytes (empty or truncated)")
    ident = bytes(data[4:8])
    if ident != b"TFL3":
        raise ModelError(
            f"{where}: not a TFLite flatbuffer (file identifier {ident!r} at bytes 4-7, expected b'TFL3')"
        )
    try:
        verify_tflite(data)
    except FlatbufferError as exc:
        if exc.truncated:
            raise ModelError(f"{where}: the TFLite file is truncated or corrupt: {exc}") from None
        raise ModelError(f"{where}: corrupt TFLite flatbuffer: {exc}") from None
    fb = tflite_schema()
    try:
        return fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except (struct.error, IndexError, ValueError) as exc:  # the flatbuffers reader's out-of-range reads
        raise ModelError(f"{where}: corrupt TFLite flatbuffer: cannot decode it ({type(exc).__name__}: {exc})") from None


def decode_name(name) -> str:
    if name is None:
        return ""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def tensor_shape(t) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape) if t.shape is not None else ()


def tensor_scales(t) -> list[float]:
    q = t.quantization
    return [] if q is None or q.scale is None else [float(s) for s in q.scale]


def tensor_zero_points(t) -> list[int]:
    q = t.quantization
    return [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]




def io_shape(tensors, ids, k: int) -> tuple[int, ...]:
    """Shape of the ``k``-th tensor of an operator's ``inputs`` or ``outputs`` (``()`` when the
    operator has no such tensor or it is optional, index -1). The one node walker."""
    if ids is None or len(ids) <= k or int(ids[k]) < 0:
        return ()
    return tensor_shape(tensors[int(ids[k])])


def op_name(model, op) -> tuple[str, bool, int]:
    """(name, is_custom, version) of an operator."""
    oc = model.operatorCodes[op.opcodeIndex]
    code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
    if code == tflite_schema().BuiltinOperator.CUSTOM:
        return decode_name(oc.customCode) or "<unnamed custom op>", True, int(oc.version)
    return builtin_name(code), False, int(oc.version)


# ---------------------------------------------------------------------------------------------
# figures


def parameter_count(model) -> int:
    sg = model.subgraphs[0]
    total = 0
    for t in sg.tensors:
        buf = model.buffers[t.buffer]
        if buf.data is not None and len(buf.data) or buf.offset > 1:
            total += math.prod(tensor_shape(t))
    return total


def op_macs(model, op) -> int | None:
    """Multiply-accumulates of one node of the first subgraph (conv, depthwise, fully connected,
    transpose conv); None for other operators and for unknown shapes."""
    tensors = model.subgraphs[0].tensors

    def shape(i: int) -> tuple[int, ...]:
        return tensor_shape(tensors[int(i)]) if int(i) >= 0 else ()

    name, custom, _ = op_name(model, op)
    if custom or op.inputs is None or op.outputs is None or not len(op.outputs):
        return None
    out = shape(op.outputs[0])
    if any(d < 0 for d in out):
        return None
    if name == "CONV_2D" and len(op.inputs) >= 2:
        w = shape(op.inputs[1])  # [out_c, kh, kw, in_c / groups]
        if len(w) == 4:
            return math.prod(out) * w[1] * w[2] * w[3]
    elif name == "DEPTHWISE_CONV_2D" and len(op.inputs) >= 2:
        w = shape(op.inputs[1])  # [1, kh, kw, out_c]
        if len(w) == 4:
            return math.prod(out) * w[1] * w[2]
    elif name == "FULLY_CONNECTED" and len(op.inputs) >= 2:
        w = shape(op.inputs[1])  # [units, in]
        if len(w) == 2:
            return math.prod(out) * w[1]
    elif name == "TRANSPOSE_CONV" and len(op.inputs) >= 3:
        w, x = shape(op.inputs[1]), shape(op.inputs[2])  # [out_c, kh, kw, in_c], input
        if len(w) == 4 and x and all(d > 0 for d in x):
            return math.prod(x) * w[0] * w[1] * w[2]
    return None


def model_macs(model) -> int:
    return sum(op_macs(model, op) or 0 for op in model.subgraphs[0].operators or [])
