"""The monitor operation: follow a running firmware's result stream.

One session follows the port through a link.DeviceClient (the same receive path, stream
parser and reconnect as every other command: the XIAO's USB port vanishes on every reset),
keeps rolling statistics and decodes panic backtraces with esp-idf-panic-decoder when the
ELF is known. Everything it sees goes to a :class:`MonitorSink`; the CLI decides how to draw.
"""

from __future__ import annotations

import math
import re
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gendertool.device.link import DeviceClient, LinkEvent, LinkLost
from gendertool.device.panic import (
    TOOLCHAIN_PREFIX,
    PanicDecoder,
    PanicReport,
    PanicTracker,
)
from gendertool.device.transport import open_port
from gendertool.errors import DeviceError, GendertoolError, ctrl_c_handled, ctrl_c_waits
from gendertool.protocol import (
    MAX_LINE,
    PROTO_VERSION,
    Ack,
    ErrorRecord,
    Hello,
    InputAssembler,
    InputChunk,
    LogLine,
    Result,
    record_to_dict,
)
from gendertool.stats import RateMeter, RollingStats, latency_stats
from gendertool.text import shown_line

DEFAULT_TIMEOUT_S = 10.0  # protocol.md §4: device back after a reset or USB drop
DEFAULT_NO_RECORD_S = 10.0  # a gendertool firmware answers `info` at once and streams results
SHOWN_LINE = 400  # characters of one device log line shown (escaped); the rest is counted
READ_SLICE_S = 0.05  # read granularity: keeps Ctrl-C and the live view responsive


LOG_TAIL = 200


# --------------------------------------------------------------------------- session


class MonitorSink:
    """What a monitor session reports. The CLI implements these to draw."""

    def hello(self, hello: Any) -> None: ...

    def result(self, result: Any, session: "MonitorSession") -> None: ...

    def log(self, text: str) -> None: ...

    def status(self, text: str) -> None:
        """Connection events: vanished, waiting, reconnected (one line each, for stderr)."""

    def panic(self, report: PanicReport) -> None: ...

    def device_error(self, record: Any) -> None: ...

    def tick(self, session: "MonitorSession") -> None:
        """Called a few times per second even when nothing arrives (redraw the live view)."""

    def link(self, event: LinkEvent, session: "MonitorSession") -> None:
        """The port vanished (``event.kind == "disconnected"``) or came back; by default one
        :meth:`status` line."""
        self.status(event.message)

    def ended(self, summary: "MonitorSummary") -> None:
        """The session is over (count reached, Ctrl-C, or ``summary.error``)."""

    def input_tensor(self, seq: int, data: bytes) -> None:
        """The int8 input tensor the device sent for result ``seq`` (before that result), whole."""

    def device_booted(self, hello: Any) -> None:
        """The device (re)booted: what was asked of it before (e.g. ``input <n>``) is gone."""


class TeeSink(MonitorSink):
    """Several sinks fed in order: the first (the terminal, --csv/--json) gets each record
    before the next (the web page), so a later sink cannot keep a record from being written."""

    def __init__(self, *sinks: MonitorSink) -> None:
        self.sinks = sinks

    def hello(self, hello: Any) -> None:
        for s in self.sinks:
            s.hello(hello)

    def result(self, result: Any, session: "MonitorSession") -> None:
        for s in self.sinks:
            s.result(result, session)

    def log(self, text: str) -> None:
        for s in self.sinks:
            s.log(text)

    def status(self, text: str) -> None:
        for s in self.sinks:
            s.status(text)

    def panic(self, report: PanicReport) -> None:
        for s in self.sinks:
            s.panic(report)

    def device_error(self, record: Any) -> None:
        for s in self.sinks:
            s.device_error(record)

    def tick(self, session: "MonitorSession") -> None:
        for s in self.sinks:
            s.tick(session)

    def link(self, event: LinkEvent, session: "MonitorSession") -> None:
        for s in self.sinks:
            s.link(event, session)

    def ended(self, summary: "MonitorSummary") -> None:
        for s in self.sinks:
            s.ended(summary)

    def input_tensor(self, seq: int, data: bytes) -> None:
        for s in self.sinks:
            s.input_tensor(seq, data)

    def device_booted(self, hello: Any) -> None:
        for s in self.sinks:
            s.device_booted(hello)


class MonitorControl:
    """Work other threads (the web page) hand to a running monitor: each job runs on the
    monitor's own thread with its DeviceClient, between two reads, so there is one reader of
    the port and nothing it receives bypasses the session. :meth:`submit` returns a Future."""

    def __init__(self) -> None:
        import queue

        self._jobs: "queue.SimpleQueue[tuple[Callable[[DeviceClient], Any], Any]]" = queue.SimpleQueue()
        self._at_end: dict[str, Callable[[DeviceClient], Any]] = {}
        self.closed = False

    def at_end(self, name: str, job: "Callable[[DeviceClient], Any] | None") -> None:
        """A courtesy job run when the monitor stops, before the port closes (one per ``name``;
        None removes it), e.g. ``input 0`` after the page asked for input tensors."""
        if job is None:
            self._at_end.pop(name, None)
        else:
            self._at_end[name] = job

    def run_at_end(self, client: DeviceClient) -> None:
        """The :meth:`at_end` jobs; the port may be gone already, so failures are ignored."""
        for job in list(self._at_end.values()):
            try:
                job(client)
            except DeviceError:
                pass
            except KeyboardInterrupt:  # another Ctrl-C: stop being courteous, keep the summary
                return

    def submit(self, job: "Callable[[DeviceClient], Any]"):
        from concurrent.futures import Future

        fut: Future = Future()
        if self.closed:
            fut.set_exception(DeviceError("the monitor has stopped"))
        else:
            self._jobs.put((job, fut))
        return fut

    def run_pending(self, client: DeviceClient) -> int:
        """Run the queued jobs; a job's DeviceError goes to its Future, never to the monitor."""
        import queue

        done = 0
        while True:
            try:
                job, fut = self._jobs.get_nowait()
            except queue.Empty:
                return done
            if not fut.set_running_or_notify_cancel():
                continue
            done += 1
            try:
                fut.set_result(job(client))
            except DeviceError as exc:
                fut.set_exception(exc)
            except BaseException as exc:  # Ctrl-C inside a job: the job fails, the monitor stops
                fut.set_exception(DeviceError("the monitor stopped"))
                raise exc

    def close(self) -> None:
        """Refuse new jobs and fail those still queued."""
        import queue

        self.closed = True
        while True:
            try:
                _, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(DeviceError("the monitor has stopped"))


def upload_job(rgb: Any) -> "Callable[[DeviceClient], Any]":
    """A :class:`MonitorControl` job: upload ``rgb`` (the existing ``infer`` path); its result
    also goes back into the stream, so the monitor counts it and --csv/--json record it."""

    def job(client: DeviceClient) -> Any:
        rec = client.infer_rgb(rgb)
        client.hand_back(rec)
        return rec

    return job


def command_job(name: str, *args: int | str) -> "Callable[[DeviceClient], Any]":
    """A :class:`MonitorControl` job: one command, waiting for its ``ack``."""
    return lambda client: client.command(name, *args)


def bench_job(n: int, warmup: int) -> "Callable[[DeviceClient], Any]":
    """A :class:`MonitorControl` job: ``bench n warmup``, returning the :class:`BenchRun`."""
    return lambda client: client.bench_collect(n, warmup)


@dataclass
class MonitorSummary:
    port: str
    results: int = 0
    lost: int = 0  # gaps in result sequence numbers
    reconnects: int = 0  # times the port came back after it vanished
    disconnects: int = 0  # times the port vanished (one more than reconnects when it never returned)
    panics: int = 0
    seconds: float = 0.0  # the whole session, connecting included
    fps: float = 0.0  # (results - 1) / span_s; 0 with fewer than two results
    span_s: float = 0.0  # first to last result
    invoke_ms: dict[str, float] = field(default_factory=dict)
    pre_ms: dict[str, float] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    samples_right: int = 0
    samples_wrong: int = 0
    parser: dict[str, int] = field(default_factory=dict)
    simulated: bool | None = None
    device: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _ms_stats(values) -> dict[str, float]:
    if not values:
        return {}
    s = latency_stats(values)
    return {k: getattr(s, k) for k in ("mean", "p50", "p90", "p99", "min", "max")}


class MonitorSession:
    """State of one monitor run (readable by sinks while it runs)."""

    def __init__(self, port: str, window: int = 200) -> None:
        self.port = port
        self.invoke = RollingStats(window)
        self.pre = RollingStats(window)
        self.rate = RateMeter(window_s=5.0)
        # every latency of the run for the summary's percentiles (8 bytes each)
        self.all_invoke_ms = array("d")
        self.all_pre_ms = array("d")
        self.classes: Counter[str] = Counter()
        self.logs: deque[str] = deque(maxlen=LOG_TAIL)
        self.latest: Any = None
        self.hello: Any = None
        self.results = 0
        self.lost = 0
        self.reconnects = 0
        self.disconnects = 0
        self.panics = 0
        self.samples_right = 0  # results on built-in samples of known label
        self.samples_wrong = 0
        self._last_seq: int | None = None
        self.started = time.monotonic()
        self.stream_stats: Any = None  # the link's parser counters (damaged, cut, overlong lines)
        self.inputs: Any = None  # the InputAssembler (.broken: input tensors that lost a piece)

    def add_result(self, r: Any) -> None:
        if self._last_seq is not None and r.seq > self._last_seq + 1:
            self.lost += r.seq - self._last_seq - 1
        # seq <= last: the device rebooted and counts from 0 again
        self._last_seq = r.seq
        self.latest = r
        self.results += 1
        inv, pre = r.invoke_us / 1000.0, r.pre_us / 1000.0
        self.invoke.add(inv)
        self.pre.add(pre)
        self.all_invoke_ms.append(inv)
        self.all_pre_ms.append(pre)
        self.rate.tick()
        self.classes[r.label] += 1
        v = sample_verdict(r, self.hello)
        if v is not None and v.correct is not None:
            self.samples_right += v.correct
            self.samples_wrong += not v.correct

    def device_rebooted(self) -> None:
        self._last_seq = None

    def summary(self, parser_stats: dict[str, int] | None = None) -> MonitorSummary:
        hello = self.hello
        return MonitorSummary(
            port=self.port,
            results=self.results,
            lost=self.lost,
            reconnects=self.reconnects,
            disconnects=self.disconnects,
            panics=self.panics,
            seconds=time.monotonic() - self.started,
            fps=self.rate.overall(),
            span_s=(self.rate.latest - self.rate.first) if self.rate.first is not None else 0.0,
            invoke_ms=_ms_stats(self.all_invoke_ms),
            pre_ms=_ms_stats(self.all_pre_ms),
            classes=dict(self.classes),
            samples_right=self.samples_right,
            samples_wrong=self.samples_wrong,
            parser=dict(parser_stats or {}),
            simulated=(self.latest.simulated if self.latest is not None else getattr(hello, "simulated", None)),
            device=(
                {k: getattr(hello, k) for k in ("board", "fw", "model", "model_sha256", "idf", "tflm", "esp_nn", "cpu_mhz", "arena_used", "arena_in", "heap_internal", "heap_psram", "camera", "tx_dropped")}
                if hello is not None
                else {}
            ),
        )


@dataclass(frozen=True)
class SampleVerdict:
    """A result on a built-in sample, checked against the true label the device's hello gives."""

    name: str
    truth: str | None  # None: the sample's name gives no label
    correct: bool | None


def sample_verdict(r: Any, hello: Any) -> SampleVerdict | None:
    """The built-in sample behind result ``r`` and whether the model got it right (None for
    uploads, the camera, or a device whose hello does not name its samples)."""
    if r.source != "sample" or hello is None:
        return None
    info = hello.sample_info(r.sample)
    if info is None:
        return None
    name, truth = info
    if truth < 0:
        return SampleVerdict(name, None, None)
    return SampleVerdict(name, hello.labels[truth], r.class_index == truth)


def result_row(r: Any, hello: Any = None) -> dict[str, Any]:
    """One result as a flat dict for --json / --csv (protocol key names, plus the built-in
    sample's name, true label and verdict when the input was one)."""

    row = record_to_dict(r)
    row["confidence"] = round(r.confidence, 4) if not math.isnan(r.confidence) else None
    v = sample_verdict(r, hello)
    row["sample_name"] = v.name if v else None
    row["truth"] = v.truth if v else None
    row["correct"] = v.correct if v else None
    row["t"] = round(time.time(), 3)
    return row


# --csv columns: a run id (appended runs stay apart; seq restarts with every device boot),
# then one probability and one score column per class, named from the device's labels.
CSV_HEAD = ("run", "t", "seq", "source", "sample", "sample_name", "truth", "correct", "class", "label", "confidence")
CSV_TAIL = ("pre_us", "invoke_us", "simulated")


def csv_fields(labels: "tuple[str, ...] | list[str]") -> tuple[str, ...]:
    return (*CSV_HEAD, *(f"p_{lab}" for lab in labels), *(f"score_{lab}" for lab in labels), *CSV_TAIL)


def csv_row(row: dict[str, Any], labels: "tuple[str, ...] | list[str]", run: str) -> dict[str, Any]:
    """A :func:`result_row` spread over :func:`csv_fields` (a missing class value stays empty)."""
    out: dict[str, Any] = {k: row.get(k) for k in CSV_HEAD}
    out["run"] = run
    probs, scores = list(row.get("probs") or ()), list(row.get("scores") or ())
    for i, lab in enumerate(labels):
        out[f"p_{lab}"] = probs[i] if i < len(probs) else None
        out[f"score_{lab}"] = scores[i] if i < len(scores) else None
    out.update({k: row.get(k) for k in CSV_TAIL})
    return out


def json_row(row: dict[str, Any], labels: "tuple[str, ...] | list[str]", run: str) -> dict[str, Any]:
    """A :func:`result_row` for ``--json``: every field of the ``--csv`` row (the run id,
    ``p_<label>``, ``score_<label>``) and the protocol's own lists (``probs``, ``scores``)."""
    return {**csv_row(row, labels, run), **row}


def row_labels(hello: Any, row: dict[str, Any]) -> tuple[str, ...]:
    """The class names of a result's columns: the device's labels, else class_0, class_1, ..."""
    if hello is not None and getattr(hello, "labels", None):
        return tuple(hello.labels)
    return tuple(f"class_{i}" for i in range(len(row.get("probs") or ())))


def new_run_id() -> str:
    """UTC start time plus a random suffix: sortable, and unique for runs started in one second."""
    import secrets

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class _AtomicRecords:
    """Ctrl-C between records, never inside one: a SIGINT that arrives while a record is being
    counted and shown is held until it is done, so the summary counts exactly what was shown.
    Elsewhere (reads, reconnect waits) it interrupts at once, and a second Ctrl-C while the
    session winds down is ignored (gendertool.errors: the one Ctrl-C policy). Only the main
    thread can hold it."""

    def __init__(self) -> None:
        self._handled = ctrl_c_handled()
        self._record: ctrl_c_waits | None = None

    def install(self) -> None:
        self._handled.__enter__()

    def restore(self) -> None:
        self._handled.__exit__(None, None, None)

    def __enter__(self) -> None:
        self._record = ctrl_c_waits()
        self._record.__enter__()

    def __exit__(self, exc_type, *exc: object) -> None:
        self._record.__exit__(exc_type, *exc)


def _open(port: str):

    return open_port(port)




# What an ESP32 ROM bootloader prints (esp-rom: "ESP-ROM:esp32s3-20210327", "rst:0x1 (POWERON),boot:0x0
# (DOWNLOAD(USB/UART0))", "waiting for download"): the chip is there, the gendertool firmware is not running.
_ROM_BANNER = re.compile(r"ESP-ROM:\S+|rst:0x[0-9a-f]+ \([A-Z_]+\)|waiting for download")


class StreamSeen:
    """What a port sent that was not a record, to say what it is when no record comes.

    One per stretch without a valid record: the monitor starts a new one at every record, so a
    banner seen at boot is not blamed for garbled records twenty results later.
    """

    def __init__(self) -> None:
        self.lines = 0
        self.chars = 0
        self.odd_chars = 0  # controls (tab and ESC aside: colour logs use it) and undecodable bytes
        self.escapes = 0
        self.rom: str | None = None
        self.download_mode = False
        self.first_text: str | None = None

    def line(self, text: str) -> None:
        self.lines += 1
        self.chars += len(text)
        odd = sum(1 for c in text if (c < " " and c not in "\t\x1b") or "\x7f" <= c <= "\x9f" or c == "\ufffd")
        self.odd_chars += odd
        self.escapes += text.count("\x1b")
        m = _ROM_BANNER.search(text)
        if m:
            if m.group().startswith("waiting for download"):
                self.download_mode = True
            elif m.group().startswith("ESP-ROM") or self.rom is None:
                self.rom = m.group()
        if self.first_text is None and text.strip() and odd <= len(text) // 10:
            self.first_text = text.strip()

    def describe(self, stats: dict[str, int]) -> str:
        total = stats.get("bytes", 0)
        damaged = stats.get("bad_crc", 0) + stats.get("bad_frame", 0) + stats.get("bad_record", 0)
        if total == 0:
            return "nothing"
        if self.download_mode:
            what = ("an ESP32 ROM bootloader waiting for download (the chip is in download mode): "
                    "reset it into its app, or `gendertool flash` it")
        elif self.rom is not None:
            what = f"an ESP32 ROM bootloader banner ({self.rom}) and no gendertool firmware after it: flash it"
        elif damaged and self.lines == 0:
            return (f"only damaged records ({damaged} with a bad checksum or frame, {total} bytes): the link "
                    "garbles them (cable, USB hub, a baud rate that drifts)")
        elif self.lines == 0:  # every line too long to keep: what it held is unknown
            what = (f"{total} bytes and no complete line ({stats.get('overlong', 0)} lines longer than {MAX_LINE} "
                    "bytes dropped): a wrong baud rate, or not a gendertool firmware")
        elif self.odd_chars * 10 > self.chars:
            what = (f"binary noise ({total} bytes, {stats.get('overlong', 0)} overlong lines, {self.odd_chars} "
                    "control or undecodable characters): a wrong baud rate, or not a gendertool firmware")
        else:

            extra = f", {stats['overlong']} overlong lines dropped" if stats.get("overlong") else ""
            extra += f", {self.escapes} escape sequences (shown escaped)" if self.escapes else ""
            what = (f"text without records ({self.lines} lines, {total} bytes{extra}; first: "
                    f"\"{shown_line(self.first_text or '', 60)}\"): another firmware?")
        if damaged:
            what += f"; {damaged} damaged record line(s) (bad checksum or frame)"
        return what


def check_options(*, count: int | None = None, timeout: float = DEFAULT_TIMEOUT_S, source: str | None = None,
                  no_record_timeout: float = DEFAULT_NO_RECORD_S) -> None:
    """The monitor's option checks, also made by the CLI before it opens any output file."""
    if count is not None and count < 1:
        raise GendertoolError(f"--count must be at least 1, got {count}")
    if not (math.isfinite(timeout) and timeout > 0):  # nan compares false: it would wait forever
        raise GendertoolError(f"--timeout must be positive and finite (seconds), got {timeout}")
    if not (math.isfinite(no_record_timeout) and no_record_timeout > 0):
        raise GendertoolError(f"--no-record-timeout must be positive and finite (seconds), got {no_record_timeout}")
    if source is not None and source not in ("sample", "camera"):  # upload: nothing would arrive to show
        raise GendertoolError(f"--source must be sample or camera, not {source!r}")


def run_monitor(
    port: str,
    sink: MonitorSink,
    *,
    count: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    source: str | None = None,
    elf: str | Path | None = None,
    opener: Callable[[str], Any] | None = None,
    toolchain_prefix: str = TOOLCHAIN_PREFIX,
    clock: Callable[[], float] = time.monotonic,
    no_record_timeout: float = DEFAULT_NO_RECORD_S,
    control: MonitorControl | None = None,
    panic: bool = False,
) -> MonitorSummary:
    """Follow ``port`` until ``count`` results, Ctrl-C, or a failure (then ``summary.error``).

    ``timeout``: how long the port may stay away (unplug, reset) and how long the device
    may stay silent before the monitor gives up. ``panic``: once connected, send the
    ``panic`` test command (the device aborts, its dump is decoded, it reboots; the monitor
    follows it back). ``no_record_timeout``: how long a port may
    send bytes without one valid record (noise, another firmware, a ROM bootloader, a flood
    of log lines) before the monitor stops, saying what it saw. Log lines reach the sink
    escaped (gendertool.text) and at most SHOWN_LINE characters long. ``control``: jobs from
    other threads (the web page's commands and uploads), run here between reads.
    """


    check_options(count=count, timeout=timeout, source=source, no_record_timeout=no_record_timeout)
    session = MonitorSession(port)
    seen = StreamSeen()
    panics = PanicTracker(PanicDecoder(elf, toolchain_prefix), sink, session)
    we_started = False
    last_data = last_record = clock()
    bytes_seen = 0  # the stream's byte count at the last look: bytes without a newline are data too
    at_record: dict[str, int] = {}  # the stream's counters at the last valid record
    last_tick = 0.0
    info_reply_due = False

    def send(name: str, *args: str) -> None:
        try:
            client.send(name, *args)
        except DeviceError:
            pass  # gone again already: the next read starts another wait

    def on_event(ev: LinkEvent) -> None:
        # The XIAO's USB-Serial-JTAG port disappears on every reset: the client waits for it.
        nonlocal last_data, last_record
        if ev.kind == "disconnected":
            panics.flush()
            session.disconnects += 1
        else:
            session.reconnects += 1
            last_data = last_record = clock()
            send("info")
        sink.link(ev, session)

    def on_hello(h: Any) -> None:
        nonlocal we_started, info_reply_due, panic_due
        boot = not info_reply_due  # a hello that does not answer our `info` comes from a (re)boot
        info_reply_due = False
        previous = session.hello
        if boot and previous is not None:
            session.device_rebooted()
            sink.status(f"{port}: the device rebooted")
        session.hello = h
        if previous is None or (previous.fw, previous.model_sha256, previous.board) != (h.fw, h.model_sha256, h.board):
            sink.hello(h)
        if boot:
            sink.device_booted(h)
        if h.proto != PROTO_VERSION:
            raise DeviceError(
                f"the device speaks protocol version {h.proto}; this gendertool knows version {PROTO_VERSION}: update one of them"
            )
        if source is not None and h.source != source:
            send("source", source)
        if not h.running:
            send("start")
            we_started = True
        if panic_due:
            panic_due = False
            send("panic")

    panic_due = panic  # once: after the reboot it caused, the monitor only follows
    # DeviceError (missing/busy/permission) propagates
    client = DeviceClient((opener or _open)(port), reconnect_timeout=timeout, on_event=on_event)
    session.stream_stats = client.stats
    inputs = InputAssembler()
    session.inputs = inputs
    error: str | None = None
    interrupted = False
    atomic = _AtomicRecords()
    atomic.install()
    try:
        client.send("info")
        while count is None or session.results < count:
            try:
                items = client.poll(READ_SLICE_S)
            except LinkLost as gone:
                raise DeviceError(f"{gone}; giving up (raise --timeout to wait longer)") from None
            now = clock()
            if client.stats.bytes != bytes_seen:  # a line still being received counts as data
                bytes_seen = client.stats.bytes
                last_data = now
            for item in items:
                if isinstance(item, LinkEvent):
                    continue  # said by on_event as it happened
                last_data = now
                if isinstance(item, LogLine):
                    seen.line(item.text)
                    shown = shown_line(item.text, SHOWN_LINE)
                    session.logs.append(shown)
                    sink.log(shown)
                    panics.line(item.text)
                    continue
                last_record = now
                seen, at_record = StreamSeen(), client.stats.as_dict()  # what follows is described afresh
                panics.flush()
                if isinstance(item, Result):
                    with atomic:
                        session.add_result(item)
                        sink.result(item, session)
                    if count is not None and session.results >= count:
                        break
                elif isinstance(item, InputChunk):  # the input tensor of the next result, in pieces
                    whole = inputs.feed(item)
                    if whole is not None:
                        sink.input_tensor(*whole)
                elif isinstance(item, Hello):
                    on_hello(item)
                elif isinstance(item, ErrorRecord):
                    sink.device_error(item)
                    if item.cmd == "source" and source is not None:
                        raise DeviceError(f"the device refused --source {source}: {item.message} ({item.code})")
                elif isinstance(item, Ack) and item.cmd == "info":
                    info_reply_due = True
            if control is not None and control.run_pending(client):
                now = last_data = clock()  # a bench or upload kept the device busy, not silent
            if now - last_data > timeout:
                raise DeviceError(
                    f"no data from {port} for {timeout:g} s; is the gendertool firmware running? "
                    "(`gendertool flash`, or raise --timeout)"
                )
            if now - last_record > no_record_timeout:
                stats = {k: max(0, v - at_record.get(k, 0)) for k, v in client.stats.as_dict().items()}
                if session.hello is None:
                    raise DeviceError(
                        f"{port} is not speaking the gendertool protocol: no valid record in {no_record_timeout:g} s; "
                        f"it sent {seen.describe(stats)} (raise --no-record-timeout to wait longer)")
                raise DeviceError(
                    f"{port} answered as a gendertool device but sent no record for {no_record_timeout:g} s; "
                    f"meanwhile it sent {seen.describe(stats)} (raise --no-record-timeout to wait longer)")
            if now - last_tick >= 0.1:
                last_tick = now
                sink.tick(session)
    except KeyboardInterrupt:
        interrupted = True
    except GendertoolError as exc:  # the device, or the sink that could not save a result (a full disk)
        error = str(exc)
    finally:
        try:
            if control is not None:
                control.close()
                if session.hello is not None:
                    control.run_at_end(client)
            panics.flush()
            if we_started:
                send("stop")  # a courtesy: the port may be gone
            client.close()
        finally:
            atomic.restore()  # after the clean-up: a second Ctrl-C cannot cut it

    summary = session.summary(client.stats.as_dict())
    summary.interrupted = interrupted
    summary.error = error
    sink.ended(summary)
    return summary
