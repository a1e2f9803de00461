"""Find serial ports: ESP32-S3 native USB ports, the one to use, their descriptions."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gendertool.device.transport import ESP32S3_USB_VID_PID
from gendertool.errors import DeviceError


def find_esp32s3_ports() -> list[str]:
    """Serial ports of ESP32-S3 native USB (USB-Serial-JTAG, VID:PID 303a:1001), sorted."""
    from serial.tools import list_ports

    vid, pid = ESP32S3_USB_VID_PID
    return sorted(p.device for p in list_ports.comports() if p.vid == vid and p.pid == pid)


@dataclass(frozen=True)
class SerialPortInfo:
    """One serial port as the OS lists it."""

    device: str
    vid: int | None
    pid: int | None
    description: str
    serial_number: str | None = None

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""

    @property
    def esp32s3(self) -> bool:
        """ESP32-S3 native USB (USB-Serial-JTAG): the XIAO ESP32S3's own port."""
        return (self.vid, self.pid) == ESP32S3_USB_VID_PID

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "vid_pid": self.vid_pid or None,
            "description": self.description,
            "serial_number": self.serial_number,
            "esp32s3": self.esp32s3,
        }


def list_serial_ports() -> list[SerialPortInfo]:
    """Every serial port pyserial sees, sorted by device name."""
    from serial.tools import list_ports

    ports = []
    for p in list_ports.comports():
        description = getattr(p, "description", None)
        ports.append(
            SerialPortInfo(
                device=p.device,
                vid=p.vid,
                pid=p.pid,
                description="" if description in (None, "n/a") else str(description),
                serial_number=getattr(p, "serial_number", None),
            )
        )
    return sorted(ports, key=lambda i: i.device)


def resolve_port(port: str | None, finder: Callable[[], Sequence[str]] | None = None, *, repeatable: bool = False) -> str:
    """``port`` itself, or the one attached ESP32-S3 (none / several: a clear error).

    ``repeatable``: the command takes --port several times (the message says so).
    """
    if port:
        return port
    ports = list((finder or find_esp32s3_ports)())
    if not ports:
        raise DeviceError(
            "no ESP32-S3 found on USB (looked for VID:PID 303a:1001); plug the XIAO ESP32S3 in "
            "with a data cable, or pass --port (try --port sim for the virtual device)"
        )
    if len(ports) > 1:
        how = "choose with --port (repeat it for several)" if repeatable else "choose one with --port"
        raise DeviceError(f"several ESP32-S3 boards found ({', '.join(ports)}); {how}")
    return ports[0]


def is_usb_jtag(port: str) -> bool:

    real = os.path.realpath(port)
    return any(p.esp32s3 and (p.device == port or os.path.realpath(p.device) == real) for p in list_serial_ports())
