"""Command: ports (serial ports, ESP32-S3 ones marked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from gendertool.present.console import console, err_console

from .root import app

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- ports


@app.command("ports")
def ports_cmd(
    as_json: bool = typer.Option(False, "--json", help="A JSON list on stdout instead of the table."),
) -> None:
    """List the serial ports, marking the ESP32-S3 native USB ones (303a:1001) that --port defaults to."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from gendertool.device.ports import list_serial_ports

    ports = list_serial_ports()
    if as_json:
        console.print_json(json.dumps([p.to_dict() for p in ports]))
        return
    if not ports:
        err_console.print("no serial ports found; plug the board in with a data cable (charge-only cables have no data lines)")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("device", "VID:PID", "description", "ESP32-S3"):
        table.add_column(col)
    for p in ports:
        table.add_row(escape(p.device), p.vid_pid or "-", escape(p.description or "-"), "native USB" if p.esp32s3 else "")
    console.print(table)
    if not any(p.esp32s3 for p in ports):
        err_console.print(
            "no ESP32-S3 native USB port (303a:1001) among them: give a USB-UART bridge's port with --port, "
            "or check the board's cable"
        )
