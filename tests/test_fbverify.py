"""gendertool.model.verify against hand-made damage: one malformed buffer per check it makes.

Every position is found with the flatbuffers runtime's own generated accessors (ai_edge_litert's
schema), not with the verifier under test; each case changes one structural value in a valid
tiny model and asserts the verifier's exact complaint, and the boundary cases that must pass.
"""

from __future__ import annotations

import struct

import pytest
from ai_edge_litert import schema_py_generated as fb

from gendertool.model.verify import MAX_TABLES_PER_VECTOR, FlatbufferError, verify_tflite
from tflite_fab import tiny_model


@pytest.fixture(scope="module")
def good() -> bytes:
    data = tiny_model()
    verify_tflite(data)
    return data


class Loc:
    """Positions inside a model, from flatbuffers' generated accessors."""

    def __init__(self, data: bytes):
        self.data = data
        self.model = fb.Model.GetRootAs(data, 0)
        self.table = self.model._tab.Pos
        self.vt = self.table - struct.unpack_from("<i", data, self.table)[0]

    def slot(self, field: int) -> int:
        """Where the model vtable stores field ``field``'s offset."""
        return self.vt + 4 + 2 * field

    def field(self, field: int) -> int:
        return self.table + self.model._tab.Offset(4 + 2 * field)

    def target(self, field: int) -> int:
        pos = self.field(field)
        return pos + struct.unpack_from("<I", self.data, pos)[0]


def put(data: bytes, fmt: str, pos: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


def rejects(data: bytes, message: str, truncated: bool = False) -> None:
    with pytest.raises(FlatbufferError) as info:
        verify_tflite(data)
    assert str(info.value) == message
    assert info.value.truncated is truncated


# model table: field 0 version (u32), 1 operator codes, 2 subgraphs, 3 description, 4 buffers


def test_the_root_table_must_be_aligned_and_inside_the_file(good):
    loc = Loc(good)
    rejects(put(good, "<I", 0, loc.table + 1), f"the model table at byte {loc.table + 1} is not 4-byte aligned")
    rejects(put(good, "<I", 0, len(good)),
            f"the model table at byte {len(good)} needs 4 bytes, past the end of the file ({len(good)} bytes)", True)


def test_the_vtable_must_lie_in_the_file_and_be_aligned(good):
    loc = Loc(good)
    rejects(put(good, "<i", loc.table, loc.table + 100),
            "the vtable of the model table points before the start of the file (byte -100)")
    soff = loc.table - loc.vt
    rejects(put(good, "<i", loc.table, soff - 1), f"the vtable of the model table at byte {loc.vt + 1} is not 2-byte aligned")
    rejects(put(good, "<i", loc.table, loc.table - len(good) + 2),
            f"the vtable of the model table at byte {len(good) - 2} needs 4 bytes, past the end of the file "
            f"({len(good)} bytes)", True)


@pytest.mark.parametrize("size", [0, 2, 15])
def test_a_vtable_size_must_be_even_and_at_least_4(good, size):
    loc = Loc(good)
    rejects(put(good, "<H", loc.vt, size), f"the vtable of the model table has an invalid size {size}")


def test_the_vtable_and_the_table_must_end_inside_the_file(good):
    loc = Loc(good)
    rejects(put(good, "<H", loc.vt, 0xFFFE), f"the vtable of the model table at byte {loc.vt} needs 65534 bytes, "
            f"past the end of the file ({len(good)} bytes)", True)
    rejects(put(good, "<H", loc.vt + 2, 2), "the model table has an invalid size 2")
    rejects(put(good, "<H", loc.vt + 2, 0xFFFC), f"the model table at byte {loc.table} needs 65532 bytes, "
            f"past the end of the file ({len(good)} bytes)", True)


def test_a_field_must_lie_inside_its_table(good):
    loc = Loc(good)
    size = struct.unpack_from("<H", good, loc.vt + 2)[0]
    # every offset here is still inside the file: only the table's own size can refuse it
    for off in (size, size - 3, 2, 0xFFF0):
        rejects(put(good, "<H", loc.slot(0), off), "field 0 of the model table lies outside the table")
    # the version (4 bytes) ending exactly at the table's end is inside
    verify_tflite(put(good, "<H", loc.slot(0), size - 4))


def test_a_field_outside_an_options_table_is_refused(good):
    op = Loc(good).model.Subgraphs(0).Operators(0)
    opts = op.BuiltinOptions().Pos
    vt = opts - struct.unpack_from("<i", good, opts)[0]
    size = struct.unpack_from("<H", good, vt + 2)[0]
    rejects(put(good, "<H", vt + 4 + 2 * 1, size),  # Conv2DOptions field 1: stride_w
            "field 1 of the options of operator 0 of subgraph 0 lies outside the table")


def test_scalars_and_offsets_must_be_aligned(good):
    loc = Loc(good)
    version_off = loc.field(0) - loc.table
    rejects(put(good, "<H", loc.slot(0), version_off - 2),
            f"field 0 of the model table at byte {loc.field(0) - 2} is not 4-byte aligned")
    # (flatbuffers shares one vtable between tables of one layout: field 1 is read before any other table's)
    codes_off = loc.field(1) - loc.table
    rejects(put(good, "<H", loc.slot(1), codes_off + 1),
            f"the offset of field 1 of the model table at byte {loc.field(1) + 1} is not 4-byte aligned")


def test_a_vector_must_be_aligned_and_end_inside_the_file(good):
    loc = Loc(good)
    pos = loc.field(4)  # the buffers vector
    rejects(put(good, "<I", pos, struct.unpack_from("<I", good, pos)[0] + 2),
            f"the buffer vector at byte {loc.target(4) + 2} is not 4-byte aligned")
    start = loc.target(4)
    rejects(put(good, "<I", start, 0x10000000), f"the buffer vector (268435456 elements) at byte {start + 4} needs "
            f"1073741824 bytes, past the end of the file ({len(good)} bytes)", True)
    rejects(put(good, "<I", loc.field(3), 0x7FFFFFF0),  # the description's offset, 2 GB on
            f"the model description at byte {loc.field(3) + 0x7FFFFFF0} needs 4 bytes, past the end of the file "
            f"({len(good)} bytes)", True)


def test_a_vector_of_tables_has_a_bound(good):
    loc = Loc(good)
    start = loc.target(4)
    n = MAX_TABLES_PER_VECTOR + 1
    padded = put(good, "<I", start, n) + bytes(4 * n)  # in the file: only the bound can refuse it
    rejects(padded, f"the buffer vector claims {n} entries")


def test_a_string_must_be_terminated_inside_the_file(good):
    loc = Loc(good)
    start = loc.target(3)
    length = struct.unpack_from("<I", good, start)[0]
    assert good[start + 4 : start + 4 + length] == b"gendertool test model"
    unterminated = bytearray(good)
    unterminated[start + 4 + length] = ord("x")
    rejects(bytes(unterminated), f"the model description at byte {start + 4} is not zero-terminated")
    # a string reaching the last byte of the file has no room for its terminator
    rejects(put(good, "<I", start, len(good) - start - 4),
            f"the terminator of the model description at byte {len(good)} needs 1 bytes, past the end of the file "
            f"({len(good)} bytes)", True)


def test_a_tensor_name_is_checked_like_any_string(good):
    t = Loc(good).model.Subgraphs(0).Tensors(0)
    pos = t._tab.Pos + t._tab.Offset(10)  # Tensor field 3: name
    start = pos + struct.unpack_from("<I", good, pos)[0]
    assert good[start + 4 : start + 9] == b"input"
    bad = bytearray(good)
    bad[start + 9] = ord("!")
    rejects(bytes(bad), f"the name of tensor 0 of subgraph 0 at byte {start + 4} is not zero-terminated")


def test_operator_inputs_and_metadata_buffers_are_bounded(good):
    op = Loc(good).model.Subgraphs(0).Operators(0)
    pos = op._tab.Pos + op._tab.Offset(6)  # Operator field 1: inputs
    start = pos + struct.unpack_from("<I", good, pos)[0]
    assert struct.unpack_from("<I", good, start)[0] == 3  # conv: input, weights, bias
    rejects(put(good, "<I", start, 1 << 20), f"the inputs of operator 0 of subgraph 0 (1048576 elements) at byte "
            f"{start + 4} needs 4194304 bytes, past the end of the file ({len(good)} bytes)", True)

    from tflite_fab import edit

    with_meta = edit(good, lambda m: setattr(m, "metadataBuffer", [0, 0]))
    loc = Loc(with_meta)
    start = loc.target(5)
    assert struct.unpack_from("<I", with_meta, start)[0] == 2
    rejects(put(with_meta, "<I", start, 1 << 20), f"the metadata_buffer vector (1048576 elements) at byte {start + 4} "
            f"needs 4194304 bytes, past the end of the file ({len(with_meta)} bytes)", True)
