"""DeviceClient: commands out, records in (docs/protocol.md), over a Transport.

One client per port. Records and log lines that arrive while a command waits for its reply
are kept (bounded) and handed out by :meth:`DeviceClient.records` afterwards, so a monitor
loses nothing. When the port drops (the XIAO's USB port vanishes on every reset) the client
reopens it, up to ``reconnect_timeout`` seconds, and says so through :class:`LinkEvent`.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from gendertool import protocol as p
from gendertool.device.transport import PortVanished, Transport, open_port
from gendertool.errors import DeviceError
from gendertool.text import count, reason

if TYPE_CHECKING:
    import numpy as np


ACK_TIMEOUT = 2.0
INFO_TIMEOUT = 2.0
INFER_TIMEOUT = 10.0
STEP_TIMEOUT = 10.0  # between bench / profile / selftest records (a device sends `progress` about every second)
SELFTEST_TIMEOUT = 30.0
RESET_TIMEOUT = 10.0
BACKLOG = 20000


@dataclass(frozen=True)
class LinkEvent:
    """Something about the link itself: ``kind`` is "disconnected" or "reconnected"."""

    kind: str
    message: str




def check_busy(port: str, item: object) -> None:
    """The virtual device's ``error busy`` (another client is connected) as a DeviceError."""
    if isinstance(item, p.ErrorRecord) and item.code == p.BUSY:
        raise DeviceError(f"port {port} is busy ({item.message})")


class DeviceCommandError(DeviceError):
    """The device refused a command with an ``error`` record."""

    def __init__(self, record: p.ErrorRecord) -> None:
        super().__init__(f"device refused `{record.cmd}`: {record.code}: {record.message}")
        self.record = record
        self.code = record.code


class ReplyTimeout(DeviceError):
    """An awaited reply did not come in time; the reply may still arrive later."""


class LinkLost(DeviceError):
    """The port dropped during an operation; ``received`` says how much had arrived."""

    def __init__(self, message: str, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


@dataclass
class BenchRun:
    """What a benchmark produced: per run, ``pre_us[k]`` and ``invoke_us[k]`` (same length).
    ``error`` is set when it ended early (samples kept)."""

    n: int
    warmup: int
    pre_us: list[int] = field(default_factory=list)
    invoke_us: list[int] = field(default_factory=list)
    summary: p.BenchSummary | None = None
    error: str | None = None
    simulated: bool = False

    @property
    def complete(self) -> bool:
        return self.summary is not None and len(self.invoke_us) == self.summary.n == self.n


def _ends_upload(r: object) -> bool:
    """The device's last word on an upload: its result, or an error answering ``infer``."""
    return (isinstance(r, p.Result) and r.source == "upload") or (isinstance(r, p.ErrorRecord) and r.cmd == "infer")


class DeviceClient:
    """Talk to a gendertool firmware (or the virtual device) over ``transport``."""

    def __init__(
        self,
        transport: Transport,
        *,
        reconnect_timeout: float = RESET_TIMEOUT,
        max_line: int = p.MAX_LINE,
        on_event: Callable[[LinkEvent], None] | None = None,
        log_lines: int = 500,
    ) -> None:
        self.transport = transport
        self.parser = p.StreamParser(max_line=max_line)
        self.reconnect_timeout = reconnect_timeout
        self.on_event = on_event
        self.logs: deque[p.LogLine] = deque(maxlen=log_lines)
        self.hello: p.Hello | None = None
        self.backlog_dropped = 0
        self._backlog: deque = deque()
        self._fresh: deque = deque()  # read after the current command's reply, not yet examined
        self._events: deque[LinkEvent] = deque()
        # the command whose reply timed out: its late reply (or a device still waiting for an
        # upload's bytes) must not be taken for the next command's, see _resync()
        self._unsynced: str | None = None
        self._upload_may_pend = False  # that command was an `infer`

    @classmethod
    def open(cls, port: str, *, baudrate: int = 115200, sim_options: dict | None = None, **kwargs) -> "DeviceClient":
        return cls(open_port(port, baudrate=baudrate, sim_options=sim_options), **kwargs)

    @property
    def port(self) -> str:
        return self.transport.port

    @property
    def stats(self) -> p.StreamStats:
        return self.parser.stats

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> "DeviceClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------
    # receiving

    def _reconnect(self, why: str) -> None:
        self.parser.reset()
        self._emit(LinkEvent(
            "disconnected", f"{why}; waiting up to {self.reconnect_timeout:g} s for {self.port} to come back"))
        try:
            self.transport.reconnect(self.reconnect_timeout)
        except DeviceError as exc:
            raise LinkLost(str(exc)) from None
        self._emit(LinkEvent("reconnected", f"{self.port} is back; reconnected"))

    def _emit(self, ev: LinkEvent) -> None:
        self._events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def _read(self, timeout: float | None, reconnect: bool) -> list:
        """One read: parsed items (possibly empty). Handles a dropped port."""
        try:
            data = self.transport.read(timeout)
        except PortVanished as exc:
            if not reconnect:
                self.parser.reset()
                raise
            self._reconnect(str(exc))
            return []
        items = self.parser.feed(data) if data else []
        for it in items:
            if isinstance(it, p.LogLine):
                self.logs.append(it)
            elif isinstance(it, p.Hello):
                self.hello = it
            else:
                check_busy(self.port, it)
        return items

    def _stash(self, items) -> None:
        for it in items:
            if len(self._backlog) >= BACKLOG:
                self._backlog.popleft()
                self.backlog_dropped += 1
            self._backlog.append(it)

    def poll(self, timeout: float | None = 0.1, *, reconnect: bool = True) -> list:
        """Everything that arrived (backlog first), waiting up to ``timeout`` s for new bytes."""
        self._stash(self._fresh)
        self._fresh.clear()
        out = list(self._backlog)
        self._backlog.clear()
        out.extend(self._drain_events())
        if out:
            timeout = 0
        out.extend(self._read(timeout, reconnect))
        out.extend(self._drain_events())
        return out

    def hand_back(self, item: object) -> None:
        """Put a record a command returned (an upload's ``result``) back into the stream, after
        what arrived before it and before what arrived after it, so that a follower reading
        :meth:`poll` (the monitor) sees every record once and in order."""
        self._stash([item])

    def boot_selftest(self) -> p.SelfTest | None:
        """The firmware's boot self-test record if it arrived since connecting (drains what is pending)."""
        found = [it for it in self.poll(0) if isinstance(it, p.SelfTest)]
        return found[-1] if found else None

    def _drain_events(self) -> list[LinkEvent]:
        evs = list(self._events)
        self._events.clear()
        return evs

    def records(self, timeout: float | None = None, *, reconnect: bool = True) -> Iterator:
        """Yield records, log lines and LinkEvents as they arrive, for ``timeout`` s (None: forever).

        A dropped port is reopened (LinkEvents say so); DeviceError if it does not come back
        within ``reconnect_timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            batch = deque(self.poll(0.5 if left is None else min(left, 0.5), reconnect=reconnect))
            try:
                while batch:
                    yield batch.popleft()
            finally:
                # a consumer that stops part way leaves the rest for the next poll()/records()
                self._backlog.extendleft(reversed(batch))

    # ----------------------------------------------------------------------------------
    # commands

    def send(self, name: str, *args: int | str) -> None:
        """Send a command without waiting: its reply arrives through :meth:`poll` / :meth:`records`."""
        self._send(p.encode_command(name, *args))

    def _send(self, line: bytes) -> None:
        self._stash(self._fresh)
        self._fresh.clear()
        try:
            self.transport.write(line)
        except PortVanished as exc:
            raise LinkLost(f"{self.port}: {exc}") from None

    def _wait(self, want: Callable[[object], bool], timeout: float, what: str, *, received: int = 0,
              restarting: bool = False):
        """The first item matching ``want``; everything else goes to the backlog.

        ``restarting``: the device is rebooting, so a vanished port is waited for (within
        ``timeout``) instead of ending the wait with LinkLost.
        """
        while self._fresh:
            it = self._fresh.popleft()
            if want(it):
                return it
            self._stash([it])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._unsynced = self._unsynced or what
                raise ReplyTimeout(f"no {what} from {self.port} within {timeout:g} s (is the gendertool firmware running?)")
            try:
                items = self._read(min(left, 0.5), reconnect=False)
            except PortVanished as exc:
                if not restarting:
                    why = reason(str(exc), self.port)  # exc names the port already
                    raise LinkLost(f"{self.port} disconnected while waiting for {what}" + (f" ({why})" if why else ""),
                                   received) from None
                self._emit(LinkEvent("disconnected", f"{exc}; waiting for the device to restart"))
                self.transport.reconnect(max(left, 0.5))
                self._emit(LinkEvent("reconnected", f"{self.port} is back"))
                continue
            for i, it in enumerate(items):
                if want(it):
                    self._fresh.extend(items[i + 1 :])
                    return it
                self._stash([it])

    def command(self, name: str, *args: int | str, timeout: float = ACK_TIMEOUT) -> p.Ack:
        """Send one command and wait for its ``ack``; DeviceCommandError on an ``error`` reply."""
        self._send_command(p.encode_command(name, *args))
        return self._expect_ack(name, timeout)

    def _send_command(self, line: bytes) -> None:
        if self._unsynced is not None:
            self._resync()
        self._send(line)

    def _resync(self) -> None:
        """Get back in step after a reply timed out, before the next command goes out.

        Replies carry no request id, so a late ``ack``/``result`` would answer the next command
        of the same kind, and a device that acknowledged an ``infer`` late takes the next
        command's bytes as upload payload. So: let a pending upload run out (the device drops it
        ``UPLOAD_IDLE_MS`` after its last byte), then send a barrier with a fresh token
        (docs/protocol.md §4); the device answers lines in order, so once the barrier's reply
        is in, every late reply has arrived before it (kept in the backlog, never matched to a
        later command).
        """
        idle = p.UPLOAD_IDLE_MS / 1000 + 0.5
        until = time.monotonic() + (idle if self._upload_may_pend else 0.0)
        while (left := until - time.monotonic()) > 0:
            try:
                items = self._read(min(left, 0.5), reconnect=False)
            except PortVanished as exc:
                why = reason(str(exc), self.port)
                raise LinkLost(f"{self.port} disconnected" + (f" ({why})" if why else "")) from None
            for it in items:
                self._stash([it])
                if isinstance(it, p.Ack) and it.cmd == "infer":
                    until = time.monotonic() + idle  # a late ack: the device now waits for a payload
                elif _ends_upload(it):
                    until = 0.0
        token = f"sync{secrets.randbits(32):08x}"
        self._send(p.encode_sync(token))
        try:
            self._wait(lambda r: isinstance(r, p.ErrorRecord) and r.cmd == token, ACK_TIMEOUT, f"reply to `{token}`")
        except ReplyTimeout:
            raise DeviceError(
                f"{self.port} is out of step after an earlier timeout ({self._unsynced}) and did not answer "
                f"within {ACK_TIMEOUT:g} s; try again, or reset the device"
            ) from None
        self._unsynced, self._upload_may_pend = None, False

    def _expect_ack(self, name: str, timeout: float) -> p.Ack:
        rec = self._wait(
            lambda r: isinstance(r, (p.Ack, p.ErrorRecord)) and r.cmd == name, timeout, f"reply to `{name}`"
        )
        if isinstance(rec, p.ErrorRecord):
            raise DeviceCommandError(rec)
        return rec

    def ping(self, timeout: float = ACK_TIMEOUT) -> None:
        self.command("ping", timeout=timeout)

    def info(self, timeout: float = INFO_TIMEOUT) -> p.Hello:
        """Ask for the ``hello`` record; refuses a device that speaks another protocol version.

        ``info <version>`` tells the device the host's version: a firmware of another version 2+
        answers ``error proto_mismatch``; a version 1 firmware refuses the argument (``bad_args``).
        """
        try:
            self.command("info", p.PROTO_VERSION, timeout=timeout)
        except DeviceCommandError as exc:
            if exc.code == "bad_args":
                raise DeviceError(
                    f"{self.port} runs a firmware older than protocol v{p.PROTO_VERSION} (it refused `info "
                    f"{p.PROTO_VERSION}`): rebuild and flash the firmware with this gendertool") from None
            if exc.code == "proto_mismatch":
                raise DeviceError(f"{self.port}: {exc.record.message}") from None
            raise
        hello = self._wait(lambda r: isinstance(r, p.Hello), timeout, "hello record")
        if hello.proto != p.PROTO_VERSION:
            raise DeviceError(
                f"{self.port} speaks protocol v{hello.proto}, this gendertool speaks v{p.PROTO_VERSION}: "
                f"rebuild and flash the firmware with this gendertool"
            )
        return hello

    def set_input(self, every: int | None = None) -> None:
        """Ask for the int8 input tensor: of the next result (``every`` None), or of every
        ``every``-th result (0: never). The ``input`` records come before their result."""
        if every is None:
            self.command("input", "once")
        elif 0 <= every <= p.INPUT_EVERY_MAX:
            self.command("input", every)
        else:
            raise DeviceError(f"input every {every}: choose 0..{p.INPUT_EVERY_MAX}")

    def start(self) -> None:
        self.command("start")

    def stop(self) -> None:
        self.command("stop")

    def set_source(self, name: str) -> None:
        if name not in p.SOURCES:
            raise DeviceError(f"unknown input source {name!r} (choose from {', '.join(p.SOURCES)})")
        self.command("source", name)

    def infer_rgb(self, rgb: "np.ndarray", timeout: float = INFER_TIMEOUT) -> p.Result:
        """Upload an ``HxWx3`` uint8 image (each side <= 640) and return the device's result."""
        import numpy as np

        arr = np.ascontiguousarray(rgb)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise DeviceError(f"infer_rgb needs an HxWx3 uint8 image, got {arr.shape} {arr.dtype}")
        h, w = arr.shape[:2]
        if not (1 <= w <= p.MAX_UPLOAD_SIDE and 1 <= h <= p.MAX_UPLOAD_SIDE):
            raise DeviceError(f"image {w}x{h} is larger than the device accepts ({p.MAX_UPLOAD_SIDE}x{p.MAX_UPLOAD_SIDE})")
        payload = arr.tobytes()
        self._send_command(p.encode_infer(w, h, payload))
        try:
            self._expect_ack("infer", ACK_TIMEOUT)
            self._send(payload)
            rec = self._wait(_ends_upload, timeout, "result for the uploaded image")
        except ReplyTimeout:
            self._upload_may_pend = True
            raise
        if isinstance(rec, p.ErrorRecord):
            raise DeviceCommandError(rec)
        return rec

    def bench(self, n: int, warmup: int = 10, *, timeout: float = STEP_TIMEOUT) -> Iterator[p.BenchSample | p.BenchSummary]:
        """Run ``bench n warmup``; yield each ``bsample`` and finally the ``bsummary``.

        A dropped port raises LinkLost whose ``received`` counts the samples that arrived
        (all of them were yielded before).
        """
        bad_before = self.parser.stats.bad_record
        self.command("bench", n, warmup)
        got = 0
        while True:
            try:
                # a `progress` record restarts the wait: a long warm-up is not a silent device
                rec = self._wait(
                    lambda r: isinstance(r, (p.BenchSample, p.BenchSummary))
                    or (isinstance(r, (p.ErrorRecord, p.Progress)) and r.cmd == "bench"),
                    timeout,
                    f"benchmark sample {got + 1}/{n}",
                    received=got,
                )
            except LinkLost:
                raise
            except DeviceError as exc:
                bad = self.parser.stats.bad_record - bad_before
                if bad:  # e.g. bsample records without pre_us from a firmware older than this host
                    raise DeviceError(f"{exc}; {count(bad, 'malformed record')} arrived meanwhile: rebuild and flash the "
                                      "firmware with this gendertool") from None
                raise
            if isinstance(rec, p.ErrorRecord):
                raise DeviceCommandError(rec)
            if isinstance(rec, p.Progress):
                continue
            yield rec
            if isinstance(rec, p.BenchSummary):
                return
            got += len(rec.invoke_us)

    def bench_collect(self, n: int, warmup: int = 10, *, timeout: float = STEP_TIMEOUT) -> BenchRun:
        """Run a benchmark and collect every sample; ends early (``error`` set) instead of raising."""
        run = BenchRun(n, warmup)
        slots: dict[int, tuple[int, int]] = {}
        try:
            for rec in self.bench(n, warmup, timeout=timeout):
                run.simulated = run.simulated or rec.simulated
                if isinstance(rec, p.BenchSample):
                    for i, times in enumerate(zip(rec.pre_us, rec.invoke_us)):
                        slots[rec.first + i] = times
                else:
                    run.summary = rec
        except DeviceError as exc:
            run.error = f"{exc} (kept {len(slots)} of {n} samples)"
        ordered = [slots[i] for i in sorted(slots)]
        run.pre_us = [pre for pre, _ in ordered]
        run.invoke_us = [inv for _, inv in ordered]
        if run.error is None and run.summary is not None and len(run.invoke_us) != run.summary.n:
            run.error = f"lost {run.summary.n - len(run.invoke_us)} of {run.summary.n} samples on the link"
        return run

    def profile(self, timeout: float = STEP_TIMEOUT) -> tuple[list[p.ProfileOp], p.ProfileSummary]:
        """One profiled invoke: the per-node records and the summary."""
        self.command("profile")
        ops: list[p.ProfileOp] = []
        while True:
            rec = self._wait(
                lambda r: isinstance(r, (p.ProfileOp, p.ProfileSummary)) or (isinstance(r, p.ErrorRecord) and r.cmd == "profile"),
                timeout,
                "profile record",
                received=len(ops),
            )
            if isinstance(rec, p.ErrorRecord):
                raise DeviceCommandError(rec)
            if isinstance(rec, p.ProfileSummary):
                if rec.nodes != len(ops):
                    raise DeviceError(f"profile: device sent {rec.nodes} operators, {len(ops)} arrived")
                return ops, rec
            ops.append(rec)

    def selftest(self, timeout: float = SELFTEST_TIMEOUT) -> p.SelfTest:
        self.command("selftest")
        while True:
            rec = self._wait(
                lambda r: isinstance(r, p.SelfTest) or (isinstance(r, (p.ErrorRecord, p.Progress)) and r.cmd == "selftest"),
                timeout,
                "self-test result",
            )
            if not isinstance(rec, p.Progress):
                break
        if isinstance(rec, p.ErrorRecord):
            raise DeviceCommandError(rec)
        return rec

    def reset(self, timeout: float = RESET_TIMEOUT) -> p.Hello:
        """Restart the device and wait for its ``hello`` (through the port vanishing and returning)."""
        self.command("reset")
        self.hello = None
        # a UART console keeps the connection, so the hello may be among what arrived already
        hello = self._wait(lambda r: isinstance(r, p.Hello), timeout, "hello after reset", restarting=True)
        self.hello = hello
        return hello
