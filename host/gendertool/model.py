"""Read an INT8 TFLite classifier, check it will run under TFLM on the board, describe it.

:func:`load_model` resolves a ``--model`` value (default model, file or profile), reads the
file and runs every check; each problem is a :class:`~gendertool.errors.ModelError` with one
clear message. Nothing here calls the TFLM runtime in-process: the tensor arena is measured in
a child process (:mod:`gendertool._arena_probe`) so that no model can kill gendertool, and the
one known TFLM abort (softmax input scale too small) is detected from the flatbuffer first.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gendertool.errors import ModelError
from gendertool.preprocess import Preprocessing
from gendertool.wording import count

if TYPE_CHECKING:  # pragma: no cover
    from gendertool.estimate import LatencyEstimate

TFLITE_SCHEMA_VERSION = 3

# Firmware arena = tail + planned head + margin (arena_budget). Tail: the persistent part
# measured on the 64-bit host (measured arena minus its planned head), conservative on the
# 32-bit S3 whose structs are smaller. Head: gendertool.arena_plan's emulation of TFLM's
# GreedyMemoryPlanner with the scratch the S3 kernels request (ESP-NN for conv, depthwise,
# softmax); with reference scratch it equals the host runtime's print_allocations head
# (tests/test_arena_plan.py). The plan is emulated, not bounded, so the margin only covers
# drift between the pinned esp-tflite-micro/esp-nn and the sources read, and the S3 kernels'
# own persistent data (one scratch handle per request, esp_nn op data): 10 % of tail + head,
# at least 8 KiB, rounded up to 1 KiB. (Planning itself borrows the free head temporarily,
# about 70 bytes per buffer: far below the planned head.)
ARENA_MARGIN_FRACTION = 0.10
ARENA_MARGIN_MIN_BYTES = 8 * 1024
ARENA_ROUND_BYTES = 1024

# TFLM CalculateSoftmaxParams (int8): PreprocessSoftmaxScaling(beta, input_scale, 5) computes
# min(beta * input_scale * 2^(31 - 5), 2^31 - 1) and QuantizeMultiplierGreaterThanOne aborts
# (TFLITE_CHECK_GT(multiplier, 1.)) unless that is > 1. Both operands are float32 in the model.
_SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
_SOFTMAX_MAX_MULTIPLIER = float((1 << 31) - 1)

_ELEMENT_BYTES = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
    "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
    "complex64": 8, "complex128": 16, "int4": 0.5, "uint4": 0.5, "int2": 0.25,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "float32", ...
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}  # fmt: skip


@dataclass(frozen=True)
class OpInfo:
    name: str  # BuiltinOperator name, e.g. "CONV_2D", or the custom code
    version: int
    count: int
    resolver_method: str | None  # e.g. "AddConv2D"; None if TFLM cannot add it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "count": self.count,
                "resolver_method": self.resolver_method}  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    path: Path | None
    data: bytes
    size: int
    sha256: str
    name: str  # file stem (or profile name)
    input: TensorInfo
    output: TensorInfo
    operators: tuple[OpInfo, ...]
    subgraphs: int
    parameters: int
    macs: int
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    arena_host_bytes: int | None  # measured on the TFLM host runtime (64-bit host figure)
    arena_bytes: int | None  # what the firmware allocates: tail + planned head + margin
    # largest per-node scratch ESP-NN (S3, CONFIG_NN_OPTIMIZED) requests, and its node
    espnn_scratch_bytes: int | None = None
    espnn_scratch_node: tuple[int, str] | None = None  # (operator index, operator name)
    arena: "ArenaBudget | None" = None  # how arena_bytes is made up (None: not measured)
    espnn_scratch: tuple = ()  # espnn.NodeScratch per node with a request
    latency: "LatencyEstimate | None" = None  # estimated Invoke() on the XIAO ESP32S3 (gendertool.estimate)

    @property
    def espnn_warnings(self) -> list[str]:
        """Nodes whose ESP32-S3 ESP-NN kernel misbehaves upstream (gendertool.espnn)."""
        from gendertool.espnn import upstream_warnings

        return upstream_warnings(self.espnn_scratch)

    @property
    def classes(self) -> int:
        return self.output.shape[-1]

    @property
    def resolver_methods(self) -> tuple[str, ...]:
        """The distinct ``Add*`` calls the firmware's op resolver needs, in model order."""
        seen: dict[str, None] = {}
        for op in self.operators:
            if op.resolver_method:
                seen.setdefault(op.resolver_method)
        return tuple(seen)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (everything but the model bytes)."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "size": self.size,
            "sha256": self.sha256,
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "classes": self.classes,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
            "operators": [op.to_dict() for op in self.operators],
            "subgraphs": self.subgraphs,
            "parameters": self.parameters,
            "macs": self.macs,
            "arena": {
                "host_bytes": self.arena_host_bytes,
                "host_note": "measured on the TFLM host runtime (64-bit host, reference kernels)",
                "firmware_bytes": self.arena_bytes,
                **(self.arena.to_dict() if self.arena else {}),
                "espnn_scratch_bytes": self.espnn_scratch_bytes,
                "espnn_scratch_node": (
                    {"node": self.espnn_scratch_node[0], "op": self.espnn_scratch_node[1]}
                    if self.espnn_scratch_node else None
                ),
                "espnn_scratch": [e.to_dict() for e in self.espnn_scratch],
                "espnn_warnings": self.espnn_warnings,
                "firmware_formula": "tail + planned head (TFLM greedy plan with the ESP32-S3 kernels' scratch) + margin",
                "margin": f"+{ARENA_MARGIN_FRACTION:.0%} of tail + head (at least {ARENA_MARGIN_MIN_BYTES} bytes), "
                f"rounded up to {ARENA_ROUND_BYTES} bytes",
            },
            "latency_estimate": self.latency.to_dict() if self.latency else None,
        }


def firmware_arena_bytes(tail_bytes: int, head_bytes: int = 0) -> int:
    """The firmware's tensor arena: persistent tail + planned head + margin (ARENA_MARGIN_*)."""
    used = tail_bytes + head_bytes
    margin = max(math.ceil(used * ARENA_MARGIN_FRACTION), ARENA_MARGIN_MIN_BYTES)
    return -(-(used + margin) // ARENA_ROUND_BYTES) * ARENA_ROUND_BYTES


@dataclass(frozen=True)
class ArenaBudget:
    host_bytes: int  # smallest working arena on the TFLM host runtime (+16, _arena_probe)
    host_head_bytes: int  # emulated plan with the host's reference-kernel scratch
    tail_bytes: int  # host_bytes - host_head_bytes: persistent (64-bit structs) + probe slack
    head_bytes: int  # emulated plan with the ESP32-S3 kernels' scratch
    peak_node: int | None  # operator index where the planned head peaks
    margin_bytes: int  # firmware_bytes - tail - head (margin incl. rounding)
    firmware_bytes: int
    esp_nn: bool  # True: CONFIG_NN_OPTIMIZED scratch sizes, False: CONFIG_NN_ANSI_C

    def to_dict(self) -> dict[str, Any]:
        return {
            "host_head_bytes": self.host_head_bytes,
            "tail_bytes": self.tail_bytes,
            "head_bytes": self.head_bytes,
            "head_peak_node": self.peak_node,
            "margin_bytes": self.margin_bytes,
            "esp_nn": self.esp_nn,
        }


def arena_budget(model, host_bytes: int, *, esp_nn: bool = True) -> ArenaBudget:
    """The firmware arena from the host-measured arena and the emulated TFLM memory plan.
    ``model``: bytes, ModelInfo or parsed ModelT; ``esp_nn=False``: CONFIG_NN_ANSI_C."""
    from gendertool import arena_plan

    host_head = arena_plan.plan_head_bytes(model)
    tail = max(host_bytes - host_head, 0)
    plan = arena_plan.plan(model, arena_plan.firmware_scratch(model, optimized=esp_nn))
    fw = firmware_arena_bytes(tail, plan.head)
    return ArenaBudget(host_bytes, host_head, tail, plan.head, plan.peak_node(), fw - tail - plan.head, fw, esp_nn)


def app_partition_bytes(board: str | None = None) -> tuple[str, int]:
    """(board name, size of its app partition in bytes); None: the default board."""
    from gendertool.boards import get_board

    brd = get_board(board or None)
    return brd.name, brd.app_partition_bytes


# ---------------------------------------------------------------------------------------------
# entry points


def load_model(
    spec: str | Path | None = None,
    *,
    labels: Sequence[str] | str | None = None,
    board: str | None = None,
    measure_arena: bool = True,
) -> ModelInfo:
    """Resolve ``spec`` (None: default model; a path; or a profile name), read and check it.

    ``labels`` overrides the labels that travel with the model (a sequence or "a,b" text).
    Raises :class:`ModelError` (or another GendertoolError) with one clear message.
    """
    from gendertool import profiles

    src = profiles.resolve(spec)
    try:
        data = src.path.read_bytes()
    except IsADirectoryError:
        raise ModelError(f"{src.path}: not a file") from None
    except OSError as exc:
        raise ModelError(f"{src.path}: cannot read the model ({exc.strerror or exc})") from None
    if labels is not None:
        chosen = profiles.parse_labels(labels) if isinstance(labels, str) else profiles.check_labels(labels, "--labels")
        origin = "--labels"
    else:
        chosen = src.labels
        origin = "the labels that come with the model" if src.labels else ""
    return load_model_bytes(
        data,
        path=src.path,
        name=src.name,
        labels=chosen,
        labels_origin=origin,
        preprocessing=src.preprocessing,
        board=board,
        measure_arena=measure_arena,
    )


def load_model_bytes(
    data: bytes,
    *,
    path: Path | None = None,
    name: str = "model",
    labels: Sequence[str] = (),
    labels_origin: str = "--labels",
    preprocessing: Preprocessing | None = None,
    board: str | None = None,
    measure_arena: bool = True,
) -> ModelInfo:
    """Check model bytes and describe them (see :func:`load_model`)."""
    where = str(path) if path is not None else name
    data = bytes(data)
    model = parse_model(data, where)
    check_model(model, data, where)
    sg = model.subgraphs[0]
    tensors = sg.tensors
    inp = _tensor_info(tensors[sg.inputs[0]])
    out = _tensor_info(tensors[sg.outputs[0]])
    operators = _operators(model)
    classes = out.shape[-1]

    if labels:
        labels = tuple(labels)
        if len(labels) != classes:
            src = labels_origin or "the labels"
            raise ModelError(f"{where}: {src} give {count(len(labels), 'label')} ({', '.join(labels)}) but the model has {count(classes, 'output')}")
    else:
        labels = tuple(f"class_{i}" for i in range(classes))

    board_name, partition = app_partition_bytes(board)
    if len(data) > partition:
        raise ModelError(
            f"{where}: the model is {len(data):,} bytes, larger than the {board_name} app partition "
            f"({partition:,} bytes); it cannot be flashed with the firmware"
        )

    sha = hashlib.sha256(data).hexdigest()
    from gendertool import espnn

    entries = espnn.model_scratch(model)
    top = espnn.largest(entries)
    scratch = top.bytes if top else 0
    from gendertool.estimate import estimate_model

    latency = estimate_model(model)
    host = fw = budget = None
    if measure_arena:
        from gendertool._arena_probe import measure_arena_host

        host = measure_arena_host(data, sha, where)
        budget = arena_budget(model, host)
        fw = budget.firmware_bytes

    return ModelInfo(
        path=path,
        data=data,
        size=len(data),
        sha256=sha,
        name=name,
        input=inp,
        output=out,
        operators=operators,
        subgraphs=len(model.subgraphs),
        parameters=_parameters(model),
        macs=_macs(model),
        labels=labels,
        preprocessing=preprocessing or Preprocessing(),
        arena_host_bytes=host,
        arena_bytes=fw,
        espnn_scratch_bytes=scratch,
        espnn_scratch_node=(top.node, top.op) if top else None,
        arena=budget,
        espnn_scratch=tuple(e for e in entries if e.bytes > 0),
        latency=latency,
    )


# ---------------------------------------------------------------------------------------------
# parsing


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


_DTYPES: dict[int, str] | None = None
_OPS: dict[int, str] | None = None


def dtype_name(code: int) -> str:
    global _DTYPES
    if _DTYPES is None:
        _DTYPES = {k: v.lower() for k, v in _enum_names(_schema().TensorType).items()}
    return _DTYPES.get(code, f"type_{code}")


def builtin_name(code: int) -> str:
    global _OPS
    if _OPS is None:
        _OPS = _enum_names(_schema().BuiltinOperator)
    return _OPS.get(code, f"BUILTIN_{code}")


def parse_model(data: bytes, where: str = "model"):
    """Structure checks, then decode to the flatbuffers object API (``ModelT``)."""
    from gendertool._fbverify import FlatbufferError, verify_tflite

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
    fb = _schema()
    try:
        return fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except (struct.error, IndexError, ValueError) as exc:  # the flatbuffers reader's out-of-range reads
        raise ModelError(f"{where}: corrupt TFLite flatbuffer: cannot decode it ({type(exc).__name__}: {exc})") from None


def _decode(name) -> str:
    if name is None:
        return ""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _shape(t) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape) if t.shape is not None else ()


def _scales(t) -> list[float]:
    q = t.quantization
    return [] if q is None or q.scale is None else [float(s) for s in q.scale]


def _zero_points(t) -> list[int]:
    q = t.quantization
    return [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]


def _tensor_info(t) -> TensorInfo:
    scales, zps = _scales(t), _zero_points(t)
    return TensorInfo(
        name=_decode(t.name),
        shape=_shape(t),
        dtype=dtype_name(t.type),
        scale=scales[0] if scales else 0.0,
        zero_point=zps[0] if zps else 0,
    )


def op_name(model, op) -> tuple[str, bool, int]:
    """(name, is_custom, version) of an operator."""
    oc = model.operatorCodes[op.opcodeIndex]
    code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
    if code == _schema().BuiltinOperator.CUSTOM:
        return _decode(oc.customCode) or "<unnamed custom op>", True, int(oc.version)
    return builtin_name(code), False, int(oc.version)


def _operators(model) -> tuple[OpInfo, ...]:
    from gendertool.ops import resolver_method

    counts: dict[tuple[str, bool, int], int] = {}
    for op in model.subgraphs[0].operators or []:
        key = op_name(model, op)
        counts[key] = counts.get(key, 0) + 1
    return tuple(
        OpInfo(name=name, version=version, count=n, resolver_method=resolver_method(name, custom))
        for (name, custom, version), n in counts.items()
    )


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
    shape = _shape(tin)
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
        raise ModelError(f"{where}: input shape {list(shape)}; expected [1, H, W, 3] (one RGB image)")
    oshape = _shape(tout)
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
        scales = _scales(t)
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
        shape = _shape(t)
        dtype = dtype_name(t.type)
        if any(d < 0 for d in shape):
            raise ModelError(f"{where}: corrupt model: constant tensor {k} ({_decode(t.name)!r}) has shape {list(shape)}")
        per = _ELEMENT_BYTES.get(dtype)
        if per is None:
            continue  # strings and resources have no fixed size
        need = math.ceil(math.prod(shape) * per)
        if nbytes != need:
            raise ModelError(
                f"{where}: corrupt model: constant tensor {k} ({_decode(t.name)!r}, {dtype} {list(shape)}) "
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
    from gendertool.ops import TFLM_SOURCE, resolver_method

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
        scales = _scales(t)
        dtype = dtype_name(t.type)
        if dtype in ("int8", "int16") and not scales:
            # TFLM's quantised kernels read params.scale unconditionally (a trial crash: SIGABRT)
            raise ModelError(f"{where}: {dtype} tensor {k} ({_decode(t.name)!r}) has no quantisation scale")
        if scales and len(_zero_points(t)) != len(scales):
            raise ModelError(
                f"{where}: tensor {k} ({_decode(t.name)!r}) has {len(scales)} quantisation scales but "
                f"{len(_zero_points(t))} zero points"
            )
        bad = [s for s in scales if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ModelError(
                f"{where}: tensor {k} ({_decode(t.name)!r}) has an invalid quantisation scale {bad[0]!r}; "
                "TFLM would fail or abort computing its multipliers"
            )


def softmax_multiplier(beta: float, input_scale: float) -> float:
    """The real multiplier TFLM's int8 softmax quantises (must be > 1, see module constants)."""
    m = beta * input_scale * float(1 << (31 - _SOFTMAX_SCALED_DIFF_INTEGER_BITS))
    return m if m != m else min(m, _SOFTMAX_MAX_MULTIPLIER)  # NaN stays NaN (std::min keeps it)


def _check_softmax(model, where: str) -> None:
    fb = _schema()
    sg = model.subgraphs[0]
    for k, op in enumerate(sg.operators or []):
        name, custom, _ = op_name(model, op)
        if custom or name != "SOFTMAX" or op.inputs is None or not len(op.inputs):
            continue
        t = sg.tensors[int(op.inputs[0])]
        if dtype_name(t.type) != "int8":
            continue
        scales = _scales(t)
        scale = scales[0] if scales else 0.0
        # TFLM reads beta from SoftmaxOptions; without options it stays 0.
        beta = float(op.builtinOptions.beta) if isinstance(op.builtinOptions, fb.SoftmaxOptionsT) else 0.0
        if not softmax_multiplier(beta, scale) > 1.0:
            raise ModelError(
                f"{where}: the SOFTMAX (operator {k}) input {_decode(t.name)!r} has scale {scale:.3g} and beta "
                f"{beta:g}: beta x scale must exceed 2^-26 ({2.0 ** -26:.3g}) or TFLM aborts in "
                "QuantizeMultiplierGreaterThanOne (CalculateSoftmaxParams) at AllocateTensors; "
                "the model is probably untrained or badly calibrated"
            )


# ---------------------------------------------------------------------------------------------
# figures


def _parameters(model) -> int:
    sg = model.subgraphs[0]
    total = 0
    for t in sg.tensors:
        buf = model.buffers[t.buffer]
        if buf.data is not None and len(buf.data) or buf.offset > 1:
            total += math.prod(_shape(t))
    return total


def op_macs(model, op) -> int | None:
    """Multiply-accumulates of one node of the first subgraph (conv, depthwise, fully connected,
    transpose conv); None for other operators and for unknown shapes."""
    tensors = model.subgraphs[0].tensors

    def shape(i: int) -> tuple[int, ...]:
        return _shape(tensors[int(i)]) if int(i) >= 0 else ()

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


def _macs(model) -> int:
    return sum(op_macs(model, op) or 0 for op in model.subgraphs[0].operators or [])
