"""gendertool inspect / gendertool.model: figures, checks and one clear message per bad input."""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

from gendertool.model import checks

from gendertool.model import info as model_info
from gendertool.errors import ModelError
from tflite_fab import edit, tiny_model, unpack

# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def tiny() -> bytes:
    return tiny_model()


def _probe_fails(data: bytes, arena: int) -> bool:
    from gendertool.model.arena_probe import run_probe

    try:
        run_probe(data, arena_size=arena, search=False)
    except ModelError:
        return True
    return False


@pytest.fixture
def write(tmp_path):
    def _write(data: bytes, name: str = "m.tflite"):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write


def rejected(cli, path, *needles: str, args=()):
    """Run inspect on ``path``: exit code 2, no traceback, every needle in the message."""
    res = cli("inspect", str(path), *args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.stdout == ""
    msg = " ".join(res.stderr.split())
    for needle in needles:
        assert needle in msg, msg
    return msg


def _logits(m: "fb.ModelT"):
    return next(t for t in m.subgraphs[0].tensors if t.name == b"logits")


# ---------------------------------------------------------------------------------------------
# good models


def test_inspect_help(cli):
    res = cli("inspect", "--help")
    assert res.exit_code == 0
    assert "--json" in res.stdout and "--board" in res.stdout and "--labels" in res.stdout


def test_tiny_model_figures(tiny):
    info = model_info.load_model_bytes(tiny, name="tiny", measure_arena=False)
    assert info.input.shape == (1, 8, 8, 3) and info.input.dtype == "int8"
    assert info.input.scale == pytest.approx(1 / 128) and info.input.zero_point == 0
    assert info.output.shape == (1, 2) and info.output.zero_point == -128
    assert [op.name for op in info.operators] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    assert info.resolver_methods == ("AddConv2D", "AddMean", "AddFullyConnected", "AddSoftmax")
    # conv: 4x4x4 outputs x (3x3x3) taps; fc: 2 outputs x 4 inputs
    assert info.macs == 4 * 4 * 4 * 27 + 2 * 4
    # conv w 4x3x3x3 + conv b 4 + mean axes 2 + fc w 2x4 + fc b 2
    assert info.parameters == 108 + 4 + 2 + 8 + 2
    assert info.labels == ("class_0", "class_1")
    assert info.sha256 == hashlib.sha256(tiny).hexdigest() and info.size == len(tiny)
    assert info.arena_host_bytes is None and info.arena_bytes is None


def test_default_model_inspect_json(cli, default_model):
    res = cli("inspect", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # stdout holds the JSON and nothing else
    raw = default_model.read_bytes()
    assert data["size"] == len(raw) and data["sha256"] == hashlib.sha256(raw).hexdigest()
    assert data["input"]["shape"][0] == 1 and data["input"]["shape"][3] == 3
    assert data["input"]["dtype"] == data["output"]["dtype"] == "int8"
    sidecar = json.loads(default_model.with_suffix(".json").read_text())
    assert data["labels"] == sidecar["labels"] and data["classes"] == len(sidecar["labels"])
    names = {op["name"]: op for op in data["operators"]}
    assert names["CONV_2D"]["resolver_method"] == "AddConv2D"
    assert names["DEPTHWISE_CONV_2D"]["resolver_method"] == "AddDepthwiseConv2D"
    host, fw = data["arena"]["host_bytes"], data["arena"]["firmware_bytes"]
    scratch = data["arena"]["espnn_scratch_bytes"]  # ESP-NN's scratch is part of the planned head
    tail, head = data["arena"]["tail_bytes"], data["arena"]["head_bytes"]
    assert host > 0 and scratch > 0 and fw == model_info.firmware_arena_bytes(tail, head)
    assert fw % 16 == 0 and fw >= tail + head + model_info.ARENA_MARGIN_MIN_BYTES and head > scratch
    assert data["parameters"] > 50_000 and data["macs"] > 1_000_000
    assert data["board"]["model_fits"] is True


def test_default_model_table_names_the_host_figure(cli, default_model):
    res = cli("inspect", str(default_model))
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    assert "64-bit host figure" in out and "AddConv2D" in out and "sha256" in out


def test_labels_option_overrides(cli, write, tiny):
    res = cli("inspect", str(write(tiny)), "--json", "--no-arena", "--labels", "female, male")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["labels"] == ["female", "male"]


def test_labels_count_must_match_classes(cli, write, tiny):
    rejected(cli, write(tiny), "--labels give 3 labels (a, b, c)", "has 2 outputs", args=("--labels", "a,b,c", "--no-arena"))


def test_labels_count_message_counts_in_the_singular(cli, write, tiny):
    msg = rejected(cli, write(tiny), "--labels give 1 label (female) but", args=("--labels", "female", "--no-arena"))
    assert "1 labels" not in msg and "classes" not in msg


def test_sha256_stays_on_one_line_at_80_columns(cli, write, tiny, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    res = cli("inspect", str(write(tiny)), "--no-arena")
    assert res.exit_code == 0, res.output
    digest = hashlib.sha256(tiny).hexdigest()
    assert f"sha256 {digest}" in res.stdout.splitlines()
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


def test_firmware_margin():
    for host in (1, 1872, 133_424, 1_000_003):
        fw = model_info.firmware_arena_bytes(host)
        assert fw % 16 == 0 and fw % 1024 == 0
        assert fw - host >= max(host * model_info.ARENA_MARGIN_FRACTION, model_info.ARENA_MARGIN_MIN_BYTES)
        assert fw - host < max(host * model_info.ARENA_MARGIN_FRACTION, model_info.ARENA_MARGIN_MIN_BYTES) + 1024 + 1


# ---------------------------------------------------------------------------------------------
# arena probe


def test_arena_is_measured_once_then_cached(tiny, monkeypatch):
    from gendertool.model import arena_probe as _arena_probe

    first = model_info.load_model_bytes(tiny)
    assert first.arena_host_bytes > 0
    monkeypatch.setattr(_arena_probe, "run_probe", lambda *a, **k: pytest.fail("probe ran again"))
    again = model_info.load_model_bytes(tiny)
    assert again.arena_host_bytes == first.arena_host_bytes


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_measured_arena_is_enough_for_tflm(which, tiny, default_model):
    """The host figure works in a fresh process; well below it TFLM refuses (isolated child).

    print_allocations()' total alone is not enough on the tiny model: kernels allocate
    temporaries while preparing.
    """
    from gendertool.model.arena_probe import run_probe

    data = tiny if which == "tiny" else default_model.read_bytes()
    host = model_info.load_model_bytes(data).arena_host_bytes
    report = run_probe(data, arena_size=host, search=False)
    assert report["arena_total"] <= host
    assert _probe_fails(data, host - 64)
    if which == "tiny":
        assert _probe_fails(data, report["arena_total"])


def test_runtime_abort_becomes_model_error(tiny):
    """A model that makes TFLM abort ends the child process only."""
    from gendertool.model.arena_probe import run_probe

    bad = edit(tiny, lambda m: setattr(_logits(m).quantization, "scale", [7.8e-9]))
    with pytest.raises(ModelError, match=r"crashed \(SIGABRT\)"):
        run_probe(bad)


def test_softmax_condition_matches_tflm(tiny):
    """beta x scale must exceed 2^-26: just above runs, exactly at it TFLM aborts."""
    from gendertool.model.arena_probe import run_probe

    limit = 2.0**-26  # exact in float32
    above = np.float32(limit) * np.float32(1.001)
    ok = edit(tiny, lambda m: setattr(_logits(m).quantization, "scale", [float(above)]))
    at = edit(tiny, lambda m: setattr(_logits(m).quantization, "scale", [limit]))
    assert checks.softmax_multiplier(1.0, float(above)) > 1.0 >= checks.softmax_multiplier(1.0, limit)
    assert run_probe(ok)["arena_total"] > 0
    with pytest.raises(ModelError, match="SIGABRT"):
        run_probe(at)
    with pytest.raises(ModelError, match="QuantizeMultiplierGreaterThanOne") as info:
        model_info.load_model_bytes(at, measure_arena=False)
    assert "must exceed 2^-26 (1.49e-08)" in str(info.value)


@pytest.mark.parametrize("shape, ok", [((2,), True), ((1, 2), True), ((1, 1, 2), True), ((2, 1), False), ((1, 0), False)])
def test_output_shape_must_be_one_row_of_classes(tiny, shape, ok):
    def reshape(m):
        sg = m.subgraphs[0]
        sg.tensors[sg.outputs[0]].shape = list(shape)

    data = edit(tiny, reshape)
    if ok:
        assert model_info.load_model_bytes(data, measure_arena=False).classes == 2
    else:
        with pytest.raises(ModelError, match=rf"output shape \[{', '.join(map(str, shape))}\]; expected \[1, classes\]"):
            model_info.load_model_bytes(data, measure_arena=False)


# ---------------------------------------------------------------------------------------------
# rejected inputs (each: one message, exit code 2)


def test_missing_file(cli, tmp_path):
    rejected(cli, tmp_path / "nope.tflite", "no such file")


def test_not_a_file(cli, tmp_path):
    rejected(cli, tmp_path, "not a file")


def test_not_a_flatbuffer(cli, write):
    rejected(cli, write(b"\x89PNG\r\n\x1a\n" + bytes(200), "img.tflite"), "not a TFLite flatbuffer", "TFL3")


def test_random_bytes(cli, write):
    data = random.Random(7).randbytes(4096)
    rejected(cli, write(data), "not a TFLite flatbuffer")


def test_random_bytes_behind_a_valid_identifier(cli, write):
    rng = random.Random(8)
    for _ in range(20):
        data = bytearray(rng.randbytes(2048))
        data[4:8] = b"TFL3"
        with pytest.raises(ModelError):
            model_info.load_model_bytes(bytes(data), measure_arena=False)
    rejected(cli, write(bytes(data)), "TFLite")


def test_empty_and_tiny_files(cli, write):
    rejected(cli, write(b""), "only 0 bytes")
    rejected(cli, write(b"\x10\x00\x00\x00TF"), "only 6 bytes")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_default_model(cli, write, default_model, fraction):
    raw = default_model.read_bytes()
    rejected(cli, write(raw[: int(len(raw) * fraction)]), "truncated")


def test_truncated_tiny_model_every_length(tiny):
    for n in range(0, len(tiny), 7):
        with pytest.raises(ModelError):
            model_info.load_model_bytes(tiny[:n], measure_arena=False)


def test_bit_flip_in_root_offset(cli, write, tiny):
    data = bytearray(tiny)
    data[3] ^= 0x80  # root offset points 2 GB past the end
    rejected(cli, write(bytes(data)), "truncated or corrupt", "model table")


def test_bit_flip_in_a_vtable(cli, write, tiny):
    from gendertool.model.verify import Verifier

    v = Verifier(tiny)
    root = v.table(v.u32(0, "root"), "model")
    data = bytearray(tiny)
    data[root.vt] ^= 0x01  # odd vtable size
    rejected(cli, write(bytes(data)), "corrupt TFLite flatbuffer", "vtable")


def _flip_each(data: bytes, n: int, seed: int):
    from gendertool.model.verify import structural_spans

    positions = sorted({p for start, size in structural_spans(data) for p in range(start, start + size)})
    rng = random.Random(seed)
    for _ in range(n):
        pos, bit = rng.choice(positions), rng.randrange(8)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        yield bytes(flipped)


def _union_type_bytes(data: bytes) -> set[int]:
    """Positions of every operator's builtin_options(_2)_type byte, found with flatbuffers' accessors."""
    m = fb.Model.GetRootAs(data, 0)
    out = set()
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            tab = sg.Operators(i)._tab
            for slot in (10, 26):  # Operator fields 3 and 11
                off = tab.Offset(slot)
                if off:
                    out.add(tab.Pos + off)
    return out


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_structural_bit_flips_never_escape(which, tiny, default_model):
    """Flips in offsets, vtables, lengths and indices: a ModelError or a model, never a crash.

    (A flip inside weight bytes or a scale leaves a valid flatbuffer: no structural check can
    see it.)
    """
    from gendertool.model.verify import FlatbufferError, verify_tflite

    data = tiny if which == "tiny" else default_model.read_bytes()
    union_types = _union_type_bytes(data)
    passed, rejected_count = [], 0
    for flipped in _flip_each(data, 300 if which == "tiny" else 120, seed=3):
        # flatbuffers' own reader is the independent judge: what it cannot decode (an out-of-range
        # read) the verifier must have refused; a union's type byte is the one exception, its
        # table is checked generically and the decode step refuses it instead
        try:
            fb.ModelT.InitFromObj(fb.Model.GetRootAs(flipped, 0))
            decodes = True
        except (struct.error, IndexError, ValueError, TypeError):  # TypeError: a negative position
            decodes = False
        try:
            verify_tflite(flipped)
            verified = True
        except FlatbufferError:
            verified = False
        pos = next(i for i in range(len(data)) if data[i] != flipped[i])
        assert decodes or not verified or pos in union_types, f"byte {pos}: the verifier let through what cannot be read"
        try:
            model_info.load_model_bytes(flipped, measure_arena=False)
            passed.append(flipped)
            assert verified and decodes
        except ModelError:
            rejected_count += 1
    assert rejected_count > 0 and passed  # both kinds occur: values (e.g. a scale) are not structure
    # what passed the checks goes to TFLM in the isolated child: a figure or a ModelError
    for flipped in passed[:4]:
        try:
            model_info.load_model_bytes(flipped, measure_arena=True)
        except ModelError:
            pass


def test_float_model(cli, write, tiny):
    def to_float(m):
        sg = m.subgraphs[0]
        for i in (sg.inputs[0], sg.outputs[0]):
            sg.tensors[i].type = fb.TensorType.FLOAT32
            sg.tensors[i].quantization = None

    rejected(cli, write(edit(tiny, to_float)), "float32 model", "int8 input and output")


def test_mixed_model(cli, write, tiny):
    def out_float(m):
        sg = m.subgraphs[0]
        sg.tensors[sg.outputs[0]].type = fb.TensorType.FLOAT32

    rejected(cli, write(edit(tiny, out_float)), "mixed model (input int8, output float32)")


@pytest.mark.parametrize("shape", [[1, 8, 8, 1], [8, 8, 3], [2, 8, 8, 3]])
def test_input_not_rgb_image(cli, write, tiny, shape):
    def reshape(m):
        sg = m.subgraphs[0]
        sg.tensors[sg.inputs[0]].shape = shape

    rejected(cli, write(edit(tiny, reshape)), f"input shape {shape}", "[1, H, W, 3]")


def test_two_subgraphs(cli, write, tiny):
    def add_subgraph(m):
        m.subgraphs.append(unpack(tiny).subgraphs[0])

    rejected(cli, write(edit(tiny, add_subgraph)), "2 subgraphs")


def test_operator_tflm_cannot_add(cli, write, tiny):
    from gendertool.model.resolver import BUILTIN_METHODS

    assert "LSH_PROJECTION" not in BUILTIN_METHODS

    def swap(m):
        m.operatorCodes[1].builtinCode = fb.BuiltinOperator.LSH_PROJECTION
        m.operatorCodes[1].deprecatedBuiltinCode = fb.BuiltinOperator.LSH_PROJECTION

    rejected(cli, write(edit(tiny, swap)), "no Add* method for LSH_PROJECTION (x1)")


def test_custom_operator_tflm_cannot_add(cli, write, tiny):
    def custom(m):
        m.operatorCodes[1].builtinCode = fb.BuiltinOperator.CUSTOM
        m.operatorCodes[1].deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
        m.operatorCodes[1].customCode = "MyFancyMean"

    rejected(cli, write(edit(tiny, custom)), "custom operator 'MyFancyMean'")


def test_softmax_scale_that_aborts_tflm(cli, write, tiny, monkeypatch):
    from gendertool.model import arena_probe as _arena_probe

    monkeypatch.setattr(_arena_probe, "run_probe", lambda *a, **k: pytest.fail("TFLM must not be reached"))
    bad = edit(tiny, lambda m: setattr(_logits(m).quantization, "scale", [7.8e-9]))
    rejected(cli, write(bad), "SOFTMAX", "7.8e-09", "QuantizeMultiplierGreaterThanOne", "CalculateSoftmaxParams")


def test_softmax_without_options_has_beta_zero(tiny):
    def drop(m):
        op = m.subgraphs[0].operators[3]
        op.builtinOptionsType, op.builtinOptions = 0, None

    with pytest.raises(ModelError, match="beta 0"):
        model_info.load_model_bytes(edit(tiny, drop), measure_arena=False)


@pytest.mark.parametrize("scale", [0.0, -0.5, math.inf])
def test_invalid_quantisation_scale(cli, write, tiny, scale):
    bad = edit(tiny, lambda m: setattr(_logits(m).quantization, "scale", [scale]))
    rejected(cli, write(bad), "invalid quantisation scale")


def test_int8_tensor_without_scale(cli, write, tiny):
    bad = edit(tiny, lambda m: setattr(_logits(m), "quantization", None))
    rejected(cli, write(bad), "int8 tensor", "'logits'", "no quantisation scale")


def test_constant_tensor_buffer_size_mismatch(cli, write, tiny):
    def shrink(m):
        t = next(t for t in m.subgraphs[0].tensors if t.name == b"conv/w")
        m.buffers[t.buffer].data = m.buffers[t.buffer].data[:-1]

    rejected(cli, write(edit(tiny, shrink)), "'conv/w'", "needs 108 bytes but its buffer holds 107")


def test_model_larger_than_app_partition(cli, write, tiny):
    board, partition = model_info.app_partition_bytes(None)

    def pad(m):
        extra = fb.BufferT()
        extra.data = np.zeros(partition + 1, dtype=np.uint8)
        m.buffers.append(extra)

    rejected(cli, write(edit(tiny, pad)), "larger than the", f"{board} app partition", f"({partition:,} bytes)")


# ---------------------------------------------------------------------------------------------
# operator map


def test_ops_map_matches_refdata(refdata):
    from gendertool.model.resolver import BUILTIN_METHODS, CUSTOM_METHODS

    builtin, custom = {}, {}
    for line in (refdata / "versions.txt").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["tflm_op"]:
            (builtin if parts[3] == "builtin" else custom)[parts[1]] = parts[2]
    custom.pop("ETHOSU")  # stub name "" without an Ethos-U NPU: not addable on an ESP32
    assert BUILTIN_METHODS == builtin
    assert CUSTOM_METHODS == custom


def test_ops_methods_exist_in_tflm_api(refdata):
    from gendertool.model.resolver import BUILTIN_METHODS

    symbols = set((refdata / "tflm_api_symbols.txt").read_text().split())
    assert set(BUILTIN_METHODS.values()) <= symbols


def test_unknown_board(cli, write, tiny):
    rejected(cli, write(tiny), "nope", "xiao_esp32s3", args=("--board", "nope", "--no-arena"))


def test_message_text_is_printed_verbatim(cli, write):
    """File bytes quoted in a message (here ":x:0") must not turn into Rich emoji."""
    rejected(cli, write(b"root:x:0:0:root:/root:/bin/bash\n" * 4, "passwd"), "b':x:0'")


@pytest.mark.parametrize("crop, shown", [("none", "no crop (whole frame x 0.9, stretched)"), ("center", "centre square crop 0.9")])
def test_inspect_names_the_crop_mode(cli, write, tiny, crop, shown):
    path = write(tiny, "w.tflite")
    path.with_suffix(".json").write_text(json.dumps({"preprocessing": {"crop": crop, "crop_fraction": 0.9}}))
    res = cli("inspect", str(path), "--no-arena")
    assert res.exit_code == 0, res.output
    assert shown in " ".join(res.stdout.split())
    res = cli("inspect", str(path), "--json", "--no-arena")
    assert json.loads(res.stdout)["preprocessing"]["crop"] == crop


@pytest.mark.parametrize("where, index, message", [
    ("subgraph output", 50, "subgraph output refers to tensor 50 of 10"),
    ("subgraph output", 10, "subgraph output refers to tensor 10 of 10"),
    ("operator output", 99, "operator 0 refers to tensor 99 of 10"),
    ("operator input", -2, "operator 0 refers to tensor -2 of 10"),
])
def test_tensor_indices_past_the_end_are_refused(tiny, where, index, message):
    def damage(m):
        sg = m.subgraphs[0]
        if where == "subgraph output":
            sg.outputs = [index]
        elif where == "operator output":
            sg.operators[0].outputs = [index]
        else:
            sg.operators[0].inputs = [0, 1, index]

    with pytest.raises(ModelError, match=f"corrupt model: {message}$"):
        model_info.load_model_bytes(edit(tiny, damage), measure_arena=False)
