"""`gendertool monitor --web`: the monitor session as a live page in the browser.

Three parts, each replaceable on its own:

* :class:`InputViews` says which int8 input tensor a result ran on and turns it into the
  picture the model saw (gendertool.model.preprocess.tensor_to_rgb: the inverse of the
  quantisation, normalisation and channel order). A tensor the device sent wins; until a
  firmware sends one, the tensor of a built-in sample or of an upload made from the page is
  rebuilt on the host with the reference preprocessing, and the page says which it shows.
  The host reference run (the TFLM host runtime) of that tensor is put beside the device's
  scores: bit-exact or not.
* :class:`WebView` is a :class:`gendertool.device.monitor.MonitorSink`: the monitor session
  feeds it like the terminal view (it never reads the port itself); it turns what happens
  into JSON messages.
* :class:`WebServer` (aiohttp, in a thread with its own event loop) serves the page (static
  files shipped in ``web/``, no CDN), pushes the messages over a WebSocket to every open tab,
  and hands the page's commands and uploads to the monitor thread through a
  :class:`gendertool.device.monitor.MonitorControl`.

Nothing a device sends is put into the page as markup: the page writes every device string
with ``textContent``. Requests that change the device must come from the page's own origin
(a page on another site cannot drive the board), and the Host header must name this server
(no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import math
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gendertool.device.monitor import (
    MonitorControl,
    MonitorSink,
    bench_job,
    command_job,
    result_row,
    upload_job,
)
from gendertool.device.validate import fit_upload
from gendertool.errors import DeviceError, GendertoolError, ImageError
from gendertool.model.info import ModelInfo, load_model
from gendertool.model.preprocess import (
    crop_rect,
    inverse_lut,
    load_rgb,
    preprocess,
    quant_lut,
    tensor_to_rgb,
)
from gendertool.model.runtime import TflmRunner
from gendertool.project.samples import default_sample_paths
from gendertool.protocol import BENCH_MAX_N, INPUT_EVERY_MAX, SOURCES, arena_warning
from gendertool.stats import latency_stats
from gendertool.text import count, escape_control

if TYPE_CHECKING:
    import numpy as np

STATIC_DIR = Path(__file__).with_name("web")
HISTORY = 300  # latency points a new tab gets
LOG_KEEP = 100
CLIENT_QUEUE = 400  # messages waiting for one slow tab before it is sent a fresh snapshot instead
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
UPLOAD_TIMEOUT_S = 30.0
BENCH_WEB_MAX_N = 1000  # from the page: a bench blocks the stream while it runs
TICK_EVERY_S = 0.5
SOURCES_KEPT = 32  # images before crop and resize the page can still fetch

HOST_RECONSTRUCTED = "host-reconstructed"
DEVICE_SENT = "device-sent"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """What binding the page to a non-loopback address means (None for loopback)."""
    if is_loopback(host):
        return None
    return (f"warning: the page listens on {host}:{port}, not on loopback: anyone who can reach this address can see "
            "the results and drive the device (start, stop, source, bench, uploads); there is no login")


# --------------------------------------------------------------------------- input pictures


class _NamedBytes(io.BytesIO):
    """An uploaded file for load_rgb: Pillow reads it, error messages name it."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def rgb_payload(rgb: "np.ndarray") -> dict:
    """A picture for the page: ``HxWx3`` uint8 as base64 of the raw RGB bytes."""
    h, w = rgb.shape[:2]
    return {"w": int(w), "h": int(h), "rgb": base64.b64encode(rgb.tobytes()).decode("ascii")}


class InputViews:
    """The input tensor behind each result and the picture it shows. Used on the monitor's
    thread only (the host runtime is not thread-safe).

    ``model``: the host's copy of the model (``monitor --model``); used only when its sha256
    is the device's. ``sample_paths``: the built-in sample images (firmware/samples/), matched
    to the device's ``sample_names``.
    """

    def __init__(self, model: "ModelInfo | None", sample_paths: list[Path] | None = None) -> None:
        self.model = model
        self.sample_paths = {p.stem: p for p in (default_sample_paths() if sample_paths is None else sample_paths)}
        self.hello: Any = None
        self.usable = False
        self.why_not = "no device yet"
        self._runner: TflmRunner | None = None
        self._inv: "np.ndarray | None" = None
        self._samples: dict[int, dict | None] = {}  # sample index -> prepared view (or None)
        self._device_sent: dict[int, bytes] = {}  # seq -> tensor bytes the device sent (protocol v2)
        self._upload: dict | None = None  # the upload made from the page, until its result comes
        # key -> PNG of an image before crop and resize (served at /source/KEY); read by the server thread
        self.sources: "OrderedDict[str, bytes]" = OrderedDict()

    def on_hello(self, hello: Any) -> None:
        same = self.hello is not None and self.hello.model_sha256 == hello.model_sha256
        self.hello = hello
        if same and self.usable:
            return
        self._samples.clear()
        m = self.model
        if m is None:
            self.usable, self.why_not = False, "no host model to rebuild the input with (monitor --model FILE)"
            return
        if m.sha256 != hello.model_sha256:
            self.usable = False
            self.why_not = (f"the device runs model {hello.model} (sha256 {hello.model_sha256[:12]}), the host has "
                            f"{m.name} ({m.sha256[:12]}): start the monitor with --model set to the device's model")
            return
        pre = m.preprocessing
        self._inv = inverse_lut(quant_lut(pre, m.input.scale, m.input.zero_point))
        if self._runner is None:
            self._runner = TflmRunner(m)
        self.usable, self.why_not = True, ""

    # the one place a device-sent tensor comes in (WebView.input_tensor): protocol v2's `input`
    # records, put together by the monitor (protocol.InputAssembler)
    def device_tensor(self, seq: int, data: bytes) -> None:
        self._device_sent[seq] = data
        while len(self._device_sent) > 8:
            self._device_sent.pop(next(iter(self._device_sent)))

    def expect_upload(self, name: str, rgb: "np.ndarray") -> dict:
        """The tensor the device will compute from an upload of ``rgb``, and the host's result."""
        view = self._view(self._tensor_of(rgb), f"upload {name}", source=rgb)
        self._upload = view
        return view

    def cancel_upload(self) -> None:
        self._upload = None

    def _tensor_of(self, rgb: "np.ndarray") -> "np.ndarray":
        m = self.model
        assert m is not None
        _, h, w, _ = m.input.shape
        return preprocess(rgb, m.preprocessing, h, w, m.input.scale, m.input.zero_point)

    def _view(self, tensor: "np.ndarray", what: str, origin: str = HOST_RECONSTRUCTED,
              source: "np.ndarray | None" = None) -> dict:
        import numpy as np

        assert self._runner is not None and self._inv is not None and self.model is not None
        ref = self._runner.invoke(tensor).reshape(-1)
        pre = self.model.preprocessing
        pic = tensor_to_rgb(tensor, self._inv, pre.channel_order)
        out = {"origin": origin, "what": what, "picture": rgb_payload(pic),
               "shape": [int(d) for d in np.shape(tensor)], "reference_scores": [int(v) for v in ref],
               "_tensor": np.ascontiguousarray(tensor, dtype=np.int8).tobytes()}  # "_" keys stay on the host
        if source is not None:
            h, w = source.shape[:2]
            y0, x0, ch, cw = crop_rect(h, w, pre.crop_fraction, pre.crop)
            key = self._keep_source(source)
            out["source"] = {"key": key, "w": int(w), "h": int(h), "crop": [int(y0), int(x0), int(ch), int(cw)],
                             "crop_mode": pre.crop, "crop_fraction": pre.crop_fraction}
        return out

    def _keep_source(self, rgb: "np.ndarray") -> str:
        """Keep ``rgb`` as a PNG for the page; its key is its content's hash (safe to cache)."""
        import hashlib

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        data = buf.getvalue()
        key = hashlib.sha256(data).hexdigest()[:20]
        self.sources[key] = data
        self.sources.move_to_end(key)
        while len(self.sources) > SOURCES_KEPT:
            self.sources.popitem(last=False)
        return key

    def _sample_view(self, index: int) -> dict | None:
        if index in self._samples:
            return self._samples[index]
        view = None
        info = self.hello.sample_info(index) if self.hello is not None else None
        path = self.sample_paths.get(info[0]) if info is not None else None
        if path is not None:
            try:
                rgb = load_rgb(path)
                view = self._view(self._tensor_of(rgb), f"built-in sample {info[0]}", source=rgb)
            except ImageError:
                view = None
        self._samples[index] = view
        return view

    def for_result(self, r: Any) -> dict:
        """``input`` for a result message: the picture, where it came from, and the host check."""
        import numpy as np

        sent = self._device_sent.pop(r.seq, None)
        if not self.usable:
            return {"origin": None, "why": self.why_not}
        host: dict | None = None  # the host's own preprocessing of the same image, when it has it
        if r.source == "sample":
            host = self._sample_view(r.sample)
        elif r.source == "upload" and self._upload is not None:
            host, self._upload = self._upload, None
        if sent is not None:
            shape = tuple(int(d) for d in self.model.input.shape)  # type: ignore[union-attr]
            view = self._view(np.frombuffer(sent, dtype=np.int8).reshape(shape),
                              host["what"] if host else f"{r.source} input", DEVICE_SENT)
            if host is not None:  # the device's preprocessing against the reference, byte for byte
                view["matches_host"] = sent == host["_tensor"]
                if "source" in host:
                    view["source"] = host["source"]
        elif host is not None:
            view = host
        elif r.source == "sample":
            return {"origin": None, "why": f"built-in sample {r.sample}: the host has no image of that name"}
        else:
            why = ("camera frames stay on the device, and this result came without its input tensor "
                   "(the device sends it with every Nth result: 'device input' under Control)"
                   if r.source == "camera" else "the host does not have this upload's image")
            return {"origin": None, "why": why}
        out = {k: v for k, v in view.items() if not k.startswith("_")}
        out["bit_exact"] = list(r.scores) == out["reference_scores"]
        return out


# --------------------------------------------------------------------------- the sink


def _num(v: float, digits: int = 3) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(v, digits)


def input_job(every: int | None):
    """``input <n>`` (None: ``input once``) as a MonitorControl job."""
    return lambda client: client.set_input(every)


def device_card(h: Any) -> dict:
    return {
        "board": h.board, "chip": h.chip, "fw": h.fw, "model": h.model, "model_sha256": h.model_sha256,
        "labels": list(h.labels), "input": list(h.input), "arena_bytes": h.arena_bytes, "arena_used": h.arena_used,
        "heap_internal": h.heap_internal, "heap_psram": h.heap_psram, "cpu_mhz": h.cpu_mhz, "idf": h.idf,
        "tflm": h.tflm, "esp_nn": h.esp_nn, "source": h.source, "running": h.running, "simulated": h.simulated,
        "proto": h.proto, "samples": h.samples,
        "arena_in": h.arena_in, "arena_warning": arena_warning(h.arena_in), "camera": h.camera, "tx_dropped": h.tx_dropped,
    }


def session_stats(session: Any) -> dict:
    """The live figures, as the terminal view has them (rolling window for the percentiles)."""
    inv, pre = session.invoke, session.pre
    parser = session.stream_stats.as_dict() if getattr(session, "stream_stats", None) is not None else {}
    return {
        "results": session.results,
        "lost": session.lost,
        "damaged": {k: parser.get(k, 0) for k in ("bad_crc", "bad_frame", "bad_record", "overlong", "partial")},
        "fps": _num(session.rate.rate(), 2),
        "window": inv.window,
        "invoke_ms": {q: _num(inv.percentile(n)) for q, n in (("p50", 50), ("p90", 90), ("p99", 99))},
        "pre_ms": {q: _num(pre.percentile(n)) for q, n in (("p50", 50), ("p90", 90), ("p99", 99))},
        "classes": dict(session.classes),
        "samples_right": session.samples_right,
        "samples_wrong": session.samples_wrong,
        "disconnects": session.disconnects,
        "reconnects": session.reconnects,
        "panics": session.panics,
    }


class WebView(MonitorSink):
    """Feeds a :class:`WebServer` from the monitor session (runs on the monitor's thread).

    ``input_every``: ask the device for its input tensor with every Nth result (``input <n>``,
    protocol v2; 0: never) when it connects and after every boot; the page can change it."""

    def __init__(self, server: "WebServer", inputs: InputViews, input_every: int = 0) -> None:
        self.server = server
        self.inputs = inputs
        self.input_every = input_every
        self._last_tick = 0.0
        server.view = self

    def hello(self, h: Any) -> None:
        self.inputs.on_hello(h)
        self.server.publish({"type": "hello", "device": device_card(h)})
        self.apply_input_setting()

    def device_booted(self, hello: Any) -> None:
        self.apply_input_setting()  # a boot forgets `input <n>`

    def apply_input_setting(self) -> None:
        """Send the current ``input <n>`` (from the monitor thread: queued as a job)."""
        every = self.input_every
        if every or self.server.input_asked:
            fut = self.server.control.submit(input_job(every))
            fut.add_done_callback(self._input_refused)
            self.server.note_input_every(every)

    def _input_refused(self, fut) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None:
            self.server.publish({"type": "status", "text": escape_control(f"input {self.input_every}: {exc}", keep_newlines=False)})

    def result(self, r: Any, session: Any) -> None:
        row = result_row(r, session.hello)
        row["labels"] = list(session.hello.labels) if session.hello is not None else []
        try:
            row["input"] = self.inputs.for_result(r)
        except (GendertoolError, ValueError) as exc:  # a view that cannot be made never stops the monitor
            row["input"] = {"origin": None, "why": str(exc)}
        self.server.publish({"type": "result", "result": row, "stats": session_stats(session)})

    def input_tensor(self, seq: int, data: bytes) -> None:
        self.inputs.device_tensor(seq, data)

    def log(self, text: str) -> None:
        self.server.publish({"type": "log", "text": text})

    def status(self, text: str) -> None:
        self.server.publish({"type": "status", "text": escape_control(text, keep_newlines=False)})

    def link(self, event: Any, session: Any) -> None:
        state = "lost" if event.kind == "disconnected" else "back"
        self.server.publish({"type": "link", "state": state, "text": escape_control(event.message, keep_newlines=False),
                             "stats": session_stats(session)})

    def panic(self, report: Any) -> None:
        self.server.publish({"type": "panic", "text": escape_control(f"{report.reason}\n{report.backtrace}")})

    def device_error(self, rec: Any) -> None:
        self.server.publish({"type": "device_error", "code": rec.code, "cmd": rec.cmd, "text": rec.message})

    def tick(self, session: Any) -> None:
        import time

        now = time.monotonic()
        if now - self._last_tick >= TICK_EVERY_S:
            self._last_tick = now
            self.server.publish({"type": "stats", "stats": session_stats(session)})

    def ended(self, summary: Any) -> None:
        why = summary.error or ("stopped (Ctrl-C)" if summary.interrupted else f"done: {count(summary.results, 'result')}")
        self.server.publish({"type": "ended", "text": escape_control(why, keep_newlines=False)})


# --------------------------------------------------------------------------- the server


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def to_json(msg: dict) -> str:
    """Strict JSON for the page: a NaN or infinity a device sent becomes null."""
    try:
        return json.dumps(msg, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(msg), allow_nan=False)


class _Hub:
    """What every tab is sent, kept on the server's event loop: the latest state for a tab
    that opens later, and one bounded queue per open tab."""

    def __init__(self) -> None:
        self.device: dict | None = None
        self.link = "connecting"
        self.link_text = ""
        self.stats: dict | None = None
        self.latest: dict | None = None
        self.history: deque = deque(maxlen=HISTORY)
        self.logs: deque = deque(maxlen=LOG_KEEP)
        self.ended: str | None = None
        self.input_every = 0
        self.clients: set[asyncio.Queue] = set()

    def apply(self, msg: dict) -> None:
        kind = msg["type"]
        if "stats" in msg:
            self.stats = msg["stats"]
        if kind == "hello":
            self.device = msg["device"]
            if self.link == "connecting":
                self.link = "connected"
        elif kind == "result":
            r = msg["result"]
            self.latest = r
            if self.device is not None and r.get("source") not in (None, "upload") and self.device.get("source") != r["source"]:
                self.device = {**self.device, "source": r["source"]}  # a --source switch sends no hello
            self.history.append({k: r.get(k) for k in ("seq", "invoke_us", "pre_us", "label", "t")})
            if self.link == "connecting":
                self.link = "connected"
        elif kind == "link":
            self.link, self.link_text = msg["state"], msg["text"]
        elif kind == "log":
            self.logs.append(msg["text"])
        elif kind == "ended":
            self.ended = msg["text"]
        elif kind == "input_setting":
            self.input_every = msg["every"]

    def snapshot(self) -> dict:
        return {"type": "snapshot", "device": self.device, "link": self.link, "link_text": self.link_text,
                "stats": self.stats, "latest": self.latest, "history": list(self.history), "logs": list(self.logs),
                "ended": self.ended, "input_every": self.input_every}

    def broadcast(self, msg: dict) -> None:
        self.apply(msg)
        data = to_json(msg)
        for q in list(self.clients):
            if q.full():  # a tab that cannot keep up: start it again from the current state
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(to_json(self.snapshot()))
            else:
                q.put_nowait(data)


class WebServer:
    """The page's HTTP + WebSocket server (aiohttp) on its own thread and event loop."""

    def __init__(self, control: MonitorControl, *, host: str = "127.0.0.1", port: int = 0, port_name: str = "") -> None:
        self.control = control
        self.host = host
        self.port = port
        self.port_name = port_name
        self.view: WebView | None = None
        self._hub = _Hub()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._sockets: set = set()
        self._upload_lock: asyncio.Lock | None = None
        self.input_asked = False  # an `input <n>` went to the device: `input 0` when the monitor stops

    def note_input_every(self, every: int) -> None:
        """Remember the device's ``input <n>`` setting (any thread) and tell the tabs."""
        if every and not self.input_asked:
            self.input_asked = True
            self.control.at_end("input", lambda client: client.send("input", 0))
        self.publish({"type": "input_setting", "every": every})

    # ---------------------------------------------------------------- life cycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "WebServer":
        """Bind and serve; GendertoolError (one line) when the address cannot be used."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._setup())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._teardown())
                loop.close()

        self._thread = threading.Thread(target=run, name="gendertool-web", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            exc = failure[0]
            why = getattr(exc, "strerror", None) or str(exc)
            raise GendertoolError(f"cannot serve the page on {self.host}:{self.port}: {why}")
        return self

    async def _setup(self) -> None:
        from aiohttp import web

        self._upload_lock = asyncio.Lock()
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES, middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/api/command", self._command)
        app.router.add_post("/api/bench", self._bench)
        app.router.add_post("/api/upload", self._upload)
        app.router.add_get("/source/{key}", self._source)
        app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _teardown(self) -> None:
        from aiohttp import WSCloseCode

        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"monitor stopped")
                               for ws in list(self._sockets)), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def close(self) -> None:
        """Send open tabs what is still queued (the session's end), close their sockets and stop."""
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._drain(1.0), loop).result(2.0)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout=5)

    async def _drain(self, limit_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + limit_s
        while any(not q.empty() for q in self._hub.clients) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    def publish(self, msg: dict) -> None:
        """From any thread: apply ``msg`` to the state and send it to every open tab."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._hub.broadcast, msg)
        except RuntimeError:  # the loop closed meanwhile
            pass

    # ---------------------------------------------------------------- requests

    def _allowed_hosts(self) -> set[str]:
        names = {self.host, "localhost", "127.0.0.1", "[::1]"} if is_loopback(self.host) else None
        if names is None:
            return set()
        return {f"{n}:{self.port}" for n in names} | {f"[{self.host}]:{self.port}"}

    async def _guard_check(self, request) -> str | None:
        allowed = self._allowed_hosts()
        if allowed and request.host not in allowed:
            return f"unexpected Host header {request.host!r}"
        changes = request.method != "GET" or request.path == "/ws"
        origin = request.headers.get("Origin")
        if changes and origin is not None and origin != f"http://{request.host}":
            return "requests from another site's page are refused"
        if request.method == "POST" and origin is None and request.headers.get("Sec-Fetch-Site") not in (None, "same-origin"):
            return "requests from another site's page are refused"
        return None

    @property
    def _guard(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            why = await self._guard_check(request)
            if why is not None:
                return web.json_response({"error": why}, status=403)
            return await handler(request)

        return guard

    async def _index(self, request):
        from aiohttp import web

        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _source(self, request):
        """An image before crop and resize (a built-in sample, an upload), for the crop box."""
        from aiohttp import web

        view = self.view
        data = view.inputs.sources.get(request.match_info["key"]) if view is not None else None
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def _ws(self, request):
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(heartbeat=20.0, timeout=1.0)  # timeout: the close handshake, at Ctrl-C
        await ws.prepare(request)
        q: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        q.put_nowait(to_json({**self._hub.snapshot(), "port": self.port_name}))
        self._hub.clients.add(q)
        self._sockets.add(ws)

        async def pump() -> None:
            try:
                while True:
                    data = await q.get()
                    await ws.send_str(data)
            except (ConnectionError, RuntimeError):  # the tab went away mid-send: the reader below ends too
                pass

        sender = asyncio.ensure_future(pump())
        try:
            async for msg in ws:  # the page sends nothing; this notices a closed tab
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            sender.cancel()
            self._hub.clients.discard(q)
            self._sockets.discard(ws)
        return ws

    async def _run_job(self, job, timeout: float):
        """Run ``job`` on the monitor thread; DeviceError when the device is away or the monitor
        does not get to it in time (then the job is cancelled: it never runs late)."""
        if self._hub.link == "lost":
            raise DeviceError("the device is away (port lost): try again when it is back")
        if self._hub.ended is not None:
            raise DeviceError("the monitor has stopped")
        fut = self.control.submit(job)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
        except asyncio.TimeoutError:
            if fut.cancel():
                raise DeviceError(f"the monitor did not get to it within {timeout:g} s (reconnecting?); cancelled") from None
            raise DeviceError(f"no answer from the device within {timeout:g} s") from None

    def _error(self, text: str, status: int = 400):
        from aiohttp import web

        return web.json_response({"error": escape_control(text, keep_newlines=False)}, status=status)

    async def _command(self, request):
        from aiohttp import web

        try:
            body = await request.json()
        except ValueError:
            return self._error("expected a JSON body")
        name = body.get("cmd") if isinstance(body, dict) else None
        if name == "source":
            arg = body.get("source")
            if arg not in SOURCES:
                return self._error(f"source must be one of {', '.join(SOURCES)}")
            job, args = command_job("source", arg), [arg]
        elif name in ("start", "stop"):
            job, args = command_job(name), []
        elif name == "input":
            every = body.get("every")
            if every != "once" and not (isinstance(every, int) and not isinstance(every, bool) and 0 <= every <= INPUT_EVERY_MAX):
                return self._error(f"input wants every: 0..{INPUT_EVERY_MAX} or \"once\"")
            job, args = input_job(None if every == "once" else every), [every]
        else:
            return self._error("cmd must be source, start, stop or input")
        try:
            await self._run_job(job, 10.0)
        except DeviceError as exc:
            return self._error(str(exc), 502)
        if name == "source":
            self._note_source(args[0])
        elif name == "input" and args[0] != "once":
            if self.view is not None:
                self.view.input_every = args[0]  # kept across device reboots
            self.note_input_every(args[0])
        return web.json_response({"ok": True, "cmd": name, "args": args})

    def _note_source(self, source: str) -> None:
        dev = self._hub.device
        if dev is not None:
            self._hub.broadcast({"type": "hello", "device": {**dev, "source": source}})

    async def _bench(self, request):
        from aiohttp import web

        try:
            body = await request.json()
            n, warmup = int(body.get("n", 100)), int(body.get("warmup", 10))
        except (ValueError, TypeError, AttributeError):
            return self._error("expected {\"n\": N, \"warmup\": W}")
        if not (1 <= n <= min(BENCH_WEB_MAX_N, BENCH_MAX_N)) or not (0 <= warmup <= 1000):
            return self._error(f"n must be 1..{BENCH_WEB_MAX_N} and warmup 0..1000")
        try:
            run = await self._run_job(bench_job(n, warmup), 60.0 + n)
        except DeviceError as exc:
            return self._error(str(exc), 502)
        out: dict[str, Any] = {"n": n, "warmup": warmup, "got": len(run.invoke_us), "error": run.error,
                               "simulated": run.simulated}
        if run.invoke_us:
            for key, vals in (("invoke_ms", run.invoke_us), ("pre_ms", run.pre_us)):
                s = latency_stats([v / 1000 for v in vals])
                out[key] = {k: _num(getattr(s, k)) for k in ("mean", "p50", "p90", "p99", "min", "max")}
        return web.json_response(out)

    async def _upload(self, request):
        from urllib.parse import unquote

        from aiohttp import web

        name = escape_control(unquote(request.headers.get("X-Filename", "image")), keep_newlines=False)[:120]
        data = await request.read()
        if not data:
            return self._error("empty upload")
        view = self.view
        if view is None or not view.inputs.usable:
            why = view.inputs.why_not if view is not None else "the monitor is not running"
            return self._error(f"cannot upload: {why}", 409)
        loop = asyncio.get_running_loop()
        assert self._upload_lock is not None
        async with self._upload_lock:  # one upload at a time: its result is matched to its picture
            try:
                rgb = await loop.run_in_executor(None, lambda: fit_upload(load_rgb(_NamedBytes(data, name))))
            except ImageError as exc:
                return self._error(str(exc), 415)
            send = upload_job(rgb)

            def job(client):  # on the monitor thread, like every use of the host runtime
                expected = view.inputs.expect_upload(name, rgb)
                try:
                    return send(client), expected
                except BaseException:
                    view.inputs.cancel_upload()
                    raise

            try:
                rec, expected = await self._run_job(job, UPLOAD_TIMEOUT_S)
            except DeviceError as exc:
                return self._error(str(exc), 502)
        scores = list(rec.scores)
        return web.json_response({
            "seq": rec.seq, "label": rec.label, "class": rec.class_index, "scores": scores, "probs": list(rec.probs),
            "reference_scores": expected["reference_scores"], "bit_exact": scores == expected["reference_scores"],
            "size": [int(rgb.shape[1]), int(rgb.shape[0])], "simulated": rec.simulated,
        })


# --------------------------------------------------------------------------- wiring


class WebSession:
    """Everything `monitor --web` adds to a monitor run: the server, its sink and its control.
    ``input_every``: the device's ``input <n>`` (the CLI's --web-input; 0: never)."""

    def __init__(self, port_name: str, *, host: str = "127.0.0.1", web_port: int = 0,
                 model: "str | Path | ModelInfo | None" = None, input_every: int) -> None:
        if not 0 <= web_port <= 65535:
            raise GendertoolError(f"--web-port must be 0..65535 (0: a free port), got {web_port}")
        if not 0 <= input_every <= INPUT_EVERY_MAX:
            raise GendertoolError(f"--web-input must be 0..{INPUT_EVERY_MAX} (0: never), got {input_every}")
        info = model if isinstance(model, ModelInfo) else load_model(model, measure_arena=False)
        self.control = MonitorControl()
        self.server = WebServer(self.control, host=host, port=web_port, port_name=port_name).start()
        self.sink = WebView(self.server, InputViews(info), input_every)
        self.warning = exposure_warning(host, self.server.port)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.control.close()
        self.server.close()
