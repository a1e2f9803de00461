"""The virtual device: the firmware's serial protocol (docs/protocol.md), served over TCP.

It behaves like the firmware at the protocol level: boot log lines, ``hello``, a boot
``selftest``, a continuous ``result`` stream from the built-in sample images (the same
files the firmware embeds, firmware/samples/), uploads run through the TFLM host runtime
with the reference preprocessing, ``bench``, ``profile`` and errors. Every record says
``simulated: true``: latencies are this computer's, never a board's. The TFLM Python
runtime has no per-operator profiler, so ``profile`` splits one measured invoke over the
nodes by their MAC share and marks every figure ``estimated``.

Fault injection (:class:`SimFaults`) exercises the host's parser and link: garbage bytes,
resets in the middle of a record, corrupted checksums, disconnects and slow replies; and the
host's verdicts: scores off by one, wrong classes, a failing self-test, skipped warm-ups,
swapped timings (``gendertool sim --fault NAME``).
"""

from __future__ import annotations

import math
import random
import select
import errno
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gendertool import __version__
from gendertool import protocol as p
from gendertool.errors import DeviceError
from gendertool.model.flatbuffer import op_macs, op_name
from gendertool.model.info import ModelInfo, load_model
from gendertool.model.preprocess import (
    crop_resize,
    list_images,
    load_rgb,
    quant_lut,
    quantize,
    rgb565be_to_rgb,
    rgb_to_rgb565be,
)
from gendertool.model.runtime import TflmRunner, softmax_probs
from gendertool.project.samples import sample_truth
from gendertool.resources import resource_path

if TYPE_CHECKING:
    import numpy as np

    from gendertool.model.info import ModelInfo


BOOT_LOG = (
    b"ESP-ROM:esp32s3-20210327\r\n",
    b"I (25) boot: ESP-IDF (simulated) 2nd stage bootloader\r\n",
    b"I (312) gendertool: virtual device, latency figures are the host's\r\n",
)
DEFAULT_PERIOD_MS = 200
# the firmware's camera frames (camera_provider.cc): FRAMESIZE_QVGA, PIXFORMAT_RGB565
CAMERA_WIDTH, CAMERA_HEIGHT = 320, 240
# the `panic` test command: what ESP-IDF's panic handler prints after abort() (no real ELF)
PANIC_DUMP = (
    b"abort() was called at PC 0x42009e2b on core 1\r\n",
    b"\r\n",
    b"Backtrace: 0x40375a5e:0x3fc98d60 0x4037a8a1:0x3fc98d80 0x42009e2b:0x3fc98df0\r\n",
    b"\r\n",
    b"ELF file SHA256: 0000000000000000\r\n",
    b"\r\n",
    b"Rebooting...\r\n",
)


@dataclass
class SimFaults:
    """Faults to inject, counted in records sent on a connection (0 = never)."""

    garbage_every: int = 0  # garbage bytes (no newline, <= garbage_max) before every Nth record
    garbage_max: int = 48
    reset_every: int = 0  # every Nth record is cut in half by a simulated reset (boot banner follows)
    bad_crc_every: int = 0  # every Nth record goes out with a wrong checksum
    disconnect_after: int = 0  # drop the connection after N records (the USB port vanishing)
    disconnects: int = 1  # how many times disconnect_after applies
    reply_delay_ms: int = 0  # wait before answering each command
    result_delay_ms: int = 0  # wait before an upload's result (after its last byte)
    seed: int = 0
    # a wrong device, so tests can check that the host's verdicts follow what the device sent
    score_off_by_one: bool = False  # every result's first score moves by exactly 1
    wrong_class: bool = False  # every result's scores reversed: the device predicts another class
    selftest_fail: bool = False  # the self-test's first sample comes back wrong (pass: false)
    skip_warmup: bool = False  # bench runs no warm-ups (and says so: bsummary warmup 0)
    swap_timings: bool = False  # bsample records carry pre_us and invoke_us swapped
    # the host stops reading, as the USB-Serial-JTAG driver sees it: after `tx_stall_after`
    # records, for `tx_stall_ms`, nothing leaves; lines go into a `tx_buffer`-byte queue while
    # they fit whole and are dropped whole (counted in hello/bsummary tx_dropped) when they do
    # not, as the firmware's TxQueue does; the queue goes out once the stall ends.
    tx_stall_after: int = 0
    tx_stall_ms: int = 0
    tx_buffer: int = 4096


# `gendertool sim --fault NAME` -> the SimFaults flag it sets
DEVICE_FAULTS = ("score-off-by-one", "wrong-class", "selftest-fail", "skip-warmup", "swap-timings")


@dataclass
class _Sample:
    name: str
    rgb: Any  # HxWx3 uint8
    input_q: Any  # 1xHxWx3 int8
    expect_scores: Any  # int8 [C], from the reference runtime at load time


class SimDevice:
    """Protocol behaviour of the firmware, driven by one connection at a time."""

    def __init__(
        self,
        model: "str | Path | ModelInfo | None" = None,
        *,
        period_ms: int = DEFAULT_PERIOD_MS,
        autostart: bool = True,
        replay: bool = False,
        faults: SimFaults | None = None,
        samples: list[Path] | None = None,
        boot_delay_s: float = 0.1,
        board_timing: "str | float | None" = None,
        camera: "str | Path | None" = None,
    ) -> None:

        self.model: ModelInfo = model if isinstance(model, ModelInfo) else load_model(model, measure_arena=False)
        if len(self.model.input.shape) != 4 or self.model.input.shape[-1] != 3:
            raise DeviceError(f"the virtual device needs a [1,H,W,3] image model, got {self.model.input.shape}")
        self.runner = TflmRunner(self.model)
        self._prep_constants()
        self.period_ms = max(0, int(period_ms))
        self.autostart = autostart
        self.replay = replay  # re-send each sample's first result instead of invoking again
        self.faults = faults or SimFaults()
        self.boot_delay_s = boot_delay_s
        self._rng = random.Random(self.faults.seed)
        self._samples = self.load_samples(samples)
        self._cache: dict[int, tuple] = {}
        self._node_costs = _node_costs(self.model.graph)
        self.seq = 0
        self.source = "sample"
        self.running = autostart
        self._next_sample = 0
        self._last_upload: "np.ndarray | None" = None  # the `upload` source's image, like the firmware's buffer
        self.camera = SimCamera(camera) if camera is not None else None
        self._disconnects_left = self.faults.disconnects
        self._reboot_pending = True
        self.records_sent = 0
        # a board's pace: every Invoke() takes this long (µs) and says so; 0: this computer's
        self.board_invoke_us = self._board_invoke_us(board_timing)
        self.input_every = 0  # `input <n>`
        self.input_once = False  # `input once`
        self.last_input: bytes = b""  # the int8 input tensor of the latest result
        self.tx_dropped = 0
        self.arena_in = "host"  # hello/bsummary arena_in (tests set "psram" to see the host's warnings)

    @property
    def camera_running(self) -> bool:
        """Like the firmware, the (virtual) camera runs only while it is the input source."""
        return self.camera is not None and self.source == "camera"

    def _board_invoke_us(self, timing: "str | float | None") -> int:
        """``"estimate"``: the per-operator estimate `inspect` prints (XIAO ESP32S3, arena in
        internal RAM); a number: that many ms per Invoke(); None: no padding."""
        if timing is None or timing == "":
            return 0
        if timing == "estimate":
            if self.model.latency is None:
                raise DeviceError(f"board timing 'estimate': no latency estimate for {self.model.name}")
            return int(round(self.model.latency.internal_ms * 1000))
        try:
            ms = float(timing)
        except (TypeError, ValueError):
            raise DeviceError(f"board timing {timing!r}: give 'estimate' or milliseconds per Invoke()") from None
        if not 0 <= ms <= 60000:
            raise DeviceError(f"board timing {ms:g} ms is outside 0..60000 ms")
        return int(round(ms * 1000))

    # ------------------------------------------------------------------ model & samples

    @property
    def height(self) -> int:
        return int(self.model.input.shape[1])

    @property
    def width(self) -> int:
        return int(self.model.input.shape[2])

    def _prep_constants(self) -> None:
        """What depends only on the model, computed once (the firmware keeps it in flash): the
        3x256 quantisation table and the crop; the helpers are imported here, not per result."""

        m = self.model
        self._lut = quant_lut(m.preprocessing, m.input.scale, m.input.zero_point)
        self._crop = (m.preprocessing.crop_fraction, m.preprocessing.crop)
        self._channel_order = m.preprocessing.channel_order
        self._crop_resize, self._quantize, self._softmax = crop_resize, quantize, softmax_probs

    def _preprocess(self, rgb: "np.ndarray") -> "np.ndarray":
        """The reference preprocessing (gendertool.model.preprocess.preprocess) with the cached table."""
        resized = self._crop_resize(rgb, self.height, self.width, *self._crop)
        return self._quantize(resized, self._lut, self._channel_order)[None, ...]

    def _timed_preprocess(self, rgb: "np.ndarray") -> tuple["np.ndarray", int]:
        t0 = time.perf_counter()
        q = self._preprocess(rgb)
        return q, int((time.perf_counter() - t0) * 1e6)

    def load_samples(self, paths: list[Path] | None) -> list[_Sample]:
        import numpy as np


        if paths is None:
            folder = resource_path("firmware") / "samples"
            paths = list_images(folder) if folder.is_dir() else []
        images = [(Path(pth).stem, load_rgb(pth)) for pth in paths]  # names as the firmware's
        if not images:  # deterministic stand-ins when no sample images ship
            yy, xx = np.mgrid[0:96, 0:96]
            for k in range(2):
                img = np.stack([(xx * (2 + k)) % 256, (yy * (3 - k)) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
                images.append((f"synthetic-{k}", img))
        out = []
        for name, rgb in images:
            q = self._preprocess(rgb)
            out.append(_Sample(name, rgb, q, self.runner.invoke(q).reshape(-1).copy()))
        return out

    def _invoke(self, q: "np.ndarray") -> tuple["np.ndarray", int]:
        t0 = time.perf_counter()
        out = self.runner.invoke(q)
        took = int((time.perf_counter() - t0) * 1e6)
        if self.board_invoke_us:  # at a board's pace: the run lasts, and reports, the board's time
            left = self.board_invoke_us / 1e6 - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
            return out, self.board_invoke_us
        return out, took

    def _infer_q(self, q: "np.ndarray") -> tuple[list[int], list[float], int]:
        out, invoke_us = self._invoke(q)
        scores = out.reshape(-1).tolist()
        # float32 like the firmware's probabilities; the record rounds them to 4 decimals
        probs = self._softmax(out, self.model.output).reshape(-1).astype("float32").tolist()
        return scores, probs, invoke_us

    def _result(self, rgb: "np.ndarray | None", source: str, sample: int) -> p.Result:
        cached = self._cache.get(sample) if (self.replay and sample >= 0) else None
        if cached is None:
            # a sample is preprocessed from its pixels every time, as the firmware does
            q, pre_us = self._timed_preprocess(self._samples[sample].rgb if rgb is None else rgb)
            self.last_input = q.tobytes()
            scores, probs, invoke_us = self._infer_q(q)
            cached = (scores, probs, pre_us, invoke_us)
            if self.replay and sample >= 0:
                self._cache[sample] = cached
        scores, probs, pre_us, invoke_us = cached
        if self.replay and sample >= 0:  # the input tensor is still the sample's, as on a device
            self.last_input = self._samples[sample].input_q.tobytes()
        f = self.faults
        if f.score_off_by_one:
            scores = [scores[0] + (1 if scores[0] < 127 else -1), *scores[1:]]
        if f.wrong_class:
            scores = scores[::-1]
            probs = probs[::-1]
        cls = max(range(len(scores)), key=lambda i: scores[i])
        labels = self.model.labels
        label = labels[cls] if cls < len(labels) else str(cls)
        rec = p.Result(self.seq, source, sample, cls, label, tuple(scores), tuple(probs), pre_us, invoke_us, True)
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return rec

    # ------------------------------------------------------------------ records

    def hello(self) -> p.Hello:

        m = self.model
        return p.Hello(
            p.PROTO_VERSION, __version__, "sim", "host", m.name, m.sha256, tuple(m.labels), tuple(m.input.shape),
            float(m.input.scale), int(m.input.zero_point), float(m.output.scale), int(m.output.zero_point),
            int(m.arena_bytes or 0), int(m.arena_host_bytes or 0), 0, 0, 0, "", _tflm_version(), "",
            len(self._samples), self.source, self.running, True,
            tuple(s.name for s in self._samples), tuple(sample_truth(s.name, m.labels) for s in self._samples),
            arena_in=self.arena_in, camera=self.camera_running, tx_dropped=self.tx_dropped,
        )  # fmt: skip

    def selftest_record(self) -> p.SelfTest:
        entries = []
        for i, s in enumerate(self._samples):
            scores, _, _ = self._infer_q(s.input_q)
            expect = int(max(range(len(s.expect_scores)), key=lambda k: int(s.expect_scores[k])))
            got = max(range(len(scores)), key=lambda k: scores[k])
            diff = max(abs(int(a) - int(b)) for a, b in zip(scores, s.expect_scores))
            if self.faults.selftest_fail and i == 0:
                got, diff = (expect + 1) % max(len(scores), 2), 255
            entries.append(p.SelfTestEntry(i, expect, got, diff, got == expect and diff <= 1))
        failed = sum(not e.ok for e in entries)
        return p.SelfTest(failed == 0, len(entries), failed, tuple(entries[: p.SELFTEST_MAX_RESULTS]), True)

    # ------------------------------------------------------------------ one connection

    def serve(self, conn: socket.socket, stop: threading.Event) -> None:
        """Talk to one client until it disconnects, a fault drops it, or ``stop`` is set."""
        _Session(self, conn, stop).run()


class _Disconnect(Exception):
    pass


class _Session:
    def __init__(self, dev: SimDevice, conn: socket.socket, stop: threading.Event) -> None:
        self.dev = dev
        self.conn = conn
        self.stop = stop
        self.reader = p.CommandReader()
        self.upload: p.UploadReceiver | None = None
        self.upload_dims = (0, 0)
        self.upload_last = 0.0
        self.sent = 0  # records on this connection
        self.last_send = time.monotonic()
        # TX stall emulation (SimFaults.tx_stall_*): lines held while the host "does not read"
        self.tx_held = bytearray()
        self.stall_until = 0.0
        self.stalled_once = False

    # output ------------------------------------------------------------------------
    def raw(self, data: bytes) -> None:
        try:
            self.conn.sendall(data)
        except OSError:
            raise _Disconnect() from None

    def tx(self, line: bytes) -> bool:
        """One whole line out, through the emulated TX queue; False when dropped whole."""
        f, dev = self.dev.faults, self.dev
        if f.tx_stall_after and not self.stalled_once and self.sent + 1 > f.tx_stall_after:
            self.stalled_once = True
            self.stall_until = time.monotonic() + f.tx_stall_ms / 1000
        self.flush_tx()
        if time.monotonic() < self.stall_until:
            if len(self.tx_held) + len(line) > f.tx_buffer:
                dev.tx_dropped += 1
                return False
            self.tx_held += line
            return True
        self.raw(line)
        return True

    def flush_tx(self) -> None:
        if self.tx_held and time.monotonic() >= self.stall_until:
            held, self.tx_held = bytes(self.tx_held), bytearray()
            self.raw(held)

    def progress(self, cmd: str, done: int, total: int) -> None:
        """A `progress` record when nothing was sent for PROGRESS_INTERVAL_S (as the firmware)."""
        if time.monotonic() - self.last_send >= p.PROGRESS_INTERVAL_S:
            self.send(p.Progress(cmd, done, total, True))

    def send_result(self, rec: p.Result) -> None:
        """A result, preceded by its input tensor when the host asked for it (`input`)."""
        dev = self.dev
        if dev.input_once or (dev.input_every and rec.seq % dev.input_every == 0):
            dev.input_once = False
            for chunk in p.InputChunk.chunks(rec.seq, dev.last_input, True):
                self.send(chunk)
        self.send(rec)

    def send(self, rec: p.Record) -> None:
        f, dev = self.dev.faults, self.dev
        line = p.encode_record(rec)
        n = self.sent + 1
        if f.garbage_every and n % f.garbage_every == 0:
            k = dev._rng.randint(1, max(1, f.garbage_max))
            self.raw(bytes(dev._rng.choice(_GARBAGE) for _ in range(k)))
        if f.bad_crc_every and n % f.bad_crc_every == 0:
            line = line[:-2] + (b"0" if line[-2:-1] != b"0" else b"1") + b"\n"
        if f.reset_every and n % f.reset_every == 0:
            self.raw(line[: len(line) // 2])
            self.sent = n
            self.boot(reset=True)
            return
        self.last_send = time.monotonic()
        sent = self.tx(line)
        self.sent = n
        if sent:
            dev.records_sent += 1
        if f.disconnect_after and n >= f.disconnect_after and dev._disconnects_left > 0:
            dev._disconnects_left -= 1
            raise _Disconnect()

    def log(self, text: str) -> None:
        self.raw(text.encode("utf-8") + b"\r\n")

    def boot(self, reset: bool = False) -> None:
        dev = self.dev
        dev.seq = 0
        dev.running = dev.autostart
        dev.source = "sample"
        dev._last_upload = None
        dev.input_every, dev.input_once, dev.tx_dropped = 0, False, 0
        for line in BOOT_LOG:
            self.raw(line)
        self.send(dev.hello())
        self.send(dev.selftest_record())

    # input -------------------------------------------------------------------------
    def run(self) -> None:
        dev = self.dev
        try:
            if dev.boot_delay_s:
                self.stop.wait(dev.boot_delay_s)  # lets pyserial finish opening before output
            if dev._reboot_pending:
                dev._reboot_pending = False
                self.boot()
            else:
                self.send(dev.hello())
            next_due = time.monotonic()
            while not self.stop.is_set():
                now = time.monotonic()
                if dev.running and self.upload is None:
                    wait = max(0.0, next_due - now)
                else:
                    wait = 0.2
                ready, _, _ = select.select([self.conn], [], [], min(wait, 0.2))
                if ready:
                    data = self.conn.recv(65536)
                    if not data:
                        return
                    self.on_bytes(data)
                if self.upload is not None and time.monotonic() - self.upload_last > p.UPLOAD_IDLE_MS / 1000:
                    got = len(self.upload.data)
                    self.upload = None
                    self.send(p.ErrorRecord("upload_timeout", "infer", f"upload stalled after {got} bytes", True))
                self.flush_tx()
                if dev.running and self.upload is None and time.monotonic() >= next_due:
                    self.stream_one()
                    next_due = max(next_due + dev.period_ms / 1000, time.monotonic() - 1.0)
        except (_Disconnect, OSError):
            return

    def stream_one(self) -> None:
        dev = self.dev
        if dev.source == "camera" and dev.camera is not None:
            self.send_result(dev._result(dev.camera.capture_rgb(), "camera", -1))
            return
        if dev.source != "sample":
            return  # "upload": results only for uploads
        i = dev._next_sample % len(dev._samples)
        dev._next_sample = i + 1
        self.send_result(dev._result(None, "sample", i))

    def on_bytes(self, data: bytes) -> None:
        while data:
            if self.upload is not None:
                used = self.upload.feed(data)
                data = data[used:]
                self.upload_last = time.monotonic()
                if self.upload.complete:
                    self.finish_upload()
                continue
            cmds, used = self.reader.push_line_bytes(data)
            data = data[used:]
            for cmd in cmds:
                self.command(cmd)

    def reply_delay(self) -> None:
        if self.dev.faults.reply_delay_ms:
            time.sleep(self.dev.faults.reply_delay_ms / 1000)

    def error(self, code: str, cmd: str, message: str) -> None:
        self.send(p.ErrorRecord(code, cmd, message, True))

    def command(self, c: p.Command) -> None:
        dev = self.dev
        self.reply_delay()
        if c.error:
            msg = {
                "unknown_cmd": f"unknown command {c.cmd!r}",
                "bad_args": f"bad arguments for {c.cmd} (see docs/protocol.md)",
                "too_large": f"upload larger than {p.MAX_UPLOAD_SIDE}x{p.MAX_UPLOAD_SIDE}",
                "line_too_long": f"command line longer than {p.MAX_COMMAND} bytes",
            }.get(c.error, c.error)
            self.error(c.error, c.cmd, msg)
            return
        name, a = c.cmd, c.args
        if name == "info" and a.get("proto", p.PROTO_VERSION) != p.PROTO_VERSION:
            self.error("proto_mismatch", "info", f"this firmware speaks protocol v{p.PROTO_VERSION}, the host "
                       f"v{a['proto']}: rebuild and flash the firmware with the host's gendertool")
            return
        if name == "source" and a["source"] == "camera" and dev.camera is None:
            self.error("unsupported", "source", "the virtual device has no camera (start it with `gendertool sim --camera DIR`)")
            return
        self.send(p.Ack(name, True))
        if name == "info":
            self.send(dev.hello())
        elif name == "source":
            dev.source = a["source"]
        elif name == "start":
            dev.running = True
        elif name == "stop":
            dev.running = False
        elif name == "input":
            if a.get("once"):
                dev.input_once = True
            else:
                dev.input_every = a["every"]
        elif name == "infer":
            self.upload = p.UploadReceiver(a["len"], int(a["crc"], 16))
            self.upload_dims = (a["w"], a["h"])
            self.upload_last = time.monotonic()
        elif name == "bench":
            self.bench(a["n"], a["warmup"])
        elif name == "profile":
            self.profile()
        elif name == "selftest":
            self.send(dev.selftest_record())
        elif name == "reset":
            dev._reboot_pending = True  # the USB port vanishes; the next connection sees a boot
            raise _Disconnect()
        elif name == "panic":  # what ESP-IDF's abort() prints, then the reboot (the port vanishes)
            for line in PANIC_DUMP:
                self.raw(line)
            dev._reboot_pending = True
            raise _Disconnect()

    def finish_upload(self) -> None:
        import numpy as np

        up, self.upload = self.upload, None
        assert up is not None
        if not up.crc_ok:
            self.error("upload_crc", "infer", f"upload CRC {up._crc & 0xFFFFFFFF:08x} != {up.crc:08x}, not inferred")
            return
        w, h = self.upload_dims
        rgb = np.frombuffer(bytes(up.data), dtype=np.uint8).reshape(h, w, 3)
        self.dev._last_upload = rgb
        if self.dev.faults.result_delay_ms:
            time.sleep(self.dev.faults.result_delay_ms / 1000)
        self.send_result(self.dev._result(rgb, "upload", -1))

    def _take_input(self, cmd: str) -> "np.ndarray | None":
        """The current source's image, as the firmware's input provider picks it (the next
        sample, or the last upload); None after sending the firmware's error."""
        dev = self.dev
        if dev.source == "upload":
            if dev._last_upload is None:
                self.error("bad_args", cmd, "no image uploaded yet")
            return dev._last_upload
        if dev.source == "camera" and dev.camera is not None:
            return dev.camera.capture_rgb()
        i = dev._next_sample % len(dev._samples)
        dev._next_sample = i + 1
        return dev._samples[i].rgb

    def bench(self, n: int, warmup: int) -> None:
        """Every run, warm-ups included, preprocesses the same image again and invokes."""
        rgb = self._take_input("bench")
        if rgb is None:
            return
        dev = self.dev
        if dev.faults.skip_warmup:
            warmup = 0
        for k in range(warmup):
            dev._invoke(dev._preprocess(rgb))
            self.progress("bench", k + 1, warmup + n)
        pre: list[int] = []
        inv: list[int] = []
        first = 0
        for i in range(n):
            q, pre_us = dev._timed_preprocess(rgb)
            _, invoke_us = dev._invoke(q)
            self.progress("bench", warmup + i + 1, warmup + n)
            pre.append(pre_us)
            inv.append(invoke_us)
            if len(inv) - first == p.BSAMPLE_BATCH or i == n - 1:
                cols = (inv, pre) if dev.faults.swap_timings else (pre, inv)
                self.send(p.BenchSample(first, tuple(cols[0][first:]), tuple(cols[1][first:]), True))
                first = len(inv)
        total = sum(inv)
        self.send(p.BenchSummary(n, warmup, min(inv), max(inv), total / n, total, True, dev.arena_in, dev.camera_running,
                                 dev.tx_dropped))

    def profile(self) -> None:
        rgb = self._take_input("profile")
        if rgb is None:
            return
        _, invoke_us = self.dev._invoke(self.dev._preprocess(rgb))
        costs = self.dev._node_costs
        total_cost = sum(c for _, c in costs) or 1
        spent = 0
        for i, (op, cost) in enumerate(costs):
            us = int(round(invoke_us * cost / total_cost))
            spent += us
            self.send(p.ProfileOp(i, op, us, True, True))
        self.send(p.ProfileSummary(len(costs), spent, invoke_us, True, True))


class SimCamera:
    """The virtual device's camera: a folder of images played in a loop as the OV2640 delivers
    them to the firmware, QVGA RGB565 big-endian frames (each image scaled to cover 320x240,
    centred), which go through the firmware's camera path: RGB565 expanded to RGB888 by bit
    replication, then the same crop, resize and quantisation as every input."""

    def __init__(self, folder: "str | Path", cache: int = 32) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DeviceError(f"--camera {folder}: not a folder of images")
        self.paths = list_images(folder)
        if not self.paths:
            raise DeviceError(f"--camera {folder}: no images in it (jpg, png, bmp, ...)")
        self.folder = folder
        self._cache: dict[int, Any] = {}
        self._cache_max = cache
        self._next = 0
        self.frames = 0

    def frame(self, index: int) -> "np.ndarray":
        """Frame ``index`` (cyclic) as the sensor sends it: 240x320x2 bytes, RGB565 big-endian."""
        i = index % len(self.paths)
        got = self._cache.get(i)
        if got is None:
            got = rgb_to_rgb565be(_cover(load_rgb(self.paths[i]), CAMERA_WIDTH, CAMERA_HEIGHT))
            if len(self._cache) < self._cache_max:
                self._cache[i] = got
        return got

    def capture_rgb(self) -> "np.ndarray":
        """The next frame, expanded to RGB888 as the firmware's preprocessing reads it."""
        frame = self.frame(self._next)
        self._next = (self._next + 1) % len(self.paths)
        self.frames += 1
        return rgb565be_to_rgb(frame)


def _cover(rgb: "np.ndarray", width: int, height: int) -> "np.ndarray":
    """Scale ``rgb`` to fill ``width`` x ``height`` and cut the centre (a camera's framing)."""
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    f = max(width / w, height / h)
    sw, sh = max(width, round(w * f)), max(height, round(h * f))
    big = np.asarray(Image.fromarray(rgb).resize((sw, sh), Image.Resampling.BILINEAR), dtype=np.uint8)
    y0, x0 = (sh - height) // 2, (sw - width) // 2
    return np.ascontiguousarray(big[y0 : y0 + height, x0 : x0 + width])


_GARBAGE = bytes(b for b in range(256) if b != 0x0A)  # any byte but newline


def _tflm_version() -> str:
    from importlib import metadata

    try:
        return "tflite-micro " + metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        return ""


def _node_costs(model) -> list[tuple[str, int]]:
    """(operator name, estimated cost) per node of a decoded model: MACs for conv/FC, output
    size otherwise."""
    sg = model.subgraphs[0]

    def size(i: int) -> int:
        t = sg.tensors[int(i)] if int(i) >= 0 else None
        return math.prod(int(d) for d in t.shape if d > 0) if t is not None and t.shape is not None else 1

    out = []
    for op in sg.operators or []:
        name = op_name(model, op)[0]
        cost = op_macs(model, op)
        if cost is None:
            if name == "MEAN" and op.inputs is not None:
                cost = size(op.inputs[0])
            else:
                cost = size(op.outputs[0]) if op.outputs is not None and len(op.outputs) else 1
        out.append((name, max(1, int(cost))))
    return out


def _close_quietly(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def free_port(host: str) -> int | None:
    """A TCP port free on ``host`` right now (the system's pick), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            return probe.getsockname()[1]
    except OSError:
        return None


class SimServer:
    """Serve a :class:`SimDevice` on ``host:port`` (TCP), one client at a time, in a thread."""

    def __init__(self, device: SimDevice, host: str = "127.0.0.1", port: int = 0, *, max_clients: int | None = None) -> None:
        self.device = device
        self.max_clients = max_clients
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                free = free_port(host)
                hint = (f" (another `gendertool sim`, or another program, has it); {host}:{free} is free now: "
                        f"`gendertool sim --listen {host}:{free}`, or --listen {host}:0 to take any free port") if free else ""
            raise DeviceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
        self._sock.listen(4)
        self.host, self.port = self._sock.getsockname()[:2]
        self._thread: threading.Thread | None = None
        self._conn: socket.socket | None = None
        self.clients = 0

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def start(self) -> "SimServer":
        self._thread = threading.Thread(target=self.serve_forever, name="gendertool-sim", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Accept clients one at a time; one that connects while another is being served gets
        an ``error busy`` record and is closed, as a serial port opened twice is refused."""
        worker: threading.Thread | None = None

        def serving() -> bool:
            return worker is not None and worker.is_alive()

        try:
            while not self._stop.is_set():
                if not serving() and self.max_clients is not None and self.clients >= self.max_clients:
                    return
                try:
                    ready, _, _ = select.select([self._sock], [], [], 0.2)
                except (OSError, ValueError):  # closed by close()
                    return
                if not ready:
                    continue
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    return
                if serving():
                    worker.join(timeout=0.5)  # a client that just hung up is still being cleaned up
                if serving():
                    self._refuse(conn)
                    continue
                self.clients += 1
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                worker = threading.Thread(target=self._serve_one, args=(conn,), name="gendertool-sim-client", daemon=True)
                worker.start()
        finally:
            if worker is not None:
                worker.join(timeout=5)

    def _serve_one(self, conn: socket.socket) -> None:
        self._conn = conn
        try:
            self.device.serve(conn, self._stop)
        finally:
            self._conn = None
            _close_quietly(conn)

    @staticmethod
    def _refuse(conn: socket.socket) -> None:
        try:
            conn.sendall(p.encode_record(p.ErrorRecord(p.BUSY, "", "another client is connected to this virtual device", True)))
        except OSError:
            pass
        _close_quietly(conn)

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "SimServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
