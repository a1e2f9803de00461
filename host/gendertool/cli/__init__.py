"""Command-line layer: thin Typer commands. The only place that exits.

Each command parses options, calls one operation from the layer below and presents the
result. :class:`~gendertool.errors.GendertoolError` is caught once, in :func:`main`.
Command modules import their operations lazily so ``gendertool --help`` stays fast.
"""

from __future__ import annotations

import sys

from gendertool.cli.root import EXIT_USER_ERROR, app, print_error
from gendertool.errors import GendertoolError, Interrupted
from gendertool.present.console import err_console

# Importing the command modules registers their commands on ``app``, in help order.
from . import (  # noqa: F401,E402
    bench,
    build,
    convert,
    flash,
    inspect,
    model,
    monitor,
    ports,
    run,
    sim,
    validate,
)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="gendertool")
    except GendertoolError as exc:
        print_error(str(exc))
        sys.exit(EXIT_USER_ERROR)
    except (Interrupted, KeyboardInterrupt) as exc:  # KeyboardInterrupt: a Ctrl-C outside any command
        done = str(exc) if isinstance(exc, Interrupted) else ""
        err_console.print(f"interrupted (Ctrl-C){': ' + done if done else ''}", markup=False, soft_wrap=True)
        sys.exit(EXIT_INTERRUPTED)
