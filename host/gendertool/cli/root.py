"""The Typer application and the consoles every command prints through."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
import typer.core
from typer.core import TyperGroup

from gendertool.present.console import console, err_console


class _Group(TyperGroup):
    """Typer turns Ctrl-C into a silent exit 130 before ``cli.main`` sees it; this hands it on as
    :class:`~gendertool.errors.Interrupted` so every command says what it finished."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            from gendertool.errors import Interrupted

            raise Interrupted() from None


# Option metavars that say more than the type would (PATH, N, TEXT).
_METAVARS = {
    "--images": "DIR", "--out": "DIR", "--build": "DIR", "--listen": "HOST:PORT", "--timeout": "SECONDS",
    "--min-parity": "PERCENT", "--labels": "LABEL,LABEL", "--period-ms": "MS", "--no-record-timeout": "SECONDS",
    "--reply-delay-ms": "MS",
}


def _metavar(param: Any) -> str:
    if param.param_type_name == "argument":
        return param.name.upper()
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""  # a flag takes no value
    long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    if long in _METAVARS:
        return _METAVARS[long]
    annotation = param.type_descriptor.annotation
    args = getattr(annotation, "__args__", None)
    if args:  # list[X]: the metavar of one X
        annotation = args[0]
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return long.lstrip("-").upper()


def _honest(params: list) -> list:
    # Typer's Rich help prints "<bool>" after every flag, as if it took a value: give each
    # parameter its real metavar (none for a flag) unless it set one itself.
    for p in params:
        if p.metavar is None:
            p.metavar = _metavar(p)
        if p.param_type_name == "argument":
            # an argument's name already says what it takes: no "<str>" after it in the help,
            # and the usage line reads `model pull NAME` (optional ones stay `[MODEL]`), not `{NAME}`
            p.display_type_rich = _no_type
            p._usage_display_name = _usage_name(p)
    return params


def _no_type(*_args: Any, **_kwargs: Any) -> None:
    return None


def _usage_name(param: Any):
    def name() -> str:
        shown = param.metavar or param.name.upper()
        shown = shown if param.required else f"[{shown}]"
        return shown + ("..." if param.nargs != 1 else "")

    return name


def _refuse_non_finite(command, ctx) -> None:
    # click's float takes "nan" and "inf"; no number option of gendertool (seconds, percentages)
    # means them, and a nan timeout compares false with everything, so it would wait forever
    for p in command.params:
        value = ctx.params.get(p.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number", ctx=ctx, param=p)


class HonestCommand(typer.core.TyperCommand):
    def get_params(self, ctx):
        return _honest(super().get_params(ctx))

    def parse_args(self, ctx, args):
        rest = super().parse_args(ctx, args)
        _refuse_non_finite(self, ctx)
        return rest


class HonestGroup(_Group):
    def get_params(self, ctx):
        return _honest(super().get_params(ctx))


class HonestTyper(typer.Typer):
    """A Typer whose commands and groups show real metavars in their help."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", HonestGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("cls", HonestCommand)
        return super().command(*args, **kwargs)


app = HonestTyper(
    name="gendertool",
    help="Put an INT8 TFLite image classifier on an ESP32-S3 and measure how fast and how right it runs.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


EXIT_USER_ERROR = 2


def print_error(message: str) -> None:
    """The one way an error is shown (``main`` for a raised GendertoolError, or a command that
    reports a failure before the results it still shows)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from gendertool import __version__

        console.print(f"gendertool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
) -> None:
    """Put an INT8 TFLite image classifier on an ESP32-S3 and measure how fast and how right it runs."""
