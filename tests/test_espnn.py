"""ESP-NN scratch sizes (gendertool.model.espnn) against hand-computed upstream figures, and the
firmware arena built on them. Formulas: esp-nn src/convolution/esp_nn_conv_esp32s3.c
(esp_nn_get_conv_scratch_size_esp32s3) and esp_nn_depthwise_conv_s8_esp32s3.c
(esp_nn_get_depthwise_conv_scratch_size_esp32s3) in their "2020-2023" versions,
src/softmax/esp_nn_softmax_opt.c, esp-tflite-micro kernels/esp_nn/*.cc Prepare (see the
gendertool.model.espnn docstring for which stored commits were read and what stays unpinned)."""

from __future__ import annotations

import json

import pytest

from gendertool.model.flatbuffer import parse_model

from gendertool.model import espnn
from gendertool.model import flatbuffer
from gendertool.model import info as model_info
SAME, VALID = 0, 1


def conv(inp, out, filt, stride=(1, 1), padding=SAME, **kw):
    return espnn.scratch_bytes("CONV_2D", input_shape=inp, output_shape=out, filter_shape=filt,
                               stride=stride, padding=padding, **kw)  # fmt: skip


def dw(inp, out, filt, stride=(1, 1), padding=SAME, mult=1, **kw):
    return espnn.scratch_bytes("DEPTHWISE_CONV_2D", input_shape=inp, output_shape=out, filter_shape=filt,
                               stride=stride, padding=padding, depth_multiplier=mult, **kw)  # fmt: skip


def test_tflm_leading_padding():
    # ComputePadding: total = (out-1)*stride + k - in, leading = total // 2
    assert espnn.leading_pad(2, 1, 64, 3, 32) == 0  # total 1: all of it bottom/right
    assert espnn.leading_pad(2, 1, 63, 3, 32) == 1  # total 2
    assert espnn.leading_pad(1, 1, 32, 3, 32) == 1
    assert espnn.leading_pad(1, 2, 32, 3, 32) == 2  # dilation 2: effective 5x5
    assert espnn.out_size(SAME, 64, 3, 2) == 32 and espnn.out_size(VALID, 64, 3, 2) == 31


def test_conv_1x1_mult8():
    # in_ch 16 % 8 == 0, 16 positions >= 8: transpose 2*8*16 = 256, input copy 0,
    # filter 16*24 = 384, align 32 -> 672
    assert conv((1, 4, 4, 16), (1, 4, 4, 24), (24, 1, 1, 16)) == 672
    # 2x2 = 4 positions < 8: no transpose buffer; filter 112*1280 = 143,360 + 32
    assert conv((1, 2, 2, 112), (1, 2, 2, 1280), (1280, 1, 1, 112), padding=VALID) == 143_392


def test_conv_1x1_channels_padded_to_8():
    # in_ch 3 -> 8: transpose 2*8*8 = 128, input copy 4*4*8 = 128, filter 8*8 = 64, +32 -> 352
    assert conv((1, 4, 4, 3), (1, 4, 4, 8), (8, 1, 1, 3)) == 352


def test_conv_general_branch():
    # 3x3 s1 SAME: pad 1 -> padded input copy (8+2)*(8+2)*3 = 300; filter 3*3*16(ch 3 -> 16)*16
    # = 2304; align 32; offsets 16*4 = 64 -> 2700
    assert conv((1, 8, 8, 3), (1, 8, 8, 16), (16, 3, 3, 3)) == 2700
    # 3x3 s2 SAME on an even extent: leading pad 0, no input copy -> 2304 + 32 + 64 = 2400
    assert conv((1, 64, 64, 3), (1, 32, 32, 16), (16, 3, 3, 3), stride=(2, 2)) == 2400
    # a 1x1 with stride 2 is not the 1x1 path: filter 16*8 = 128 + 32 + 8*4 -> 192
    assert conv((1, 8, 8, 16), (1, 4, 4, 8), (8, 1, 1, 16), stride=(2, 2), padding=VALID) == 192


def test_depthwise_3x3_s8_padded_input():
    # ch 16 % 16 == 0, pad 1: filter 3*3*16 = 144 + (32+2)*(32+2)*16 = 18,496 + 16 -> 18,656
    assert dw((1, 32, 32, 16), (1, 32, 32, 16), (1, 3, 3, 16)) == 18_656
    # stride 2 SAME, even: pad 0, right/bottom pad 16*2 + 2 - 32 = 2:
    # 432 + 34*34*48 = 55,488 + 16 -> 55,936
    assert dw((1, 32, 32, 48), (1, 16, 16, 48), (1, 3, 3, 48), stride=(2, 2)) == 55_936


def test_depthwise_3x3_s8_no_padding_needed():
    # VALID 10 -> 8: extra pad 8 + 2 - 10 = 0: filter only, 144 + 16 -> 160
    assert dw((1, 10, 10, 16), (1, 8, 8, 16), (1, 3, 3, 16), padding=VALID) == 160


def test_depthwise_3x3_s16():
    # ch 24 % 8 == 0 but not % 16: int16 copies 2*(filter 216 + input 8*8*24 = 1536) + 16 -> 3520
    assert dw((1, 8, 8, 24), (1, 8, 8, 24), (1, 3, 3, 24)) == 3520


def test_depthwise_channel_multiplier_4():
    # ch_mult 4: filter 3*3*8*4 = 288, input 512: 2*(288 + 512) + 16 -> 1616
    assert dw((1, 8, 8, 8), (1, 8, 8, 32), (1, 3, 3, 32), mult=4) == 1616


def test_depthwise_other_kernels_ask_32():
    assert dw((1, 8, 8, 16), (1, 8, 8, 16), (1, 5, 5, 16)) == 32  # 5x5
    assert dw((1, 8, 8, 3), (1, 8, 8, 3), (1, 3, 3, 3)) == 32  # ch 3
    assert dw((1, 8, 8, 8), (1, 8, 8, 16), (1, 3, 3, 16), mult=2) == 32


def test_softmax_fc_and_others():
    # softmax.cc passes dims->data[1] as the width: width * 4
    assert espnn.scratch_bytes("SOFTMAX", input_shape=(1, 2)) == 8
    assert espnn.scratch_bytes("SOFTMAX", input_shape=(1, 1000)) == 4000
    assert espnn.scratch_bytes("FULLY_CONNECTED", input_shape=(1, 1280), filter_shape=(2, 1280)) == 0
    assert espnn.scratch_bytes("ADD", input_shape=(1, 4, 4, 8)) == 0


# MobileNetV2-0.35 at 64x64 layer shapes (the default model's family), each derived by hand
# from the upstream size function named in the comment; TFLM passes the leading pad only.
MBV2_LAYERS = [
    # esp_nn_get_conv_scratch_size_esp32s3, general branch (not 1x1): 3x3 s2 SAME 64 -> 32,
    # leading pad 0 -> no input copy; filter 3*3*16(ch 3 -> 16)*16 = 2304 + align 32 + 16*4
    # (its last windows read past the input: esp-nn#31, flagged in the branch)
    ("CONV_2D", (1, 64, 64, 3), (1, 32, 32, 16), (16, 3, 3, 3), (2, 2), SAME, 1, 2400, "general",
     espnn.READS_PAST_INPUT),
    # 1x1 branch, in_ch 16 % 8 == 0: transpose 2*8*16 = 256 (1024 positions >= 8),
    # input copy 0, filter 16*8 = 128, align 32 -> 416
    ("CONV_2D", (1, 32, 32, 16), (1, 32, 32, 8), (8, 1, 1, 16), (1, 1), SAME, 1, 416, "1x1 mult8"),
    # 1x1 at 4x4: transpose 2*8*96 = 1536, filter 96*24 = 2304, align 32 -> 3872
    ("CONV_2D", (1, 4, 4, 96), (1, 4, 4, 24), (24, 1, 1, 96), (1, 1), SAME, 1, 3872, "1x1 mult8"),
    # 1x1 at 2x2 (4 positions < 8: no transpose): filter 336*112 = 37,632 + 32 -> 37,664
    ("CONV_2D", (1, 2, 2, 336), (1, 2, 2, 112), (112, 1, 1, 336), (1, 1), SAME, 1, 37_664, "1x1 mult8"),
    # the last 1x1 (112 -> 1280, VALID): filter 143,360 + 32 -> 143,392
    ("CONV_2D", (1, 2, 2, 112), (1, 2, 2, 1280), (1280, 1, 1, 112), (1, 1), VALID, 1, 143_392, "1x1 mult8"),
    # esp_nn_get_depthwise_conv_scratch_size_esp32s3, ch_mult 1, 3x3, ch % 16 == 0:
    # s1 SAME pad 1 -> pad_width = pad_height = 2: 9*16 = 144 + 34*34*16 = 18,496 + 16
    ("DEPTHWISE_CONV_2D", (1, 32, 32, 16), (1, 32, 32, 16), (1, 3, 3, 16), (1, 1), SAME, 1, 18_656,
     "3x3 s8 padded input"),
    # s2 SAME 16 -> 8, leading pad 0 -> pad_width = 8*2 + 3 - 1 - 16 = 2: 432 + 18*18*48 + 16
    ("DEPTHWISE_CONV_2D", (1, 16, 16, 48), (1, 8, 8, 48), (1, 3, 3, 48), (2, 2), SAME, 1, 16_000,
     "3x3 s8 padded input"),
    # s1 SAME at 2x2x336, pad 1: 3024 + 4*4*336 = 5376 + 16 -> 8416
    ("DEPTHWISE_CONV_2D", (1, 2, 2, 336), (1, 2, 2, 336), (1, 3, 3, 336), (1, 1), SAME, 1, 8416,
     "3x3 s8 padded input"),
    # ch 8 % 16 != 0: s16 copies 2*(filter 72 + input 4*4*8 = 128) + 16 -> 416
    ("DEPTHWISE_CONV_2D", (1, 4, 4, 8), (1, 4, 4, 8), (1, 3, 3, 8), (1, 1), SAME, 1, 416, "3x3 s16"),
    # ch_mult 8 (% 4 == 0): 2*(3*3*4*8 = 288 + 4*4*4 = 64) + 16 -> 720
    ("DEPTHWISE_CONV_2D", (1, 4, 4, 4), (1, 4, 4, 32), (1, 3, 3, 32), (1, 1), SAME, 8, 720, "mult4 s16"),
    # anything else (ch_mult 1, 5x5): "just few bytes" 32
    ("DEPTHWISE_CONV_2D", (1, 8, 8, 16), (1, 8, 8, 16), (1, 5, 5, 16), (1, 1), SAME, 1, 32, "other"),
]


@pytest.mark.parametrize("op, inp, out, filt, stride, padding, mult, expected, branch, problem",
                         [row if len(row) == 10 else (*row, None) for row in MBV2_LAYERS])
def test_upstream_figures_per_branch(op, inp, out, filt, stride, padding, mult, expected, branch, problem):
    got = espnn._scratch(op, inp, out, filt, stride, padding, (1, 1), mult, "int8", "esp32s3", True)
    assert got == (expected, branch, problem)


def test_softmax_requests_only_for_int8_in_and_out():
    # softmax.cc Prepare: esp_nn_get_softmax_scratch_size(dims->data[1], dims->data[2]) only when
    # input AND output are int8; esp_nn_get_softmax_scratch_size_opt = width * 4 -> 2 classes: 8
    assert espnn.scratch_bytes("SOFTMAX", input_shape=(1, 2)) == 8
    assert espnn.scratch_bytes("SOFTMAX", input_shape=(1, 2), output_dtype="int16") == 0
    assert espnn.scratch_bytes("SOFTMAX", input_shape=(1, 2), input_dtype="int16", output_dtype="int16") == 0
    # rank 4 (1, 1, 1, 10): data[1] = 1 -> 4 bytes asked, Eval's depth 10 -> 40 written
    assert espnn._scratch("SOFTMAX", (1, 1, 1, 10), (1, 1, 1, 10), (), (1, 1), SAME, (1, 1), 1, "int8", "esp32s3", True) == (
        4, "opt (kernel writes 40)", espnn.UNDER_ALLOCATION)  # fmt: skip
    # CONFIG_NN_ANSI_C: esp_nn_ansi_c.h maps the softmax size to the same _opt function
    assert espnn._scratch("SOFTMAX", (1, 10), (1, 10), (), (1, 1), SAME, (1, 1), 1, "int8", "esp32s3", False) == (
        40, "ansi (maps to opt)", None)  # fmt: skip


def test_ansi_c_requests_no_conv_scratch():
    assert conv((1, 2, 2, 112), (1, 2, 2, 1280), (1280, 1, 1, 112), optimized=False) == 0
    assert dw((1, 32, 32, 48), (1, 16, 16, 48), (1, 3, 3, 48), stride=(2, 2), optimized=False) == 0


def test_non_int8_and_unknown_target():
    assert conv((1, 4, 4, 16), (1, 4, 4, 24), (24, 1, 1, 16), input_dtype="float32") == 0
    with pytest.raises(ValueError, match="esp32s3"):
        conv((1, 4, 4, 16), (1, 4, 4, 24), (24, 1, 1, 16), target="esp32")


# ---------------------------------------------------------------------------------------------
# the default model


def _nodes(data):
    m = flatbuffer.parse_model(data)
    sg = m.subgraphs[0]
    return m, sg, [(flatbuffer.op_name(m, op)[0], op) for op in sg.operators]


def test_default_model_largest_scratch_is_the_first_strided_depthwise(default_model):
    data = default_model.read_bytes()
    m, sg, nodes = _nodes(data)
    entries = espnn.model_scratch(parse_model(data))
    assert [e.node for e in entries] == list(range(len(nodes)))
    top = espnn.largest(entries)
    # v2 (MobileNetV2 cut after block_12_add) has no wide 1x1 conv at the end; the biggest
    # request is the first stride-2 depthwise (32x32x48 in), which copies its padded input:
    # (W+2)*(H+2)*C + 9*C + 16
    first = next(i for i, (n, op) in enumerate(nodes) if n == "DEPTHWISE_CONV_2D" and op.builtinOptions.strideW == 2)
    _, h, w, c = flatbuffer.tensor_shape(sg.tensors[int(nodes[first][1].inputs[0])])
    assert (h, w, c) == (32, 32, 48)
    assert entries[first].bytes == (w + 2) * (h + 2) * c + 9 * c + 16 == 55_936
    assert (top.node, top.op, top.branch) == (first, "DEPTHWISE_CONV_2D", "3x3 s8 padded input")
    # 1x1 convs with in_ch % 8 == 0 ask filter elements + 32 only below 8 output positions;
    # every 1x1 here runs on at least 4x4, so none of them outgrows the depthwise copy
    convs = [i for i, (n, op) in enumerate(nodes) if n == "CONV_2D"]
    assert all(entries[i].bytes < top.bytes for i in convs)
    # same answer from a ModelInfo
    info = model_info.load_model(default_model, measure_arena=False)
    assert espnn.model_scratch(info.graph) == entries
    assert info.espnn_scratch_bytes == top.bytes and info.espnn_scratch_node == (top.node, "DEPTHWISE_CONV_2D")


def test_firmware_arena_is_tail_plus_planned_head(cli, default_model):
    res = cli("inspect", "--json")
    assert res.exit_code == 0, res.output
    arena = json.loads(res.stdout)["arena"]
    scratch, fw = arena["espnn_scratch_bytes"], arena["firmware_bytes"]
    tail, head = arena["tail_bytes"], arena["head_bytes"]
    entries = espnn.model_scratch(parse_model(default_model.read_bytes()))
    assert scratch == espnn.largest(entries).bytes and head > scratch
    assert [e["node"] for e in arena["espnn_scratch"]] == [e.node for e in entries if e.bytes > 0]
    assert tail + arena["host_head_bytes"] == arena["host_bytes"]
    assert fw >= tail + head + max((tail + head) * model_info.ARENA_MARGIN_FRACTION, model_info.ARENA_MARGIN_MIN_BYTES)
    assert fw == model_info.firmware_arena_bytes(tail, head) == tail + head + arena["margin_bytes"] and fw % 1024 == 0
    assert arena["espnn_scratch_node"]["op"] == "DEPTHWISE_CONV_2D"


def test_inspect_table_names_the_scratch_node(cli, default_model):
    res = cli("inspect", str(default_model))
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    info = model_info.load_model(default_model, measure_arena=False)
    node, op = info.espnn_scratch_node
    assert f"largest: node {node} {op}, {info.espnn_scratch_bytes:,} bytes" in out
    assert "(TFLM greedy plan with ESP-NN scratch, peak at node" in out


def test_render_ansi_c_arena_drops_the_scratch(default_model, tmp_path):
    from gendertool.boards import get_board
    from gendertool.project.render import build_context

    info = model_info.load_model(default_model)
    board = get_board("xiao_esp32s3")
    on = build_context(info, board)
    off = build_context(info, board, options={"esp_nn": False})
    assert on["app"]["arena_bytes"] == info.arena_bytes
    # ANSI C: conv/depthwise request nothing; the plan keeps softmax's width*4 and the MEAN
    from gendertool.model import arena as arena_plan

    ansi_head = arena_plan.plan_head_bytes(info.graph, arena_plan.firmware_scratch(info.graph, optimized=False))
    assert off["app"]["arena_bytes"] == model_info.firmware_arena_bytes(info.arena.tail_bytes, ansi_head)
    assert off["app"]["arena_bytes"] < on["app"]["arena_bytes"]


def test_depthwise_asymmetric_pad_is_flagged():
    # 33 high (SAME s2: total 2 -> leading pad 1), 32 wide (total 1 -> pad 0): pads (0, 1).
    # Requested: pad_width 0, pad_height 2 -> 432 + 32*35*48 = 53,760 + 16 = 54,208.
    # The kernel runs its s16 path instead: 2*(432 + 16 - 0) + 2*32*33*48 = 102,272 written.
    entry = espnn._scratch("DEPTHWISE_CONV_2D", (1, 33, 32, 48), (1, 17, 16, 48), (1, 3, 3, 48),
                           (2, 2), SAME, (1, 1), 1, "int8", "esp32s3", True)  # fmt: skip
    assert entry == (54_208, "3x3 s8 padded input (kernel writes 102272)", espnn.UNDER_ALLOCATION)
    # symmetric pads carry no such problem
    assert espnn._scratch("DEPTHWISE_CONV_2D", (1, 32, 32, 48), (1, 16, 16, 48),
                          (1, 3, 3, 48), (2, 2), SAME, (1, 1), 1, "int8", "esp32s3", True).problem is None


@pytest.mark.parametrize(
    "in_hw, out_hw, stride, padding, flagged",
    [
        (64, 32, 2, SAME, True),  # total pad 1, all trailing: the kernel gets 0 and reads past the input
        (65, 33, 2, SAME, False),  # total pad 2 -> leading 1: the kernel pads a copy itself
        (64, 64, 1, SAME, False),  # stride 1: pad 1 on both sides
        (64, 31, 2, VALID, False),  # VALID: the windows end inside the input
    ],
)
def test_conv_trailing_only_padding_is_flagged(in_hw, out_hw, stride, padding, flagged):
    _check_flag(in_hw, out_hw, stride, padding, flagged, 3)


@pytest.mark.parametrize(
    "in_hw, out_hw, stride, flagged",
    [
        (64, 32, 2, True),  # 5x5 s2 over 64: total 3 -> leading 1, trailing 2; the kernel pads 1 + 1
        (65, 33, 2, False),  # total 4 -> 2 + 2: symmetric
    ],
)
def test_conv_more_trailing_than_leading_padding_is_flagged(in_hw, out_hw, stride, flagged):
    _check_flag(in_hw, out_hw, stride, SAME, flagged, 5)


def _check_flag(in_hw, out_hw, stride, padding, flagged, k):
    n, branch, problem = espnn._scratch("CONV_2D", (1, in_hw, in_hw, 3), (1, out_hw, out_hw, 16), (16, k, k, 3),
                                        (stride, stride), padding, (1, 1), 1, "int8", "esp32s3", True)  # fmt: skip
    assert (problem == espnn.READS_PAST_INPUT) is flagged
    assert n > 0  # the flag changes no byte count
    warnings = espnn.upstream_warnings([espnn.NodeScratch(0, "CONV_2D", n, branch, problem)])
    assert len(warnings) == int(flagged)
    if flagged:
        assert "espressif/esp-nn#31" in warnings[0] and "node 0 CONV_2D" in warnings[0]


def test_build_warns_about_a_mispadded_conv_and_the_default_model_has_none(cli, default_model, tmp_path):
    from tflite_fab import tiny_model

    from gendertool.project.build import build

    # the shipped model carries its stem's PAD explicitly (gendertool model fix-padding)
    assert model_info.load_model(default_model, measure_arena=False).espnn_warnings == []
    assert "esp-nn#31" not in cli("build", "--no-compile", "--out", tmp_path / "fw").output
    # a 3x3 stride-2 SAME conv over an even extent (pads 0 + 1) is named, with the fix
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model())
    r = cli("build", "--no-compile", "--model", model, "--labels", "a,b", "--out", tmp_path / "fw2")
    assert r.exit_code == 0 and "node 0 CONV_2D" in r.output and "espressif/esp-nn#31" in r.output
    assert "gendertool model fix-padding" in r.output
    # esp-nn's plain C kernels (CONFIG_NN_ANSI_C) pad correctly: no warning there
    assert build(model, labels=["a", "b"], out_dir=tmp_path / "ansi", compile=False, options={"esp_nn": False}).warnings == []
