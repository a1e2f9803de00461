"""The Typer application and the consoles every command prints through."""

from __future__ import annotations

import typer
from rich.console import Console
from typer.core import TyperGroup


class _Group(TyperGroup):
    """Typer turns Ctrl-C into a silent exit 130 before ``cli.main`` sees it; this hands it on as
    :class:`~gendertool.errors.Interrupted` so every command says what it finished."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            from gendertool.errors import Interrupted

            raise Interrupted() from None


app = typer.Typer(
    cls=_Group,
    name="gendertool",
    help="Put an INT8 TFLite image classifier on an ESP32-S3 and measure how fast and how right it runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# stdout carries results (tables, JSON); stderr carries progress, logs and errors.
console = Console(highlight=False, emoji=False)  # user text like ":x:" stays text
err_console = Console(stderr=True, highlight=False, emoji=False)


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
