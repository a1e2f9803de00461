"""The virtual device end to end over real loopback TCP (pyserial socket://) with DeviceClient."""

from __future__ import annotations

import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from gendertool import protocol as p
from gendertool.errors import DeviceError
from gendertool.device.link import DeviceClient, DeviceCommandError, LinkEvent
from gendertool.device.sim import SimDevice, SimFaults, SimServer
from gendertool.device.transport import open_port


@pytest.fixture(scope="module")
def model(default_model):
    from gendertool.model.info import load_model

    return load_model(default_model, measure_arena=False)


@pytest.fixture
def serve(model):
    """serve(**SimDevice kwargs) -> connected DeviceClient over socket://127.0.0.1:PORT."""
    opened = []

    def make(*, client_kw: dict | None = None, **kw):
        kw.setdefault("period_ms", 20)
        dev = SimDevice(model, **kw)
        server = SimServer(dev, "127.0.0.1", 0).start()
        client = DeviceClient(open_port(server.url), **(client_kw or {"reconnect_timeout": 5}))
        opened.append((client, server))
        return client, dev

    yield make
    for client, server in opened:
        client.close()
        server.close()


def wait_for(client, pred, timeout=10.0):
    for it in client.records(timeout=timeout):
        if pred(it):
            return it
    raise AssertionError("timed out")


def results(client, n, timeout=30.0):
    out = []
    for it in client.records(timeout=timeout):
        if isinstance(it, p.Result):
            out.append(it)
            if len(out) == n:
                return out
    raise AssertionError(f"only {len(out)} of {n} results")


def test_sim_help(cli):
    r = cli("sim", "--help")
    assert r.exit_code == 0
    assert "--listen" in r.stdout and "--period-ms" in r.stdout and "--model" in r.stdout
    assert "--garbage-every" not in r.stdout  # fault injection stays hidden


def test_sim_rejects_a_bad_listen_address(cli):
    r = cli("sim", "--listen", "localhost")
    assert r.exit_code == 2
    assert "--listen wants HOST:PORT" in r.stderr


def test_sim_reports_a_port_in_use(cli, default_model):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        r = cli("sim", "--model", str(default_model), "--listen", f"127.0.0.1:{s.getsockname()[1]}")
    finally:
        s.close()
    assert r.exit_code == 2
    assert "cannot listen on 127.0.0.1:" in r.stderr


def test_cli_sim_process_end_to_end(default_model):
    proc = subprocess.Popen(
        [sys.executable, "-m", "gendertool", "sim", "--model", str(default_model), "--listen", "127.0.0.1:0",
         "--period-ms", "10", "--max-clients", "1"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = None
        for _ in range(20):
            line = proc.stderr.readline()
            if "socket://" in line:
                url = line.split(" on ")[1].split()[0]
                break
        assert url and url.startswith("socket://127.0.0.1:")
        with DeviceClient(open_port(url)) as client:
            got = results(client, 20)
            hello = client.info()
        assert [r.seq for r in got] == list(range(got[0].seq, got[0].seq + 20))
        assert all(r.simulated and r.source == "sample" for r in got)
        assert hello.simulated and hello.proto == p.PROTO_VERSION and hello.model == default_model.stem
        assert proc.wait(timeout=10) == 0  # --max-clients 1: exits after the client left
    finally:
        proc.kill()
        proc.stderr.close()


def test_hello_selftest_then_results_on_connect(serve, model):
    client, dev = serve()
    items = []
    for it in client.records(timeout=10):
        items.append(it)
        if sum(isinstance(x, p.Result) for x in items) >= 3:
            break
    recs = [x for x in items if not isinstance(x, (p.LogLine, LinkEvent))]
    assert isinstance(recs[0], p.Hello) and isinstance(recs[1], p.SelfTest)
    assert recs[0].labels == model.labels and recs[0].model_sha256 == model.sha256
    assert recs[0].input == model.input.shape and recs[0].samples == 4
    assert recs[1].passed and recs[1].n == recs[0].samples
    assert [r.seq for r in recs[2:5]] == [0, 1, 2]
    assert any(isinstance(x, p.LogLine) and x.text.startswith("ESP-ROM") for x in items)


def test_upload_is_inferred_with_the_reference_pipeline(serve, model):
    from gendertool.model.preprocess import preprocess
    from gendertool.model.runtime import TflmRunner

    client, _ = serve(autostart=False)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    res = client.infer_rgb(rgb)
    q = preprocess(rgb, model.preprocessing, 64, 64, model.input.scale, model.input.zero_point)
    expect = TflmRunner(model).invoke(q).reshape(-1)
    assert res.source == "upload" and res.sample == -1 and res.simulated
    assert list(res.scores) == expect.tolist()
    assert res.class_index == int(np.argmax(expect)) and res.label == model.labels[res.class_index]
    assert abs(sum(res.probs) - 1) < 0.01


def test_corrupted_upload_is_refused_not_inferred(serve):
    client, _ = serve(autostart=False)
    payload = bytes(range(48))
    client.transport.write(b"infer 4 4 48 %08x\n" % (zlib.crc32(payload) ^ 1))
    assert wait_for(client, lambda r: isinstance(r, p.Ack)).cmd == "infer"
    client.transport.write(payload)
    err = wait_for(client, lambda r: isinstance(r, (p.ErrorRecord, p.Result)))
    assert isinstance(err, p.ErrorRecord) and err.code == "upload_crc" and err.cmd == "infer"
    client.ping()  # back in command mode


def test_stalled_upload_times_out(serve):
    client, _ = serve(autostart=False)
    client.transport.write(b"infer 4 4 48 00000000\n")
    wait_for(client, lambda r: isinstance(r, p.Ack))
    client.transport.write(b"\x01" * 10)
    t0 = time.monotonic()
    err = wait_for(client, lambda r: isinstance(r, p.ErrorRecord), timeout=10)
    assert err.code == "upload_timeout" and "10 bytes" in err.message
    assert time.monotonic() - t0 >= p.UPLOAD_IDLE_MS / 1000 - 0.3
    client.ping()


@pytest.mark.parametrize(
    "line,code,cmd",
    [
        (b"fly\n", "unknown_cmd", "fly"),
        (b"bench 0 1\n", "bad_args", "bench"),
        (b"infer 641 1 1923 00000000\n", "too_large", "infer"),
        (b"infer 2 2 11 00000000\n", "bad_args", "infer"),
        (b"ping " + b"x" * 300 + b"\n", "line_too_long", ""),
        (b"source camera\n", "unsupported", "source"),
    ],
)
def test_bad_commands_get_error_records(serve, line, code, cmd):
    client, _ = serve(autostart=False)
    client.transport.write(line)
    err = wait_for(client, lambda r: isinstance(r, p.ErrorRecord))
    assert (err.code, err.cmd, err.simulated) == (code, cmd, True)
    assert err.message
    client.ping()


def test_client_raises_command_errors_and_checks_inputs(serve):
    client, _ = serve(autostart=False)
    with pytest.raises(DeviceCommandError, match="unsupported: the virtual device has no camera"):
        client.set_source("camera")
    with pytest.raises(DeviceError, match="unknown input source 'usb'"):
        client.set_source("usb")
    with pytest.raises(DeviceError, match="larger than the device accepts"):
        client.infer_rgb(np.zeros((641, 10, 3), np.uint8))
    with pytest.raises(DeviceError, match="HxWx3 uint8"):
        client.infer_rgb(np.zeros((10, 10), np.uint8))


def test_bench_collects_every_sample(serve):
    client, dev = serve(autostart=False)
    seen = []
    real = dev._preprocess
    dev._preprocess = lambda rgb: seen.append(rgb.shape) or real(rgb)
    run = client.bench_collect(70, 3)
    assert run.complete and run.error is None and run.simulated
    assert len(run.invoke_us) == 70 == run.summary.n == len(run.pre_us) and run.summary.warmup == 3
    assert all(us > 0 for us in run.pre_us)
    assert run.summary.total_us == sum(run.invoke_us)  # bsummary describes the Invoke() times
    assert min(run.invoke_us) == run.summary.min_us and max(run.invoke_us) == run.summary.max_us
    # one preprocessing per run, warm-ups included, all of one built-in sample
    assert len(seen) == 73 and len(set(seen)) == 1 and seen[0] == dev._samples[0].rgb.shape


def test_bench_on_the_uploaded_image(serve):
    client, dev = serve(autostart=False)
    client.set_source("upload")
    with pytest.raises(DeviceCommandError, match="bad_args: no image uploaded yet"):
        list(client.bench(5, 0))
    rgb = np.random.default_rng(2).integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    client.infer_rgb(rgb)
    seen = []
    real = dev._preprocess
    dev._preprocess = lambda img: seen.append(img.shape) or real(img)
    run = client.bench_collect(40, 1)
    assert run.complete and len(run.pre_us) == 40
    assert seen == [(120, 90, 3)] * 41


def test_preprocessing_constants_are_computed_once(serve, monkeypatch):
    import gendertool.model.preprocess as pre

    client, dev = serve(autostart=False)
    ref = pre.preprocess(dev._samples[1].rgb, dev.model.preprocessing, dev.height, dev.width, dev.model.input.scale,
                         dev.model.input.zero_point)

    def no_lut(*a, **kw):
        raise AssertionError("quantisation table rebuilt per result")

    monkeypatch.setattr(pre, "quant_lut", no_lut)
    np.testing.assert_array_equal(dev._preprocess(dev._samples[1].rgb), ref)  # same bytes as the reference
    assert client.bench_collect(3, 0).complete
    client.start()
    assert len(results(client, 2)) == 2


def test_bench_from_an_older_firmware_says_so(serve, monkeypatch):
    from gendertool.device import sim as simdevice

    def old_bench(self, n, warmup):  # a bsample without pre_us, as before the field existed
        body = b'bsample {"first":0,"invoke_us":[45000],"simulated":true}'
        self.raw(b"@GT " + body + b"*%08x\n" % zlib.crc32(body))

    monkeypatch.setattr(simdevice._Session, "bench", old_bench)
    client, _ = serve(autostart=False)
    run = client.bench_collect(1, 0, timeout=0.5)
    assert not run.complete and run.invoke_us == []
    assert "1 malformed record arrived" in run.error and "rebuild and flash" in run.error


def test_bench_interrupted_keeps_what_arrived(serve):
    # the connection drops after 6 records: hello, selftest, ack, 3 bsamples (96 samples)
    client, _ = serve(autostart=False, faults=SimFaults(disconnect_after=6))
    run = client.bench_collect(200, 0)
    assert not run.complete and run.summary is None
    assert len(run.invoke_us) == 96
    assert "kept 96 of 200 samples" in run.error and "disconnected" in run.error


def test_profile_is_per_node_and_marked_estimated(serve, model):
    client, _ = serve(autostart=False)
    ops, summary = client.profile()
    assert len(ops) == sum(o.count for o in model.operators) == summary.nodes
    assert [o.node for o in ops] == list(range(len(ops)))
    assert all(o.estimated and o.simulated for o in ops) and summary.estimated
    assert {o.op for o in ops} == {o.name for o in model.operators}
    assert summary.total_us == sum(o.us for o in ops)
    assert abs(summary.total_us - summary.invoke_us) <= len(ops)


def test_selftest_and_info(serve, model):
    client, _ = serve(autostart=False)
    st = client.selftest()
    assert st.passed and st.n == 4 and st.failed == 0 and len(st.results) == 4
    h = client.info()
    assert h.running is False and h.source == "sample" and h.board == "sim"


def test_stop_start_and_source_upload(serve):
    client, _ = serve(period_ms=5)
    results(client, 2)
    client.stop()
    client.poll(0)  # results that arrived before the stop's ack
    assert not [x for x in client.records(timeout=0.3) if isinstance(x, p.Result)]
    client.set_source("upload")
    client.start()
    client.poll(0)
    assert not [x for x in client.records(timeout=0.3) if isinstance(x, p.Result)]
    client.set_source("sample")
    assert len(results(client, 3)) == 3


def test_ten_thousand_results_with_garbage_between_lose_none(serve):
    client, dev = serve(period_ms=0, replay=True, faults=SimFaults(garbage_every=1, garbage_max=48, seed=7))
    got = results(client, 10000, timeout=120)
    seqs = [r.seq for r in got]
    assert seqs == list(range(seqs[0], seqs[0] + 10000))
    st = client.stats
    assert st.bad_crc == st.bad_frame == st.overlong == st.partial == st.bad_record == 0
    assert st.log_lines >= 9000  # the garbage surfaced as log text, not as lost records
    assert st.max_buffered <= p.MAX_LINE


def test_stopping_records_part_way_loses_nothing(serve):
    client, dev = serve(period_ms=0, replay=True)
    seqs = []
    for _ in range(20):  # many short consumers, each breaking out in the middle of a read batch
        for it in client.records(timeout=10):
            if isinstance(it, p.Result):
                seqs.append(it.seq)
                if len(seqs) % 7 == 0:
                    break
    assert len(seqs) == 140
    assert seqs == list(range(seqs[0], seqs[0] + 140))


def test_resets_mid_record_are_counted_and_the_stream_recovers(serve):
    client, dev = serve(period_ms=2, replay=True, faults=SimFaults(reset_every=25))
    hellos = 0
    res = []
    for it in client.records(timeout=30):
        if isinstance(it, p.Hello):
            hellos += 1
        elif isinstance(it, p.Result):
            res.append(it)
        if hellos >= 5:
            break
    st = client.stats
    # each cut record merged with the ROM banner line (one more may sit in the last read)
    assert hellos - 1 <= st.bad_frame <= hellos
    assert res[0].seq == 0 and any(b.seq < a.seq for a, b in zip(res, res[1:]))  # seq restarts after a reset


def test_bad_checksums_are_dropped_and_counted(serve):
    client, _ = serve(period_ms=0, replay=True, faults=SimFaults(bad_crc_every=10))
    got = results(client, 200)
    st = client.stats
    assert st.bad_crc >= 20
    steps = [b.seq - a.seq for a, b in zip(got, got[1:])]
    assert set(steps) == {1, 2}  # every 10th record dropped alone, never more
    assert 19 <= steps.count(2) <= st.bad_crc


def test_disconnect_is_survived_with_link_events(serve):
    client, _ = serve(period_ms=5, faults=SimFaults(disconnect_after=8))
    kinds = []
    n = 0
    for it in client.records(timeout=20):
        if isinstance(it, LinkEvent):
            kinds.append(it.kind)
        elif isinstance(it, p.Result):
            n += 1
            if kinds and n >= 10:
                break
    assert kinds == ["disconnected", "reconnected"]
    assert n >= 10


def test_reconnect_gives_up_with_a_clear_message(model):
    dev = SimDevice(model, period_ms=5)
    server = SimServer(dev, "127.0.0.1", 0).start()
    client = DeviceClient(open_port(server.url), reconnect_timeout=0.6)
    try:
        wait_for(client, lambda r: isinstance(r, p.Result))
        server.close()  # the port never comes back
        with pytest.raises(DeviceError, match=r"did not come back within 1 s"):
            for _ in client.records(timeout=10):
                pass
    finally:
        client.close()
        server.close()


def test_slow_replies_time_out_then_succeed(serve):
    client, _ = serve(autostart=False, faults=SimFaults(reply_delay_ms=400))
    with pytest.raises(DeviceError, match=r"no reply to `ping` from socket://127.0.0.1:\d+ within 0.1 s"):
        client.ping(timeout=0.1)
    client.ping(timeout=3)  # a late ack is harmless
    client.ping(timeout=3)


def test_reset_command_reboots_through_a_reconnect(serve):
    client, _ = serve(period_ms=5)
    results(client, 5)
    # results sent before the reset are kept and handed out first (the link loses nothing):
    # stop and take them now, so the next result can only come from the rebooted device
    client.stop()
    client.poll(0)
    hello = client.reset(timeout=10)
    assert hello.running is True
    first = results(client, 1)[0]
    assert first.seq == 0


def test_port_sim_runs_an_in_process_virtual_device(default_model):
    with DeviceClient.open("sim", sim_options={"model": default_model, "period_ms": 10}) as client:
        got = results(client, 3)
        assert all(r.simulated for r in got)
        assert client.port == "sim"


def test_largest_upload_goes_through(serve):
    client, _ = serve(autostart=False)
    rgb = np.tile(np.arange(640, dtype=np.uint8)[None, :, None], (640, 1, 3))
    res = client.infer_rgb(rgb)
    assert res.source == "upload" and len(res.scores) == len(res.probs)


def test_crop_none_reaches_the_uploaded_pixels(model):
    """A profile saying crop "none" makes the virtual device stretch the whole frame, like the firmware."""
    import dataclasses

    from gendertool.model.preprocess import preprocess
    from gendertool.model.runtime import TflmRunner

    whole = dataclasses.replace(model, preprocessing=dataclasses.replace(model.preprocessing, crop="none"))
    dev = SimDevice(whole, autostart=False, period_ms=20)
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(48, 150, 3), dtype=np.uint8)  # landscape: the two crops differ
    args = (64, 64, model.input.scale, model.input.zero_point)
    q = preprocess(rgb, whole.preprocessing, *args)
    assert not np.array_equal(q, preprocess(rgb, model.preprocessing, *args))
    np.testing.assert_array_equal(dev._preprocess(rgb), q)

    server = SimServer(dev, "127.0.0.1", 0).start()
    client = DeviceClient(open_port(server.url), reconnect_timeout=5)
    try:
        res = client.infer_rgb(rgb)
    finally:
        client.close()
        server.close()
    assert list(res.scores) == TflmRunner(model).invoke(q).reshape(-1).tolist()


def test_second_client_is_told_busy_and_the_first_keeps_working(sim_server, cli):
    from gendertool.device.link import DeviceClient

    server = sim_server()
    with DeviceClient.open(server.url) as first:
        assert first.info().proto >= 1
        with pytest.raises(DeviceError, match="is busy .*another client is connected"):
            with DeviceClient.open(server.url) as second:
                second.info()
        r = cli("monitor", "--port", server.url, "--count", "1", "--timeout", "3")
        assert r.exit_code == 2 and "is busy" in r.output and "Traceback" not in r.output
        assert first.info().proto >= 1  # refusing others did not disturb the served client
    # once the first client has gone, the next one is served
    with DeviceClient.open(server.url) as third:
        assert third.info().proto >= 1


def _distinct_images(n):
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size=(48 + 8 * k, 64, 3), dtype=np.uint8) for k in range(n)]


def test_late_infer_ack_does_not_shift_later_uploads(serve):
    # the ack comes after the client gave up: the device then takes the next command's bytes
    # as payload unless the client lets that upload run out and resynchronises first
    client, dev = serve(autostart=False, faults=SimFaults(reply_delay_ms=2500))
    imgs = _distinct_images(4)
    with pytest.raises(DeviceError, match=r"no reply to `infer` from .* within 2 s"):
        client.infer_rgb(imgs[0])
    dev.faults.reply_delay_ms = 0
    got = [client.infer_rgb(img).scores for img in imgs[1:]]
    ref, _ = serve(autostart=False)
    assert got == [ref.infer_rgb(img).scores for img in imgs[1:]]
    assert len({tuple(s) for s in got}) > 1  # the images really give different answers


def test_late_result_is_not_taken_for_the_next_upload(serve):
    client, dev = serve(autostart=False, faults=SimFaults(result_delay_ms=1500))
    imgs = _distinct_images(3)
    with pytest.raises(DeviceError, match=r"no result for the uploaded image .* within 0.3 s"):
        client.infer_rgb(imgs[0], timeout=0.3)
    dev.faults.result_delay_ms = 0
    got = [client.infer_rgb(img).scores for img in imgs[1:]]
    ref, _ = serve(autostart=False)
    assert got == [ref.infer_rgb(img).scores for img in imgs[1:]]
    # the late result is still handed out to record readers, it just answers nothing
    late = [it for it in client.poll(0) if isinstance(it, p.Result) and it.source == "upload"]
    assert [r.scores for r in late] == [ref.infer_rgb(imgs[0]).scores]


def test_a_device_that_stays_silent_after_a_timeout_is_reported_out_of_step(serve):
    client, dev = serve(autostart=False, faults=SimFaults(reply_delay_ms=3000))
    with pytest.raises(DeviceError, match=r"no reply to `ping`"):
        client.ping(timeout=0.1)
    with pytest.raises(DeviceError, match=r"is out of step after an earlier timeout \(reply to `ping`\) and did not answer within 2 s"):
        client.ping()
    dev.faults.reply_delay_ms = 0
    client.ping(timeout=5)  # once it answers again, the link recovers


# ---------------------------------------------------------------- issue 21 / issue 19 item 2


def test_board_timing_a_long_warm_up_bench_at_board_speed(serve):
    """Issue 21 fault 1 at a board's pace: 40 ms per Invoke() and a warm-up of 100 are 4 s before
    the first sample; the host waits 2 s between records here and the progress records keep it."""
    client, dev = serve(autostart=False, board_timing=40)
    assert dev.board_invoke_us == 40000
    t0 = time.monotonic()
    run = client.bench_collect(3, 100, timeout=2.0)
    took = time.monotonic() - t0
    assert run.error is None and run.complete, run.error
    assert run.invoke_us == [40000] * 3 and took >= 103 * 0.04
    assert run.summary.arena_in == "host" and run.summary.camera is False


def test_board_timing_without_progress_records_the_same_bench_times_out(serve, monkeypatch):
    """The test above can fail: a device that stays silent through the warm-up (the firmware
    before issue 21) loses the host."""
    from gendertool.device import sim as simdevice

    monkeypatch.setattr(simdevice._Session, "progress", lambda self, *a: None)
    client, _ = serve(autostart=False, board_timing=40)
    run = client.bench_collect(3, 100, timeout=2.0)
    assert not run.complete and "no benchmark sample 1/3 from" in run.error and "within 2 s" in run.error


def test_board_timing_from_the_estimate(serve, model):
    _, dev = serve(autostart=False, board_timing="estimate")
    assert dev.board_invoke_us == round(model.latency.internal_ms * 1000) > 0
    with pytest.raises(DeviceError, match="estimate"):
        SimDevice(model, board_timing="fast")


def test_a_host_that_stops_reading_loses_whole_records_and_is_told_how_many(serve):
    """The emulated USB-Serial-JTAG stall: results during the stall are held while they fit and
    dropped whole when not; nothing arrives cut, and hello.tx_dropped counts exactly the gaps."""
    client, dev = serve(period_ms=5, faults=SimFaults(tx_stall_after=10, tx_stall_ms=1500, tx_buffer=2000))
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 300 and time.monotonic() < deadline:
        got += [r for r in client.poll(0.2) if isinstance(r, p.Result)]
    client.stop()
    hello = client.info()
    seqs = [r.seq for r in got]
    gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:]))
    st = client.stats
    assert st.partial == st.bad_crc == st.bad_frame == st.overlong == 0
    assert seqs == sorted(seqs) and seqs[0] == 0
    # every result either arrived whole or was counted as dropped by the device: the drops all
    # fall inside the stall, between results that arrived
    assert gaps == hello.tx_dropped == dev.tx_dropped > 0


def test_the_input_tensor_on_request_matches_the_reference(serve, model):
    from gendertool.model.preprocess import preprocess

    client, dev = serve(autostart=False)
    rgb = np.random.default_rng(4).integers(0, 256, size=(70, 50, 3), dtype=np.uint8)
    client.set_input()
    res = client.infer_rgb(rgb)
    asm = p.InputAssembler()
    got = [x for x in (asm.feed(c) for c in client.poll(0.3) if isinstance(c, p.InputChunk)) if x]
    want = preprocess(rgb, model.preprocessing, 64, 64, model.input.scale, model.input.zero_point)
    assert got == [(res.seq, want.astype(np.int8).tobytes())]
    client.set_input(3)  # every third result
    client.start()
    items = []
    deadline = time.monotonic() + 10
    while sum(isinstance(i, p.Result) for i in items) < 7 and time.monotonic() < deadline:
        items += client.poll(0.2)
    client.stop()
    tensors = {}
    for it in items:
        if isinstance(it, p.InputChunk) and (done := asm.feed(it)):
            tensors[done[0]] = done[1]
    res = [r for r in items if isinstance(r, p.Result)]
    assert {r.seq for r in res if r.seq % 3 == 0} == set(tensors)
    for r in res:
        if r.seq in tensors:
            assert tensors[r.seq] == dev._samples[r.sample].input_q.tobytes()
    assert asm.broken == 0


def test_protocol_versions_are_checked_both_ways(serve, monkeypatch):
    client, _ = serve(autostart=False)
    assert client.info().proto == p.PROTO_VERSION
    # a host of a newer version: the device names both versions
    with pytest.raises(DeviceCommandError, match=r"proto_mismatch: this firmware speaks protocol v2, the host v3"):
        client.command("info", 3)
    from gendertool.device import sim as simdevice

    orig = simdevice._Session.command

    def other_device(answer):
        def command(self, c):
            if c.cmd == "info" and c.args:
                return self.error(*answer)
            return orig(self, c)
        return command

    # ... and DeviceClient.info() turns that into a plain error naming both
    monkeypatch.setattr(simdevice._Session, "command", other_device(
        ("proto_mismatch", "info", "this firmware speaks protocol v3, the host v2: rebuild and flash")))
    with pytest.raises(DeviceError, match=r"speaks protocol v3, the host v2") as exc:
        client.info()
    assert not isinstance(exc.value, DeviceCommandError)
    # a version 1 firmware refuses `info 2` (it took no argument): the host says to reflash
    monkeypatch.setattr(simdevice._Session, "command", other_device(("bad_args", "info", "bad arguments for info")))
    with pytest.raises(DeviceError, match="older than protocol v2.*rebuild and flash"):
        client.info()


@pytest.mark.parametrize("fault", [None, "score_off_by_one"])
def test_the_host_rechecks_a_result_on_the_tensor_the_device_sent(serve, model, fault):
    """Issue 19 item 2: the tensor the device ran on, re-run by the host's reference runtime,
    gives the device's scores bit for bit; a device that computes otherwise is caught."""
    from gendertool.model.runtime import TflmRunner

    faults = SimFaults(**({fault: True} if fault else {}))
    client, _ = serve(autostart=False, faults=faults)
    client.set_input(1)
    client.start()
    asm, tensors, res = p.InputAssembler(), {}, []
    deadline = time.monotonic() + 10
    while len(res) < 4 and time.monotonic() < deadline:
        for it in client.poll(0.2):
            if isinstance(it, p.InputChunk) and (done := asm.feed(it)):
                tensors[done[0]] = done[1]
            elif isinstance(it, p.Result):
                res.append(it)
    client.stop()
    runner = TflmRunner(model)
    same = [runner.scores_for(tensors[r.seq]) == r.scores for r in res]
    assert len(same) >= 4 and all(same) is (fault is None) and (not any(same)) is (fault is not None)
