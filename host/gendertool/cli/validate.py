"""Commands: validate (accuracy and TFLite-vs-TFLM parity on a folder of labelled images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gendertool.present.console import console, err_console
from gendertool.text import about, count

from .options import complete_models, port_option, resolve_ports
from .root import app

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gendertool.model.validate import SkippedFile
if TYPE_CHECKING:

    from gendertool.device.validate import DeviceValidation


# Below this many files the run is quick enough that a progress bar is just noise.
PROGRESS_MIN_FILES = 20
# Differing images listed in the table before "... N more".
DEVICE_REPORT = Path("out/validate/device.json")


@app.command("validate")
def validate(
    images: Path = typer.Option(..., "--images", "-i", help="Folder with one sub-folder of images per label."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model file or profile name (default: the shipped model).",
                                         autocompletion=complete_models),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels overriding the model's, e.g. female,male."),
    kernels: list[str] = typer.Option(
        ["reference"],
        "--kernels",
        "-k",
        metavar="reference|default|builtin",
        help="LiteRT kernels to compare with TFLM: reference (BUILTIN_REF, the parity reference), "
        "default (XNNPACK) or builtin (BUILTIN_WITHOUT_DEFAULT_DELEGATES). Repeat to compare several.",
    ),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Use at most N images, taken in turn from each label."),
    heldout: Optional[Path] = typer.Option(
        None, "--heldout", metavar="LIST",
        help="Only the images this list names, one label/file per line: models/heldout.txt is the model card's "
             "held-out split (its accuracy with --images ../shared/datasets/portraits)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout, per-image records included."),
    show_images: bool = typer.Option(False, "--show-images", help="Also list every image (default: only mismatches)."),
    # no $GENDERTOOL_PORT here: giving --port switches validate from this computer to the board
    port: list[str] = port_option(several=True, envvar=False, default="(default: validate on this computer only)"),
    min_parity: float = typer.Option(100.0, "--min-parity", help="With --port: fail below this % of bit-exact images."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="FILE",
        help=f"Report file (JSON, every image), written atomically and kept on Ctrl-C or a lost board "
             f"(default with --port: {DEVICE_REPORT}; without: none)."),
) -> None:
    """Run the firmware's preprocessing and the model on TFLM and LiteRT: accuracy, confusion, parity."""
    from gendertool.present.validation import present_validation
    from gendertool.errors import Interrupted
    from gendertool.model.sources import parse_labels
    from gendertool.model.validate import validate_host

    label_list = parse_labels(labels) if labels is not None else None
    if port:  # on-target validation (bench issue): device outputs vs the TFLM reference
        from .validate import validate_on_ports

        validate_on_ports(resolve_ports(port), images, model, label_list, limit=limit, min_parity=min_parity, as_json=as_json,
                          show_images=show_images, out=out if out is not None else DEVICE_REPORT, heldout=heldout)
        return
    try:
        with _progress() as progress:
            report = validate_host(images, model, labels=label_list, kernels=kernels, limit=limit, progress=progress,
                                   out_path=out, heldout=heldout)
    except Interrupted as exc:
        if exc.partial is not None:  # the images compared before Ctrl-C
            present_validation(exc.partial, console, show_images=show_images)
        raise
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        present_validation(report, console, show_images=show_images)
    warn_skipped(report.skipped)


class _progress:
    """A Rich progress bar on stderr, started only once a run turns out to be long."""

    def __enter__(self):
        self._bar = None
        self._task = None
        return self.update

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            if total < PROGRESS_MIN_FILES or not err_console.is_terminal:  # a bar in a log file is noise
                return
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                "validating", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console, transient=True
            )
            self._bar.start()
            self._task = self._bar.add_task("validate", total=total)
        self._bar.update(self._task, completed=done)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def warn_skipped(skipped: "Sequence[SkippedFile]") -> None:
    """Warning lines on stderr naming what a validation skipped (host or device run): empty
    label folders, images outside the label folders, files that could not be decoded."""
    from rich.markup import escape

    def names(items) -> str:
        return escape(", ".join(s.path for s in items[:10]) + (", ..." if len(items) > 10 else ""))

    def warn(text: str) -> None:
        err_console.print(f"warning: {text}", soft_wrap=True, highlight=False)

    for s in skipped:
        if s.kind == "empty_folder":
            warn(f"label folder {escape(s.path)} is empty: no image of class {escape(s.path.rstrip('/'))!r} is validated")
    outside = [s for s in skipped if s.kind == "outside"]
    if outside:
        where = outside[0].reason.split("; ", 1)[-1]
        warn(f"skipped {count(len(outside), 'image')} outside the label sub-folders ({names(outside)}): {escape(where)}")
    too_large = [s for s in skipped if s.kind == "unreadable" and s.reason.startswith("too large")]
    for s in too_large[:10]:
        warn(f"skipped {escape(s.path)}: {escape(s.reason)}")
    missing = [s for s in skipped if s.kind == "not_found"]
    if missing:
        warn(f"{count(len(missing), 'image')} of the --heldout list {'is' if len(missing) == 1 else 'are'} not in the "
             f"folder: {names(missing)}")
    rest = [s for s in skipped if s.kind == "unreadable" and s not in too_large]
    if rest:
        warn(f"skipped {count(len(rest), 'file')} that are not readable images: {names(rest)}")




# --------------------------------------------------------------------------- validate --port (called by cli/validate.py)




def device_validation_failure(dv: "DeviceValidation"):
    """The one error for a failed device validation (None when every board passed)."""
    from gendertool.errors import GendertoolError

    if dv.passed:
        return None
    parts = []
    for b in dv.boards:
        if b.passed(dv.min_parity):
            continue
        if b.error:
            parts.append(f"{about(b.port, b.error)} ({b.coverage()}{'; report ' + str(dv.path) if dv.path else ''})")
        if b.selftest_passed is False:
            parts.append(f"{b.port}: the device's self-test FAILED ({b.selftest.get('failed', '?')} of "
                         f"{b.selftest.get('n', '?')} samples)")
        if not b.error and not b.partial and not b.parity_ok(dv.min_parity):
            parts.append(f"{b.port}: parity {b.parity_pct:.1f} % is below --min-parity {dv.min_parity:g} %")
    return GendertoolError("; ".join(parts))


def validate_on_ports(
    ports: list[str], images: Path, model: Optional[str], labels: Optional[list[str]], *, limit: Optional[int],
    min_parity: float, as_json: bool, show_images: bool, out: Optional[Path] = None, heldout: Optional[Path] = None,
) -> None:
    """``gendertool validate --port P... --images DIR``: runs on each board, one report per board."""
    from .bench import BoardProgress
    from gendertool.present.validation import present_device_validation
    import json

    from gendertool.device.validate import validate_devices
    from gendertool.errors import GendertoolError, Interrupted

    from .validate import warn_skipped

    try:
        with BoardProgress(ports) as progress:
            dv = validate_devices(ports, images, model, labels=labels, limit=limit, min_parity=min_parity, heldout=heldout,
                                  progress=progress, out_path=out)
    except Interrupted as exc:
        if exc.partial is not None:
            present_device_validation(exc.partial, console, show_images=show_images)
        raise
    if as_json:
        console.print_json(json.dumps(dv.to_dict(), default=str))
    else:
        present_device_validation(dv, console, show_images=show_images)
        if dv.path is not None:
            err_console.print(f"report: {dv.path}", markup=False, soft_wrap=True)
    warn_skipped(dv.skipped)
    if dv.write_error:
        raise GendertoolError(dv.write_error)
    failure = device_validation_failure(dv)
    if failure is not None:
        raise failure
