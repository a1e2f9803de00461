"""Command: inspect (check a model, describe it for the board)."""

from __future__ import annotations

from typing import Optional

import typer

from gendertool.cli.options import MODEL_HELP
from gendertool.present.console import console

from .options import complete_boards, complete_models, reject_flag_value
from .root import app


@app.command()
def inspect(
    model: Optional[str] = typer.Argument(None, help=MODEL_HELP, show_default=False, autocompletion=complete_models),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
    board: Optional[str] = typer.Option(None, "--board", "-b", help="Target board for the size check (default: xiao_esp32s3).",
                                         autocompletion=complete_boards),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated class labels overriding the model's own."),
    arena: bool = typer.Option(True, "--arena/--no-arena", help="Measure the tensor arena on the TFLM host runtime."),
) -> None:
    """Check an INT8 TFLite classifier and report its tensors, operators, size, MACs and arena."""
    from gendertool.model.info import app_partition_bytes, load_model

    reject_flag_value(model, "MODEL", "flags such as --json and --arena")
    info = load_model(model, labels=labels, board=board, measure_arena=arena)
    board_name, partition = app_partition_bytes(board)
    memory = None
    if info.arena_bytes is not None:
        from gendertool.boards import get_board
        from gendertool.project.memory import check_fit

        memory = check_fit(info, get_board(board_name))
    if as_json:
        import json

        data = info.to_dict()
        data["board"] = {"name": board_name, "app_partition_bytes": partition, "model_fits": info.size <= partition}
        data["memory"] = memory.to_dict() if memory is not None else None
        typer.echo(json.dumps(data, indent=2))
        return
    _print_tables(info, board_name, partition, memory)


def _print_tables(info, board_name: str, partition: int, memory=None) -> None:
    from rich.table import Table

    from gendertool.model.info import ARENA_MARGIN_FRACTION, ARENA_MARGIN_MIN_BYTES
    from gendertool.model.resolver import TFLM_SOURCE

    summary = Table(title=f"Model {info.name}", show_header=False, title_justify="left")
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("file", str(info.path) if info.path else "-")
    summary.add_row("size", f"{info.size:,} bytes ({info.size / partition:.0%} of the {board_name} app partition, {partition:,} bytes)")
    summary.add_row("labels", ", ".join(info.labels))
    pre = info.preprocessing
    crop = (f"centre square crop {pre.crop_fraction:g}" if pre.crop == "center"
            else f"no crop (whole frame x {pre.crop_fraction:g}, stretched)")
    summary.add_row(
        "preprocessing",
        f"{crop}, {pre.resize} resize, channels {pre.channel_order.upper()}, "
        f"(pixel - mean) / std with mean {list(pre.mean)} std {list(pre.std)}",
    )
    summary.add_row("parameters", f"{info.parameters:,}")
    summary.add_row("MACs", f"{info.macs:,}")
    if info.arena_host_bytes is not None:
        split = f" = head {info.arena.host_head_bytes:,} (planned) + tail {info.arena.tail_bytes:,}" if info.arena else ""
        summary.add_row("arena (host)", f"{info.arena_host_bytes:,} bytes{split}, measured on the TFLM host runtime (64-bit host figure)")
        if info.espnn_scratch_node:
            node, op = info.espnn_scratch_node
            scratch = f"largest: node {node} {op}, {info.espnn_scratch_bytes:,} bytes"
        else:
            scratch = "none requested"
        summary.add_row("ESP-NN scratch", scratch)
        for warning in info.espnn_warnings:
            summary.add_row("[yellow]ESP-NN warning[/]", warning)
        b = info.arena
        if b is not None:
            peak = f", peak at node {b.peak_node}" if b.peak_node is not None else ""
            summary.add_row(
                "arena (firmware)",
                f"{info.arena_bytes:,} bytes = tail {b.tail_bytes:,} (host persistent) + head {b.head_bytes:,} "
                f"(TFLM greedy plan with ESP-NN scratch{peak}) + margin {b.margin_bytes:,} "
                f"({ARENA_MARGIN_FRACTION:.0%} of tail + head, min {ARENA_MARGIN_MIN_BYTES // 1024} KiB, rounded up to 1 KiB)",
            )
    else:
        summary.add_row("arena", "not measured (--no-arena)")
    if memory is not None:
        summary.add_row(f"memory ({board_name})", _memory_text(memory))
    if info.latency is not None:
        summary.add_row("Invoke() estimate", _latency_line(info.latency))
    console.print(summary)
    # its own line, never folded: 71 characters fit an 80-column terminal whole (copyable)
    console.print(f"sha256 {info.sha256}", soft_wrap=True)

    tensors = Table(title="Tensors", title_justify="left")
    for col in ("", "name", "shape", "dtype", "scale", "zero point"):
        tensors.add_column(col, overflow="fold")
    for role, t in (("input", info.input), ("output", info.output)):
        tensors.add_row(role, t.name, str(list(t.shape)), t.dtype, f"{t.scale:.6g}", str(t.zero_point))
    console.print(tensors)

    ops = Table(title=f"Operators (subgraphs: {info.subgraphs}; resolver: {TFLM_SOURCE})", title_justify="left")
    for col in ("operator", "version", "count", "resolver method"):
        ops.add_column(col)
    for op in info.operators:
        ops.add_row(op.name, str(op.version), str(op.count), op.resolver_method or "-")
    console.print(ops)
    if info.latency is not None:
        _print_latency(info.latency)


def _latency_line(est) -> str:
    lo, hi = est.error_range
    r_int, r_ps = est.ms_range("internal"), est.ms_range("psram")
    return (f"ESTIMATE on the XIAO ESP32S3 (240 MHz, ESP-NN), not a measurement: {est.internal_ms:.1f} ms with the "
            f"arena in internal RAM (range {r_int[0]:.0f}-{r_int[1]:.0f} ms), {est.psram_ms:.1f} ms in PSRAM "
            f"(range {r_ps[0]:.0f}-{r_ps[1]:.0f} ms); ranges from the leave-one-out errors of its {est.points} "
            f"calibration points ({lo:+.0%} to {hi:+.0%}); docs/latency-estimate.md")


def _print_latency(est) -> None:
    from rich.table import Table

    t = Table(title="Estimated Invoke() time per operator (estimate, XIAO ESP32S3, 240 MHz, ESP-NN)", title_justify="left")
    for col in ("operator", "count", "internal RAM ms", "PSRAM ms", "share"):
        t.add_column(col, justify="left" if col == "operator" else "right")
    total = est.psram_ms or 1.0
    for name, n, internal, psram in est.by_op():
        t.add_row(name, str(n), f"{internal:.2f}", f"{psram:.2f}", f"{psram / total:.1%}")
    t.add_row("total (estimate)", str(len(est.ops)), f"{est.internal_ms:.2f}", f"{est.psram_ms:.2f}", "100.0%")
    console.print(t)


def _memory_text(memory) -> str:
    from rich.markup import escape

    if memory.errors:
        return "[red]does not fit:[/] " + escape("; ".join(memory.errors))
    where = {"internal": "internal RAM", "psram": "PSRAM"}[memory.arena_region]
    room = memory.internal_bytes if memory.arena_region == "internal" else memory.psram_bytes
    text = (f"arena in {where} ({memory.arena_bytes:,} of about {room:,} bytes); "
            f"PSRAM in use {memory.psram_used:,} of {memory.psram_bytes:,} bytes; "
            f"{escape(memory.margin_text())}")  # fmt: skip
    for warning in memory.warnings:
        text += f"\n[yellow]warning:[/] {escape(warning)}"
    return text
