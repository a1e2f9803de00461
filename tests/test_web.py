"""monitor --web without a browser: the input picture (inverse quantisation), the virtual
camera's RGB565 path, the monitor's control jobs, the server's guards, the CLI options."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from gendertool import protocol as p
from gendertool.device.monitor import MonitorControl, MonitorSink, TeeSink, command_job, run_monitor, upload_job
from gendertool.device.sim import CAMERA_HEIGHT, CAMERA_WIDTH, SimCamera, SimDevice, SimServer
from gendertool.errors import DeviceError
from gendertool.model.preprocess import (
    Preprocessing,
    inverse_lut,
    load_rgb,
    preprocess,
    quant_lut,
    quantize,
    rgb565be_to_rgb,
    rgb_to_rgb565be,
    tensor_to_rgb,
)
from gendertool.model.runtime import TflmRunner
from gendertool.present.web import (
    DEVICE_SENT,
    HOST_RECONSTRUCTED,
    InputViews,
    WebServer,
    _Hub,
    exposure_warning,
)
from gendertool.project.samples import default_sample_paths

# --------------------------------------------------------------------------- the picture of a tensor


@pytest.mark.parametrize("pre", [
    Preprocessing(),
    Preprocessing(mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4), channel_order="bgr"),
    Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)),
])
@pytest.mark.parametrize("scale,zp", [(1 / 127.5, 0), (0.0078125, -1), (0.01865, 14), (1 / 255, -128)])
def test_picture_quantises_back_to_the_same_tensor(pre, scale, zp):
    lut = quant_lut(pre, scale, zp)
    inv = inverse_lut(lut)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    tensor = quantize(rgb, lut, pre.channel_order)
    pic = tensor_to_rgb(tensor, inv, pre.channel_order)
    np.testing.assert_array_equal(quantize(pic, lut, pre.channel_order), tensor)
    # each byte is one of those that give its value: within the bucket's width of the original
    width = max(int(np.bincount(lut[c].astype(np.int16) + 128).max()) for c in range(3))
    assert np.abs(pic.astype(int) - rgb.astype(int)).max() < width


def test_picture_keeps_the_channel_order():
    pre = Preprocessing(channel_order="bgr")
    lut = quant_lut(pre, 1 / 127.5, 0)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    tensor = quantize(rgb, lut, "bgr")
    assert tensor[0, 0, 2] > 100 and tensor[0, 0, 0] < -100  # red is the tensor's last channel
    pic = tensor_to_rgb(tensor, inverse_lut(lut), "bgr")
    assert tuple(pic[0, 0]) == (255, 0, 0)


def test_inverse_of_a_value_no_byte_gives_is_the_nearest():
    lut = quant_lut(Preprocessing(mean=(0.0,) * 3, std=(255.0,) * 3), 1 / 255, -128)  # bytes -> -128..127
    inv = inverse_lut(lut)
    assert inv[0, 0] == 0 and inv[0, 255] == 255
    squeezed = quant_lut(Preprocessing(), 0.02, 0)  # only -50..50 reachable
    inv = inverse_lut(squeezed)
    assert squeezed[0][inv[0, 0]] == -50 and squeezed[0][inv[0, 255]] == 50


# --------------------------------------------------------------------------- the virtual camera


def test_rgb565_twins_are_exact_on_every_code():
    codes = np.arange(65536, dtype=np.uint32)
    px = np.stack([(codes >> 8).astype(np.uint8), (codes & 0xFF).astype(np.uint8)], -1).reshape(256, 256, 2)
    rgb = rgb565be_to_rgb(px)
    np.testing.assert_array_equal(rgb_to_rgb565be(rgb), px)
    # the firmware's bit replication: r8 = r5 << 3 | r5 >> 2 (image_preprocess.cc)
    assert tuple(rgb[0xF8, 0x00]) == (255, 0, 0)
    assert tuple(rgb[0x07, 0xE0]) == (0, 255, 0)
    assert tuple(rgb[0x00, 0x1F]) == (0, 0, 255)
    assert tuple(rgb[0x84, 0x10]) == (132, 130, 132)


def test_sim_camera_plays_qvga_rgb565_frames(tmp_path):
    from PIL import Image

    Image.new("RGB", (640, 200), (200, 40, 10)).save(tmp_path / "wide.png")
    Image.new("RGB", (50, 90), (10, 250, 90)).save(tmp_path / "tall.jpg")
    (tmp_path / "notes.txt").write_text("not a frame")
    cam = SimCamera(tmp_path)
    assert [q.name for q in cam.paths] == ["tall.jpg", "wide.png"]
    frame = cam.frame(1)
    assert frame.shape == (CAMERA_HEIGHT, CAMERA_WIDTH, 2) and frame.dtype == np.uint8
    # the sensor drops the low bits: 200,40,10 comes back as the RGB565 code's expansion
    assert tuple(rgb565be_to_rgb(frame)[120, 160]) == (206, 40, 8)
    assert cam.capture_rgb().shape == (CAMERA_HEIGHT, CAMERA_WIDTH, 3)


def test_sim_camera_refuses_an_empty_folder(tmp_path):
    with pytest.raises(DeviceError, match="no images"):
        SimCamera(tmp_path)
    with pytest.raises(DeviceError, match="not a folder"):
        SimCamera(tmp_path / "missing")


def test_sim_camera_results_run_the_camera_path(model_info, tmp_path):
    from gendertool.device.link import DeviceClient

    Image = pytest.importorskip("PIL.Image")
    for i, path in enumerate(default_sample_paths()[:2]):
        Image.fromarray(load_rgb(path)).save(tmp_path / f"{i}.png")
    dev = SimDevice(model_info, period_ms=0, camera=tmp_path)
    _, h, w, _ = model_info.input.shape
    runner = TflmRunner(model_info)
    with SimServer(dev) as server, DeviceClient.open(server.url) as client:
        client.info()
        client.set_source("camera")
        got = []
        for rec in client.records(10):
            if isinstance(rec, p.Result) and rec.source != "sample":  # samples streamed before the switch
                got.append(rec)
                if len(got) == 2:
                    break
    cam = SimCamera(tmp_path)
    for k, rec in enumerate(got):
        assert rec.source == "camera" and rec.sample == -1
    # the stream started at frame 0 after the switch, or one later: match by scores
    expect = []
    for k in range(2):
        q = preprocess(rgb565be_to_rgb(cam.frame(k)), model_info.preprocessing, h, w, model_info.input.scale,
                       model_info.input.zero_point)
        expect.append(tuple(int(v) for v in runner.invoke(q).reshape(-1)))
    assert {rec.scores for rec in got} <= set(expect)


def test_sim_without_camera_refuses_source_camera(model_info):
    from gendertool.device.link import DeviceClient, DeviceCommandError

    with SimServer(SimDevice(model_info, period_ms=0)) as server, DeviceClient.open(server.url) as client:
        client.info()
        with pytest.raises(DeviceCommandError, match="--camera DIR"):
            client.set_source("camera")


def test_cli_sim_camera_option_refuses_an_empty_folder(cli, tmp_path):
    res = cli("sim", "--camera", str(tmp_path), "--listen", "127.0.0.1:0")
    assert res.exit_code == 2 and "no images" in res.stderr


# --------------------------------------------------------------------------- control jobs


class Collect(MonitorSink):
    def __init__(self) -> None:
        self.results: list = []
        self.links: list = []
        self.ended_with = None

    def result(self, r, session):
        self.results.append(r)

    def link(self, event, session):
        self.links.append(event.kind)

    def ended(self, summary):
        self.ended_with = summary


def test_an_upload_from_another_thread_is_counted_in_order(model_info):
    dev = SimDevice(model_info, period_ms=20)
    control = MonitorControl()
    sink = Collect()
    futures = []
    rgb = load_rgb(default_sample_paths()[0])

    def submit_when_streaming() -> None:
        while len(sink.results) < 3:
            time.sleep(0.01)
        futures.append(control.submit(upload_job(rgb)))
        futures.append(control.submit(command_job("source", "camera")))  # the sim refuses: the job fails, not the monitor

    with SimServer(dev) as server:
        t = threading.Thread(target=submit_when_streaming)
        t.start()
        summary = run_monitor(server.url, sink, count=12, timeout=5, control=control)
        t.join()
    assert summary.error is None and summary.results == 12 and summary.lost == 0
    uploads = [r for r in sink.results if r.source == "upload"]
    assert len(uploads) == 1 and futures[0].result(0) == uploads[0]
    seqs = [r.seq for r in sink.results]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + 12))
    with pytest.raises(DeviceError, match="no camera"):
        futures[1].result(0)
    assert sink.ended_with is summary
    late = control.submit(command_job("stop"))  # after the end: refused at once
    with pytest.raises(DeviceError, match="stopped"):
        late.result(0)


def test_tee_sink_feeds_every_sink_in_order():
    order = []

    class Tag(MonitorSink):
        def __init__(self, name):
            self.name = name

        def result(self, r, session):
            order.append(self.name)

    TeeSink(Tag("csv"), Tag("web")).result(None, None)
    assert order == ["csv", "web"]


# --------------------------------------------------------------------------- input views


class _Hello:
    def __init__(self, sha: str, names=("female_girl-1037886",)):
        self.model = "m"
        self.model_sha256 = sha
        self.sample_names = names
        self.labels = ("female", "male")

    def sample_info(self, i):
        return (self.sample_names[i], 0) if 0 <= i < len(self.sample_names) else None


def _res(seq, source, sample=-1, scores=(0, 0)):
    return p.Result(seq, source, sample, 0, "female", tuple(scores), (0.5, 0.5), 1, 1, True)


def test_input_views_say_where_the_picture_comes_from(model_info):
    views = InputViews(model_info)
    views.on_hello(_Hello(model_info.sha256))
    sample = views.for_result(_res(1, "sample", 0))
    assert sample["origin"] == HOST_RECONSTRUCTED and sample["what"] == "built-in sample female_girl-1037886"
    ref = sample["reference_scores"]
    assert views.for_result(_res(2, "sample", 0, ref))["bit_exact"] is True
    assert views.for_result(_res(3, "sample", 0, (ref[0] + 1, ref[1])))["bit_exact"] is False
    cam = views.for_result(_res(4, "camera"))
    assert cam["origin"] is None and "camera frames stay on the device" in cam["why"]
    assert views.for_result(_res(5, "sample", 7))["origin"] is None  # the host has no such sample
    # a tensor the device sent wins, and is labelled so
    tensor = np.full((1, 64, 64, 3), 5, np.int8)
    views.device_tensor(6, tensor.tobytes())
    sent = views.for_result(_res(6, "camera"))
    assert sent["origin"] == DEVICE_SENT and sent["picture"]["w"] == 64


def test_input_views_refuse_another_model(model_info):
    views = InputViews(model_info)
    views.on_hello(_Hello("cd" * 32))
    got = views.for_result(_res(1, "sample", 0))
    assert got["origin"] is None and "--model" in got["why"] and "cdcdcdcdcdcd" in got["why"]


# --------------------------------------------------------------------------- the server


def _request(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read()
            return resp.status, (json.loads(body) if resp.headers.get_content_type() == "application/json" else {})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def server():
    s = WebServer(MonitorControl()).start()
    yield s
    s.close()


def test_server_binds_loopback_on_a_free_port(server):
    assert server.host == "127.0.0.1" and server.port > 0
    status, _ = _request(server.url)
    assert status == 200
    status, _ = _request(server.url + "static/app.js")
    assert status == 200


def test_server_refuses_another_sites_page(server):
    body = json.dumps({"cmd": "start"}).encode()
    status, got = _request(server.url + "api/command", data=body,
                           headers={"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403 and "another site" in got["error"]


def test_server_refuses_a_rebound_host_name(server):
    status, got = _request(server.url, headers={"Host": f"evil.example:{server.port}"})
    assert status == 403 and "Host" in got["error"]


def test_server_checks_commands_before_the_device(server):
    status, got = _request(server.url + "api/command", data=b'{"cmd": "reset"}',
                           headers={"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 400 and "source, start, stop or input" in got["error"]
    for bad in ('{"cmd": "input", "every": 1001}', '{"cmd": "input", "every": true}', '{"cmd": "input"}'):
        status, got = _request(server.url + "api/command", data=bad.encode(), headers={"Content-Type": "application/json"})
        assert status == 400 and "input wants every" in got["error"]
    status, got = _request(server.url + "api/bench", data=b'{"n": 100000}', headers={"Content-Type": "application/json"})
    assert status == 400 and "n must be" in got["error"]


def test_a_busy_web_port_is_one_clear_error(server):
    from gendertool.errors import GendertoolError

    with pytest.raises(GendertoolError, match=f"cannot serve the page on 127.0.0.1:{server.port}"):
        WebServer(MonitorControl(), port=server.port).start()


def test_a_slow_tab_gets_a_fresh_snapshot_instead_of_blocking():
    import asyncio

    hub = _Hub()
    q: asyncio.Queue = asyncio.Queue(maxsize=3)
    hub.clients.add(q)
    for i in range(10):
        hub.broadcast({"type": "log", "text": f"line {i}"})
    items = [json.loads(q.get_nowait()) for _ in range(q.qsize())]
    # never more than the queue holds; the tab starts again from a snapshot and misses nothing
    assert 1 <= len(items) <= 3 and items[0]["type"] == "snapshot"
    seen = items[0]["logs"] + [i["text"] for i in items[1:]]
    assert seen == [f"line {i}" for i in range(10)]


def test_exposure_warning_only_off_loopback():
    assert exposure_warning("127.0.0.1", 80) is None and exposure_warning("::1", 80) is None
    assert exposure_warning("localhost", 80) is None
    w = exposure_warning("0.0.0.0", 8080)
    assert "anyone who can reach" in w and "drive the device" in w


# --------------------------------------------------------------------------- the CLI


def test_monitor_web_prints_the_url_and_keeps_the_csv(cli, tmp_path):
    out = tmp_path / "r.csv"
    res = cli("monitor", "--port", "sim", "--count", "3", "--web", "--csv", str(out))
    assert res.exit_code == 0, res.output
    assert "live page: http://127.0.0.1:" in res.stderr
    assert len(out.read_text().splitlines()) == 1 + 3


def test_monitor_web_host_elsewhere_warns(cli):
    res = cli("monitor", "--port", "sim", "--count", "1", "--web", "--web-host", "0.0.0.0")
    assert res.exit_code == 0, res.output
    assert "anyone who can reach this address can see the results and drive the device" in res.stderr.replace("\n", " ")


def test_monitor_open_and_model_need_web(cli):
    res = cli("monitor", "--port", "sim", "--open")
    assert res.exit_code == 2 and "--open needs --web" in res.stderr
    res = cli("monitor", "--port", "sim", "--model", "x.tflite")
    assert res.exit_code == 2 and "--model needs --web" in res.stderr


def test_a_device_nan_reaches_the_page_as_null():
    from gendertool.present.web import to_json

    assert json.loads(to_json({"probs": [float("nan"), 0.5], "x": {"y": float("inf")}})) == {"probs": [None, 0.5], "x": {"y": None}}


def test_monitor_web_port_in_use(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = cli("monitor", "--port", "sim", "--count", "1", "--web", "--web-port", str(port))
    assert res.exit_code == 2 and f"cannot serve the page on 127.0.0.1:{port}" in res.stderr


def test_monitor_web_json_keeps_stdout_json_only(cli):
    res = cli("monitor", "--port", "sim", "--count", "3", "--web", "--json")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 3 and "live page:" in res.stderr


def test_a_device_sent_tensor_reaches_the_page_as_such(model_info):
    """WebView.input_tensor is where protocol v2's assembled `input` records come in."""
    from gendertool.device.monitor import MonitorSession
    from gendertool.present.web import WebView

    class _Server:
        view = None
        input_asked = False

        def __init__(self):
            self.sent = []

        def publish(self, msg):
            self.sent.append(msg)

    srv = _Server()
    view = WebView(srv, InputViews(model_info))
    dev = SimDevice(model_info, period_ms=0)
    hello = dev.hello()
    view.hello(hello)
    session = MonitorSession("sim")
    session.hello = hello
    tensor = dev._samples[0].input_q
    rec = dev._result(None, "sample", 0)
    TeeSink(MonitorSink(), view).input_tensor(rec.seq, tensor.tobytes())
    session.add_result(rec)
    view.result(rec, session)
    shown = srv.sent[-1]["result"]["input"]
    assert shown["origin"] == DEVICE_SENT and shown["bit_exact"] is True
    assert shown["what"] == f"built-in sample {dev._samples[0].name}" and shown["matches_host"] is True
    assert "_tensor" not in shown  # host-side bytes never go to the page
    # a device whose preprocessing differs by one step in one byte is caught
    bad = bytearray(tensor.tobytes())
    bad[0] = (bad[0] + 1) % 256
    rec2 = dev._result(None, "sample", 0)
    view.input_tensor(rec2.seq, bytes(bad))
    session.add_result(rec2)
    view.result(rec2, session)
    assert srv.sent[-1]["result"]["input"]["matches_host"] is False


def test_an_unknown_source_image_is_not_found(server):
    try:
        urllib.request.urlopen(server.url + "source/0123456789abcdef0123", timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    else:
        raise AssertionError("served an image nobody kept")


def test_input_views_keep_the_image_before_crop_with_its_box(model_info):
    views = InputViews(model_info)
    views.on_hello(_Hello(model_info.sha256))
    src = views.for_result(_res(1, "sample", 0))["source"]
    full = load_rgb(next(q for q in default_sample_paths() if q.stem == "female_girl-1037886"))
    assert (src["h"], src["w"]) == full.shape[:2]
    y0, x0, h, w = src["crop"]
    side = min(full.shape[:2])  # the default model's centre square, crop_fraction 1
    assert (h, w) == (side, side) and (y0, x0) == ((full.shape[0] - side) // 2, (full.shape[1] - side) // 2)
    from PIL import Image
    import io as _io

    np.testing.assert_array_equal(np.asarray(Image.open(_io.BytesIO(views.sources[src["key"]]))), full)


def test_monitor_hands_device_sent_tensors_to_the_sink_before_their_results(model_info):
    """`input 1` (protocol v2): every result is preceded by its input tensor, put together."""
    from gendertool.present.web import input_job

    class Tensors(MonitorSink):
        def __init__(self):
            self.got, self.results = {}, []

        def input_tensor(self, seq, data):
            self.got[seq] = data

        def result(self, r, session):
            self.results.append(r)
            if len(self.results) == 1:
                control.submit(input_job(1))

    dev = SimDevice(model_info, period_ms=10)
    control = MonitorControl()
    sink = Tensors()
    with SimServer(dev) as server:
        summary = run_monitor(server.url, sink, count=30, timeout=5, control=control)
    assert summary.error is None
    has = [r.seq in sink.got for r in sink.results]
    first = has.index(True)  # results already on their way when `input 1` went out come without
    assert all(has[first:]) and sum(has) >= 10
    with_input = [r for r in sink.results if r.seq in sink.got]
    for r in with_input:
        assert sink.got[r.seq] == dev._samples[r.sample].input_q.tobytes()
    assert session_inputs_broken(summary) == 0


def session_inputs_broken(summary) -> int:
    return summary.parser.get("bad_record", 0)


def test_the_page_asks_for_input_and_takes_it_back_at_the_end(model_info):
    """--web-input N goes to the device at connect; `input 0` when the monitor stops."""
    from gendertool.present.web import WebSession

    page = WebSession("sim", model=model_info, input_every=3)
    dev = SimDevice(model_info, period_ms=10)
    sent = []
    from gendertool.device import sim as simdevice

    original = simdevice._Session.command

    def spy(self, c):
        sent.append((c.cmd, dict(c.args or {})))
        return original(self, c)

    simdevice._Session.command = spy
    try:
        with SimServer(dev) as server:
            run_monitor(server.url, page.sink, count=10, timeout=5, control=page.control)
            deadline = time.monotonic() + 2
            while ("input", {"every": 0}) not in sent and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        simdevice._Session.command = original
        page.close()
    inputs = [a for cmd, a in sent if cmd == "input"]
    assert inputs[0] == {"every": 3} and inputs[-1] == {"every": 0}
