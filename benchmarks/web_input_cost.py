"""What it costs to show the model's input (monitor --web): bytes per frame on the link, FPS of
the virtual device with and without the input tensor, and the host's work per shown frame.

The input travels as `input` records before their result (issue-fw's protocol v2 draft:
1024 tensor bytes per record, base64). Until that record is in this branch's protocol this
script builds the same line shape with the protocol's own encoder (a record type the host
does not know yet, so the parser counts it as unknown: the cost of reading it is still paid).

    python benchmarks/web_input_cost.py [-n 300]

The board figure is an estimate from the link's throughput, not a measurement: see the end.
"""

from __future__ import annotations

import argparse
import base64
import time
from dataclasses import dataclass
from typing import ClassVar

from gendertool import protocol as p
from gendertool.device import sim as simmod
from gendertool.device.monitor import MonitorSink, run_monitor
from gendertool.device.sim import SimDevice, SimServer
from gendertool.model.info import load_model
from gendertool.present.web import InputViews

INPUT_CHUNK = 1024  # issue-fw's draft


@dataclass(frozen=True)
class _DraftInput:
    TYPE: ClassVar[str] = "input"
    SPEC: ClassVar[tuple] = (("seq", "seq", "i"), ("offset", "offset", "i"), ("total", "total", "i"),
                             ("data", "data", "s"), ("simulated", "simulated", "b"))
    seq: int
    offset: int
    total: int
    data: str
    simulated: bool


def input_lines(seq: int, tensor: bytes) -> list[bytes]:
    return [p.encode_record(_DraftInput(seq, off, len(tensor), base64.b64encode(tensor[off:off + INPUT_CHUNK]).decode(), True))
            for off in range(0, len(tensor), INPUT_CHUNK)]


class _Count(MonitorSink):
    def __init__(self) -> None:
        self.n = 0

    def result(self, r, session) -> None:
        self.n += 1


def fps(device: SimDevice, n: int, with_input: bool) -> tuple[float, int]:
    """Results per second the monitor receives from the sim streaming as fast as it can."""
    original = simmod._Session.send
    sent = {"bytes": 0}

    def send(self, rec):
        if isinstance(rec, p.Result):
            if with_input:
                q = self.dev._preprocess(self.dev._samples[max(rec.sample, 0)].rgb)  # the tensor it ran on
                for line in input_lines(rec.seq, q.tobytes()):
                    self.raw(line)
                    sent["bytes"] += len(line)
            sent["bytes"] += len(p.encode_record(rec))
        return original(self, rec)

    simmod._Session.send = send
    try:
        with SimServer(device) as server:
            t0 = time.perf_counter()
            summary = run_monitor(server.url, _Count(), count=n, timeout=10)
            dt = time.perf_counter() - t0
    finally:
        simmod._Session.send = original
    return summary.results / dt, sent["bytes"] // max(summary.results, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="results per run")
    args = ap.parse_args()

    info = load_model(None, measure_arena=False)
    tensor_bytes = 1
    for d in info.input.shape:
        tensor_bytes *= int(d)
    device = SimDevice(info, period_ms=0)
    s0 = device._samples[0]
    result_line = len(p.encode_record(device._result(None, "sample", 0)))
    lines = input_lines(0, s0.input_q.tobytes())
    input_bytes = sum(len(x) for x in lines)
    print(f"input tensor {list(info.input.shape)} int8 = {tensor_bytes} bytes")
    print(f"result record: {result_line} bytes; input records: {len(lines)} x <= {max(len(x) for x in lines)} = "
          f"{input_bytes} bytes ({input_bytes / tensor_bytes:.2f} x the tensor: base64 + framing)")
    print(f"per frame with the input: {result_line + input_bytes} bytes = {(result_line + input_bytes) / result_line:.0f} x a bare result")

    for with_input in (False, True):
        rate, per = fps(device, args.n, with_input)
        print(f"virtual device, period 0, {args.n} results, input {'every frame' if with_input else 'never    '}: "
              f"{rate:6.1f} FPS, {per} bytes/frame on the link")

    views = InputViews(info)
    views.on_hello(device.hello())
    t0 = time.perf_counter()
    for k in range(50):
        views.device_tensor(k, s0.input_q.tobytes())
        views.for_result(p.Result(k, "camera", -1, 0, "x", tuple(int(v) for v in s0.expect_scores), (0.5, 0.5), 1, 1, True))
    per_ms = (time.perf_counter() - t0) / 50 * 1000
    print(f"host per device-sent frame (reference invoke + picture + base64): {per_ms:.1f} ms")

    print("\nboard estimate (not measured): USB-Serial-JTAG is USB full speed (12 Mbit/s); CDC devices on the S3 are "
          "reported at 0.5-1 MB/s. At 0.3-1 MB/s one frame's input costs "
          f"{(result_line + input_bytes) / 1e6 * 1000:.0f}-{(result_line + input_bytes) / 0.3e6 * 1000:.0f} ms of link time; "
          "with ~40 ms invoke (docs/latency-estimate.md) sending it every frame would roughly halve the FPS, every 10th "
          "frame costs 2-6 ms per frame on average.")


if __name__ == "__main__":
    main()
