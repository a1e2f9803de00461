"""Commands: model pull, model list (registered downloadable models), model fix-padding."""

from __future__ import annotations

import json

import typer

from gendertool.present.console import console, err_console

from .options import complete_models, complete_profiles, reject_flag_value
from .root import HonestTyper, app

model_app = HonestTyper(
    help="Registered reference models (list, pull into the cache) and model rewrites for the firmware.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")


@model_app.command("pull")
def pull(
    name: str = typer.Argument(..., help="Profile name, e.g. seeed-gender (see `gendertool model list`).",
                              autocompletion=complete_profiles),
    force: bool = typer.Option(False, "--force", help="Download again even when a verified copy is cached."),
) -> None:
    """Download a registered model, verify its published checksum and cache it for --model NAME."""
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from gendertool.model import sources

    profile = sources.get_profile(name)
    if not force and sources.is_cached(name):
        console.print(f"{name}: already cached at {escape(str(sources.cached_path(name)))} ({profile.checksum} verified)")
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{name} from {profile.host}", total=None)
        path = sources.pull_model(name, force=force, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(f"{name}: downloaded to {escape(str(path))} ({profile.checksum} verified)")
    if profile.note:
        console.print(f"note: {profile.note}")


@model_app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """List the shipped default model (used without --model) and the registered profiles, and whether each is cached."""
    from rich.markup import escape
    from rich.table import Table

    from gendertool.model import sources

    shipped = sources.resolve(None)
    rows = [
        {
            "name": shipped.name,
            "description": "shipped with gendertool: the model used when --model is not given",
            "url": None,
            "checksum": f"md5:{sources.file_digest(shipped.path)}",
            "labels": list(shipped.labels),
            "preprocessing": shipped.preprocessing.to_dict(),
            "cached": True,
            "path": str(shipped.path),
            "note": None,
            "default": True,
        }
    ]
    for p in sources.PROFILES.values():
        rows.append(
            {
                "name": p.name,
                "description": p.description,
                "url": p.url,
                "checksum": p.checksum,
                "labels": list(p.labels),
                "preprocessing": p.preprocessing.to_dict(),
                "cached": sources.is_cached(p.name),
                "path": str(sources.cached_path(p.name)),
                "note": p.note,
                "default": False,
            }
        )
    if as_json:  # the shipped model apart: "profiles" stays the registered, downloadable ones
        doc = {"cache_dir": str(sources.cache_dir()), "default": rows[0], "profiles": rows[1:]}
        console.print_json(json.dumps(doc))
        return
    table = Table(title=f"models (pulled profiles are cached in {escape(str(sources.cache_dir()))})")
    for col in ("name", "labels", "channels", "mean / std", "cached", "description"):
        table.add_column(col)
    for r in rows:
        pre = r["preprocessing"]
        table.add_row(
            f"{r['name']} (default)" if r["default"] else r["name"],
            ", ".join(r["labels"]),
            pre["channel_order"].upper(),
            f"{tuple(pre['mean'])} / {tuple(pre['std'])}",
            "shipped" if r["default"] else ("yes" if r["cached"] else "no"),
            r["description"],
        )
    console.print(table)
    for r in rows:
        if r["note"]:
            console.print(f"{r['name']}: {r['note']}")


@model_app.command("fix-padding")
def fix_padding(
    model: str = typer.Argument(..., help="A .tflite path or a profile name.", autocompletion=complete_models),
    output: str = typer.Option(..., "--output", "-o", metavar="PATH", help="The rewritten .tflite (a sidecar .json is written beside it)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Give each conv that ESP-NN mis-pads (espressif/esp-nn#31) an explicit PAD: same outputs, proven on TFLM."""
    from rich.markup import escape

    from gendertool.model.rewrite import fix_padding as run

    reject_flag_value(model, "MODEL", "flags such as --json")
    r = run(model, output)
    if as_json:
        console.print_json(json.dumps(r.to_dict()))
        return
    if r.output is None:
        console.print(f"{escape(r.source)}: no conv needs an explicit PAD; nothing written")
        return
    for c in r.convs:
        top, bottom, left, right = c.pads
        console.print(f"node {c.node} CONV_2D: PAD (top {top}, bottom {bottom}, left {left}, right {right}) + VALID")
    console.print(
        f"wrote {escape(r.output)} ({r.size_after:,} bytes, sha256 {r.sha256_after}); "
        f"outputs identical to the original on {r.identical}/{r.compared} random inputs (TFLM host runtime)"
    )
