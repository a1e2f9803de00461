"""Command-line layer: thin Typer commands. The only place that exits.

Each command parses options, calls one operation from the layer below and presents the
result. :class:`~gendertool.errors.GendertoolError` is caught once, in :func:`main`.
Command modules import their operations lazily so ``gendertool --help`` stays fast.
"""

from __future__ import annotations

import sys

from gendertool.errors import GendertoolError, Interrupted

from ._app import EXIT_USER_ERROR, app, err_console, print_error

# Importing the command modules registers their commands on ``app``.
from . import model as _model  # noqa: F401,E402
from . import model_zoo as _model_zoo  # noqa: F401,E402
from . import validate as _validate  # noqa: F401,E402
from . import build as _build  # noqa: F401,E402
from . import device as _device  # noqa: F401,E402
from . import bench as _bench  # noqa: F401,E402
from . import sim as _sim  # noqa: F401,E402

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
