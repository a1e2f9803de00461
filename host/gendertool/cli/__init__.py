"""Command-line layer: thin Typer commands. The only place that exits.

Each command parses options, calls one operation from the layer below and presents the
result. :class:`~gendertool.errors.GendertoolError` is caught once, in :func:`main`.
Command modules import their operations lazily so ``gendertool --help`` stays fast.
"""

from __future__ import annotations

import sys

from gendertool.cli.root import EXIT_USER_ERROR, app, print_error
from gendertool.errors import GendertoolError, Interrupted, OutputError, ctrl_c_handled
from gendertool.files import checked_std_streams
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
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what shells report for a writer whose reader went away


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Ctrl-C follows one policy (gendertool.errors.ctrl_c_handled: the first one stops the
    command, which saves what it holds and then says so; later ones are ignored, with a word).
    Writing standard output is part of every command: stdout and stderr are flushed (stdout
    closed) before the exit code is decided, and a failed write is one line and exit 2; a
    closed pipe (``| head``) ends the command quietly, exit 141.
    """
    with ctrl_c_handled(stay=True), checked_std_streams() as streams:
        try:
            code = _run(argv)
        except KeyboardInterrupt:  # the first Ctrl-C, while a failure was being said
            code = EXIT_INTERRUPTED
        try:
            streams.finish()
        except OutputError as exc:
            code = _output_failed(exc)
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
    sys.exit(code)


def _run(argv: list[str] | None) -> object:
    """Run the command; its exit code (the argument of sys.exit)."""
    try:
        try:
            app(args=argv, prog_name="gendertool")
        except SystemExit as exc:  # click ends every command with one
            return exc.code
        except GendertoolError as exc:
            print_error(str(exc))
            return EXIT_USER_ERROR
        except (Interrupted, KeyboardInterrupt) as exc:  # KeyboardInterrupt: a Ctrl-C outside any command
            done = str(exc) if isinstance(exc, Interrupted) else ""
            err_console.print(f"interrupted (Ctrl-C){': ' + done if done else ''}", markup=False, soft_wrap=True)
            return EXIT_INTERRUPTED
        return 0
    except OutputError as exc:  # from the command, or from saying the error above
        return _output_failed(exc)
    except KeyboardInterrupt:  # the first Ctrl-C, while an error was being said
        return EXIT_INTERRUPTED


def _output_failed(exc: OutputError) -> int:
    """One line for a failed write to stdout or stderr (none for a closed pipe); the exit code."""
    code = EXIT_BROKEN_PIPE if exc.broken_pipe else EXIT_USER_ERROR
    if exc.reported or exc.broken_pipe:
        exc.reported = True
        return code
    exc.reported = True
    try:
        print_error(str(exc))
        sys.stderr.flush()
    except OutputError:  # stderr fails too: the exit code is all that is left
        pass
    return code
