"""gendertool.model.arena (emulated TFLM GreedyMemoryPlanner) against the TFLM host runtime's
own plan, hand-derived placements, and the firmware arena built on it."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from gendertool.model.flatbuffer import parse_model
import tflite_fab

from gendertool.model import arena as ap
from gendertool.model import espnn
from gendertool.model import flatbuffer
from gendertool.model import info as model_info
# one child process for all models: print_allocations writes through C stdio, which the
# probe's fd capture reads; the child prints {"path": head} as JSON on its last line
_HEADS = r"""
import json, re, sys
from tflite_micro.python.tflite_micro import runtime
from gendertool.model.arena_probe import _capture_c_output
heads = {}
for path in sys.argv[1:]:
    interp = runtime.Interpreter.from_bytes(open(path, "rb").read(), arena_size=8 << 20)
    out = _capture_c_output(interp.print_allocations)
    heads[path] = int(re.search(rb"Arena allocation head (\d+) bytes", out).group(1))
print(json.dumps(heads))
"""

# tiny variants that make the plan depend on the MEAN node's scratch (large channel count)
# and on the planner's order among equal sizes (logits and probabilities both 48 bytes)
TINY_VARIANTS = {
    "tiny": {},
    "mean-peak": {"height": 2, "width": 2, "filters": 64},
    "equal-sizes": {"height": 2, "width": 2, "filters": 8, "classes": 40},
}


@pytest.fixture(scope="module")
def runtime_heads(default_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads")
    paths = {"default": default_model}
    for name, kw in TINY_VARIANTS.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(tflite_fab.tiny_model(**kw))
    proc = subprocess.run([sys.executable, "-c", _HEADS, *map(str, paths.values())],
                          capture_output=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    heads = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return {name: (p.read_bytes(), heads[str(p)]) for name, p in paths.items()}


@pytest.mark.parametrize("name", ["default", *TINY_VARIANTS])
def test_plan_equals_host_runtime_head(runtime_heads, name):
    data, head = runtime_heads[name]
    assert ap.plan_head_bytes(parse_model(data)) == head


def test_the_variants_exercise_scratch_and_ties(runtime_heads):
    # without the MEAN node's requests the plan is smaller than the runtime's: the scratch counts
    data, head = runtime_heads["mean-peak"]
    assert ap.plan_head_bytes(parse_model(data), {}) < head
    # logits and probabilities are both 48 bytes: placing equal sizes in id order (= TFLM's
    # order on the reversed list) instead of TFLM's reverse id order misses the runtime's head
    data, head = runtime_heads["equal-sizes"]
    sizes = {b.tensor: b.size for b in ap.buffers_of(parse_model(data)) if b.tensor is not None}
    assert sizes[8] == sizes[9] == 48
    triples = [(b.size, b.first, b.last) for b in ap.buffers_of(parse_model(data))][::-1]
    assert ap.max_memory(triples, ap.greedy_offsets(triples)) != head


def test_greedy_placement_by_hand():
    # (size, first, last): A 32 [0,1], B 48 [1,2], C 16 [2,3].
    # Largest first: B at 0. A overlaps B at t=1: the gap below B is 0 -> after B, 48.
    # C overlaps B (t=2) but not A (ends at 1): after B at 48, sharing A's bytes.
    bufs = [(32, 0, 1), (48, 1, 2), (16, 2, 3)]
    offsets = ap.greedy_offsets(bufs)
    assert offsets == [48, 0, 48]
    assert ap.max_memory(bufs, offsets) == 80
    # equal sizes go in reverse id order (TFLM lists online buffers from the tail): id 1 at 0
    assert ap.greedy_offsets([(16, 0, 0), (16, 0, 0)]) == [16, 0]
    # gap use: X 64 [0,2] at 0, Y 32 [0,0] after X at 64, Z 16 [1,1]: X overlaps, Y does not,
    # so Z goes right after X at 64, inside Y's bytes
    assert ap.greedy_offsets([(64, 0, 2), (32, 0, 0), (16, 1, 1)]) == [0, 64, 64]


def test_lifetimes_follow_allocation_info():
    data = tflite_fab.tiny_model()
    m = flatbuffer.parse_model(data)
    sg = m.subgraphs[0]
    bufs = {b.tensor: b for b in ap.buffers_of(parse_model(data)) if b.tensor is not None}
    # weights and the MEAN axis live in the flatbuffer: not planned
    assert set(bufs) == {0, 3, 5, 8, 9}
    assert (bufs[sg.inputs[0]].first, bufs[sg.inputs[0]].last) == (0, 1)  # input: to node 0
    assert (bufs[3].first, bufs[3].last) == (1, 2)  # conv output: node 0 -> MEAN
    assert (bufs[sg.outputs[0]].first, bufs[sg.outputs[0]].last) == (4, 4)  # model output
    assert all(b.size % ap.ALIGNMENT == 0 for b in bufs.values())
    scratch = [b for b in ap.buffers_of(parse_model(data)) if b.node is not None]
    # MEAN (node 1): int32 per output (4 filters), input rank 4 and 2 axes as ints, aligned
    assert [(b.node, b.size, b.first, b.last) for b in scratch] == [(1, 16, 2, 2), (1, 16, 2, 2), (1, 16, 2, 2)]


def test_firmware_arena_tight_and_covering(default_model):
    info = model_info.load_model(default_model)
    b = info.arena
    assert b.host_head_bytes + b.tail_bytes == info.arena_host_bytes
    fw_head = ap.plan_head_bytes(info.graph, ap.firmware_scratch(info.graph))
    assert b.head_bytes == fw_head
    largest = espnn.largest(espnn.model_scratch(info.graph))
    # the plan holds the largest ESP-NN request plus the tensors live at its node
    assert fw_head > largest.bytes and b.peak_node == largest.node
    assert info.arena_bytes >= b.tail_bytes + fw_head + model_info.ARENA_MARGIN_MIN_BYTES
    assert info.arena_bytes == model_info.firmware_arena_bytes(b.tail_bytes, fw_head)
    # the previous bound: host + largest scratch + max(25 % of host, 8 KiB), 1 KiB steps
    host = info.arena_host_bytes
    loose = -(-(host + largest.bytes + max(math.ceil(host * 0.25), 8192)) // 1024) * 1024
    assert info.arena_bytes < loose


def test_ansi_c_scratch(default_model):
    info = model_info.load_model(default_model, measure_arena=False)
    m = flatbuffer.parse_model(info.data)
    names = [flatbuffer.op_name(m, op)[0] for op in m.subgraphs[0].operators]
    ansi = ap.firmware_scratch(info.graph, optimized=False)
    # plain C conv/depthwise request nothing: softmax's width*4 and the reference MEAN remain
    assert {names[n] for n in ansi} == {"SOFTMAX", "MEAN"}
    assert ansi[names.index("SOFTMAX")] == (4 * info.classes,)
    assert ansi[names.index("MEAN")] == ap.reference_scratch(info.graph)[names.index("MEAN")]
    assert ap.plan_head_bytes(info.graph) <= ap.plan_head_bytes(info.graph, ansi) < ap.plan_head_bytes(info.graph, ap.firmware_scratch(info.graph))


# --- absolute figures, derived by hand (not read back from the code) ------------------------------


@pytest.mark.parametrize("tail, head, want", [
    (0, 1, 9216),  # 1 + the 8 KiB floor = 8193 -> rounded up to 9 KiB
    (0, 81_920, 90_112),  # 10 % of 81,920 is the 8 KiB floor itself: 90,112 is already a KiB multiple
    (0, 100_000, 110_592),  # + 10 % = 110,000 -> 108 KiB
    (200_000, 21_000, 243_712),  # 221,000 + 22,100 = 243,100 -> 238 KiB
])
def test_firmware_arena_rule_in_figures(tail, head, want):
    assert model_info.firmware_arena_bytes(tail, head) == want


# tiny_model(h, w): int8 input h*w*3, CONV_2D stride 2 -> (h/2)*(w/2)*4, then tiny tensors; the planned
# head at the CONV node is input + conv output + ESP-NN's conv scratch (624 bytes here, 0 with ANSI C)
@pytest.mark.parametrize("size, host_head, head, ansi_head, firmware, ansi_firmware, tails", [
    # 12,288 + 4,096 (+ 624); used < 80 KiB: + the 8 KiB floor, rounded up to 27 KiB (ANSI C: 26 KiB)
    (64, 16_384, 17_008, 16_384, 27_648, 26_624, (1424, 2048)),
    # 76,800 + 25,600 (+ 624); used > 80 KiB: + 10 %, rounded up to 113 KiB (ANSI C: 112 KiB)
    (160, 102_400, 103_024, 102_400, 115_712, 114_688, (1238, 1861)),
])
def test_firmware_arena_of_known_models(size, host_head, head, ansi_head, firmware, ansi_firmware, tails):
    data = tflite_fab.tiny_model(height=size, width=size)
    info = model_info.load_model_bytes(data)
    a = info.arena
    assert (a.host_head_bytes, a.head_bytes) == (host_head, head)
    # the tail is TFLM's persistent part measured on the host (1632 bytes with tflite-micro today);
    # both firmware figures hold for any tail in this range
    assert tails[0] < a.tail_bytes <= tails[1], a.tail_bytes
    assert info.arena_bytes == a.firmware_bytes == firmware
    assert a.margin_bytes == firmware - a.tail_bytes - head  # what the margin and the rounding add
    ansi = model_info.arena_budget(parse_model(data), info.arena_host_bytes, esp_nn=False)
    assert (ansi.head_bytes, ansi.firmware_bytes) == (ansi_head, ansi_firmware)
