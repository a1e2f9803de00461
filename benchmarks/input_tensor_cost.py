"""What sending the int8 input tensor costs (protocol v2 `input`), on the virtual device.

For each setting: results per second, bytes on the link per result, and every tensor put
back together and checked against the sample's reference tensor. Settings: no tensor,
`input 10` (every tenth result), `input 1` (every result); each at this computer's pace
(`period 0`: the link and the host's encoding are the limit) and at a board's pace
(`--board-ms`, default 39 ms per Invoke(), the figure `inspect` estimates for the default
model, with the firmware's default period of 200 ms and with no period).

    python benchmarks/input_tensor_cost.py [--seconds 5] [--board-ms 39]
    python benchmarks/input_tensor_cost.py --port /dev/ttyACM0 [--model M.tflite]   # a board

With --port the same three settings run on a board (continuous results from the built-in
samples at the firmware's period), each tensor checked against the host's reference
preprocessing of that sample. The USB-Serial-JTAG estimate is in docs/first-board-run.md.
"""

from __future__ import annotations

import argparse
import time

from gendertool import protocol as p
from gendertool.device.link import DeviceClient
from gendertool.device.sim import SimDevice, SimServer
from gendertool.device.transport import open_port


def measure(device: SimDevice, every: int, seconds: float, port: str | None = None) -> dict:
    """``device`` serves the link (no ``port``) or only gives the reference tensors (``port``)."""
    with SimServer(device) as server:
        client = DeviceClient(open_port(port or server.url))
        try:
            client.stop()
            client.poll(0.3)
            client.set_input(every)
            asm = p.InputAssembler()
            bytes0 = client.stats.bytes
            n = tensors = bad = 0
            pending: dict[int, bytes] = {}
            client.start()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                for it in client.poll(0.1):
                    if isinstance(it, p.InputChunk):
                        done = asm.feed(it)
                        if done:
                            pending[done[0]] = done[1]
                    elif isinstance(it, p.Result):
                        n += 1
                        if it.seq in pending:
                            tensors += 1
                            want = device._samples[it.sample].input_q.tobytes()
                            bad += pending.pop(it.seq) != want
            took = time.perf_counter() - t0
            client.stop()
            nbytes = client.stats.bytes - bytes0
        finally:
            client.close()
    return {"fps": n / took, "results": n, "tensors": tensors, "mismatched": bad, "broken": asm.broken,
            "bytes_per_result": nbytes / max(n, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--board-ms", type=float, default=39.0)
    ap.add_argument("--port", help="measure a board on this port instead of the virtual device")
    ap.add_argument("--model", help="the board's model (default: the shipped default model)")
    args = ap.parse_args()
    print(f"{'pace':<28} {'input':<9} {'results/s':>10} {'bytes/result':>13} {'tensors':>8} {'mismatched':>10}")
    if args.port:
        reference = SimDevice(args.model, autostart=False)
        for every in (0, 10, 1):
            r = measure(reference, every, args.seconds, port=args.port)
            label = "off" if every == 0 else f"every {every}"
            print(f"{'board ' + args.port:<28} {label:<9} {r['fps']:>10.1f} {r['bytes_per_result']:>13.0f} "
                  f"{r['tensors']:>8} {r['mismatched'] + r['broken']:>10}")
        return
    # replay: cached results, so the first rows measure the link and the encoding alone
    for pace, kw in (("link only (replay), period 0", {"period_ms": 0, "replay": True}),
                     (f"board {args.board_ms:g} ms, period 0", {"period_ms": 0, "board_timing": args.board_ms}),
                     (f"board {args.board_ms:g} ms, period 200", {"period_ms": 200, "board_timing": args.board_ms})):
        device = SimDevice(autostart=False, **kw)
        for every in (0, 10, 1):
            r = measure(device, every, args.seconds)
            label = "off" if every == 0 else f"every {every}"
            print(f"{pace:<28} {label:<9} {r['fps']:>10.1f} {r['bytes_per_result']:>13.0f} {r['tensors']:>8} "
                  f"{r['mismatched'] + r['broken']:>10}")


if __name__ == "__main__":
    main()
