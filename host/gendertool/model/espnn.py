"""Scratch buffers that esp-tflite-micro's ESP-NN kernels request from the tensor arena.

The TFLM host runtime runs reference kernels, which request no scratch for int8 conv,
depthwise or softmax; on the ESP32-S3 the esp-tflite-micro kernels in
``tensorflow/lite/micro/kernels/esp_nn/`` call esp-nn's ``esp_nn_get_*_scratch_size`` in
``Prepare`` and ``RequestScratchBufferInArena`` that many bytes. Only that requested size
matters for the arena: it is what AllocateTensors must fit.

Provenance (pinned: esp-tflite-micro 1.3.8, esp-nn 1.1.2, firmware/README.md). The stored
copies of espressif/esp-nn and espressif/esp-tflite-micro do NOT let us name the commits of
those two releases: the index keeps file versions under the commit that changed them and
names no tags; esp-nn's idf_component.yml carries no ``version:`` field before the 1.2 line
(stored versions read "1.2.2" at d2fb624e, "1.4.0" at 876c0729, nothing at 0798b58f), and
the one stored esp-tflite-micro manifest (209f3cb8) has none either. So the formulas below
are checked against the following stored sources; the exact 1.1.2 / 1.3.8 bytes remain
unverified:

- esp-nn ``src/convolution/esp_nn_conv_esp32s3.c`` and
  ``esp_nn_depthwise_conv_s8_esp32s3.c``, the versions with the "2020-2023" SPDX header that
  use ``data_dims_t`` (the index returned them by content; it does not expose their commit).
  The conv size function is identical in the vendored copy dr-iot-dev/esphome@d9eb39bf
  ``managed_components/espressif__esp-nn/`` (that project's dependencies.lock, at cab8320d,
  names esp-nn 1.0.2). The newest stored version, espressif/esp-nn@a4ef3442, sizes conv
  differently (im2col, filter-alignment and right/bottom padding terms): the 1.2.x+ rewrite.
  Registry archive sizes (1.1.0 131.64 KB, 1.1.1 133.10, 1.1.2 133.48, 1.2.0~1 133.97,
  1.2.1 146.60) put 1.1.2 next to 1.2.0, before that rewrite, but do not prove the bytes.
- esp-nn ``include/esp_nn_esp32s3.h`` / ``esp_nn_ansi_c.h``: on S3 the softmax size maps to
  ``esp_nn_get_softmax_scratch_size_opt`` (``src/softmax/esp_nn_softmax_opt.c``, width * 4),
  and the ANSI C header maps softmax to the same ``_opt`` function; ANSI conv and depthwise
  sizes (``esp_nn_conv_ansi.c``, ``esp_nn_depthwise_conv_ansi.c``) return 0.
- esp-tflite-micro ``kernels/esp_nn/conv.cc`` at 0a9143dd and a37521a8,
  ``depthwise_conv.cc`` at 0032f173, ``softmax.cc`` at 827af75e, ``fully_connected.cc`` at
  30f24e6a and eeb4e858. Every version read passes the input's W/H/C, the output's W/H/C, the
  filter's W/H, the stride and TFLM's LEADING pad (``OpDataConv.padding``), and requests
  exactly the returned size (no extra alignment bytes); fully_connected requests esp-nn
  scratch in none of them (only an int4-filter unpack buffer, as conv/depthwise do; int4
  filters are not modelled here).

Known upstream behaviour a bigger arena cannot fix: that S3 conv pads its input only when
the passed (leading) pad is non-zero, so for a SAME conv whose padding is all bottom/right
(3x3 stride 2 over an even extent) the last window row/column lies past the unpadded input
(cf. espressif/esp-nn#31; the newer file adds right/bottom padding for it): a matter of
results, not of the requested size. The depthwise write overrun is flagged per node below
(cf. espressif/esp-nn#30).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from gendertool.model.flatbuffer import (
    dtype_name,
    io_shape,
    op_name,
)

ESP_NN_VERSION = "1.1.2"
ESP_TFLITE_MICRO_VERSION = "1.3.8"
TARGETS = ("esp32s3",)

# NodeScratch.problem: known upstream kernel problems (see upstream_warnings)
READS_PAST_INPUT = "reads_past_input"  # the kernel drops trailing SAME padding (esp-nn#31)
UNDER_ALLOCATION = "under_allocation"  # the kernel writes more scratch than it requests

# TFLite's Padding enum (schema): SAME = 0, VALID = 1
_SAME, _VALID = 0, 1


class Scratch(NamedTuple):
    """One kernel's scratch request: bytes, which upstream size branch applies (for reports
    and tests) and a known upstream problem of that branch (None, or one of the codes above)."""

    bytes: int
    branch: str
    problem: str | None = None


@dataclass(frozen=True)
class NodeScratch:
    node: int  # operator index in the (only) subgraph
    op: str  # BuiltinOperator name
    bytes: int  # scratch requested from the arena (0: none)
    branch: str  # which upstream size branch applies, for reports and tests
    problem: str | None = None  # READS_PAST_INPUT, UNDER_ALLOCATION or None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "bytes": self.bytes, "branch": self.branch, "problem": self.problem}


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


def _total_pad(stride: int, dilation: int, image: int, filter_size: int, out: int) -> int:
    eff = (filter_size - 1) * dilation + 1
    return max((out - 1) * stride + eff - image, 0)


def leading_pad(stride: int, dilation: int, image: int, filter_size: int, out: int) -> int:
    """TFLite ComputePadding (tensorflow/lite/kernels/padding.h): total // 2, the odd
    remainder goes to the bottom/right and is not passed to esp-nn (a 3x3 stride-2 SAME
    conv over an even extent arrives with pad 0)."""
    return _total_pad(stride, dilation, image, filter_size, out) // 2


def same_pads(image: int, filter_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """SAME padding of one axis as TFLite applies it: (leading, trailing)."""
    total = _total_pad(stride, dilation, image, filter_size, out_size(_SAME, image, filter_size, stride, dilation))
    return total // 2, total - total // 2


# ---------------------------------------------------------------------------------------------
# per-op formulas


def conv_scratch(in_w: int, in_h: int, in_ch: int, out_ch: int, f_w: int, f_h: int,
                 pad_w: int, pad_h: int, stride_w: int, stride_h: int,
                 *, optimized: bool = True, out_w: int | None = None, out_h: int | None = None) -> tuple[int, str]:  # fmt: skip
    """esp-nn src/convolution/esp_nn_conv_esp32s3.c, esp_nn_get_conv_scratch_size_esp32s3
    (the 2020-2023 version, see the module docstring); with CONFIG_NN_ANSI_C
    esp_nn_conv_ansi.c esp_nn_get_conv_scratch_size_ansi returns 0."""
    if not optimized:
        return Scratch(0, "ansi")
    align = 32
    if f_w == 1 and f_h == 1 and pad_w == 0 and pad_h == 0 and stride_w == 1 and stride_h == 1:
        ch8 = (in_ch + 7) & ~7
        # 8 transposed input rows of int16, unless fewer than 8 positions (leftover path)
        transpose = 0 if in_w * in_h < 8 else 2 * 8 * ch8
        # channels not a multiple of 8: the input is copied with channels padded to 8
        inp = in_w * in_h * ch8 if in_ch % 8 else 0
        return Scratch(inp + ch8 * out_ch + transpose + align, "1x1 mult8" if in_ch % 8 == 0 else "1x1 ch-padded")
    ch16 = (in_ch + 15) & ~15
    # symmetric -input_offset padding copy of the input when TFLM passes a non-zero pad
    inp = 0 if pad_w == 0 and pad_h == 0 else (in_w + 2 * pad_w) * (in_h + 2 * pad_h) * in_ch
    branch = "general padded" if inp else "general"
    # the kernel pads the leading pad on both sides (or nothing when both are 0); SAME padding
    # with more trailing than leading (3x3 stride 2 over an even extent: 0 + 1) leaves the
    # last windows reading past the input
    ext_w, ext_h = (in_w + 2 * pad_w, in_h + 2 * pad_h) if inp else (in_w, in_h)
    reads_past = out_w is not None and out_h is not None and (
        (out_w - 1) * stride_w + f_w > ext_w or (out_h - 1) * stride_h + f_h > ext_h
    )
    # filter rows re-laid out to 16-byte multiples, plus one int32 offset term per out channel
    return Scratch(inp + f_w * f_h * ch16 * out_ch + align + out_ch * 4, branch, READS_PAST_INPUT if reads_past else None)


def depthwise_scratch(in_w: int, in_h: int, ch: int, ch_mult: int, f_w: int, f_h: int,
                      out_w: int, out_h: int, pad_w: int, pad_h: int, stride_w: int, stride_h: int,
                      *, optimized: bool = True) -> tuple[int, str]:  # fmt: skip
    """esp-nn src/convolution/esp_nn_depthwise_conv_s8_esp32s3.c,
    esp_nn_get_depthwise_conv_scratch_size_esp32s3 (the 2020-2023 version, see the module
    docstring); ANSI C (esp_nn_depthwise_conv_ansi.c
    esp_nn_get_depthwise_conv_scratch_size_ansi) returns 0."""
    if not optimized:
        return Scratch(0, "ansi")
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
                    return Scratch(n, f"{branch} (kernel writes {written})", UNDER_ALLOCATION)
            return Scratch(n, branch)
        return Scratch(2 * (filt + in_w * in_h * ch) + 16, "3x3 s16")
    if ch_mult % 4 == 0:
        return Scratch(2 * (filt + in_w * in_h * ch) + 16, "mult4 s16")
    return Scratch(32, "other")


def softmax_scratch(input_shape: tuple[int, ...], *, optimized: bool = True) -> tuple[int, str]:
    """esp-tflite-micro kernels/esp_nn/softmax.cc Prepare passes input->dims->data[1] as the
    width (data[2] as the height, unused); esp_nn_esp32s3.h and esp_nn_ansi_c.h both map
    esp_nn_get_softmax_scratch_size to esp_nn_get_softmax_scratch_size_opt
    (src/softmax/esp_nn_softmax_opt.c): width * 4. Requested only for int8 in and out."""
    width = input_shape[1] if len(input_shape) > 1 else 0
    branch = "opt" if optimized else "ansi (maps to opt)"
    # esp_nn_softmax_s8_opt stores one int32 per element of the trailing dim (Eval passes
    # it as the width), so a rank > 2 input gets less than the kernel writes
    depth = input_shape[-1] if input_shape else 0
    if depth > width:
        return Scratch(width * 4, f"{branch} (kernel writes {depth * 4})", UNDER_ALLOCATION)
    return Scratch(width * 4, branch)


def scratch_bytes(op_name: str, *, input_shape: tuple[int, ...], output_shape: tuple[int, ...] = (),
                  filter_shape: tuple[int, ...] = (), stride: tuple[int, int] = (1, 1),
                  padding: int = _SAME, dilation: tuple[int, int] = (1, 1), depth_multiplier: int = 1,
                  input_dtype: str = "int8", target: str = "esp32s3", optimized: bool = True,
                  output_dtype: str = "int8") -> int:  # fmt: skip
    """Bytes one node's ESP-NN kernel requests from the arena (0 for ops that request none).

    Shapes are NHWC (input, output) and TFLite filter layouts; ``stride``/``dilation`` are
    (width, height); ``padding`` is the TFLite Padding enum (0 SAME, 1 VALID).
    """
    return _scratch(op_name, input_shape, output_shape, filter_shape, stride, padding, dilation,
                    depth_multiplier, input_dtype, target, optimized, output_dtype=output_dtype)[0]  # fmt: skip


def _scratch(op_name, input_shape, output_shape, filter_shape, stride, padding, dilation,
             depth_multiplier, input_dtype, target, optimized, *, output_dtype: str = "int8") -> Scratch:  # fmt: skip
    if target not in TARGETS:
        raise ValueError(f"ESP-NN scratch sizes are known for {', '.join(TARGETS)}, not {target!r}")
    if input_dtype != "int8":  # the esp_nn Prepare paths request scratch for int8 input only
        return Scratch(0, "not int8")
    if op_name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if len(input_shape) != 4 or len(filter_shape) != 4 or len(output_shape) != 4:
            return Scratch(0, "shape unknown")
        _, in_h, in_w, in_ch = input_shape
        _, out_h, out_w, out_ch = output_shape
        f_h, f_w = filter_shape[1], filter_shape[2]
        sw, sh = stride
        dw, dh = dilation
        pad_w = leading_pad(sw, dw, in_w, f_w, out_size(padding, in_w, f_w, sw, dw))
        pad_h = leading_pad(sh, dh, in_h, f_h, out_size(padding, in_h, f_h, sh, dh))
        if op_name == "CONV_2D":
            return conv_scratch(in_w, in_h, in_ch, out_ch, f_w, f_h, pad_w, pad_h, sw, sh,
                                optimized=optimized, out_w=out_w, out_h=out_h)  # fmt: skip
        return depthwise_scratch(in_w, in_h, in_ch, depth_multiplier, f_w, f_h, out_w, out_h,
                                 pad_w, pad_h, sw, sh, optimized=optimized)  # fmt: skip
    if op_name == "SOFTMAX":
        if output_dtype != "int8":  # softmax.cc: int8 in AND int8 out (int16 out runs reference)
            return Scratch(0, "not int8 out")
        return softmax_scratch(tuple(input_shape), optimized=optimized)
    # FULLY_CONNECTED (kernels/esp_nn/fully_connected.cc) requests scratch only for int4
    # filters; add, mul and pooling request none.
    return Scratch(0, "none")


# ---------------------------------------------------------------------------------------------
# a whole model


def model_scratch(model, *, target: str = "esp32s3", optimized: bool = True) -> list[NodeScratch]:
    """Per-node scratch of the first subgraph of a decoded model (``ModelInfo.graph``)."""
    sg = model.subgraphs[0]
    tensors = sg.tensors

    def shape(ids, k: int) -> tuple[int, ...]:
        return io_shape(tensors, ids, k)

    out: list[NodeScratch] = []
    for i, op in enumerate(sg.operators or []):
        name, custom, _ = op_name(model, op)
        if custom:
            out.append(NodeScratch(i, name, 0, "custom"))
            continue
        o = op.builtinOptions
        in_dtype = dtype_name(tensors[int(op.inputs[0])].type) if op.inputs is not None and len(op.inputs) else ""
        out_dtype = dtype_name(tensors[int(op.outputs[0])].type) if op.outputs is not None and len(op.outputs) else ""
        sc = _scratch(
            name, shape(op.inputs, 0), shape(op.outputs, 0), shape(op.inputs, 1),
            (int(getattr(o, "strideW", 1) or 1), int(getattr(o, "strideH", 1) or 1)),
            int(getattr(o, "padding", _SAME)),
            (int(getattr(o, "dilationWFactor", 1) or 1), int(getattr(o, "dilationHFactor", 1) or 1)),
            int(getattr(o, "depthMultiplier", 1) or 1), in_dtype, target, optimized,
            output_dtype=out_dtype,
        )  # fmt: skip
        out.append(NodeScratch(i, name, sc.bytes, sc.branch, sc.problem))
    return out


def upstream_warnings(entries) -> list[str]:
    """One line per node whose ESP-NN kernel is known to misbehave upstream (its ``problem``):
    results that may differ from the host reference, or scratch overruns."""
    out = []
    for e in entries:
        if e.problem == READS_PAST_INPUT:
            out.append(f"node {e.node} {e.op}: esp-nn drops its trailing SAME padding, so the windows of the last output "
                       "row and column read past the input (espressif/esp-nn#31): on the device these outputs "
                       "may differ from the host reference (`gendertool model fix-padding` rewrites the model "
                       "with an explicit PAD; `gendertool validate --port` measures it)")
        elif e.problem == UNDER_ALLOCATION:
            ref = " (espressif/esp-nn#30)" if e.op == "DEPTHWISE_CONV_2D" else ""
            out.append(f"node {e.node} {e.op}: the kernel writes more scratch than it requests{ref} ({e.branch}); "
                       "a larger arena does not prevent the overrun")
    return out


def largest(entries: list[NodeScratch]) -> NodeScratch | None:
    """The node with the largest scratch (first one on ties); None if none requests any."""
    best = None
    for e in entries:
        if e.bytes > 0 and (best is None or e.bytes > best.bytes):
            best = e
    return best
