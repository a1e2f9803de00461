"""Scratch buffers that esp-tflite-micro's ESP-NN kernels request from the tensor arena.

The TFLM host runtime runs reference kernels, which request no scratch for int8 conv,
depthwise or softmax; on the ESP32-S3 the esp-tflite-micro kernels in
``tensorflow/lite/micro/kernels/esp_nn/`` call esp-nn's ``esp_nn_get_*_scratch_size`` in
``Prepare`` and ``RequestScratchBufferInArena`` that many bytes. The formulas below mirror
those functions for the pinned versions (esp-tflite-micro 1.3.8, esp-nn 1.1.2, see
firmware/README.md), read in the stored copies of espressif/esp-nn and
espressif/esp-tflite-micro; each function names its upstream source. The index holds several
versions of esp-nn's S3 files but names no tag: the conv and depthwise formulas are from the
versions that use data_dims_t and predate the 1.2 rewrite (copyright 2020-2023; conv pads
1x1 channels to 8, depthwise has no 40 KB tiling), i.e. the 1.1.x line; esp-tflite-micro's
kernels from its newest stored esp_nn/ files (conv.cc 0a9143dd, depthwise_conv.cc 0032f173,
softmax.cc 827af75e, fully_connected.cc 30f24e6a).

Only the size TFLM *requests* matters for the arena: that is what AllocateTensors must fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ESP_NN_VERSION = "1.1.2"
ESP_TFLITE_MICRO_VERSION = "1.3.8"
TARGETS = ("esp32s3",)

# TFLite's Padding enum (schema): SAME = 0, VALID = 1
_SAME, _VALID = 0, 1


@dataclass(frozen=True)
class NodeScratch:
    node: int  # operator index in the (only) subgraph
    op: str  # BuiltinOperator name
    bytes: int  # scratch requested from the arena (0: none)
    branch: str  # which upstream size branch applies, for reports and tests

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "bytes": self.bytes, "branch": self.branch}


# ---------------------------------------------------------------------------------------------
# TFLM padding (the kernels pass OpDataConv.padding, i.e. the LEADING pad only)


def out_size(padding: int, image: int, filter_size: int, stride: int, dilation: int = 1) -> int:
    """TFLM/TFLite ComputeOutSize (tensorflow/lite/kernels/padding.h)."""
    eff = (filter_size - 1) * dilation + 1
    if padding == _SAME:
        return (image + stride - 1) // stride
    if padding == _VALID:
        return (image + stride - eff) // stride
    return 0


def leading_pad(stride: int, dilation: int, image: int, filter_size: int, out: int) -> int:
    """TFLite ComputePadding (tensorflow/lite/kernels/padding.h): total // 2, the odd
    remainder goes to the bottom/right and is not passed to esp-nn (a 3x3 stride-2 SAME
    conv over an even extent arrives with pad 0)."""
    eff = (filter_size - 1) * dilation + 1
    total = max((out - 1) * stride + eff - image, 0)
    return total // 2


# ---------------------------------------------------------------------------------------------
# per-op formulas


def conv_scratch(in_w: int, in_h: int, in_ch: int, out_ch: int, f_w: int, f_h: int,
                 pad_w: int, pad_h: int, stride_w: int, stride_h: int,
                 *, optimized: bool = True) -> tuple[int, str]:  # fmt: skip
    """esp-nn src/convolution/esp_nn_conv_esp32s3.c, esp_nn_get_conv_scratch_size_esp32s3
    (1.1.x); with CONFIG_NN_ANSI_C esp_nn_conv_ansi.c esp_nn_get_conv_scratch_size_ansi = 0."""
    if not optimized:
        return 0, "ansi"
    align = 32
    if f_w == 1 and f_h == 1 and pad_w == 0 and pad_h == 0 and stride_w == 1 and stride_h == 1:
        ch8 = (in_ch + 7) & ~7
        # 8 transposed input rows of int16, unless fewer than 8 positions (leftover path)
        transpose = 0 if in_w * in_h < 8 else 2 * 8 * ch8
        # channels not a multiple of 8: the input is copied with channels padded to 8
        inp = in_w * in_h * ch8 if in_ch % 8 else 0
        return inp + ch8 * out_ch + transpose + align, "1x1 mult8" if in_ch % 8 == 0 else "1x1 ch-padded"
    ch16 = (in_ch + 15) & ~15
    # symmetric -input_offset padding copy of the input when TFLM passes a non-zero pad
    inp = 0 if pad_w == 0 and pad_h == 0 else (in_w + 2 * pad_w) * (in_h + 2 * pad_h) * in_ch
    # filter rows re-laid out to 16-byte multiples, plus one int32 offset term per out channel
    return inp + f_w * f_h * ch16 * out_ch + align + out_ch * 4, "general padded" if inp else "general"


def depthwise_scratch(in_w: int, in_h: int, ch: int, ch_mult: int, f_w: int, f_h: int,
                      out_w: int, out_h: int, pad_w: int, pad_h: int, stride_w: int, stride_h: int,
                      *, optimized: bool = True) -> tuple[int, str]:  # fmt: skip
    """esp-nn src/convolution/esp_nn_depthwise_conv_s8_esp32s3.c,
    esp_nn_get_depthwise_conv_scratch_size_esp32s3 (1.1.x); ANSI C
    (esp_nn_depthwise_conv_ansi.c esp_nn_get_depthwise_conv_scratch_size_ansi) = 0."""
    if not optimized:
        return 0, "ansi"
    filt = f_w * f_h * ch * ch_mult
    if ch_mult == 1 and ch % 8 == 0 and f_w == 3 and f_h == 3:
        if ch % 16 == 0:
            if pad_w or pad_h:
                pw, ph = 2 * pad_w, 2 * pad_h
            else:  # right/bottom padding the stride needs beyond the input
                pw = out_w * stride_w + f_w - 1 - in_w
                ph = out_h * stride_h + f_h - 1 - in_h
            n = filt + (in_w + pw) * (in_h + ph) * ch + 16 if pw or ph else filt + 16
            branch = "3x3 s8 padded input" if pw or ph else "3x3 s8"
            if (pad_w, pad_h) not in ((0, 0), (1, 1)):
                # the kernel (esp_nn_depthwise_conv_s8_esp32s3) takes the s8 path only for
                # pads (1,1)/(0,0); others run the s16 path, which writes more than this
                # size asks for (cf. espressif/esp-nn#30). A bigger arena does not fix that.
                written = 2 * (filt + 16 - (filt & 15)) + 2 * in_w * in_h * ch
                if written > n:
                    branch += f" (kernel writes {written}: upstream under-allocation)"
            return n, branch
        return 2 * (filt + in_w * in_h * ch) + 16, "3x3 s16"
    if ch_mult % 4 == 0:
        return 2 * (filt + in_w * in_h * ch) + 16, "mult4 s16"
    return 32, "other"


def softmax_scratch(input_shape: tuple[int, ...], *, optimized: bool = True) -> tuple[int, str]:
    """esp-tflite-micro kernels/esp_nn/softmax.cc Prepare passes input->dims->data[1] as the
    width; esp-nn's S3 build maps esp_nn_get_softmax_scratch_size to ..._opt
    (src/softmax/esp_nn_softmax_opt.c): width * 4. The ANSI C file is not in the index we
    read, so the same figure is used there (at most a few bytes too many)."""
    width = input_shape[1] if len(input_shape) > 1 else 0
    return width * 4, "opt" if optimized else "ansi (assumed as opt)"


def scratch_bytes(op_name: str, *, input_shape: tuple[int, ...], output_shape: tuple[int, ...] = (),
                  filter_shape: tuple[int, ...] = (), stride: tuple[int, int] = (1, 1),
                  padding: int = _SAME, dilation: tuple[int, int] = (1, 1), depth_multiplier: int = 1,
                  input_dtype: str = "int8", target: str = "esp32s3", optimized: bool = True) -> int:  # fmt: skip
    """Bytes one node's ESP-NN kernel requests from the arena (0 for ops that request none).

    Shapes are NHWC (input, output) and TFLite filter layouts; ``stride``/``dilation`` are
    (width, height); ``padding`` is the TFLite Padding enum (0 SAME, 1 VALID).
    """
    return _scratch(op_name, input_shape, output_shape, filter_shape, stride, padding, dilation,
                    depth_multiplier, input_dtype, target, optimized)[0]  # fmt: skip


def _scratch(op_name, input_shape, output_shape, filter_shape, stride, padding, dilation,
             depth_multiplier, input_dtype, target, optimized) -> tuple[int, str]:  # fmt: skip
    if target not in TARGETS:
        raise ValueError(f"ESP-NN scratch sizes are known for {', '.join(TARGETS)}, not {target!r}")
    if input_dtype != "int8":  # the esp_nn Prepare paths request scratch for int8 input only
        return 0, "not int8"
    if op_name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if len(input_shape) != 4 or len(filter_shape) != 4 or len(output_shape) != 4:
            return 0, "shape unknown"
        _, in_h, in_w, in_ch = input_shape
        _, out_h, out_w, out_ch = output_shape
        f_h, f_w = filter_shape[1], filter_shape[2]
        sw, sh = stride
        dw, dh = dilation
        pad_w = leading_pad(sw, dw, in_w, f_w, out_size(padding, in_w, f_w, sw, dw))
        pad_h = leading_pad(sh, dh, in_h, f_h, out_size(padding, in_h, f_h, sh, dh))
        if op_name == "CONV_2D":
            return conv_scratch(in_w, in_h, in_ch, out_ch, f_w, f_h, pad_w, pad_h, sw, sh, optimized=optimized)
        return depthwise_scratch(in_w, in_h, in_ch, depth_multiplier, f_w, f_h, out_w, out_h,
                                 pad_w, pad_h, sw, sh, optimized=optimized)  # fmt: skip
    if op_name == "SOFTMAX":
        return softmax_scratch(tuple(input_shape), optimized=optimized)
    # FULLY_CONNECTED (kernels/esp_nn/fully_connected.cc) requests scratch only for int4
    # filters; add, mul and pooling request none.
    return 0, "none"


# ---------------------------------------------------------------------------------------------
# a whole model


def model_scratch(model, *, target: str = "esp32s3", optimized: bool = True) -> list[NodeScratch]:
    """Per-node scratch of the first subgraph. ``model``: model bytes, a ModelInfo, or a
    parsed ``ModelT`` (gendertool.model.parse_model)."""
    from gendertool.model import _shape, dtype_name, op_name, parse_model

    if isinstance(model, (bytes, bytearray, memoryview)):
        model = parse_model(bytes(model))
    elif hasattr(model, "data") and hasattr(model, "sha256"):  # ModelInfo
        model = parse_model(model.data, model.name)
    sg = model.subgraphs[0]
    tensors = sg.tensors

    def shape(ids, k: int) -> tuple[int, ...]:
        if ids is None or len(ids) <= k or int(ids[k]) < 0:
            return ()
        return _shape(tensors[int(ids[k])])

    out: list[NodeScratch] = []
    for i, op in enumerate(sg.operators or []):
        name, custom, _ = op_name(model, op)
        if custom:
            out.append(NodeScratch(i, name, 0, "custom"))
            continue
        o = op.builtinOptions
        in_dtype = dtype_name(tensors[int(op.inputs[0])].type) if op.inputs is not None and len(op.inputs) else ""
        n, branch = _scratch(
            name, shape(op.inputs, 0), shape(op.outputs, 0), shape(op.inputs, 1),
            (int(getattr(o, "strideW", 1) or 1), int(getattr(o, "strideH", 1) or 1)),
            int(getattr(o, "padding", _SAME)),
            (int(getattr(o, "dilationWFactor", 1) or 1), int(getattr(o, "dilationHFactor", 1) or 1)),
            int(getattr(o, "depthMultiplier", 1) or 1), in_dtype, target, optimized,
        )  # fmt: skip
        out.append(NodeScratch(i, name, n, branch))
    return out


def largest(entries: list[NodeScratch]) -> NodeScratch | None:
    """The node with the largest scratch (first one on ties); None if none requests any."""
    best = None
    for e in entries:
        if e.bytes > 0 and (best is None or e.bytes > best.bytes):
            best = e
    return best
