"""The ``--port`` option the device commands share: one definition, one way to resolve it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import typer

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
    )


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
