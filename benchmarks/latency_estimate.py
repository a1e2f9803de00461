"""The latency estimate's calibration table and the estimates of the default and a seed-shaped model.

    python benchmarks/latency_estimate.py [MODEL ...]

Prints, for every calibration point: published ms, estimated ms (fit on all points) and the
leave-one-out estimate; then the estimate of each model (default: the shipped model and
tests/tflite_fab.seed_shaped_model()). Figures only: estimates, not measurements.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tflite_fab


def main(argv: list[str]) -> int:
    from gendertool.model import estimate as E
    from gendertool.model.flatbuffer import parse_model

    cal = E.default_calibration()
    f = E.fit(E.esp_nn_points(cal), cal)
    raw = "n/a" if f.psram_factor_unclamped is None else f"{f.psram_factor_unclamped:.3f}"
    print(f"fit: scale {f.scale:.3f}, PSRAM factor {f.psram_factor:.3f} (unclamped {raw})")
    print(f"{'point':40} {'arena':8} {'MACs':>12} {'published':>10} {'estimated':>10} {'leave-1-out':>11} {'error':>7}")
    for r in E.calibration_table(cal):
        print(f"{r.name:40} {r.arena:8} {r.macs:>12,} {r.published_ms:>8.1f}ms {r.fitted_ms:>8.1f}ms "
              f"{r.loo_ms:>9.1f}ms {r.loo_error:>+7.0%}")
    models = [(p, Path(p).read_bytes()) for p in argv] or [
        ("default model", (REPO / "models" / "gender_mbv2_035_64.tflite").read_bytes()),
    ]
    if not argv:
        from tflite_fab import seed_shaped_model

        models.append(("seed-shaped model", seed_shaped_model()))
    for name, data in models:
        est = E.estimate_model(parse_model(data))
        macs = sum(e.work.amount for e in est.ops if e.work.kind in ("conv", "conv_stem", "depthwise", "fc"))
        lo, hi = est.ms_range("internal")
        plo, phi = est.ms_range("psram")
        print(f"{name}: {macs:,} MACs, estimate {est.internal_ms:.1f} ms internal ({lo:.1f}-{hi:.1f}), "
              f"{est.psram_ms:.1f} ms PSRAM ({plo:.1f}-{phi:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
