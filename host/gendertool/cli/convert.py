"""Command: convert (the model as an aligned C array)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gendertool.present.console import console

from .options import MODEL_HELP, complete_boards, complete_models
from .root import app


@app.command()
def convert(
    model: Optional[str] = typer.Argument(None, help=MODEL_HELP, show_default=False, autocompletion=complete_models),
    output: Path = typer.Option(..., "--output", "-o", metavar="DIR", help="Folder for model_data.h and model_data.cc."),
    board: Optional[str] = typer.Option(None, "--board", "-b", help="Target board for the size check (default: xiao_esp32s3).",
                                         autocompletion=complete_boards),
) -> None:
    """Check a model and write it as an aligned C array (model_data.h / model_data.cc)."""
    from gendertool.model.info import load_model
    from gendertool.project.carray import write_model_sources

    info = load_model(model, board=board, measure_arena=False)
    for path in write_model_sources(info.data, output, info.name, info.sha256):
        console.print(f"wrote {path}")
