"""The serial protocol (docs/protocol.md), pure encode/decode with no I/O.

Device -> host records are text lines ``@GT <type> <json>*<crc32>`` that can sit between
ESP-IDF log lines; :class:`StreamParser` splits a byte stream into records and log lines
with a bounded buffer. Host -> device commands are short text lines (:func:`encode_command`,
:func:`parse_command` for the virtual device). The encoder writes exactly the bytes the
firmware's ``protocol.cc`` writes (checked by tests/vectors).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from typing import Any, ClassVar, Union

PROTO_VERSION = 2
MARKER = b"@GT "
MAX_LINE = 2048  # bytes of one line without its "\n"
MAX_RECORD = 2046  # a device's record line before "\r\n"
MAX_COMMAND = 128
MAX_UPLOAD_SIDE = 640
BENCH_MAX_N = 10000
BENCH_MAX_WARMUP = 1000
BSAMPLE_BATCH = 32
SELFTEST_MAX_RESULTS = 16
UPLOAD_IDLE_MS = 2000
PROGRESS_INTERVAL_S = 1.0  # a device sends `progress` when it sent nothing for this long during long work
INPUT_CHUNK = 1024  # input tensor bytes per `input` record
INPUT_EVERY_MAX = 1000
SOURCES = ("sample", "upload", "camera")
BUSY = "busy"  # virtual device only: another TCP client is connected (docs/protocol.md §3)
ERROR_CODES = (
    "unknown_cmd",
    "bad_args",
    "too_large",
    "line_too_long",
    "upload_crc",
    "upload_timeout",
    "unsupported",
    "no_memory",
    "invoke_failed",
    "camera_failed",
    "internal",
    "proto_mismatch",
    BUSY,
)

_TYPE_RE = re.compile(rb"[a-z][a-z0-9_]{0,15}\Z")
_CRC_RE = re.compile(rb"[0-9a-f]{8}\Z")


def crc32(data: bytes) -> int:
    """CRC-32/IEEE (zlib) of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------
# JSON writer: byte-exact twin of gt::RecordWriter


def _esc_table() -> list[bytes]:
    table = [bytes([b]) for b in range(256)]
    for b in range(0x20):
        table[b] = b"\\u%04x" % b
    table[0x08], table[0x0C], table[0x0A], table[0x0D], table[0x09] = b"\\b", b"\\f", b"\\n", b"\\r", b"\\t"
    table[ord('"')] = b'\\"'
    table[ord("\\")] = b"\\\\"
    table[ord("@")] = b"\\u0040"  # keeps the marker "@GT " out of payloads
    return table


_ESC = _esc_table()
_NEEDS_ESC = re.compile(rb'[\x00-\x1f"\\@]')


def _enc_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    if _NEEDS_ESC.search(raw):
        raw = b"".join(_ESC[b] for b in raw)
    return b'"' + raw + b'"'


def _enc_float(v: float, kind: str) -> bytes:
    v = float(v)
    if not math.isfinite(v):
        return b"null"
    if kind == "g":
        return b"%.9g" % v
    return b"%.*f" % (int(kind[1:]), v)


def _enc_value(v: Any, kind: str) -> bytes:
    if kind == "i":
        return b"%d" % int(v)
    if kind == "b":
        return b"true" if v else b"false"
    if kind == "s":
        return _enc_str(v)
    if kind[0] in "fg":
        return _enc_float(v, kind)
    if kind.startswith("["):
        inner = kind[1:-1]
        return b"[" + b",".join(_enc_value(x, inner) for x in v) + b"]"
    if kind == "selftest_entries":
        return b"[" + b",".join(_enc_object(e) for e in v) + b"]"
    raise AssertionError(kind)


def _enc_object(obj: Any) -> bytes:
    parts = [_enc_str(key) + b":" + _enc_value(getattr(obj, attr), kind) for key, attr, kind in obj.SPEC]
    return b"{" + b",".join(parts) + b"}"


# ---------------------------------------------------------------------------------------
# JSON reader checks


class _FieldError(Exception):
    pass


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _dec_value(v: Any, kind: str) -> Any:
    if kind == "i":
        if _is_int(v):
            return v
    elif kind == "b":
        if isinstance(v, bool):
            return v
    elif kind == "s":
        if isinstance(v, str):
            return v
    elif kind[0] in "fg":
        if v is None:
            return math.nan
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    elif kind.startswith("["):
        if isinstance(v, list):
            return tuple(_dec_value(x, kind[1:-1]) for x in v)
    elif kind == "selftest_entries":
        if isinstance(v, list):
            return tuple(_dec_object(SelfTestEntry, x) for x in v)
    raise _FieldError(kind)


def _dec_object(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise _FieldError("object")
    kwargs = {}
    optional = getattr(cls, "OPTIONAL", frozenset())
    for key, attr, kind in cls.SPEC:
        if key not in data:
            if key in optional:
                continue
            raise _FieldError(key)
        kwargs[attr] = _dec_value(data[key], kind)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a record-level rule (e.g. bsample's parallel arrays)
        raise _FieldError(str(exc)) from None


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Hello:
    """Who the device is: sent at boot and as the reply to ``info``."""

    TYPE: ClassVar[str] = "hello"
    SPEC: ClassVar[tuple] = (
        ("proto", "proto", "i"), ("fw", "fw", "s"), ("board", "board", "s"), ("chip", "chip", "s"),
        ("model", "model", "s"), ("model_sha256", "model_sha256", "s"), ("labels", "labels", "[s]"),
        ("input", "input", "[i]"), ("in_scale", "in_scale", "g"), ("in_zp", "in_zp", "i"),
        ("out_scale", "out_scale", "g"), ("out_zp", "out_zp", "i"), ("arena_bytes", "arena_bytes", "i"),
        ("arena_used", "arena_used", "i"), ("arena_in", "arena_in", "s"), ("heap_internal", "heap_internal", "i"),
        ("heap_psram", "heap_psram", "i"), ("cpu_mhz", "cpu_mhz", "i"), ("idf", "idf", "s"),
        ("tflm", "tflm", "s"), ("esp_nn", "esp_nn", "s"), ("samples", "samples", "i"),
        ("sample_names", "sample_names", "[s]"), ("sample_truth", "sample_truth", "[i]"),
        ("source", "source", "s"), ("running", "running", "b"), ("camera", "camera", "b"),
        ("tx_dropped", "tx_dropped", "i"), ("simulated", "simulated", "b"),
    )
    # sample_names/sample_truth came late in version 1; arena_in, camera and tx_dropped with
    # version 2. Optional when parsing, so that an older firmware's hello still parses and the
    # host can name the version mismatch instead of "no hello".
    OPTIONAL: ClassVar[frozenset] = frozenset({"sample_names", "sample_truth", "arena_in", "camera", "tx_dropped"})
    proto: int
    fw: str
    board: str
    chip: str
    model: str
    model_sha256: str
    labels: tuple[str, ...]
    input: tuple[int, ...]
    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int
    arena_bytes: int
    arena_used: int
    heap_internal: int
    heap_psram: int
    cpu_mhz: int
    idf: str
    tflm: str
    esp_nn: str
    samples: int
    source: str
    running: bool
    simulated: bool
    # built-in sample k is sample_names[k]; sample_truth[k] its true class, -1 when unknown
    sample_names: tuple[str, ...] = ()
    sample_truth: tuple[int, ...] = ()
    arena_in: str = ""  # "internal", "psram", "none" (no arena), "host" (virtual device)
    camera: bool = False  # the camera driver is running (capturing into PSRAM)
    tx_dropped: int = 0  # lines the device dropped whole since boot because the host was not reading

    def sample_info(self, index: int) -> tuple[str, int] | None:
        """(name, true class or -1) of built-in sample ``index``, None if the device did not say."""
        if 0 <= index < len(self.sample_names):
            truth = self.sample_truth[index] if index < len(self.sample_truth) else -1
            return self.sample_names[index], truth if 0 <= truth < len(self.labels) else -1
        return None


def arena_warning(arena_in: str) -> str | None:
    """What a hello's or bsummary's ``arena_in`` means for the latency figures, when it matters:
    None for "internal" (the normal case), "host" (virtual device) and "" (not reported)."""
    if arena_in == "psram":
        return ("the tensor arena is in PSRAM, not internal RAM: every Invoke() is slower than the estimate "
                "and than a board whose arena is internal (free internal RAM or set APP_ARENA_INTERNAL)")
    if arena_in == "none":
        return "the device has no tensor arena: the model could not be set up (see its boot log)"
    return None


@dataclass(frozen=True)
class Result:
    """One inference."""

    TYPE: ClassVar[str] = "result"
    SPEC: ClassVar[tuple] = (
        ("seq", "seq", "i"), ("source", "source", "s"), ("sample", "sample", "i"),
        ("class", "class_index", "i"), ("label", "label", "s"), ("scores", "scores", "[i]"),
        ("probs", "probs", "[f4]"), ("pre_us", "pre_us", "i"), ("invoke_us", "invoke_us", "i"),
        ("simulated", "simulated", "b"),
    )
    seq: int
    source: str
    sample: int
    class_index: int
    label: str
    scores: tuple[int, ...]
    probs: tuple[float, ...]
    pre_us: int
    invoke_us: int
    simulated: bool

    @property
    def confidence(self) -> float:
        if 0 <= self.class_index < len(self.probs):
            return self.probs[self.class_index]
        return math.nan


@dataclass(frozen=True)
class BenchSample:
    """A batch of benchmark runs: per run, the preprocessing and the ``Invoke()`` time."""

    TYPE: ClassVar[str] = "bsample"
    SPEC: ClassVar[tuple] = (
        ("first", "first", "i"), ("pre_us", "pre_us", "[i]"), ("invoke_us", "invoke_us", "[i]"),
        ("simulated", "simulated", "b"),
    )
    first: int
    pre_us: tuple[int, ...]
    invoke_us: tuple[int, ...]
    simulated: bool

    def __post_init__(self) -> None:
        if len(self.pre_us) != len(self.invoke_us):  # parallel arrays: run k is (pre_us[k], invoke_us[k])
            raise ValueError(f"bsample: {len(self.pre_us)} pre_us but {len(self.invoke_us)} invoke_us")


@dataclass(frozen=True)
class BenchSummary:
    TYPE: ClassVar[str] = "bsummary"
    SPEC: ClassVar[tuple] = (
        ("n", "n", "i"), ("warmup", "warmup", "i"), ("min_us", "min_us", "i"), ("max_us", "max_us", "i"),
        ("mean_us", "mean_us", "f1"), ("total_us", "total_us", "i"), ("arena_in", "arena_in", "s"),
        ("camera", "camera", "b"), ("tx_dropped", "tx_dropped", "i"), ("simulated", "simulated", "b"),
    )
    OPTIONAL: ClassVar[frozenset] = frozenset({"arena_in", "camera", "tx_dropped"})  # version 2
    n: int
    warmup: int
    min_us: int
    max_us: int
    mean_us: float
    total_us: int
    simulated: bool
    # the conditions of the run: where the arena was, whether the camera ran, lines dropped so far
    arena_in: str = ""
    camera: bool = False
    tx_dropped: int = 0


@dataclass(frozen=True)
class ProfileOp:
    """Time of one operator (node) in a profiled invoke."""

    TYPE: ClassVar[str] = "profile"
    SPEC: ClassVar[tuple] = (
        ("node", "node", "i"), ("op", "op", "s"), ("us", "us", "i"), ("estimated", "estimated", "b"),
        ("simulated", "simulated", "b"),
    )
    node: int
    op: str
    us: int
    estimated: bool
    simulated: bool


@dataclass(frozen=True)
class ProfileSummary:
    TYPE: ClassVar[str] = "psummary"
    SPEC: ClassVar[tuple] = (
        ("nodes", "nodes", "i"), ("total_us", "total_us", "i"), ("invoke_us", "invoke_us", "i"),
        ("estimated", "estimated", "b"), ("simulated", "simulated", "b"),
    )
    nodes: int
    total_us: int
    invoke_us: int
    estimated: bool
    simulated: bool


@dataclass(frozen=True)
class SelfTestEntry:
    SPEC: ClassVar[tuple] = (
        ("sample", "sample", "i"), ("expect", "expect", "i"), ("got", "got", "i"), ("diff", "diff", "i"),
        ("ok", "ok", "b"),
    )
    sample: int
    expect: int
    got: int
    diff: int
    ok: bool


@dataclass(frozen=True)
class SelfTest:
    TYPE: ClassVar[str] = "selftest"
    SPEC: ClassVar[tuple] = (
        ("pass", "passed", "b"), ("n", "n", "i"), ("failed", "failed", "i"),
        ("results", "results", "selftest_entries"), ("simulated", "simulated", "b"),
    )
    passed: bool
    n: int
    failed: int
    results: tuple[SelfTestEntry, ...]
    simulated: bool


@dataclass(frozen=True)
class ErrorRecord:
    TYPE: ClassVar[str] = "error"
    SPEC: ClassVar[tuple] = (("code", "code", "s"), ("cmd", "cmd", "s"), ("message", "message", "s"), ("simulated", "simulated", "b"))
    code: str
    cmd: str
    message: str
    simulated: bool


@dataclass(frozen=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    SPEC: ClassVar[tuple] = (("cmd", "cmd", "s"), ("simulated", "simulated", "b"))
    cmd: str
    simulated: bool


@dataclass(frozen=True)
class Progress:
    """Long work (``bench``, ``selftest``) still going: ``done`` of ``total`` steps. Sent when the
    device sent nothing for about PROGRESS_INTERVAL_S, so the host's wait follows the work."""

    TYPE: ClassVar[str] = "progress"
    SPEC: ClassVar[tuple] = (("cmd", "cmd", "s"), ("done", "done", "i"), ("total", "total", "i"), ("simulated", "simulated", "b"))
    cmd: str
    done: int
    total: int
    simulated: bool


@dataclass(frozen=True)
class InputChunk:
    """Bytes ``[offset, offset + len)`` of the int8 input tensor (``total`` bytes) that result
    ``seq`` ran on; ``data`` is base64 (RFC 4648, padded). The chunks precede that result."""

    TYPE: ClassVar[str] = "input"
    SPEC: ClassVar[tuple] = (
        ("seq", "seq", "i"), ("offset", "offset", "i"), ("total", "total", "i"), ("data", "data", "s"),
        ("simulated", "simulated", "b"),
    )
    seq: int
    offset: int
    total: int
    data: str
    simulated: bool

    def __post_init__(self) -> None:
        try:
            raw = base64.b64decode(self.data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValueError("input.data is not base64") from None
        if not raw or self.offset < 0 or self.offset + len(raw) > self.total:
            raise ValueError(f"input: {len(raw)} bytes at {self.offset} outside a {self.total}-byte tensor")
        object.__setattr__(self, "_raw", raw)

    @property
    def payload(self) -> bytes:
        return self._raw  # type: ignore[attr-defined]

    @classmethod
    def chunks(cls, seq: int, tensor: bytes, simulated: bool, chunk: int = INPUT_CHUNK) -> list["InputChunk"]:
        """The records a device sends for ``tensor`` (the int8 bytes, in tensor order)."""
        return [
            cls(seq, off, len(tensor), base64.b64encode(tensor[off : off + chunk]).decode("ascii"), simulated)
            for off in range(0, len(tensor), chunk)
        ]


class InputAssembler:
    """Puts ``input`` records back together: :meth:`feed` returns ``(seq, tensor bytes)`` when
    the last piece of a tensor arrives in order. A tensor with a piece missing (a record lost
    on the link) is never returned; ``broken`` counts them."""

    def __init__(self) -> None:
        self.broken = 0
        self._seq: int | None = None
        self._buf = bytearray()
        self._total = 0

    def feed(self, chunk: InputChunk) -> tuple[int, bytes] | None:
        if chunk.offset == 0:
            if self._seq is not None:
                self.broken += 1  # the previous tensor never completed
            self._seq, self._buf, self._total = chunk.seq, bytearray(), chunk.total
        elif self._seq != chunk.seq or chunk.offset != len(self._buf) or chunk.total != self._total:
            if self._seq is not None:
                self.broken += 1
            self._seq = None  # out of step: wait for the next tensor's first piece
            return None
        self._buf += chunk.payload
        if len(self._buf) == self._total:
            seq, data = self._seq, bytes(self._buf)
            self._seq, self._buf = None, bytearray()
            return seq, data
        return None


@dataclass(frozen=True)
class LogLine:
    """A line of ordinary device output (ESP-IDF log, boot ROM text, panic dump)."""

    text: str


Record = Union[Hello, Result, BenchSample, BenchSummary, ProfileOp, ProfileSummary, SelfTest, ErrorRecord, Ack,
               Progress, InputChunk]
RECORD_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Result, BenchSample, BenchSummary, ProfileOp, ProfileSummary, SelfTest, ErrorRecord, Ack,
                Progress, InputChunk)
}


def encode_record(rec: Record) -> bytes:
    """The record's line, ``@GT <type> <json>*<crc>\\n``."""
    body = rec.TYPE.encode() + b" " + _enc_object(rec)
    return b"@GT %s*%08x\n" % (body, crc32(body))


def record_to_dict(rec: Record | SelfTestEntry) -> dict:
    """JSON-ready dict with the protocol's key names (``class``, ``pass``), for ``--json``."""
    out: dict[str, Any] = {}
    for key, attr, kind in rec.SPEC:
        v = getattr(rec, attr)
        if kind == "selftest_entries":
            v = [record_to_dict(e) for e in v]
        elif isinstance(v, tuple):
            v = list(v)
        out[key] = v
    return out


def record_from_dict(type_: str, data: dict) -> Record:
    """Build a record from its protocol dict (raises ValueError on unknown type / bad fields)."""
    cls = RECORD_TYPES.get(type_)
    if cls is None:
        raise ValueError(f"unknown record type {type_!r}")
    try:
        return _dec_object(cls, data)
    except _FieldError as exc:
        raise ValueError(f"{type_}: missing or mistyped field ({exc})") from None


class FrameError(Exception):
    """Why a record line was rejected: ``kind`` is one of the stats counter names."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def decode_frame(candidate: bytes) -> Record:
    """Decode what follows the marker: ``<type> <json>*<crc>`` (no newline)."""
    if len(candidate) < 12 or candidate[-9] != 0x2A or not _CRC_RE.match(candidate, len(candidate) - 8):
        raise FrameError("bad_frame", "no *crc32 trailer")
    body = candidate[:-9]
    sp = body.find(b" ")
    if sp < 0 or not _TYPE_RE.match(body[:sp]):
        raise FrameError("bad_frame", "no record type")
    if crc32(body) != int(candidate[-8:], 16):
        raise FrameError("bad_crc")
    try:
        data = json.loads(body[sp + 1 :].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError("bad_frame", f"payload is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "payload is not a JSON object")
    cls = RECORD_TYPES.get(body[:sp].decode("ascii"))
    if cls is None:
        raise FrameError("unknown_type", body[:sp].decode("ascii"))
    try:
        return _dec_object(cls, data)
    except _FieldError as exc:
        raise FrameError("bad_record", f"{cls.TYPE}.{exc}") from None


def decode_line(line: bytes) -> Record:
    """Decode one complete record line (with or without the newline)."""
    line = line.rstrip(b"\n")
    if line.endswith(b"\r"):
        line = line[:-1]
    i = line.rfind(MARKER)
    if i < 0:
        raise FrameError("bad_frame", "no @GT marker")
    return decode_frame(line[i + len(MARKER) :])


# ---------------------------------------------------------------------------------------
# Stream parser


@dataclass
class StreamStats:
    bytes: int = 0
    lines: int = 0
    records: int = 0
    log_lines: int = 0
    overlong: int = 0
    bad_frame: int = 0
    bad_crc: int = 0
    unknown_type: int = 0
    bad_record: int = 0
    partial: int = 0
    max_buffered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dc_fields(self)}

    @property
    def dropped(self) -> int:
        """Record candidates or lines lost for any reason."""
        return self.overlong + self.bad_frame + self.bad_crc + self.bad_record + self.partial


class StreamParser:
    """Split a device byte stream into records and log lines, with a bounded buffer.

    ``feed`` returns what completed; an unfinished line is held (at most ``max_line`` bytes).
    Feeding the same bytes in any chunking gives the same output and counters.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 16:
            raise ValueError("max_line must be at least 16")
        self.max_line = max_line
        self.stats = StreamStats()
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget the unfinished line (the device reset or the port reconnected)."""
        if MARKER in self._buf:
            self.stats.partial += 1
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Record | LogLine]:
        out: list[Record | LogLine] = []
        st = self.stats
        st.bytes += len(data)
        start, n = 0, len(data)
        buf = self._buf
        while start < n:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not self._discarding:
                    if len(buf) + (n - start) > self.max_line:
                        buf.clear()
                        self._discarding = True
                        st.overlong += 1
                    else:
                        buf += data[start:]
                        if len(buf) > st.max_buffered:
                            st.max_buffered = len(buf)
                break
            end, start_next = nl, nl + 1
            if self._discarding:
                self._discarding = False
            elif len(buf) + (end - start) > self.max_line:
                buf.clear()
                st.overlong += 1
            else:
                if buf:
                    buf += data[start:end]
                    line = bytes(buf)
                    buf.clear()
                else:
                    line = data[start:end]
                self._line(line, out)
            start = start_next
        return out

    def _line(self, line: bytes, out: list) -> None:
        st = self.stats
        st.lines += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        i = line.rfind(MARKER)
        if i < 0:
            if line.strip():
                st.log_lines += 1
                out.append(LogLine(line.decode("utf-8", "replace")))
            return
        head = line[:i]
        first = head.find(MARKER)
        if first >= 0:
            st.partial += head.count(MARKER)
            head = head[:first]
        if head.strip():
            st.log_lines += 1
            out.append(LogLine(head.decode("utf-8", "replace")))
        try:
            rec = decode_frame(line[i + len(MARKER) :])
        except FrameError as exc:
            setattr(st, exc.kind, getattr(st, exc.kind) + 1)
            return
        st.records += 1
        out.append(rec)


# ---------------------------------------------------------------------------------------
# Commands (host -> device)


@dataclass(frozen=True)
class Command:
    """A parsed command line. ``error`` is set (an error code) when the device refuses it."""

    cmd: str  # first word as sent (truncated to 16 bytes) when refused
    args: dict = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict:
        if self.error:
            return {"error": self.error, "word": self.cmd}
        return {"cmd": self.cmd, **self.args}


_NO_ARG = ("ping", "start", "stop", "profile", "selftest", "reset", "panic")
_COMMANDS = _NO_ARG + ("info", "source", "infer", "bench", "input")
_U32 = re.compile(rb"[0-9]{1,10}\Z")
_HEX8 = re.compile(rb"[0-9a-fA-F]{8}\Z")


def _u32(word: bytes) -> int | None:
    if not _U32.match(word):
        return None
    v = int(word)
    return v if v <= 0xFFFFFFFF else None


def parse_command(line: bytes) -> Command | None:
    """Parse one command line (without or with ``\\n``/``\\r\\n``); None for a blank line.

    The Python twin of ``gt::parse_command``; lines over MAX_COMMAND are the caller's
    ``line_too_long`` (see :class:`CommandReader`).
    """
    line = line.rstrip(b"\n")
    if line.endswith(b"\r"):
        line = line[:-1]
    words = [w for w in line.split(b" ") if w]
    if not words:
        return None
    # printable ASCII only, so an error record echoing the word is always valid UTF-8
    word = "".join(chr(b) if 0x20 < b < 0x7F else "?" for b in words[0][:16])
    name, args = words[0], words[1:]
    if name.decode("latin-1") not in _COMMANDS:
        return Command(word, error="unknown_cmd")
    name_s = name.decode("ascii")

    def bad(code: str = "bad_args") -> Command:
        return Command(name_s, error=code)

    if name_s in _NO_ARG:
        return bad() if args else Command(name_s)
    if name_s == "info":  # `info` or `info <proto>`: the host's protocol version (version 2)
        if not args:
            return Command("info")
        v = _u32(args[0]) if len(args) == 1 else None
        return Command("info", {"proto": v}) if v else bad()
    if name_s == "input":  # `input once` or `input <n>`: the input tensor of the next / every nth result
        if len(args) != 1:
            return bad()
        if args[0] == b"once":
            return Command("input", {"once": True})
        v = _u32(args[0])
        return bad() if v is None or v > INPUT_EVERY_MAX else Command("input", {"every": v})
    if name_s == "source":
        if len(args) != 1 or args[0].decode("latin-1") not in SOURCES:
            return bad()
        return Command("source", {"source": args[0].decode("ascii")})
    if name_s == "bench":
        if len(args) != 2:
            return bad()
        n, w = _u32(args[0]), _u32(args[1])
        if n is None or w is None or not 1 <= n <= BENCH_MAX_N or w > BENCH_MAX_WARMUP:
            return bad()
        return Command("bench", {"n": n, "warmup": w})
    # infer <w> <h> <len> <crc>
    if len(args) != 4:
        return bad()
    w, h, length = _u32(args[0]), _u32(args[1]), _u32(args[2])
    if w is None or h is None or length is None or not _HEX8.match(args[3]) or w == 0 or h == 0:
        return bad()
    if w > MAX_UPLOAD_SIDE or h > MAX_UPLOAD_SIDE:
        return bad("too_large")
    if length != w * h * 3:
        return bad()
    return Command("infer", {"w": w, "h": h, "len": length, "crc": args[3].decode("ascii").lower()})


class CommandReader:
    """Bounded line assembly for commands (twin of ``gt::LineReader``).

    ``push(data)`` returns the completed commands; a line over MAX_COMMAND bytes becomes
    ``Command("", error="line_too_long")`` once its newline arrives.
    """

    def __init__(self, max_len: int = MAX_COMMAND) -> None:
        self.max_len = max_len
        self._buf = bytearray()
        self._too_long = False

    def push_line_bytes(self, data: bytes) -> tuple[list[Command], int]:
        """Consume up to and including the first complete line; returns (commands, used)."""
        nl = data.find(b"\n")
        chunk = data if nl < 0 else data[: nl + 1]
        cmds: list[Command] = []
        for b in chunk:
            if b == 0x0A:
                line = bytes(self._buf)
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._too_long or len(line) > self.max_len:
                    cmds.append(Command("", error="line_too_long"))
                else:
                    c = parse_command(line)
                    if c is not None:
                        cmds.append(c)
                self._buf.clear()
                self._too_long = False
            elif not self._too_long:
                if len(self._buf) > self.max_len:  # max_len + 1 kept for a trailing "\r"
                    self._too_long = True
                    self._buf.clear()
                else:
                    self._buf.append(b)
        return cmds, len(chunk)

    @property
    def buffered(self) -> int:
        return len(self._buf)


def encode_command(name: str, *args: int | str) -> bytes:
    """A command line: ``encode_command("bench", 100, 10) == b"bench 100 10\\n"``."""
    if name not in _COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    return " ".join([name, *(str(a) for a in args)]).encode("ascii") + b"\n"


SYNC_WORD = re.compile(r"sync[0-9a-f]{8}\Z")


def encode_sync(token: str) -> bytes:
    """A barrier line (§4): not a command, so the device answers ``error unknown_cmd`` whose
    ``cmd`` echoes ``token`` (``sync`` + 8 hex digits, inside the 16 echoed bytes) after
    every reply to the commands before it."""
    if not SYNC_WORD.match(token):
        raise ValueError(f"sync token {token!r} is not 'sync' + 8 lowercase hex digits")
    return token.encode("ascii") + b"\n"


def encode_infer(width: int, height: int, payload: bytes) -> bytes:
    """The ``infer`` command line for an RGB888 payload (the payload follows after the ack)."""
    if not (1 <= width <= MAX_UPLOAD_SIDE and 1 <= height <= MAX_UPLOAD_SIDE):
        raise ValueError(f"upload size {width}x{height} outside 1..{MAX_UPLOAD_SIDE}")
    if len(payload) != width * height * 3:
        raise ValueError(f"payload is {len(payload)} bytes, expected {width * height * 3}")
    return b"infer %d %d %d %08x\n" % (width, height, len(payload), crc32(payload))


class UploadReceiver:
    """Collects an upload's bytes and checks length + CRC (twin of ``gt::UploadReceiver``)."""

    def __init__(self, length: int, crc: int) -> None:
        self.length = length
        self.crc = crc
        self._crc = 0
        self.data = bytearray()

    def feed(self, data: bytes) -> int:
        """Take bytes up to the declared length; returns how many were used."""
        take = data[: self.length - len(self.data)]
        self.data += take
        self._crc = zlib.crc32(take, self._crc)
        return len(take)

    @property
    def complete(self) -> bool:
        return len(self.data) == self.length

    @property
    def crc_ok(self) -> bool:
        return self.complete and (self._crc & 0xFFFFFFFF) == self.crc
