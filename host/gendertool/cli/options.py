"""The ``--port`` option the device commands share: one definition, one way to resolve it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import typer

from gendertool.device.esptool_log import AFTER_CHOICES, BEFORE_CHOICES

PORT_ENVVAR = "GENDERTOOL_PORT"
PORT_KINDS = "Serial port, socket://HOST:PORT, or sim for the virtual device"
PORT_DEFAULT = "(default: the one ESP32-S3 on USB)"


def port_option(
    *, several: bool = False, kinds: str = PORT_KINDS, default: str = PORT_DEFAULT, envvar: bool = True
) -> Any:
    """``--port/-p`` (from $GENDERTOOL_PORT unless ``envvar=False``); ``several``: repeatable."""
    repeat = "; repeat for several boards" if several else ""
    return typer.Option(
        [] if several else None,
        "--port",
        "-p",
        envvar=PORT_ENVVAR if envvar else None,
        help=f"{kinds}{repeat} {default}.",
        autocompletion=complete_ports,
    )


# --------------------------------------------------------------------------- Tab completion of values
# Typer calls these with what the user typed so far; each returns (value, help) pairs. They
# import what they list lazily, so `gendertool --help` stays fast.


def _matching(incomplete: str, items) -> list[tuple[str, str]]:
    return [(value, help_text) for value, help_text in items if value.startswith(incomplete)]


def complete_ports(incomplete: str) -> list[tuple[str, str]]:
    """Serial ports seen now (ESP32-S3 native USB ones first) and ``sim``, the virtual device."""
    from gendertool.boards import ESPRESSIF_USB_VID, USB_SERIAL_JTAG_PID
    from gendertool.device.ports import list_serial_ports

    try:
        ports = list_serial_ports()
    except Exception:  # noqa: BLE001 - a completion must never fail the shell
        ports = []
    esp = [p for p in ports if (p.vid, p.pid) == (ESPRESSIF_USB_VID, USB_SERIAL_JTAG_PID)]
    items = [(p.device, "ESP32-S3 (USB-Serial-JTAG)") for p in esp]
    items += [(p.device, p.description or "serial port") for p in ports if p not in esp]
    items.append(("sim", "the virtual device (no board needed)"))
    return _matching(incomplete, items)


def complete_boards(incomplete: str) -> list[tuple[str, str]]:
    from gendertool.boards import BOARDS

    return _matching(incomplete, ((name, board.description) for name, board in BOARDS.items()))


def complete_inputs(incomplete: str) -> list[tuple[str, str]]:
    from gendertool.protocol import SOURCES as INPUT_SOURCES

    return _matching(incomplete, ((name, "input source") for name in INPUT_SOURCES))


def complete_bench_inputs(incomplete: str) -> list[tuple[str, str]]:
    """What a running firmware can be switched to and keep producing results from (bench --input,
    monitor --source): the protocol's sources but upload, which waits for an image."""
    from gendertool.protocol import SOURCES

    return _matching(incomplete, ((name, "input on the device") for name in SOURCES if name != "upload"))


def complete_backends(incomplete: str) -> list[tuple[str, str]]:
    from gendertool.project.build import BACKENDS

    helps = {"pio": "PlatformIO", "idf": "idf.py"}
    return _matching(incomplete, ((name, helps.get(name, "backend")) for name in BACKENDS))


def complete_profiles(incomplete: str) -> list[tuple[str, str]]:
    from gendertool.model.sources import PROFILES

    return _matching(incomplete, ((name, "model profile") for name in sorted(PROFILES)))


def complete_models(incomplete: str) -> list[tuple[str, str]]:
    """A model is a profile name or a .tflite file: profiles, then .tflite files and folders here."""
    return complete_profiles(incomplete) + _paths(incomplete, suffix=".tflite")


def complete_before(incomplete: str) -> list[tuple[str, str]]:
    return _matching(incomplete, ((m, "esptool --before") for m in BEFORE_CHOICES))


def complete_after(incomplete: str) -> list[tuple[str, str]]:
    return _matching(incomplete, ((m, "esptool --after") for m in AFTER_CHOICES))


def complete_dirs(incomplete: str) -> list[tuple[str, str]]:
    return _paths(incomplete, dirs_only=True)


def _paths(incomplete: str, *, suffix: str | None = None, dirs_only: bool = False) -> list[tuple[str, str]]:
    from pathlib import Path

    base = Path(incomplete).parent if incomplete and not incomplete.endswith("/") else Path(incomplete or ".")
    prefix = "" if incomplete.endswith("/") or not incomplete else Path(incomplete).name
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
            continue
        shown = str(entry) if str(base) != "." or incomplete.startswith("./") else entry.name
        if entry.is_dir():
            out.append((shown + "/", "folder"))
        elif not dirs_only and (suffix is None or entry.name.endswith(suffix)):
            out.append((shown, "file"))
    return out


def resolve_ports(
    ports: Sequence[str], finder: Callable[[], Sequence[str]] | None = None, *, several: bool = True
) -> list[str]:
    """The ports given (each once), or the one ESP32-S3 on USB (none / several: a clear error).

    ``several=False`` for a command whose --port is given once (the message says so).
    """
    ports = [p for p in ports if p]
    if ports:
        if len(set(ports)) != len(ports):
            raise typer.BadParameter("the same port is given twice", param_hint="--port")
        return ports
    from gendertool.device.ports import resolve_port

    return [resolve_port(None, finder, repeatable=several)]


# What a user who writes `--json true` means: the flag, not a file called "true".
_FLAG_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def reject_flag_value(value: str | None, argument: str, flags: str) -> None:
    """A clear error when a flag's would-be value ended up as the positional ``argument``."""
    from pathlib import Path

    if value is not None and value.lower() in _FLAG_WORDS and not Path(value).exists():
        from gendertool.errors import GendertoolError

        raise GendertoolError(
            f"{value!r} was taken as the {argument} argument: {flags} take no value "
            f"(write `--json`, not `--json {value}`)"
        )


MODEL_HELP = "Model: a .tflite file or a pulled profile name (default: the shipped default model)."
