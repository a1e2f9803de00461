"""Read an INT8 TFLite classifier, check it will run under TFLM on the board, describe it.

:func:`load_model` resolves a ``--model`` value (default model, file or profile), reads the
file and runs every check; each problem is a :class:`~gendertool.errors.ModelError` with one
clear message. Nothing here calls the TFLM runtime in-process: the tensor arena is measured in
a child process (:mod:`gendertool.model.arena_probe`) so that no model can kill gendertool, and the
one known TFLM abort (softmax input scale too small) is detected from the flatbuffer first.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gendertool.boards import get_board
from gendertool.errors import ModelError
from gendertool.model import arena
from gendertool.model import espnn
from gendertool.model import sources
from gendertool.model.arena_probe import measure_arena_host
from gendertool.model.checks import check_model
from gendertool.model.espnn import upstream_warnings
from gendertool.model.estimate import estimate_model
from gendertool.model.flatbuffer import (
    decode_name,
    dtype_name,
    model_macs,
    op_name,
    parameter_count,
    parse_model,
    tensor_scales,
    tensor_shape,
    tensor_zero_points,
)
from gendertool.model.preprocess import Preprocessing
from gendertool.model.resolver import resolver_method
from gendertool.text import count

if TYPE_CHECKING:  # pragma: no cover
    from gendertool.model.estimate import LatencyEstimate





# Firmware arena = tail + planned head + margin (arena_budget). Tail: the persistent part
# measured on the 64-bit host (measured arena minus its planned head), conservative on the
# 32-bit S3 whose structs are smaller. Head: gendertool.model.arena's emulation of TFLM's
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
    latency: "LatencyEstimate | None" = None  # estimated Invoke() on the XIAO ESP32S3 (gendertool.model.estimate)
    # the decoded flatbuffer (ModelT): decoded once by load_model_bytes, read by every analysis
    graph: Any = field(default=None, repr=False, compare=False)

    @property
    def espnn_warnings(self) -> list[str]:
        """Nodes whose ESP32-S3 ESP-NN kernel misbehaves upstream (gendertool.model.espnn)."""

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


def arena_budget(graph, host_bytes: int, *, esp_nn: bool = True) -> ArenaBudget:
    """The firmware arena from the host-measured arena and the emulated TFLM memory plan of a
    decoded model (``ModelInfo.graph``); ``esp_nn=False``: CONFIG_NN_ANSI_C."""

    host_head = arena.plan_head_bytes(graph)
    tail = max(host_bytes - host_head, 0)
    plan = arena.plan(graph, arena.firmware_scratch(graph, optimized=esp_nn))
    fw = firmware_arena_bytes(tail, plan.head)
    return ArenaBudget(host_bytes, host_head, tail, plan.head, plan.peak_node(), fw - tail - plan.head, fw, esp_nn)


def app_partition_bytes(board: str | None = None) -> tuple[str, int]:
    """(board name, size of its app partition in bytes); None: the default board."""

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

    src = sources.resolve(spec)
    try:
        data = src.path.read_bytes()
    except IsADirectoryError:
        raise ModelError(f"{src.path}: not a file") from None
    except OSError as exc:
        raise ModelError(f"{src.path}: cannot read the model ({exc.strerror or exc})") from None
    if labels is not None:
        chosen = sources.parse_labels(labels) if isinstance(labels, str) else sources.check_labels(labels, "--labels")
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

    entries = espnn.model_scratch(model)
    top = espnn.largest(entries)
    scratch = top.bytes if top else 0

    latency = estimate_model(model)
    host = fw = budget = None
    if measure_arena:

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
        parameters=parameter_count(model),
        macs=model_macs(model),
        labels=labels,
        preprocessing=preprocessing or Preprocessing(),
        arena_host_bytes=host,
        arena_bytes=fw,
        espnn_scratch_bytes=scratch,
        espnn_scratch_node=(top.node, top.op) if top else None,
        arena=budget,
        espnn_scratch=tuple(e for e in entries if e.bytes > 0),
        latency=latency,
        graph=model,
    )


def _operators(model) -> tuple[OpInfo, ...]:

    counts: dict[tuple[str, bool, int], int] = {}
    for op in model.subgraphs[0].operators or []:
        key = op_name(model, op)
        counts[key] = counts.get(key, 0) + 1
    return tuple(
        OpInfo(name=name, version=version, count=n, resolver_method=resolver_method(name, custom))
        for (name, custom, version), n in counts.items()
    )


def _tensor_info(t) -> TensorInfo:
    scales, zps = tensor_scales(t), tensor_zero_points(t)
    return TensorInfo(
        name=decode_name(t.name),
        shape=tensor_shape(t),
        dtype=dtype_name(t.type),
        scale=scales[0] if scales else 0.0,
        zero_point=zps[0] if zps else 0,
    )
