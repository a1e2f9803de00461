"""Bounds-check a TFLite flatbuffer before anything decodes it.

The Python flatbuffers runtime has no verifier: a corrupt offset makes the generated
accessors read garbage (negative positions wrap around), raise deep inside the object API
or walk a vector length of 2^32. This walks the parts of the TFLite schema that gendertool
and TFLM read (model, operator codes, subgraphs, tensors, quantisation, operators, buffers,
metadata, signatures) and checks every table, vtable, vector and string lies inside the
file, aligned, like flatc's C++ Verifier. Option tables (unions) are checked as tables.

Only structure is checked: a flipped bit inside weight bytes or a scale is still a valid
flatbuffer; the semantic checks in :mod:`gendertool.model.checks` catch what they can of that.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")

# Bounds against absurd but in-file values (a real TFLite model is far below these).
MAX_TABLES_PER_VECTOR = 1 << 20


class FlatbufferError(Exception):
    """The buffer is not a well-formed flatbuffer; ``truncated`` when data runs past its end."""

    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


class _Table:
    __slots__ = ("pos", "vt", "vtsize", "size", "what")

    def __init__(self, pos: int, vt: int, vtsize: int, size: int, what: str):
        self.pos, self.vt, self.vtsize, self.size, self.what = pos, vt, vtsize, size, what


class Verifier:
    def __init__(self, buf: bytes, record: bool = False):
        self.buf = buf
        self.n = len(buf)
        # (start, size) of every structural field read, for corruption tests and tools
        self.spans: list[tuple[int, int]] | None = [] if record else None

    def _mark(self, pos: int, size: int) -> None:
        if self.spans is not None:
            self.spans.append((pos, size))

    # -- primitives ---------------------------------------------------------------------------

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0:
            raise FlatbufferError(f"{what} points before the start of the file (byte {pos})")
        if pos + size > self.n:
            raise FlatbufferError(
                f"{what} at byte {pos} needs {size} bytes, past the end of the file ({self.n} bytes)",
                truncated=True,
            )

    def _align(self, pos: int, align: int, what: str) -> None:
        if pos % align:
            raise FlatbufferError(f"{what} at byte {pos} is not {align}-byte aligned")

    def u32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        return _U32.unpack_from(self.buf, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        self._need(pos, 4, what)
        self._align(pos, 4, what)
        vt = pos - _I32.unpack_from(self.buf, pos)[0]
        self._need(vt, 4, f"the vtable of {what}")
        self._align(vt, 2, f"the vtable of {what}")
        vtsize, size = _U16.unpack_from(self.buf, vt)[0], _U16.unpack_from(self.buf, vt + 2)[0]
        if vtsize < 4 or vtsize % 2:
            raise FlatbufferError(f"the vtable of {what} has an invalid size {vtsize}")
        if size < 4:
            raise FlatbufferError(f"{what} has an invalid size {size}")
        self._need(vt, vtsize, f"the vtable of {what}")
        self._need(pos, size, what)
        self._mark(pos, 4)
        self._mark(vt, vtsize)
        return _Table(pos, vt, vtsize, size, what)

    def field(self, t: _Table, index: int, size: int) -> int | None:
        """Absolute position of field ``index`` (``size`` bytes inline), None when absent."""
        slot = 4 + 2 * index
        if slot + 2 > t.vtsize:
            return None
        off = _U16.unpack_from(self.buf, t.vt + slot)[0]
        if off == 0:
            return None
        if off < 4 or off + size > t.size:
            raise FlatbufferError(f"field {index} of {t.what} lies outside the table")
        self._mark(t.pos + off, size)
        return t.pos + off

    def _ref(self, t: _Table, index: int) -> int | None:
        pos = self.field(t, index, 4)
        if pos is None:
            return None
        self._align(pos, 4, f"the offset of field {index} of {t.what}")
        return pos + self.u32(pos, f"field {index} of {t.what}")

    def scalar(self, t: _Table, index: int, size: int) -> None:
        pos = self.field(t, index, size)
        if pos is not None:
            self._align(pos, min(size, 4), f"field {index} of {t.what}")

    def vector(self, t: _Table, index: int, elem: int, what: str) -> tuple[int, int] | None:
        """(start, length) of a vector field, bounds-checked."""
        pos = self._ref(t, index)
        if pos is None:
            return None
        self._need(pos, 4, what)
        self._align(pos, 4, what)
        length = _U32.unpack_from(self.buf, pos)[0]
        self._mark(pos, 4)
        self._need(pos + 4, length * elem, f"{what} ({length} elements)")
        if elem > 1:
            self._align(pos + 4, min(elem, 4), what)
        return pos + 4, length

    def string(self, t: _Table, index: int, what: str) -> None:
        vec = self.vector(t, index, 1, what)
        if vec is not None:
            start, length = vec
            self._need(start + length, 1, f"the terminator of {what}")
            if self.buf[start + length] != 0:
                raise FlatbufferError(f"{what} at byte {start} is not zero-terminated")

    def subtable(self, t: _Table, index: int, what: str) -> _Table | None:
        pos = self._ref(t, index)
        return None if pos is None else self.table(pos, what)

    def tables(self, t: _Table, index: int, what: str) -> list[_Table]:
        vec = self.vector(t, index, 4, f"the {what} vector")
        if vec is None:
            return []
        start, length = vec
        if length > MAX_TABLES_PER_VECTOR:
            raise FlatbufferError(f"the {what} vector claims {length} entries")
        out = []
        for i in range(length):
            elem = start + 4 * i
            self._mark(elem, 4)
            out.append(self.table(elem + _U32.unpack_from(self.buf, elem)[0], f"{what} {i}"))
        return out

    def strings(self, t: _Table, index: int, what: str) -> None:
        vec = self.vector(t, index, 4, f"the {what} vector")
        if vec is None:
            return
        start, length = vec
        for i in range(length):
            elem = start + 4 * i
            pos = elem + _U32.unpack_from(self.buf, elem)[0]
            self._need(pos, 4, f"{what} {i}")
            n = _U32.unpack_from(self.buf, pos)[0]
            self._need(pos + 4, n + 1, f"{what} {i}")

    def generic(self, t: _Table | None) -> None:
        """A table whose schema we do not walk: check its inline fields stay inside it."""
        if t is None:
            return
        for index in range((t.vtsize - 4) // 2):
            self.field(t, index, 1)

    # -- the TFLite schema ----------------------------------------------------------------------

    def model(self) -> None:
        root = self.u32(0, "the root offset")
        m = self.table(root, "the model table")
        self.scalar(m, 0, 4)  # version
        for i, oc in enumerate(self.tables(m, 1, "operator code")):
            self.scalar(oc, 0, 1)
            self.string(oc, 1, f"the custom code of operator code {i}")
            self.scalar(oc, 2, 4)
            self.scalar(oc, 3, 4)
        for s, sg in enumerate(self.tables(m, 2, "subgraph")):
            self._subgraph(s, sg)
        self.string(m, 3, "the model description")
        for i, b in enumerate(self.tables(m, 4, "buffer")):
            self.vector(b, 0, 1, f"the data of buffer {i}")
            self.scalar(b, 1, 8)
            self.scalar(b, 2, 8)
        self.vector(m, 5, 4, "the metadata_buffer vector")
        for i, md in enumerate(self.tables(m, 6, "metadata entry")):
            self.string(md, 0, f"the name of metadata entry {i}")
            self.scalar(md, 1, 4)
        for i, sd in enumerate(self.tables(m, 7, "signature")):
            for field in (0, 1):
                for tm in self.tables(sd, field, f"tensor map of signature {i}"):
                    self.string(tm, 0, f"a tensor name in signature {i}")
                    self.scalar(tm, 1, 4)
            self.string(sd, 2, f"the key of signature {i}")
            self.scalar(sd, 4, 4)
        for field, what in ((8, "external buffer group"), (9, "external buffer")):
            for t in self.tables(m, field, what):
                self.generic(t)

    def _subgraph(self, s: int, sg: _Table) -> None:
        for i, t in enumerate(self.tables(sg, 0, f"tensor of subgraph {s}")):
            what = f"tensor {i} of subgraph {s}"
            self.vector(t, 0, 4, f"the shape of {what}")
            self.scalar(t, 1, 1)
            self.scalar(t, 2, 4)
            self.string(t, 3, f"the name of {what}")
            q = self.subtable(t, 4, f"the quantisation of {what}")
            if q is not None:
                self.vector(q, 0, 4, f"the quantisation min of {what}")
                self.vector(q, 1, 4, f"the quantisation max of {what}")
                self.vector(q, 2, 4, f"the quantisation scales of {what}")
                self.vector(q, 3, 8, f"the quantisation zero points of {what}")
                self.scalar(q, 4, 1)
                self.generic(self.subtable(q, 5, f"the quantisation details of {what}"))
                self.scalar(q, 6, 4)
            self.scalar(t, 5, 1)
            self.generic(self.subtable(t, 6, f"the sparsity of {what}"))
            self.vector(t, 7, 4, f"the shape signature of {what}")
            self.scalar(t, 8, 1)
            for v in self.tables(t, 9, f"variant of {what}"):
                self.generic(v)
        self.vector(sg, 1, 4, f"the inputs of subgraph {s}")
        self.vector(sg, 2, 4, f"the outputs of subgraph {s}")
        for i, op in enumerate(self.tables(sg, 3, f"operator of subgraph {s}")):
            what = f"operator {i} of subgraph {s}"
            self.scalar(op, 0, 4)
            self.vector(op, 1, 4, f"the inputs of {what}")
            self.vector(op, 2, 4, f"the outputs of {what}")
            self.scalar(op, 3, 1)
            self.generic(self.subtable(op, 4, f"the options of {what}"))
            self.vector(op, 5, 1, f"the custom options of {what}")
            self.vector(op, 7, 1, f"the mutating inputs of {what}")
            self.vector(op, 8, 4, f"the intermediates of {what}")
            self.scalar(op, 11, 1)
            self.generic(self.subtable(op, 12, f"the options (2) of {what}"))
        self.string(sg, 4, f"the name of subgraph {s}")


def verify_tflite(buf: bytes) -> None:
    """Raise :class:`FlatbufferError` unless ``buf`` is a structurally sound TFLite flatbuffer."""
    Verifier(buf).model()


def structural_spans(buf: bytes) -> list[tuple[int, int]]:
    """``(start, size)`` of every root offset, table header, vtable, field, vector length and
    table reference the verifier reads: the bytes where a flipped bit breaks structure rather
    than values. Assumes ``buf`` passes :func:`verify_tflite`.
    """
    v = Verifier(buf, record=True)
    v._mark(0, 4)
    v.model()
    return sorted(set(v.spans or []))
