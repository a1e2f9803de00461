"""`gendertool model pull`: served by a local http.server (never the real host)."""

from __future__ import annotations

import json

import functools
import hashlib
import socket
import threading
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gendertool.model import sources as profiles
from gendertool.errors import NetworkError

PAYLOAD = bytes(range(256)) * 1200  # ~300 kB, several read chunks


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.tflite").write_bytes(PAYLOAD)
    handler = type("H", (_QuietHandler,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    handler.root = root
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _serve_profile(monkeypatch, url: str, data: bytes = PAYLOAD) -> profiles.Profile:
    p = replace(profiles.PROFILES["seeed-gender"], url=url, checksum="md5:" + hashlib.md5(data).hexdigest())
    monkeypatch.setitem(profiles.PROFILES, "seeed-gender", p)
    return p


def _leftovers() -> list[Path]:
    d = profiles.cache_dir()
    return sorted(d.iterdir()) if d.is_dir() else []


def test_pull_success_then_usable_as_model(cli, server, monkeypatch):
    base, handler = server
    p = _serve_profile(monkeypatch, f"{base}/model.tflite")
    r = cli("model", "pull", "seeed-gender")
    assert r.exit_code == 0, r.output
    dest = profiles.cache_dir() / "seeed-gender.tflite"
    assert f"seeed-gender: downloaded to {dest} ({p.checksum} verified)" in r.stdout
    assert "a copy error" in r.stdout and "BGR, x / 255" in " ".join(r.stdout.split())  # the profile note is repeated
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers() == [dest]  # no temporary file left behind
    src = profiles.resolve("seeed-gender")
    assert src.path == dest and src.profile == "seeed-gender"
    assert handler.requests == ["/model.tflite"]

    # a verified cached copy is not downloaded again ...
    r = cli("model", "pull", "seeed-gender")
    assert r.exit_code == 0
    assert "already cached" in r.stdout
    assert handler.requests == ["/model.tflite"]
    # ... unless --force
    r = cli("model", "pull", "seeed-gender", "--force")
    assert r.exit_code == 0
    assert handler.requests == ["/model.tflite"] * 2

    r = cli("model", "list", "--json")
    assert [p["cached"] for p in json.loads(r.stdout)["profiles"] if p["name"] == "seeed-gender"] == [True]


def test_pull_api_reports_progress(server, monkeypatch):
    base, _ = server
    _serve_profile(monkeypatch, f"{base}/model.tflite")
    seen = []
    path = profiles.pull_model("seeed-gender", progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert len(seen) > 1


def test_pull_checksum_mismatch_discards_file(cli, server, monkeypatch):
    base, _ = server
    p = _serve_profile(monkeypatch, f"{base}/model.tflite", data=b"something else")
    r = cli("model", "pull", "seeed-gender")
    assert r.exit_code == 2
    actual = hashlib.md5(PAYLOAD).hexdigest()
    assert (
        f"downloaded seeed-gender from {p.host} but its md5 is {actual}, expected {p.digest}; the file was discarded"
        in " ".join(r.stderr.split())
    )
    assert "Traceback" not in r.output
    assert _leftovers() == []


def test_pull_replaces_damaged_cache(server, monkeypatch):
    base, _ = server
    _serve_profile(monkeypatch, f"{base}/model.tflite")
    profiles.cache_dir().mkdir(parents=True)
    profiles.cached_path("seeed-gender").write_bytes(b"half a file")
    assert profiles.pull_model("seeed-gender").read_bytes() == PAYLOAD


def test_pull_http_404(cli, server, monkeypatch):
    base, _ = server
    p = _serve_profile(monkeypatch, f"{base}/missing.tflite")
    r = cli("model", "pull", "seeed-gender")
    assert r.exit_code == 2
    assert f"cannot download seeed-gender from {p.host}: HTTP 404 File not found for {p.url}" in " ".join(r.stderr.split())
    assert _leftovers() == []


def test_pull_connection_refused(cli, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = _serve_profile(monkeypatch, f"http://127.0.0.1:{port}/model.tflite")
    r = cli("model", "pull", "seeed-gender")
    assert r.exit_code == 2
    msg = " ".join(r.stderr.split())
    assert f"cannot download seeed-gender from 127.0.0.1:{port}: " in msg
    assert "Connection refused; you are offline or the host is unreachable" in msg
    assert "Traceback" not in r.output
    assert _leftovers() == []
    with pytest.raises(NetworkError):
        profiles.pull_model(p.name)


def test_pull_truncated_transfer(monkeypatch):
    # a server announcing more bytes than it sends, then closing
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 10)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    _serve_profile(monkeypatch, f"http://127.0.0.1:{port}/model.tflite")
    with pytest.raises(NetworkError) as info:
        profiles.pull_model("seeed-gender")
    assert str(info.value).startswith(f"cannot download seeed-gender from 127.0.0.1:{port}: ")
    assert "10" in str(info.value) and "1000" in str(info.value)  # says how much arrived
    t.join(5)
    srv.close()
    assert _leftovers() == []


def test_pulled_profile_validates_with_its_labels_and_preprocessing(cli, server, monkeypatch, tmp_path):
    """`--model seeed-gender` after a pull: (female, male) and BGR x/255 by default, --labels chooses."""
    import json

    import numpy as np
    from PIL import Image

    from tflite_fab import tiny_model

    base, handler = server
    data = tiny_model(height=16, width=16, classes=2, seed=1)
    (handler.root / "seeed.tflite").write_bytes(data)
    _serve_profile(monkeypatch, f"{base}/seeed.tflite", data=data)
    assert cli("model", "pull", "seeed-gender").exit_code == 0

    imgs = tmp_path / "imgs"
    for i, label in enumerate(("female", "male")):
        (imgs / label).mkdir(parents=True)
        Image.fromarray(np.full((24, 24, 3), 60 * (i + 1), np.uint8)).save(imgs / label / "a.png")
    r = cli("validate", "--model", "seeed-gender", "--images", imgs, "--labels", "Not a person,Person")
    assert r.exit_code == 2
    assert "its labels are: Not a person, Person" in " ".join(r.stderr.split())

    r = cli("validate", "--model", "seeed-gender", "--images", imgs, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["model"]["name"] == "seeed-gender"
    assert doc["model"]["preprocessing"]["mean"] == [0.0, 0.0, 0.0]
    assert doc["model"]["preprocessing"]["std"] == [255.0, 255.0, 255.0]
    assert doc["model"]["preprocessing"]["channel_order"] == "bgr"
    assert doc["model"]["preprocessing"]["crop"] == "center"
    assert doc["labels"] == ["female", "male"]


def test_pull_write_failure_is_not_called_offline(server, monkeypatch):
    base, _ = server
    _serve_profile(monkeypatch, f"{base}/model.tflite")

    def full_disk(out, chunk, tmp):
        raise profiles._WriteError(f"cannot write {tmp.parent}: No space left on device")

    monkeypatch.setattr(profiles, "_write", full_disk)
    with pytest.raises(profiles.GendertoolError) as info:
        profiles.pull_model("seeed-gender")
    assert "No space left on device" in str(info.value)
    assert "offline" not in str(info.value)
    assert _leftovers() == []
