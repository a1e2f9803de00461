"""Command: sim (the virtual device, serving the firmware's protocol over TCP)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gendertool.errors import GendertoolError
from gendertool.present.console import err_console

from .options import complete_models
from .root import app


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise GendertoolError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:7420), got {listen!r}")
    return host, int(port)


@app.command()
def sim(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model: a .tflite file or a pulled profile name (default: the shipped default model).",
                                         autocompletion=complete_models),
    listen: str = typer.Option("127.0.0.1:7420", "--listen", help="HOST:PORT to serve on (port 0 picks a free one)."),
    period_ms: int = typer.Option(200, "--period-ms", min=0, max=60000, help="Time between continuous results."),
    no_autostart: bool = typer.Option(False, "--no-autostart", help="Boot without streaming results (like APP_AUTOSTART off)."),
    camera: Optional[Path] = typer.Option(
        None, "--camera", help="Play this folder of images as the camera (QVGA RGB565 frames, like the OV2640's); "
                               "select it with `source camera` (monitor --source camera)."),
    board_timing: Optional[str] = typer.Option(
        None, "--board-timing",
        help="Run at a board's pace: 'estimate' (the per-operator estimate `inspect` prints, XIAO ESP32S3) or "
             "milliseconds per Invoke(). Every Invoke() then takes, and reports, that long."),
    # fault injection and test helpers (hidden)
    replay: bool = typer.Option(False, "--replay", hidden=True, help="Re-send each sample's first result instead of invoking again."),
    garbage_every: int = typer.Option(0, "--garbage-every", hidden=True, min=0),
    reset_every: int = typer.Option(0, "--reset-every", hidden=True, min=0),
    bad_crc_every: int = typer.Option(0, "--bad-crc-every", hidden=True, min=0),
    disconnect_after: int = typer.Option(0, "--disconnect-after", hidden=True, min=0),
    reply_delay_ms: int = typer.Option(0, "--reply-delay-ms", hidden=True, min=0),
    seed: int = typer.Option(0, "--seed", hidden=True),
    tx_stall_after: int = typer.Option(0, "--tx-stall-after", hidden=True, min=0,
                                       help="After N records the host 'stops reading' for --tx-stall-ms (lines held or dropped whole)."),
    tx_stall_ms: int = typer.Option(0, "--tx-stall-ms", hidden=True, min=0),
    fault: Optional[list[str]] = typer.Option(None, "--fault", hidden=True,
                                              help="Behave like a wrong device (repeatable): score-off-by-one, wrong-class, "
                                                   "selftest-fail, skip-warmup, swap-timings."),
    max_clients: Optional[int] = typer.Option(None, "--max-clients", hidden=True, min=1, help="Exit after serving N connections."),
) -> None:
    """Run the virtual device: the firmware's serial protocol over TCP, inference on this computer.

    Connect with `--port socket://HOST:PORT` (or use `--port sim` to run one in-process).
    Every record says simulated=true: latencies are this computer's, not a board's.
    """
    from gendertool.device.sim import DEVICE_FAULTS, SimDevice, SimFaults, SimServer

    host, port = _parse_listen(listen)
    unknown = [f for f in fault or () if f not in DEVICE_FAULTS]
    if unknown:
        raise GendertoolError(f"--fault {unknown[0]!r} is not a fault; known: {', '.join(DEVICE_FAULTS)}")
    device_faults = {f.replace("-", "_"): True for f in fault or ()}
    faults = SimFaults(
        garbage_every=garbage_every,
        reset_every=reset_every,
        bad_crc_every=bad_crc_every,
        disconnect_after=disconnect_after,
        reply_delay_ms=reply_delay_ms,
        seed=seed,
        tx_stall_after=tx_stall_after,
        tx_stall_ms=tx_stall_ms,
        **device_faults,
    )
    device = SimDevice(model, period_ms=period_ms, autostart=not no_autostart, replay=replay, faults=faults,
                       board_timing=board_timing, camera=camera)
    server = SimServer(device, host, port, max_clients=max_clients)
    m = device.model
    err_console.print(
        f"virtual device serving {m.name} ({m.sha256[:12]}) on {server.url}\n"
        + (f"board timing: every Invoke() takes {device.board_invoke_us / 1000:.2f} ms\n" if device.board_invoke_us else "")
        + (f"camera: {len(device.camera.paths)} image(s) from {device.camera.folder}, as QVGA RGB565 frames "
           "(`--source camera`)\n" if device.camera is not None else "")
        + f"connect with: gendertool monitor --port {server.url}\n"
        "simulated: latency figures are this computer's, not a board's (Ctrl-C to stop)",
        soft_wrap=True,
        highlight=False,
    )
    try:
        server.serve_forever()
    finally:
        server.close()
