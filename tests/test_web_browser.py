"""`gendertool monitor --web` in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against the virtual device in its own process.

The monitor runs as the user runs it (`python -m gendertool monitor --web`) and the virtual
device as `gendertool sim --listen`, so killing the sim is a board that vanishes. What is
checked: the page loads from this server alone and results arrive; the input canvas holds
exactly the picture of the sample's int8 tensor; an image dropped on the page comes back with
the device's result and the host reference; a killed sim shows "lost", then "back"; several
tabs, a closed tab and Ctrl-C leave every result in --csv; markup sent by a device stays text.
"""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gendertool.model.info import load_model
from gendertool.model.preprocess import (
    crop_resize,
    inverse_lut,
    load_rgb,
    preprocess,
    quant_lut,
    quantize,
    tensor_to_rgb,
)
from gendertool.device.sim import SimCamera
from gendertool.model.preprocess import rgb565be_to_rgb
from gendertool.model.runtime import TflmRunner
from gendertool.project.samples import default_sample_paths

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")

CHROMIUM = next((p for p in (os.environ.get("GENDERTOOL_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
CHROMEDRIVER = os.environ.get("GENDERTOOL_CHROMEDRIVER") or shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver "
           "(apt-get install chromium chromium-driver; .ci/run does) to run the browser tests")

WAIT_S = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = WAIT_S, what: str = "condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Proc:
    """A gendertool process whose stderr is collected as it comes."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen([sys.executable, "-m", "gendertool", *args], cwd=cwd, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.out: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True),
                         threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def stderr(self) -> str:
        return "".join(self.err)

    def stdout(self) -> str:
        return "".join(self.out)

    def finish(self, sig=None, timeout: float = 20.0) -> int:
        if self.p.poll() is None and sig is not None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait(5)
        for t in self._threads:
            t.join(2)
        return rc


class Stack:
    """A virtual device process and a `monitor --web --csv` following it."""

    def __init__(self, tmp: Path, *, period_ms: int = 100, camera: Path | None = None, web_input: int = 1) -> None:
        self.tmp = tmp
        self.camera = camera
        self.sim_port = free_port()
        self.period_ms = period_ms
        self.sim = self.start_sim()
        self.csv = tmp / "results.csv"
        self.monitor = Proc("monitor", "--port", f"socket://127.0.0.1:{self.sim_port}", "--web", "--csv", str(self.csv),
                            "--timeout", "30", "--web-input", str(web_input), cwd=tmp)
        line = wait_for(lambda: re.search(r"live page: (http://\S+)", self.monitor.stderr()), what="the page URL")
        self.url = line.group(1)

    def start_sim(self) -> Proc:
        cam = ("--camera", str(self.camera)) if self.camera is not None else ()
        sim = Proc("sim", "--listen", f"127.0.0.1:{self.sim_port}", "--period-ms", str(self.period_ms), *cam, cwd=self.tmp)
        wait_for(lambda: "virtual device serving" in sim.stderr() or sim.p.poll() is not None, what="the sim")
        assert sim.p.poll() is None, sim.stderr()
        return sim

    def close(self) -> None:
        self.monitor.finish(signal.SIGINT)
        self.sim.finish(signal.SIGINT)


def chrome():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1100",
              "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from PIL import Image

    camera = tmp_path_factory.mktemp("camera")
    for path in default_sample_paths()[:2]:  # the virtual camera plays two portraits
        Image.fromarray(load_rgb(path)).save(camera / f"{path.stem}.png")
    s = Stack(tmp_path_factory.mktemp("web"), camera=camera)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def model():
    return load_model(None, measure_arena=False)


def page_state(d) -> dict:
    return d.execute_script(
        "const c = document.getElementById('input');"
        "return {link: document.getElementById('link').dataset.state, seq: document.getElementById('seq').textContent,"
        " label: document.getElementById('label').textContent, results: window.gtState.stats && window.gtState.stats.results,"
        " origin: c.dataset.origin || '', what: c.dataset.what || ''};")


def canvas_now(d) -> dict:
    """The input canvas's pixels together with what it says it shows (one script: no race)."""
    got = d.execute_script(
        "const c = document.getElementById('input'); const g = c.getContext('2d');"
        "const px = g.getImageData(0, 0, c.width, c.height).data; let s = '';"
        "for (let i = 0; i < px.length; i += 4) s += String.fromCharCode(px[i], px[i+1], px[i+2]);"
        "return {w: c.width, h: c.height, rgb: btoa(s), what: c.dataset.what || '', origin: c.dataset.origin || '',"
        " seq: c.dataset.seq, caption: document.getElementById('input-origin').textContent,"
        " check: document.getElementById('input-check').textContent};")
    got["pixels"] = np.frombuffer(base64.b64decode(got["rgb"]), dtype=np.uint8).reshape(got["h"], got["w"], 3)
    return got


def open_page(d, url: str) -> None:
    d.get(url)
    wait_for(lambda: page_state(d)["seq"].startswith("#"), what="a result on the page")


def severe_logs(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


# --------------------------------------------------------------------------- tests


def test_page_loads_from_this_server_alone_and_results_arrive(stack, browser, model):
    open_page(browser, stack.url)
    first = page_state(browser)
    assert first["link"] == "connected"
    assert first["label"] in model.labels
    wait_for(lambda: page_state(browser)["seq"] != first["seq"], what="a second result")
    device = browser.find_element("id", "device").text
    assert "sim" in device and model.sha256 in device and "virtual device" in device
    assert browser.find_element("id", "simulated").is_displayed()
    stats = browser.find_element("id", "stats").text
    assert "p50" in stats and "p99" in stats and "FPS" in stats
    # offline: every resource the page loaded came from this server (no CDN)
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    origin = stack.url.rstrip("/")
    assert urls and all(u.startswith(origin) for u in urls), urls
    assert severe_logs(browser) == []


def _sample_on_canvas(browser, origin: str) -> dict:
    return wait_for(lambda: (c := canvas_now(browser))["what"].startswith(("built-in sample", "sample input"))
                    and c["origin"] == origin and c, what=f"a {origin} sample on the canvas")


def _expected_tensor(model, rgb):
    _, h, w, _ = model.input.shape
    return preprocess(rgb, model.preprocessing, h, w, model.input.scale, model.input.zero_point)[0]


def _check_canvas_is_tensor(got: dict, tensor, model) -> None:
    pre = model.preprocessing
    lut = quant_lut(pre, model.input.scale, model.input.zero_point)
    assert got["pixels"].shape == tensor.shape
    # the canvas is exactly the picture of the tensor, and quantises back to that tensor
    np.testing.assert_array_equal(got["pixels"], tensor_to_rgb(tensor, inverse_lut(lut), pre.channel_order))
    np.testing.assert_array_equal(quantize(got["pixels"], lut, pre.channel_order), tensor)


def test_input_canvas_holds_the_int8_tensor_the_device_sent(stack, browser, model):
    """`--web-input 1`: every result carries its tensor; the canvas is that tensor, a sample's."""
    open_page(browser, stack.url)
    got = _sample_on_canvas(browser, "device-sent")
    assert got["caption"].startswith("device-sent input tensor") and "bit-exact" in got["check"]
    seq = int(got["seq"])
    # which sample it was: the page's result line says (the canvas and the result are the same seq here)
    matches = [p for p in default_sample_paths()
               if np.array_equal(quantize(got["pixels"], quant_lut(model.preprocessing, model.input.scale,
                                                                   model.input.zero_point), model.preprocessing.channel_order),
                                 _expected_tensor(model, load_rgb(p)))]
    assert len(matches) == 1, f"result #{seq}: the canvas is no built-in sample's tensor"
    _check_canvas_is_tensor(got, _expected_tensor(model, load_rgb(matches[0])), model)
    assert browser.find_element("id", "input-every").get_attribute("value") == "1"


def test_input_canvas_holds_the_host_reconstructed_sample_when_the_device_sends_none(stack, browser, model):
    from selenium.webdriver.support.ui import Select

    open_page(browser, stack.url)
    Select(browser.find_element("id", "input-every")).select_by_value("0")  # device input: off
    try:
        got = _sample_on_canvas(browser, "host-reconstructed")
        name = got["what"].removeprefix("built-in sample ")
        path = next(p for p in default_sample_paths() if p.stem == name)
        _check_canvas_is_tensor(got, _expected_tensor(model, load_rgb(path)), model)
        pre = model.preprocessing
        _, h, w, _ = model.input.shape
        # and it is the sample's own pixels after crop and resize (not some other image)
        resized = crop_resize(load_rgb(path), h, w, pre.crop_fraction, pre.crop).astype(int)
        assert np.abs(got["pixels"].astype(int) - resized).mean() < 2.0
        assert "host-reconstructed" in got["caption"] and "bit-exact" in got["check"]
        # beside it, the image before crop and resize, served by this page's server, with the crop box
        full = load_rgb(path)
        size = wait_for(lambda: browser.execute_script(
            "const i = document.getElementById('source-img'); return i.complete && i.naturalWidth && "
            "[i.naturalWidth, i.naturalHeight, document.getElementById('source-caption').textContent]"),
            what="the source image")
        if size[2].startswith(f"before crop and resize: {full.shape[1]}x{full.shape[0]}"):  # still the same sample
            assert size[:2] == [full.shape[1], full.shape[0]]
    finally:
        Select(browser.find_element("id", "input-every")).select_by_value("1")
    assert browser.find_element("id", "control-error").text == ""


def _drop_file(d, data: bytes, name: str) -> None:
    d.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const file = new File([bytes], arguments[1], {type: 'image/png'});"
        "const dt = new DataTransfer(); dt.items.add(file);"
        "const zone = document.getElementById('drop');"
        "for (const t of ['dragenter', 'dragover', 'drop'])"
        "  zone.dispatchEvent(new DragEvent(t, {dataTransfer: dt, bubbles: true, cancelable: true}));",
        base64.b64encode(data).decode("ascii"), name)


def test_dropped_image_comes_back_with_the_devices_result(stack, browser, model, tmp_path):
    from PIL import Image

    open_page(browser, stack.url)
    browser.find_element("id", "stop").click()  # the stream pauses, so the canvas keeps the upload
    time.sleep(0.5)
    # a picture the device has never seen: a sample mirrored and darkened
    rgb = (load_rgb(default_sample_paths()[-1])[:, ::-1] * 0.8).astype(np.uint8)
    png = tmp_path / "dropped face.png"
    Image.fromarray(rgb).save(png)
    _drop_file(browser, png.read_bytes(), png.name)
    out = wait_for(lambda: browser.execute_script(
        "const o = document.getElementById('upload-out'); return o.dataset.state === 'done' && "
        "{label: o.dataset.label, exact: o.dataset.bitExact, text: o.textContent}"), what="the upload's result")
    _, h, w, _ = model.input.shape
    tensor = preprocess(rgb, model.preprocessing, h, w, model.input.scale, model.input.zero_point)
    ref = TflmRunner(model).invoke(tensor).reshape(-1)
    assert out["label"] == model.labels[int(np.argmax(ref))]
    assert out["exact"] == "true" and "bit-exact" in out["text"] and png.name in out["text"]
    got = wait_for(lambda: (c := canvas_now(browser))["what"] == f"upload {png.name}" and c, what="the upload on the canvas")
    lut = quant_lut(model.preprocessing, model.input.scale, model.input.zero_point)
    np.testing.assert_array_equal(quantize(got["pixels"], lut, model.preprocessing.channel_order), tensor[0])
    browser.find_element("id", "start").click()
    seq = page_state(browser)["seq"]
    wait_for(lambda: page_state(browser)["seq"] != seq, what="results after start")
    assert browser.find_element("id", "control-error").text == ""


def test_a_refused_upload_says_why(stack, browser):
    open_page(browser, stack.url)
    _drop_file(browser, b"not an image at all", "notes.txt")
    wait_for(lambda: browser.execute_script("return document.getElementById('upload-out').dataset.state") == "failed",
             what="the refusal")
    assert "notes.txt: not a readable image" in browser.find_element("id", "control-error").text


def test_source_switched_from_the_page_to_the_virtual_camera(stack, browser, model):
    from selenium.webdriver.support.ui import Select

    open_page(browser, stack.url)
    Select(browser.find_element("id", "source")).select_by_value("camera")
    wait_for(lambda: "source camera" in browser.find_element("id", "source-line").text, what="a camera result")
    # what the camera framed reaches the page only as the device sends it: each frame's tensor
    got = wait_for(lambda: (c := canvas_now(browser))["what"] == "camera input" and c, what="a camera frame's tensor")
    assert got["origin"] == "device-sent" and "bit-exact" in got["check"]
    cam = SimCamera(stack.camera)
    frames = [_expected_tensor(model, rgb565be_to_rgb(cam.frame(k))) for k in range(len(cam.paths))]
    lut = quant_lut(model.preprocessing, model.input.scale, model.input.zero_point)
    shown = quantize(got["pixels"], lut, model.preprocessing.channel_order)
    assert any(np.array_equal(shown, f) for f in frames)
    assert "camera" in browser.find_element("id", "device").text  # the card's input source
    Select(browser.find_element("id", "source")).select_by_value("sample")
    wait_for(lambda: "source sample" in browser.find_element("id", "source-line").text, what="samples again")
    assert browser.find_element("id", "control-error").text == ""


def test_several_tabs_and_a_closed_one(stack, browser):
    open_page(browser, stack.url)
    main = browser.current_window_handle
    browser.switch_to.new_window("tab")
    open_page(browser, stack.url)
    seq = page_state(browser)["seq"]
    wait_for(lambda: page_state(browser)["seq"] != seq, what="results in the second tab")
    browser.close()
    browser.switch_to.window(main)
    seq = page_state(browser)["seq"]
    wait_for(lambda: page_state(browser)["seq"] != seq, what="results in the first tab after the second closed")
    assert stack.monitor.p.poll() is None


def test_killed_sim_shows_lost_then_back_and_ctrl_c_keeps_every_result(tmp_path, browser):
    s = Stack(tmp_path)
    try:
        open_page(browser, s.url)
        s.sim.finish(signal.SIGKILL)
        wait_for(lambda: page_state(browser)["link"] == "lost", what='"lost"')
        assert browser.find_element("id", "link").text == "lost"
        browser.find_element("id", "stop").click()  # refused at once, never sent late to the device
        wait_for(lambda: "the device is away" in browser.find_element("id", "control-error").text, what="the refusal")
        main = browser.current_window_handle  # a tab opened now is told too
        browser.switch_to.new_window("tab")
        open_page(browser, s.url)
        assert page_state(browser)["link"] == "lost"
        browser.close()
        browser.switch_to.window(main)
        s.sim = s.start_sim()
        wait_for(lambda: page_state(browser)["link"] == "back", what='"back"')
        seq = page_state(browser)["seq"]
        wait_for(lambda: page_state(browser)["seq"] != seq, what="results after the sim came back")
        assert "1 / 1" in browser.find_element("id", "stats").text  # port lost / back
    finally:
        rc = s.monitor.finish(signal.SIGINT)
        s.sim.finish(signal.SIGINT)
    assert rc == 0, s.monitor.stderr()
    summary = s.monitor.stdout()
    n = int(re.search(r"results\s+(\d+) in", summary).group(1))
    with open(s.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert n >= 2 and len(rows) == n  # the page took no result from the CSV
    wait_for(lambda: page_state(browser)["link"] in ("ended", "offline"), what="the page noticing the end")


def test_device_markup_stays_text(browser, tmp_path):
    """Strings a device sends (model name, log lines, errors) are shown as text, never markup."""
    from gendertool.device.monitor import MonitorControl
    from gendertool.present.web import WebServer

    server = WebServer(MonitorControl()).start()
    try:
        evil = '<img src=x onerror="document.title=\'pwned\'"><b id="injected">bold</b>'
        server.publish({"type": "hello", "device": {
            "board": evil, "chip": "", "fw": evil, "model": evil, "model_sha256": "0" * 64, "labels": [evil, "b"],
            "input": [1, 64, 64, 3], "arena_bytes": 1, "arena_used": 1, "heap_internal": 0, "heap_psram": 0,
            "cpu_mhz": 240, "idf": "", "tflm": "", "esp_nn": "", "source": "sample", "running": True,
            "simulated": False, "proto": 1, "samples": 0}})
        server.publish({"type": "log", "text": evil})
        server.publish({"type": "device_error", "code": evil, "cmd": evil, "text": evil})
        browser.get(server.url)
        wait_for(lambda: evil in browser.find_element("id", "log").text, what="the log line")
        assert evil in browser.find_element("id", "device").text
        assert browser.find_elements("id", "injected") == []
        assert browser.find_elements("css selector", "img:not(#source-img)") == []
        assert browser.title != "pwned"
    finally:
        server.close()
