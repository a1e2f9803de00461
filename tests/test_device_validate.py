"""`gendertool validate --port`: device outputs against the host TFLM reference, on the virtual device."""

from __future__ import annotations

import dataclasses
import functools
import json
import time

import numpy as np
import pytest

from gendertool.device.sim import SimDevice, SimFaults

from conftest import closed_port_url


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """female/ and male/ with synthetic pictures of several sizes, one too large to upload as is,
    and one file that is not an image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    sizes = [(64, 64), (120, 90), (256, 200), (800, 500), (33, 47), (200, 256)]
    for i, (w, h) in enumerate(sizes):
        label = ("female", "male")[i % 2]
        (root / label).mkdir(exist_ok=True)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], axis=-1)
        noise = rng.integers(0, 60, size=(h, w, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(root / label / f"img{i}.png")
    (root / "male" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    return root


class AlteredDevice(SimDevice):
    """A device whose uploaded results differ from the reference on every other image."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.uploads = 0

    def _result(self, rgb, source, sample):
        rec = super()._result(rgb, source, sample)
        if source != "upload":
            return rec
        self.uploads += 1
        if self.uploads % 2:
            return rec
        s = list(rec.scores)
        s[0] = s[0] - 3 if s[0] > -100 else s[0] + 3
        return dataclasses.replace(rec, scores=tuple(s))


class OtherModelDevice(SimDevice):
    def hello(self):
        return dataclasses.replace(super().hello(), model_sha256="f" * 64, model="other_model")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """validate --port writes out/validate/device.json by default: not into the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sim_server(sim_server):
    """conftest's virtual devices, with a slower result stream for these tests."""
    return functools.partial(sim_server, period_ms=50)


def test_help(cli):
    r = cli("validate", "--help")
    assert r.exit_code == 0
    for opt in ("--port", "--images", "--min-parity", "--json"):
        assert opt in r.stdout


def test_validate_on_sim_is_bit_exact(cli, sim_server, images):
    server = sim_server()
    r = cli("validate", "--port", server.url, "--images", images, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] is True and doc["min_parity"] == 100.0
    (board,) = doc["boards"]
    assert board["simulated"] is True and board["port"] == server.url
    assert board["parity_pct"] == 100.0 and board["uploaded"] == 6
    assert board["selftest"]["pass"] is True and board["selftest"]["n"] >= 1
    assert board["selftest"]["origin"] == "boot"  # a fresh virtual device boots on connect
    rep = board["report"]
    assert {i["path"] for i in rep["images"]} == {f"{'female' if i % 2 == 0 else 'male'}/img{i}.png" for i in range(6)}
    for im in rep["images"]:
        assert im["scores"]["device"] == im["scores"]["tflm"] and im["max_diff"] == 0
        lat = im["device_latency"]
        assert lat["invoke_us"] > 0 and lat["total_us"] == lat["pre_us"] + lat["invoke_us"]
    dev = next(x for x in rep["runtimes"] if x["name"] == "device")
    ref = next(x for x in rep["runtimes"] if x["name"] == "tflm")
    assert dev["confusion"] == ref["confusion"] and sum(map(sum, dev["confusion"])) == 6
    assert [s["path"] for s in doc["skipped"]] == ["male/broken.jpg"]
    assert "skipped 1 file" in r.stderr and "broken.jpg" in r.stderr
    assert board["latency"]["invoke_us"]["n"] == 6


def test_validate_tables_on_port_sim(cli, images):
    r = cli("validate", "--port", "sim", "--images", images, "--show-images")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "SIMULATED" in out and "boot self-test: PASS" in out
    assert "6/6 images bit-exact (100.0 %)" in out
    assert "device latency per image" in out and "confusion" in out
    assert "per image on the device" in out
    rows = [line for line in out.splitlines() if "img3.png" in line and "yes" in line]
    assert rows, out  # the 800x500 image, shrunk for the upload, is still bit-exact


def test_below_min_parity_fails(cli, sim_server, images):
    server = sim_server(AlteredDevice)
    r = cli("validate", "--port", server.url, "--images", images)
    assert r.exit_code == 2
    assert "3/6 images bit-exact (50.0 %), largest difference 3" in r.stdout
    assert "parity 50.0 % is below --min-parity 100 %" in r.stderr


def test_min_parity_threshold_is_honoured(cli, sim_server, images):
    server = sim_server(AlteredDevice)
    r = cli("validate", "--port", server.url, "--images", images, "--min-parity", "50", "--json")
    assert r.exit_code == 0, r.output
    (board,) = json.loads(r.stdout)["boards"]
    assert board["parity_pct"] == 50.0 and board["passed"] is True
    differing = [i for i in board["report"]["images"] if not i["identical"]]
    assert len(differing) == 3 and all(i["max_diff"] == 3 for i in differing)


def test_min_parity_out_of_range(cli, images):
    r = cli("validate", "--port", "sim", "--images", images, "--min-parity", "101")
    assert r.exit_code == 2 and "0..100" in r.stderr


def test_device_running_another_model(cli, sim_server, images):
    server = sim_server(OtherModelDevice)
    r = cli("validate", "--port", server.url, "--images", images)
    assert r.exit_code == 2
    assert "runs model other_model" in r.stderr and "--model" in r.stderr


def test_disconnect_keeps_images_compared(cli, sim_server, images):
    # boot (hello, selftest) + info (ack, hello) + selftest (ack, selftest) + 2 uploads (ack, result each)
    server = sim_server(autostart=False, faults=SimFaults(disconnect_after=10))
    r = cli("validate", "--port", server.url, "--images", images, "--json")
    assert r.exit_code == 2
    (board,) = json.loads(r.stdout)["boards"]
    assert board["error"] and "disconnected" in board["error"]
    assert 0 < len(board["report"]["images"]) < 6
    assert board["report"]["notes"] and "stopped after" in board["report"]["notes"][0]
    assert server.url in r.stderr


def test_several_ports_aggregated(cli, sim_server, images):
    good, bad = sim_server(), sim_server(AlteredDevice)
    r = cli("validate", "--port", good.url, "--port", bad.url, "--images", images)
    assert r.exit_code == 2
    assert "all boards" in r.stdout
    assert "100.0 %" in r.stdout and "50.0 %" in r.stdout
    assert bad.url in r.stderr and good.url not in r.stderr


def test_unreachable_port(cli, images):
    url = closed_port_url()
    r = cli("validate", "--port", url, "--images", images)
    assert r.exit_code == 2 and url in r.stderr
    assert "Traceback" not in r.output


@pytest.fixture
def reference_calls(monkeypatch):
    """Records when the host reference is computed (it costs seconds on a real image folder)."""
    from gendertool.device import validate as device_validate

    calls = []
    real = device_validate.prepare_references

    def spy(*args, **kwargs):
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(device_validate, "prepare_references", spy)
    return calls


def test_unreachable_port_fails_before_the_host_reference(cli, images, reference_calls):
    url = closed_port_url()
    r = cli("validate", "--port", url, "--images", images)
    assert r.exit_code == 2 and url in r.stderr
    assert reference_calls == []


def test_board_with_another_model_fails_before_the_host_reference(cli, sim_server, images, reference_calls):
    server = sim_server(OtherModelDevice)
    r = cli("validate", "--port", server.url, "--images", images)
    assert r.exit_code == 2 and "runs model other_model" in r.stderr
    assert reference_calls == []


def test_one_bad_port_of_two_still_validates_the_other(cli, sim_server, images, reference_calls):
    good, url = sim_server(), closed_port_url()
    r = cli("validate", "--port", good.url, "--port", url, "--images", images, "--json")
    assert r.exit_code == 2 and url in r.stderr
    boards = {b["port"]: b for b in json.loads(r.stdout)["boards"]}
    assert boards[url]["error"] and boards[url]["report"] is None
    assert boards[good.url]["error"] is None and len(boards[good.url]["report"]["images"]) == 6
    assert len(reference_calls) == 1


def test_fit_upload_keeps_small_images_and_shrinks_large_ones():
    from gendertool.device.validate import fit_upload

    small = np.zeros((480, 640, 3), np.uint8)
    assert fit_upload(small) is small
    big = np.zeros((1000, 1500, 3), np.uint8)
    assert fit_upload(big).shape == (427, 640, 3)


def test_selftest_run_on_request_when_boot_record_missed(cli, sim_server, images):
    server = sim_server()
    first = cli("validate", "--port", server.url, "--images", images, "--limit", "2")
    assert first.exit_code == 0 and "boot self-test: PASS" in first.stdout
    # the same device again: no reboot, so no boot record; the self-test is run by command
    again = cli("validate", "--port", server.url, "--images", images, "--limit", "2", "--json")
    assert again.exit_code == 0, again.output
    (board,) = json.loads(again.stdout)["boards"]
    assert board["selftest"]["origin"] == "command" and board["selftest"]["pass"] is True


class SlowFirstUploadDevice(SimDevice):
    """The first uploaded image's result comes late (after the client's timeout)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.uploads = 0

    def _result(self, rgb, source, sample):
        if source == "upload":
            self.uploads += 1
            if self.uploads == 1:
                time.sleep(1.0)
        return super()._result(rgb, source, sample)


def test_an_image_whose_result_times_out_is_uploaded_again(sim_server, images, default_model):
    from gendertool.device.validate import validate_devices

    server = sim_server(SlowFirstUploadDevice, autostart=False)
    run = validate_devices([server.url], images, default_model, infer_timeout=0.4)
    (board,) = run.boards
    assert board.error is None
    assert len(board.retried) == 1 and "no result for the uploaded image" in board.retried[0]
    # every image compared once, and each against its own result (a late reply would shift them)
    assert len(board.report.images) == board.uploaded == 6
    assert board.parity().identical == 6
    assert any("uploaded 1 image twice after a timeout" in n for n in board.report.notes)


# --- verdicts follow the device's data: a virtual device that is wrong on purpose --------------


def _device_confusion(rep, labels=("female", "male")):
    """The confusion matrix recomputed here from the device's own scores in the report."""
    cm = [[0] * len(labels) for _ in labels]
    for im in rep["images"]:
        cm[labels.index(im["label"])][int(np.argmax(im["scores"]["device"]))] += 1
    return cm


def _runtime(rep, name):
    return next(x for x in rep["runtimes"] if x["name"] == name)


def test_scores_off_by_one_are_not_bit_exact(cli, sim_server, images):
    server = sim_server(faults=SimFaults(score_off_by_one=True))
    r = cli("validate", "--port", server.url, "--images", images, "--json")
    assert r.exit_code == 2
    (board,) = json.loads(r.stdout)["boards"]
    assert board["passed"] is False and board["parity_pct"] == 0.0 and board["selftest_passed"] is True
    rep = board["report"]
    for im in rep["images"]:
        ref, dev = im["scores"]["tflm"], im["scores"]["device"]
        assert dev[1:] == ref[1:] and abs(dev[0] - ref[0]) == 1
        assert im["identical"] is False and im["max_diff"] == 1
    (par,) = rep["parity"]
    assert (par["compared"], par["identical"], par["max_diff"]) == (6, 0, 1)
    assert _runtime(rep, "device")["confusion"] == _device_confusion(rep)
    assert "parity 0.0 % is below --min-parity 100 %" in r.stderr


def test_wrong_classes_show_in_the_devices_own_confusion_matrix(cli, sim_server, images):
    server = sim_server(faults=SimFaults(wrong_class=True))
    r = cli("validate", "--port", server.url, "--images", images, "--json", "--min-parity", "0")
    (board,) = json.loads(r.stdout)["boards"]
    rep = board["report"]
    dev, ref = _runtime(rep, "device"), _runtime(rep, "tflm")
    for im in rep["images"]:
        assert im["scores"]["device"] == im["scores"]["tflm"][::-1]
        assert im["predicted"]["device"] == ("female", "male")[int(np.argmax(im["scores"]["device"]))]
    assert dev["confusion"] == _device_confusion(rep) and dev["confusion"] != ref["confusion"]
    # two classes, scores reversed: every prediction flips, except where the reference's two
    # scores are equal (argmax takes the first either way; the default model ties on a
    # synthetic picture)
    untied = [im for im in rep["images"] if im["scores"]["tflm"][0] != im["scores"]["tflm"][1]]
    assert len(untied) >= 4
    assert all(im["predicted"]["device"] != im["predicted"]["tflm"] for im in untied)
    tied = [im for im in rep["images"] if im not in untied]
    assert all(im["predicted"]["device"] == im["predicted"]["tflm"] for im in tied)
    if not tied:
        assert dev["confusion"] == [row[::-1] for row in ref["confusion"]]


def test_a_failing_selftest_fails_the_validation(cli, sim_server, images):
    server = sim_server(faults=SimFaults(selftest_fail=True))
    r = cli("validate", "--port", server.url, "--images", images)
    assert r.exit_code == 2
    assert "boot self-test: FAIL" in r.stdout and "6/6 images bit-exact (100.0 %)" in r.stdout
    assert "self-test FAILED (1 of 4 samples)" in r.stderr and "Traceback" not in r.output
    j = cli("validate", "--port", server.url, "--images", images, "--json")  # self-test run by command now
    doc = json.loads(j.stdout)
    assert j.exit_code == 2 and doc["passed"] is False
    (board,) = doc["boards"]
    assert board["selftest_passed"] is False and board["parity_pct"] == 100.0 and board["passed"] is False


class OtherShapeDevice(SimDevice):
    """The right model's hash, but a firmware built for another input shape."""

    def hello(self):
        return dataclasses.replace(super().hello(), input=(1, 32, 32, 3))


def test_device_with_another_input_shape_is_refused(cli, sim_server, images):
    server = sim_server(OtherShapeDevice)
    r = cli("validate", "--port", server.url, "--images", images)
    assert r.exit_code == 2
    assert "device input shape (1, 32, 32, 3) differs from the model's (1, 64, 64, 3)" in r.stderr


class ExtraScoreDevice(SimDevice):
    """Sends one score more than the model has outputs."""

    def _result(self, rgb, source, sample):
        rec = super()._result(rgb, source, sample)
        return dataclasses.replace(rec, scores=(*rec.scores, 0)) if source == "upload" else rec


def test_a_device_sending_more_scores_than_the_model_has_is_refused(cli, sim_server, images):
    server = sim_server(ExtraScoreDevice)
    r = cli("validate", "--port", server.url, "--images", images, "--json")
    assert r.exit_code == 2
    (board,) = json.loads(r.stdout)["boards"]
    assert board["error"] == f"{server.url}: the device sent 3 scores, the model has 2"


def test_another_model_is_named_by_both_hashes_and_nothing_is_compared(cli, sim_server, images, model_info):
    good, other = sim_server(), sim_server(OtherModelDevice)
    r = cli("validate", "--port", good.url, "--port", other.url, "--images", images, "--json")
    assert r.exit_code == 2
    boards = {b["port"]: b for b in json.loads(r.stdout)["boards"]}
    assert boards[other.url]["report"] is None and boards[other.url]["uploaded"] == 0
    assert boards[good.url]["uploaded"] == 6
    want = f"(sha256 ffffffffffff), the host reference is {model_info.name} (sha256 {model_info.sha256[:12]});"
    assert want in boards[other.url]["error"]


def test_progress_counts_every_image_once(sim_server, images, default_model):
    from gendertool.device.validate import validate_devices

    server = sim_server()
    seen = []
    validate_devices([server.url], images, default_model, progress=lambda port, phase, d, t: seen.append((port, phase, d, t)))
    assert [(d, t) for port, phase, d, t in seen if phase == "validate"] == [(k, 6) for k in range(1, 7)]
    assert [(d, t) for port, phase, d, t in seen if phase == "TFLM reference"] == [(k, 7) for k in range(1, 8)]


# --------------------------------------------------------------------------- issue 11.1: partial runs


def test_a_disconnect_is_reported_as_partial_not_as_a_verdict(cli, sim_server, images, tmp_path):
    server = sim_server(autostart=False, faults=SimFaults(disconnect_after=10))
    out = tmp_path / "dev.json"
    r = cli("validate", "--port", server.url, "--images", images, "--out", out)
    assert r.exit_code == 2
    doc = json.loads(out.read_text())
    (board,) = doc["boards"]
    k = board["compared"]
    assert 0 < k < 6 and board["planned"] == 6 and board["partial"] is True and doc["partial"] is True
    assert len(board["report"]["images"]) == k and doc["passed"] is False
    text = r.stdout.replace("\n", " ")
    assert f"PARTIAL: {k} of 6 images compared (female " in text and "no --min-parity verdict" in text
    assert "BELOW --min-parity" not in text and "images bit-exact (" not in text
    err = r.stderr.replace("\n", "")
    assert f"{k} of 6 images compared" in err and str(out) in err


def test_report_file_of_a_complete_run(cli, images, tmp_path):
    r = cli("validate", "--port", "sim", "--images", images)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "out" / "validate" / "device.json").read_text())  # the default --out
    assert doc["passed"] is True and doc["partial"] is False and doc["boards"][0]["compared"] == 6
    assert "report: out/validate/device.json" in r.stderr


def _interrupt_after(monkeypatch, n_images: int):
    from gendertool.cli import bench as cli_bench

    real = cli_bench.BoardProgress.__call__

    def progress(self, port, phase, done, total):
        real(self, port, phase, done, total)
        if phase == "validate" and done >= n_images:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench.BoardProgress, "__call__", progress)


def test_ctrl_c_keeps_the_images_compared(cli, images, tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 2)
    out = tmp_path / "r.json"
    r = cli("validate", "--port", "sim", "--images", images, "--out", out)
    assert r.exit_code == 130, r.output
    doc = json.loads(out.read_text())
    (board,) = doc["boards"]
    assert doc["interrupted"] is True and board["interrupted"] is True and board["compared"] == 2
    assert [i["path"] for i in board["report"]["images"]] == ["female/img0.png", "female/img2.png"]
    assert "PARTIAL: 2 of 6 images compared (female 2 of 3, male 0 of 3)" in r.stdout.replace("\n", " ")
    assert (f"interrupted (Ctrl-C): sim: 2 of 6 images compared (female 2 of 3, male 0 of 3); partial report {out}"
            in r.stderr.replace("\n", ""))


def test_out_is_a_folder(cli, images, tmp_path):
    r = cli("validate", "--port", "sim", "--images", images, "--out", tmp_path)
    assert r.exit_code == 2 and "is a folder" in r.stderr and "Traceback" not in r.output


def test_full_disk_writing_the_report_still_shows_the_results(cli, images, tmp_path, monkeypatch):
    import errno

    from gendertool import files

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_json_atomic", full)
    r = cli("validate", "--port", "sim", "--images", images, "--out", tmp_path / "r.json")
    assert r.exit_code == 2
    assert "6/6 images bit-exact" in r.stdout  # the results are shown before the failure
    assert "No space left on device" in r.stderr and not (tmp_path / "r.json").exists()
