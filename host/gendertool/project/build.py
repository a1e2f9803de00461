"""Build backends: render the firmware project, compile it, describe the result.

``build()`` checks the model, renders the project (only changed files are rewritten, so the
toolchain's own incremental build keeps working), then compiles with PlatformIO (``pio run``)
or ESP-IDF (``idf.py build``), streaming the toolchain output to a callback and to
``OUT/build.log``. After a successful compile it writes the build manifest
``OUT/gendertool-build.json`` (images + offsets read from the build output, sizes, a merged
image made with esptool's ``merge_bin``) that ``gendertool flash`` consumes.

Pinned toolchain (both backends target the same ESP-IDF):

- PlatformIO platform ``espressif32 @ 6.13.0``: its release notes say "Added support for
  ESP-IDF v5.5.3" and its platform.json requires ``framework-espidf ~3.50503.0``
  (PlatformIO's encoding of ESP-IDF 5.5.3).
- ``idf.py``: ESP-IDF v5.5.3; another version is built with a warning.

Nothing here fakes a toolchain: when PlatformIO cannot install the platform/toolchain (no
network to its registry) or ESP-IDF is absent, a :class:`BuildError` names what is missing
and where the rendered project is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gendertool.boards import get_board
from gendertool.errors import BuildError, GendertoolError
from gendertool.model.info import ModelInfo, load_model
from gendertool.project.idf import build_idf
from gendertool.project.manifest import (
    DEFAULT_BUILD_DIR,
    MANIFEST_NAME,
    Sizes,
    write_manifest,
)
from gendertool.project.memory import check_fit
from gendertool.project.platformio import build_pio
from gendertool.project.process import LOG_NAME, LineCallback
from gendertool.project.render import check_input_source, render_project

BACKENDS = ("pio", "idf")










# --------------------------------------------------------------------------- results








@dataclass
class BuildResult:
    out_dir: Path
    board: str
    backend: str
    model_name: str
    model_sha256: str
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    compiled: bool = False
    manifest_path: Path | None = None
    manifest: dict | None = None
    sizes: Sizes | None = None
    log_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    memory: Any = None  # project.memory.MemoryFit: after a compile, with the measured static RAM




# --------------------------------------------------------------------------- entry point


def check_options(backend: str, input_source: str, jobs: int | None) -> None:
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    check_input_source(input_source)
    if jobs is not None and jobs < 1:
        raise BuildError(f"--jobs must be at least 1 (got {jobs})")


def build(
    model: str | Path | ModelInfo | None = None,
    *,
    board: str | None = None,
    out_dir: str | Path = DEFAULT_BUILD_DIR,
    backend: str = "pio",
    input_source: str = "sample",
    labels: Sequence[str] | None = None,
    compile: bool = True,
    jobs: int | None = None,
    on_line: LineCallback | None = None,
    on_stage: LineCallback | None = None,
    options: dict | None = None,
) -> BuildResult:
    """Render the firmware for ``model`` and ``board`` into ``out_dir`` and (unless
    ``compile=False``) compile it. ``model``: a --model value, or a ModelInfo already loaded
    (for ``board``; the variant matrix builds one model several times). ``on_line`` receives
    every toolchain output line, ``on_stage`` a short description of each step."""

    check_options(backend, input_source, jobs)
    brd = get_board(board)
    check_input_source(input_source, brd)
    stage = on_stage or (lambda _msg: None)

    stage("checking the model")

    if isinstance(model, ModelInfo):
        if labels is not None:
            raise BuildError("labels go with loading the model: pass them to load_model, not with a loaded model")
        info = model
    else:
        info = load_model(model, labels=labels, board=brd.name)

    out = Path(out_dir).expanduser().resolve()
    stage(f"rendering the project into {out}")
    rendered = render(info, brd, out, input_source=input_source, options=options)
    result = BuildResult(
        out_dir=out,
        board=brd.name,
        backend=backend,
        model_name=info.name,
        model_sha256=info.sha256,
        written=list(rendered.written),
        unchanged=list(rendered.unchanged),
        memory=getattr(rendered, "memory", None),
    )
    for warning in getattr(rendered, "warnings", ()):  # memory: e.g. the arena goes to PSRAM
        result.warnings.append(warning)
        stage(f"warning: {warning}")
    if (options or {}).get("esp_nn", True):
        for warning in info.espnn_warnings:  # upstream ESP-NN kernel problems this model meets
            result.warnings.append(warning)
            stage(f"warning: {warning}")
    manifest_path = out / MANIFEST_NAME
    if not compile:
        # A manifest from an earlier compile no longer describes these sources.
        if rendered.written and manifest_path.exists():
            manifest_path.unlink()
        return result

    if manifest_path.exists():
        manifest_path.unlink()
    log_path = out / LOG_NAME
    result.log_path = log_path
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        if backend == "pio":
            output, sizes = build_pio(out, brd, jobs, log, on_line, stage, result.warnings)
        else:
            output, sizes = build_idf(out, brd, jobs, log, on_line, stage, result.warnings)
        stage("merging the images")
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            manifest = write_manifest(
                out,
                output,
                board=brd.name,
                chip=brd.idf_target,
                backend=backend,
                model={"name": info.name, "sha256": info.sha256},
                sizes=sizes,
            )
    result.compiled = True
    result.manifest_path = manifest_path
    result.manifest = manifest
    result.sizes = sizes
    if result.memory is not None and sizes is not None:  # the margin again, with the static RAM measured
        fit = result.memory
        result.memory = check_fit(info, brd, arena_bytes=fit.arena_bytes, arena_placement=fit.arena_placement,
                                  model_in_psram=bool((options or {}).get("model_in_psram", False)), sizes=sizes)
    return result


def render(info: Any, board: Any, out: Path, *, input_source: str = "sample", options: dict | None = None) -> Any:
    """Render the project (FIRMWARE's renderer); turn filesystem trouble into BuildError."""

    try:
        return render_project(info, board, out, input_source=input_source, options=options)
    except GendertoolError:
        raise
    except OSError as exc:
        raise BuildError(f"cannot write the project into {out}: {exc.strerror or exc}") from None
