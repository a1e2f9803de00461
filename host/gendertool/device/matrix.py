"""The firmware-variant matrix: build, flash and bench each variant (ESP-NN on/off, arena and
model placement) on one board."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from gendertool.device.bench import (
    Variant,
    check_request,
    connect_when_booted,
    interrupted_note,
    open_client,
    run_bench,
)
from gendertool.device.bench_results import BENCH_JSON, BenchResult
from gendertool.device.flash import flash
from gendertool.errors import GendertoolError, Interrupted
from gendertool.model.info import load_model
from gendertool.project.build import build
from gendertool.project.manifest import plan_flash

# --------------------------------------------------------------------------- firmware-variant matrix




# Add a row to measure another variant. CONFIG_APP_* live in the rendered main/Kconfig.projbuild,
# CONFIG_NN_* in esp-nn's Kconfig.projbuild (choice NN_OPTIMIZATIONS); tests check both.
_BASE = {"arena_placement": "internal", "model_in_psram": False, "esp_nn": True}
MATRIX: tuple[Variant, ...] = (
    Variant("baseline", "arena in internal RAM, model in flash, ESP-NN on", dict(_BASE)),
    Variant("arena-psram", "tensor arena in PSRAM", {**_BASE, "arena_placement": "psram"}),
    Variant("model-psram", "model copied from flash to PSRAM at boot", {**_BASE, "model_in_psram": True}),
    Variant("esp-nn-off", "ESP-NN off: ANSI C kernels", {**_BASE, "esp_nn": False}),
)


def get_variants(names: Sequence[str] | None = None) -> list[Variant]:
    if not names:
        return list(MATRIX)
    by_name = {v.name: v for v in MATRIX}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise GendertoolError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


StepFn = Callable[[str, str], None]  # (variant, message)


def run_matrix(
    port: str,
    variants: Sequence[Variant],
    *,
    model: str | Path | None = None,
    board: str | None = None,
    n: int = 200,
    warmup: int = 10,
    input_source: str = "sample",
    out_dir: Path = Path("out/bench"),
    on_step: StepFn | None = None,
    connect: Callable[[str], Any] | None = None,
    boot_timeout_s: float = 20.0,
) -> list[BenchResult]:
    """Build, flash and bench each variant on the board at ``port``, in order.

    Build and flash problems raise (BuildError / DeviceError): without a toolchain the first
    build stops the matrix with the toolchain's message, and no figure is invented. Each
    variant's project, bench.json and plots go to ``out_dir/<variant>/``.
    """

    check_request(n, warmup, input_source)
    if port == "sim" or port.startswith("socket://"):
        raise GendertoolError(f"--matrix flashes firmware: {port} is the virtual device, give a board's serial port")
    step = on_step or (lambda variant, message: None)
    connect = connect or open_client
    info = load_model(model, board=board)  # decoded and checked once, built once per variant
    results: list[BenchResult] = []
    for v in variants:
        vdir = out_dir / v.name
        try:
            built = build(info, board=board, out_dir=vdir / "project", input_source=input_source,
                          options=dict(v.options), on_stage=lambda msg, _v=v.name: step(_v, msg))
            step(v.name, f"flashing {port}")
            flash(plan_flash(built.out_dir), port)
            step(v.name, "benchmarking")
            client = connect_when_booted(port, connect, boot_timeout_s)
            with client:
                r = run_bench(client, port=port, n=n, warmup=warmup, input_source=input_source,
                              out_json=vdir / BENCH_JSON, variant=v)
        except Interrupted as exc:
            results.append(exc.partial)
            raise Interrupted(interrupted_note(results), partial=results) from None
        except KeyboardInterrupt:
            note = f"stopped while building or flashing variant {v.name}"
            raise Interrupted(f"{interrupted_note(results)}; {note}" if results else note, partial=results) from None
        results.append(r)
        if r.error is not None:
            break
    return results




