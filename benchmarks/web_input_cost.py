"""What `monitor --web` costs with the device's input tensor: results per second through the
whole host path (monitor session, the page's sink: the host reference run of each shown
tensor, its picture, JSON for the tabs), without and with `input <n>`, on the virtual device
streaming as fast as it can (real invokes, period 0); and the host's time per shown frame.

The link itself (bytes per result, a board's pace) is measured by benchmarks/input_tensor_cost.py.

    python benchmarks/web_input_cost.py [-n 300]
"""

from __future__ import annotations

import argparse
import time

from gendertool import protocol as p
from gendertool.device.monitor import run_monitor
from gendertool.device.sim import SimDevice, SimServer
from gendertool.model.info import load_model
from gendertool.present.web import InputViews, WebSession



def run(info, n: int, every: int) -> tuple[float, int, float]:
    """(results/s, tensors shown, ms of page work per result) for `input every`."""
    device = SimDevice(info, period_ms=0)
    page = WebSession("sim", model=info, input_every=every)
    view = page.sink
    spent = [0.0]
    original = view.result

    def timed(r, session):
        t0 = time.perf_counter()
        original(r, session)
        spent[0] += time.perf_counter() - t0

    view.result = timed  # type: ignore[method-assign]
    try:
        with SimServer(device) as server:
            t0 = time.perf_counter()
            summary = run_monitor(server.url, view, count=n, timeout=10, control=page.control)
            dt = time.perf_counter() - t0
    finally:
        page.close()
    return summary.results / dt, summary.results, spent[0] / max(summary.results, 1) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300, help="results per run")
    args = ap.parse_args()
    info = load_model(None, measure_arena=False)
    for every in (0, 10, 1):
        rate, n, ms = run(info, args.n, every)
        what = "off" if every == 0 else f"every {every}"
        print(f"virtual device, period 0, device input {what:<9}: {rate:6.1f} results/s; page work {ms:5.2f} ms/result")

    views = InputViews(info)
    dev = SimDevice(info, period_ms=0)
    views.on_hello(dev.hello())
    s0 = dev._samples[0]
    t0 = time.perf_counter()
    for k in range(50):
        views.device_tensor(k, s0.input_q.tobytes())
        views.for_result(p.Result(k, "camera", -1, 0, "x", tuple(int(v) for v in s0.expect_scores), (0.5, 0.5), 1, 1, True))
    print(f"host per device-sent frame (reference invoke + picture + base64): "
          f"{(time.perf_counter() - t0) / 50 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
