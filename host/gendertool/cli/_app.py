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

class SafeConsole(Console):
    """A Console whose text cannot act on the terminal.

    Device strings reach every table, log line and error message; Rich passes ESC, CSI, NUL and
    most other controls through. Here every text segment is escaped (gendertool.safetext) just
    before output, while Rich's own styling and cursor moves (control segments) stay intact.
    """

    def _render_buffer(self, buffer):
        from rich.segment import Segment

        from gendertool.safetext import escape_control

        return super()._render_buffer(
            seg if seg.control or not seg.text else Segment(escape_control(seg.text), seg.style, seg.control)
            for seg in buffer
        )


# stdout carries results (tables, JSON); stderr carries progress, logs and errors.
console = SafeConsole(highlight=False, emoji=False)  # user text like ":x:" stays text
err_console = SafeConsole(stderr=True, highlight=False, emoji=False)


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
