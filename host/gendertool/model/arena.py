"""Emulate TFLM's memory plan: the arena "head" (non-persistent, planned) a model needs.

TFLM (tensorflow/tflite-micro; esp-tflite-micro vendors the same files) plans activation
tensors and kernel scratch buffers with ``GreedyMemoryPlanner`` in
``MicroAllocator::CommitStaticMemoryPlan``; the head is the planner's
``GetMaximumMemorySize()``. Read upstream (tensorflow/tflite-micro):

- ``micro/micro_allocation_info.cc`` (01010b3e): which tensors need planning (no buffer data,
  not variable, non-zero size) and their lifetimes. Allocation scope 0 is the subgraph start
  (model inputs and outputs are created there); node ``i`` is scope ``i + 1``; outputs of a
  node are created at its scope; every input/output use extends ``last_used``; model outputs
  live to the last scope. A scratch buffer requested by node ``i`` lives at scope ``i + 1``
  only. Scratch requests follow all tensors in the buffer list, in request (node) order.
- ``micro/micro_allocator.cc`` (0167db30) ``CreatePlan``: each size is rounded up to
  ``MicroArenaBufferAlignment()`` (16). Offline-planned offsets (``OfflineMemoryAllocation``
  metadata) are not emulated: converter-made models carry none (see :func:`plan`).
- ``micro/memory_planner/greedy_memory_planner.cc`` (17bebc09): online buffers are listed
  from the tail (last id first) and stable-sorted by size, descending, so equal sizes go in
  reverse id order; the first buffer at 0, then for each buffer the
  lowest gap, walking the offset-ordered list of already placed buffers whose lifetime
  overlaps (inclusive ends), that is at least as large as the buffer.

Scratch a node requests comes in two flavours: what the host's reference kernels request
(:func:`reference_scratch`: MEAN/SUM keep one int32 per output element, REDUCE_MAX/MIN two
small index buffers, from ``micro/kernels/reduce_common.cc``) and what the ESP32-S3's
esp-tflite-micro kernels request (:func:`firmware_scratch`, ESP-NN sizes from
:mod:`gendertool.model.espnn` for the ops esp-tflite-micro overrides, reference for the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gendertool.model import espnn
from gendertool.model.flatbuffer import (
    ELEMENT_BYTES,
    dtype_name,
    op_name,
    tensor_shape,
)

ALIGNMENT = 16  # MicroArenaBufferAlignment()

# ops whose esp-tflite-micro kernels (kernels/esp_nn/) replace the reference ones; their
# scratch is gendertool.model.espnn's figure (0 where esp-nn asks for none)
ESP_NN_OPS = frozenset(
    {"ADD", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX",
     "AVERAGE_POOL_2D", "MAX_POOL_2D", "QUANTIZE", "DEQUANTIZE"}
)  # fmt: skip

ScratchMap = Mapping[int, "int | Sequence[int]"]


@dataclass(frozen=True)
class Buffer:
    size: int  # aligned to ALIGNMENT
    first: int  # allocation scope of creation
    last: int  # allocation scope of last use (inclusive)
    tensor: int | None = None  # tensor index, or None for a scratch buffer
    node: int | None = None  # requesting node of a scratch buffer


@dataclass(frozen=True)
class Plan:
    buffers: tuple[Buffer, ...]
    offsets: tuple[int, ...]
    head: int  # GetMaximumMemorySize()

    def peak_node(self) -> int | None:
        """The node (operator index) with the most live bytes (first on ties); the head can
        sit above that sum where the greedy placement leaves gaps."""
        live: dict[int, int] = {}
        for b in self.buffers:
            for scope in range(max(b.first, 1), b.last + 1):  # scope i + 1 is node i
                live[scope] = live.get(scope, 0) + b.size
        if not live:
            return None
        return min(live, key=lambda k: (-live[k], k)) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head, "buffers": len(self.buffers)}


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-int(n) // alignment) * alignment


# ---------------------------------------------------------------------------------------------
# the planner


def greedy_offsets(buffers: Sequence[tuple[int, int, int]]) -> list[int]:
    """Offsets GreedyMemoryPlanner gives (size, first, last) buffers, in input order."""
    n = len(buffers)
    if n == 0:
        return []
    # Online buffers are listed from the tail (last id first), then stable-sorted by size,
    # descending (ReverseSortInPlace): equal sizes are placed in reverse id order.
    order = sorted(reversed(range(n)), key=lambda i: -buffers[i][0])
    offsets = [0] * n
    placed: list[tuple[int, int]] = [(0, order[0])]  # (offset, id), kept sorted by offset
    for bid in order[1:]:
        size, first, last = buffers[bid]
        candidate = 0
        for off, other in placed:
            _, o_first, o_last = buffers[other]
            if o_first > last or first > o_last:
                continue  # not alive at the same time
            if off - candidate >= size:
                break  # the gap before this buffer is large enough
            candidate = max(candidate, off + buffers[other][0])
        offsets[bid] = candidate
        # insert after entries with offset <= candidate (upstream: after equal offsets, except
        # before the head of the list only when strictly smaller)
        pos = len(placed)
        for k, (off, _) in enumerate(placed):
            if off > candidate:
                pos = k
                break
        placed.insert(pos, (candidate, bid))
    return offsets


def max_memory(buffers: Sequence[tuple[int, int, int]], offsets: Sequence[int]) -> int:
    return max((off + b[0] for b, off in zip(buffers, offsets)), default=0)


# ---------------------------------------------------------------------------------------------
# a model


def _tensor_bytes(t) -> int:
    """TfLiteEvalTensorByteLength: elements x element size."""

    n = 1
    for d in tensor_shape(t):
        n *= max(int(d), 0)
    return int(n * ELEMENT_BYTES.get(dtype_name(t.type), 1))


def _has_data(model, t) -> bool:
    """InitializeTfLiteEvalTensorFromFlatbuffer points the tensor into the flatbuffer when
    its buffer carries data (inline, or by offset in >2 GB-style files)."""
    idx = int(t.buffer or 0)
    bufs = model.buffers or []
    if idx <= 0 or idx >= len(bufs):
        return False
    b = bufs[idx]
    if b.data is not None and len(b.data) > 0:
        return True
    return int(getattr(b, "offset", 0) or 0) > 1 and int(getattr(b, "size", 0) or 0) > 0


def _as_tuple(v) -> tuple[int, ...]:
    if v is None:
        return ()
    if isinstance(v, int):
        return (v,) if v > 0 else ()
    return tuple(int(x) for x in v if int(x) > 0)


def buffers_of(graph, scratch_per_node: ScratchMap | None = None) -> list[Buffer]:
    """The planner's buffer list for the first subgraph, in TFLM's id order.

    ``scratch_per_node``: bytes (or a sequence of requests) per operator index; None means
    what the host's reference kernels request (:func:`reference_scratch`).
    """
    m = graph  # the decoded ModelT (ModelInfo.graph)
    if scratch_per_node is None:
        scratch_per_node = reference_scratch(m)
    sg = m.subgraphs[0]
    tensors = sg.tensors or []
    ops = sg.operators or []
    first = [-1] * len(tensors)
    last = [-1] * len(tensors)

    def created(i: int, scope: int) -> None:
        first[i] = last[i] = scope

    for i in list(sg.inputs if sg.inputs is not None else []) + list(sg.outputs if sg.outputs is not None else []):
        created(int(i), 0)
    scope = 0
    for op in ops:
        scope += 1
        outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        for i in outs:
            created(i, scope)
        for i in (op.inputs if op.inputs is not None else []):
            if int(i) >= 0:
                last[int(i)] = scope
        for i in outs:
            last[i] = scope
    for i in sg.outputs if sg.outputs is not None else []:
        last[int(i)] = scope

    out: list[Buffer] = []
    for i, t in enumerate(tensors):
        size = _tensor_bytes(t)
        if _has_data(m, t) or t.isVariable or size == 0:
            continue  # weights live in the flatbuffer; variables in the persistent tail
        out.append(Buffer(align_up(size), first[i], last[i], tensor=i))
    for node in sorted(scratch_per_node):
        for req in _as_tuple(scratch_per_node[node]):
            out.append(Buffer(align_up(req), node + 1, node + 1, node=node))
    return out


def plan(graph, scratch_per_node: ScratchMap | None = None) -> Plan:
    """Emulated GreedyMemoryPlanner plan of the first subgraph. ``OfflineMemoryAllocation``
    metadata (offsets fixed by an offline planner) is ignored: every buffer is planned online."""
    m = graph  # the decoded ModelT (ModelInfo.graph)
    bufs = buffers_of(m, scratch_per_node)
    triples = [(b.size, b.first, b.last) for b in bufs]
    offsets = greedy_offsets(triples)
    return Plan(tuple(bufs), tuple(offsets), max_memory(triples, offsets))


def plan_head_bytes(graph, scratch_per_node: ScratchMap | None = None) -> int:
    """Planned head (non-persistent) bytes: with None, the scratch the host's reference
    kernels request (equals the host runtime's print_allocations "head"); pass
    :func:`firmware_scratch` for the ESP32-S3 build, or ``{}`` for tensors only."""
    return plan(graph, scratch_per_node).head


# ---------------------------------------------------------------------------------------------
# scratch requests per node


def reference_scratch(graph) -> dict[int, tuple[int, ...]]:
    """Scratch the TFLM reference kernels request in Prepare, per node (micro/kernels/
    reduce_common.cc; the reference conv, depthwise, fully connected, softmax, add and pooling
    kernels request none for int8)."""

    m = graph  # the decoded ModelT (ModelInfo.graph)
    sg = m.subgraphs[0]
    tensors = sg.tensors or []
    out: dict[int, tuple[int, ...]] = {}
    for i, op in enumerate(sg.operators or []):
        name, custom, _ = op_name(m, op)
        if custom or op.inputs is None or not len(op.inputs):
            continue
        inp = tensors[int(op.inputs[0])]
        if name in ("MEAN", "SUM") and dtype_name(inp.type) in ("int8", "int16"):
            n = 1
            for d in tensor_shape(tensors[int(op.outputs[0])]):
                n *= int(d)
            axis = tensor_shape(tensors[int(op.inputs[1])]) if len(op.inputs) > 1 else ()
            n_axis = 1
            for d in axis:
                n_axis *= int(d)
            # PrepareMeanOrSumHelper: one int32 accumulator per output. The host runtime's
            # head is 32 bytes larger at the MEAN node than that alone gives: this build also
            # requests the temp-index and resolved-axis int arrays as scratch, as
            # PrepareMaxHelper does (checked against print_allocations, tests/test_arena_plan.py)
            out[i] = (4 * n, 4 * len(tensor_shape(inp)), 4 * n_axis)
        elif name in ("REDUCE_MAX", "REDUCE_MIN"):
            axis = tensor_shape(tensors[int(op.inputs[1])]) if len(op.inputs) > 1 else ()
            n_axis = 1
            for d in axis:
                n_axis *= int(d)
            out[i] = (4 * len(tensor_shape(inp)), 4 * n_axis)  # PrepareMinMaxHelper: two int arrays
    return out


def firmware_scratch(graph, *, optimized: bool = True) -> dict[int, tuple[int, ...]]:
    """Scratch per node on the ESP32-S3 build: esp-tflite-micro's esp_nn kernels (sizes from
    gendertool.model.espnn; ``optimized=False`` is CONFIG_NN_ANSI_C) where they replace the
    reference kernel, the reference requests elsewhere."""

    m = graph  # the decoded ModelT (ModelInfo.graph)
    out = {k: v for k, v in reference_scratch(m).items()}
    for e in espnn.model_scratch(m, optimized=optimized):
        if e.op in ESP_NN_OPS:
            out.pop(e.node, None)
            if e.bytes > 0:
                out[e.node] = (e.bytes,)
    return out
