"""Host-side figures of the device link, measured against the virtual device.

1. time to first result of ``gendertool monitor --port sim`` (a fresh process, as a user runs it);
2. results per second through the protocol: the continuous result stream and upload round
   trips (``infer``: RGB888 + CRC up, ``result`` down), each with a real TFLM invoke;
3. the virtual device's overhead over a bare TFLM host ``Invoke()`` of the same input
   (goal: <= 10 %): its own work per result in-process, and the per-result wall time through
   sim process -> TCP -> parser -> DeviceClient, each against the runtime call alone.

    /tmp/dev/bin/python benchmarks/bench_link.py [--starts 3] [--results 200] [--uploads 100]

Figures are medians; the machine may be shared, so rerun when they look odd.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from _common import gendertool_cmd


def time_to_first_result(starts: int) -> None:
    cmd = gendertool_cmd() + ["monitor", "--port", "sim", "--count", "1", "--json"]
    env = dict(os.environ, NO_COLOR="1")
    times = []
    for _ in range(starts):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        first = time.perf_counter() - t0
        proc.wait(timeout=60)
        if not line.strip():
            raise SystemExit(f"`{' '.join(cmd)}` printed no result (exit {proc.returncode})")
        times.append(first)
    print(f"time to first result, `gendertool monitor --port sim` (new process, {starts} starts): "
          f"median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms")


def _free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _start_sim(*args: str) -> tuple[subprocess.Popen, str]:
    """``gendertool sim`` in its own process, like a board: it does not share our interpreter."""
    import socket

    port = _free_port()
    proc = subprocess.Popen(gendertool_cmd() + ["sim", "--listen", f"127.0.0.1:{port}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("gendertool sim did not start listening within 30 s")
    return proc, f"socket://127.0.0.1:{port}"


def stream_and_uploads(n_results: int, n_uploads: int, blocks: int = 4) -> None:
    import numpy as np

    from gendertool.device.link import DeviceClient
    from gendertool.model.info import load_model
    from gendertool.model.preprocess import preprocess
    from gendertool.protocol import Result
    from gendertool.model.runtime import TflmRunner
    from gendertool.device.transport import open_port

    info = load_model(None, measure_arena=False)
    _, h, w, _ = info.input.shape
    rgb = np.random.default_rng(1).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    runner = TflmRunner(info)

    def bare(n: int) -> tuple[list[float], list[float]]:
        inv, full = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            q = preprocess(rgb, info.preprocessing, h, w, info.input.scale, info.input.zero_point)
            t1 = time.perf_counter()
            runner.invoke(q)
            t2 = time.perf_counter()
            inv.append((t2 - t1) * 1e6)
            full.append((t2 - t0) * 1e6)
        return inv, full

    bare(5)
    proc, url = _start_sim("--period-ms", "0", "--no-autostart")
    try:
        # the sim's first accepted connection gets the boot sequence; the client reads past it
        with DeviceClient(open_port(url)) as client:
            client.info()
            stream_per, rt_us, raw_inv, raw_full = [], [], [], []
            per_block_r = max(1, n_results // blocks)
            per_block_u = max(1, n_uploads // blocks)
            client.infer_rgb(rgb)  # warm the upload path
            for _ in range(blocks):  # alternate, so both sides see the same machine load
                client.start()
                got, t0 = 0, None
                for rec in client.records(timeout=120):
                    if isinstance(rec, Result):
                        if t0 is None:
                            t0 = time.perf_counter()
                        else:
                            got += 1
                        if got >= per_block_r:
                            break
                stream_per.append((time.perf_counter() - t0) * 1e6 / per_block_r)
                client.stop()
                client.poll(0.05)
                for _ in range(per_block_u):
                    t1 = time.perf_counter()
                    client.infer_rgb(rgb)
                    rt_us.append((time.perf_counter() - t1) * 1e6)
                inv, full = bare(per_block_u)
                raw_inv += inv
                raw_full += full
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    per_stream = statistics.median(stream_per)
    rt = statistics.median(rt_us)
    raw = statistics.median(raw_inv)
    raw_f = statistics.median(raw_full)
    print(f"results/s through the protocol, continuous stream (a real invoke each, period 0): {1e6 / per_stream:.1f} "
          f"({per_stream / 1000:.2f} ms per result)")
    print(f"results/s through the protocol, {w}x{h} RGB888 uploads with CRC (round trip): {1e6 / rt:.1f} "
          f"({rt / 1000:.2f} ms per round trip)")
    print(f"bare TFLM host Invoke(): median {raw / 1000:.2f} ms; reference preprocessing + Invoke(): {raw_f / 1000:.2f} ms")

    def verdict(x: float) -> str:
        return "meets" if x <= 10 else "misses"

    for name, value in (("stream result", per_stream), ("upload round trip", rt)):
        o_inv = (value - raw) / raw * 100
        o_full = (value - raw_f) / raw_f * 100
        print(f"virtual-device overhead, {name}: {o_inv:+.1f} % over a bare Invoke() ({verdict(o_inv)} the <= 10 % goal), "
              f"{o_full:+.1f} % over preprocessing + Invoke() (the same work the device does)")


def device_work(n: int) -> None:
    """The virtual device's own work per streamed result (no TCP, no client), interleaved with
    bare invokes of the same tensor: what the simulator adds, apart from the link."""
    from gendertool import protocol as p
    from gendertool.device.sim import SimDevice

    dev = SimDevice(None, autostart=False, boot_delay_s=0)
    q = dev._samples[0].input_q
    work, bare = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        p.encode_record(dev._result(None, "sample", 0))  # preprocess timing + invoke + probs + record
        t1 = time.perf_counter()
        dev.runner.invoke(q)
        t2 = time.perf_counter()
        work.append(t1 - t0)
        bare.append(t2 - t1)
    w, b = statistics.median(work), statistics.median(bare)
    over = (w - b) / b * 100
    print(f"virtual device's own work per result (in-process, no link): {w * 1000:.2f} ms vs bare Invoke() "
          f"{b * 1000:.2f} ms: {over:+.1f} % ({'meets' if over <= 10 else 'misses'} the <= 10 % goal)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3, help="monitor process starts to time")
    ap.add_argument("--results", type=int, default=200, help="results to take from the continuous stream")
    ap.add_argument("--uploads", type=int, default=100, help="upload round trips")
    args = ap.parse_args()
    time_to_first_result(args.starts)
    device_work(args.uploads)
    stream_and_uploads(args.results, args.uploads)


if __name__ == "__main__":
    main()
