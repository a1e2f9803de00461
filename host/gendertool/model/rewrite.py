"""Model rewrites that leave every output bit-identical.

:func:`explicit_conv_padding` works around espressif/esp-nn#31: the ESP32-S3 conv kernel of
the pinned esp-nn line mirrors TFLM's *leading* SAME pad on both sides (or pads nothing when it
is 0), so a conv whose trailing pad is larger (MobileNetV2's stem, 3x3 stride 2 over 64x64:
pads 0 + 1) reads past its input in the last output row and column. Rewritten as
``PAD(leading, trailing)`` + the same conv with VALID padding, the kernel sees an input that
already holds every padded pixel and pad 0 (TFLM's int8 PAD fills with the input's zero
point, as the SAME conv's implicit padding does), so the arithmetic is the reference
kernel's, value for value. :mod:`gendertool.model.espnn` flags the nodes concerned.

The flatbuffer is rebuilt with the schema's object API, with every buffer's data aligned to
16 bytes as the schema asks (``force_align: 16``; the Python object API ignores it, and the
ESP32-S3 faults on unaligned 32-bit loads of bias data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gendertool.errors import ModelError
from gendertool.files import check_report_file, write_bytes_atomic, write_json_atomic
from gendertool.model import espnn
from gendertool.model.flatbuffer import op_name, parse_model, tflite_schema
from gendertool.model.info import load_model, load_model_bytes
from gendertool.model.runtime import TflmRunner


@dataclass(frozen=True)
class PaddedConv:
    node: int  # the conv's operator index in the original model
    pads: tuple[int, int, int, int]  # top, bottom, left, right


def _aligned_pack(fb):
    """A BufferT subclass whose data vector starts on a 16-byte boundary."""

    class AlignedBufferT(fb.BufferT):
        def Pack(self, builder):  # noqa: N802 (flatbuffers' naming)
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head -= len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            fb.BufferAddOffset(builder, self.offset)
            fb.BufferAddSize(builder, self.size)
            return fb.BufferEnd(builder)

    return AlignedBufferT


def explicit_conv_padding(data: bytes, where: str = "model") -> tuple[bytes, list[PaddedConv]]:
    """Give every CONV_2D that :mod:`gendertool.model.espnn` flags for esp-nn#31 an explicit PAD.

    Returns the new model bytes (the input unchanged when no node needs it) and the convs
    rewritten. Node indices in the result shift by one for each PAD inserted before them.
    """
    import flatbuffers


    fb = tflite_schema()
    m = parse_model(data, where)
    flagged = {e.node for e in espnn.model_scratch(m) if e.problem == espnn.READS_PAST_INPUT}
    if not flagged:
        return data, []
    sg = m.subgraphs[0]
    pad_code = None
    for i, oc in enumerate(m.operatorCodes):
        if max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode)) == fb.BuiltinOperator.PAD:
            pad_code = i
    if pad_code is None:
        oc = fb.OperatorCodeT()
        oc.builtinCode = oc.deprecatedBuiltinCode = fb.BuiltinOperator.PAD
        oc.version = 2  # int8 PAD
        m.operatorCodes.append(oc)
        pad_code = len(m.operatorCodes) - 1

    done: list[PaddedConv] = []
    ops = []
    for i, op in enumerate(sg.operators):
        if i not in flagged:
            ops.append(op)
            continue
        name, _, _ = op_name(m, op)
        o = op.builtinOptions
        x = sg.tensors[int(op.inputs[0])]
        w = sg.tensors[int(op.inputs[1])]
        if name != "CONV_2D" or int(o.padding) != fb.Padding.SAME or len(x.shape) != 4 or len(w.shape) != 4:
            raise ModelError(f"{where}: node {i} ({name}) is flagged but is not a 4-D SAME CONV_2D")
        _, in_h, in_w, ch = (int(d) for d in x.shape)
        top, bottom = espnn.same_pads(in_h, int(w.shape[1]), int(o.strideH), int(o.dilationHFactor or 1))
        left, right = espnn.same_pads(in_w, int(w.shape[2]), int(o.strideW), int(o.dilationWFactor or 1))

        buf = fb.BufferT()
        buf.data = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype="<i4").view(np.uint8).reshape(-1)
        m.buffers.append(buf)
        paddings = fb.TensorT()
        paddings.shape = np.array([4, 2], dtype=np.int32)
        paddings.type = fb.TensorType.INT32
        paddings.buffer = len(m.buffers) - 1
        paddings.name = f"gendertool/pad{i}/paddings".encode()
        sg.tensors.append(paddings)

        padded = fb.TensorT()
        padded.shape = np.array([1, in_h + top + bottom, in_w + left + right, ch], dtype=np.int32)
        padded.type = x.type
        padded.buffer = 0  # activations point at the empty buffer 0
        padded.name = f"gendertool/pad{i}/output".encode()
        q = fb.QuantizationParametersT()
        if x.quantization is not None:  # same scale and zero point: PAD only copies values
            q.scale, q.zeroPoint = x.quantization.scale, x.quantization.zeroPoint
            q.quantizedDimension = x.quantization.quantizedDimension
        padded.quantization = q
        sg.tensors.append(padded)

        pad = fb.OperatorT()
        pad.opcodeIndex = pad_code
        pad.inputs = np.array([int(op.inputs[0]), len(sg.tensors) - 2], dtype=np.int32)
        pad.outputs = np.array([len(sg.tensors) - 1], dtype=np.int32)
        pad.builtinOptionsType = fb.BuiltinOptions.PadOptions
        pad.builtinOptions = fb.PadOptionsT()
        ops.append(pad)

        op.inputs = np.array(op.inputs, dtype=np.int32)
        op.inputs[0] = len(sg.tensors) - 1
        o.padding = fb.Padding.VALID
        ops.append(op)
        done.append(PaddedConv(i, (top, bottom, left, right)))
    sg.operators = ops

    aligned = _aligned_pack(fb)
    for b in m.buffers:
        b.__class__ = aligned
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), done


@dataclass(frozen=True)
class PaddingFix:
    source: str
    output: str | None  # None: nothing to rewrite, nothing written
    convs: tuple[PaddedConv, ...]
    sha256_before: str
    sha256_after: str
    size_before: int
    size_after: int
    compared: int  # random inputs run through both models on the TFLM host runtime
    identical: int

    def to_dict(self) -> dict:
        return {
            "source": self.source, "output": self.output,
            "convs": [{"node": c.node, "pads": list(c.pads)} for c in self.convs],
            "sha256_before": self.sha256_before, "sha256_after": self.sha256_after,
            "size_before": self.size_before, "size_after": self.size_after,
            "compared": self.compared, "identical": self.identical,
        }  # fmt: skip


def fix_padding(model, output, *, compare: int = 64, seed: int = 0) -> PaddingFix:
    """Rewrite ``model`` (path or profile name) with :func:`explicit_conv_padding`, prove on the
    TFLM host runtime that ``compare`` random inputs give identical outputs, then write it to
    ``output`` with a sidecar carrying the model's labels and preprocessing."""
    import hashlib
    from pathlib import Path


    out = Path(output).expanduser()
    if out.suffix != ".tflite":
        raise ModelError(f"{out}: the output must be a .tflite file path")
    info = load_model(model, measure_arena=False)
    if info.path is not None and out.resolve() == Path(info.path).resolve():
        raise ModelError(f"{out}: choose an output path other than the model itself")
    check_report_file(out, "--output")  # a read-only folder or a path under a file: before the work
    new, convs = explicit_conv_padding(info.data, str(info.path or info.name))
    sha = hashlib.sha256(new).hexdigest()
    if not convs:
        return PaddingFix(str(info.path), None, (), info.sha256, sha, info.size, len(new), 0, 0)
    fixed = load_model_bytes(new, name=info.name, labels=info.labels, preprocessing=info.preprocessing)
    before, after = TflmRunner(info), TflmRunner(fixed)
    rng = np.random.default_rng(seed)
    shape = (1, *info.input.shape[1:])
    identical = 0
    for _ in range(compare):
        x = rng.integers(-128, 128, size=shape, dtype=np.int8)
        identical += int(np.array_equal(before.invoke(x), after.invoke(x)))
    if identical != compare:
        raise ModelError(f"the rewritten model differs from {info.name} on {compare - identical} of {compare} "
                         "inputs; nothing written (please report this)")  # fmt: skip
    sidecar = out.with_suffix(".json")
    try:
        write_bytes_atomic(out, new)
        try:
            write_json_atomic(sidecar, {
                "name": out.stem,
                "labels": list(info.labels),
                "preprocessing": info.preprocessing.to_dict(),
                "source": f"gendertool model fix-padding of {info.name} (sha256 {info.sha256})",
            }, indent=2)
        except BaseException:
            out.unlink(missing_ok=True)  # a model without its labels and preprocessing is no result
            raise
    except OSError as exc:  # a full disk (the atomic writes leave no half file)
        raise ModelError(f"cannot write {exc.filename or out}: {exc.strerror or exc}; nothing written") from None
    return PaddingFix(str(info.path), str(out), tuple(convs), info.sha256, sha, info.size, len(new), compare, identical)
