"""The build manifest (``gendertool-build.json``): written by ``build``, read by ``flash``;
and the ESP Web Tools manifest next to it. The one definition of its name, schema and folder."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gendertool import __version__
from gendertool.errors import BuildError
from gendertool.files import write_json_atomic

MANIFEST_NAME = "gendertool-build.json"
MANIFEST_SCHEMA = 1
MERGED_NAME = "gendertool-merged.bin"


# --------------------------------------------------------------------------- manifest


def read_json_file(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BuildError(f"{path} is not a JSON object")
    return data


def parse_offset(value: Any, where: str | Path) -> int:
    """A flash offset from a manifest or ESP-IDF's flasher_args.json: an int or "0x..." text."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BuildError(f"{where}: offset {value!r} is not a number")
    try:
        offset = int(value, 0) if isinstance(value, str) else value
    except ValueError:
        raise BuildError(f"{where}: offset {value!r} is not a number") from None
    if offset < 0:
        raise BuildError(f"{where}: negative offset {offset}")
    return offset


# ESP-IDF 5.x names the partition table image "partition-table" in flasher_args.json; newer
# releases register it as "partition_table". The manifest always uses the first spelling.
_ROLE_ALIASES = {"partition_table": "partition-table"}


def image_roles(fa: dict) -> dict[str, dict]:
    """flasher_args.json's per-image entries ({"offset", "file", ...}) by normalised name."""
    return {
        _ROLE_ALIASES.get(k, k): v for k, v in fa.items() if isinstance(v, dict) and "offset" in v and "file" in v
    }


def role_offset(fa: dict, role: str, where: Path) -> int:
    entry = image_roles(fa).get(role)
    if entry is None:
        raise BuildError(f"{where} has no {role!r} entry with an offset")
    return parse_offset(entry["offset"], where)


def flash_settings(fa: dict, where: Path) -> tuple[str, str, str]:
    s = fa.get("flash_settings")
    if not isinstance(s, dict) or not all(k in s for k in ("flash_mode", "flash_freq", "flash_size")):
        raise BuildError(f"{where} has no flash_settings (flash_mode, flash_freq, flash_size)")
    return str(s["flash_mode"]), str(s["flash_freq"]), str(s["flash_size"])


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def merge_images(images: Sequence[Image], output: Path, *, chip: str, flash_mode: str, flash_freq: str, flash_size: str) -> None:
    """One image for offset 0 with esptool's public ``merge_bin`` (flash settings patched
    into the bootloader header exactly as esptool does when flashing)."""
    from esptool.cmds import merge_bin
    from esptool.util import FatalError

    tmp = output.with_name(output.name + ".tmp")
    try:
        merge_bin(
            [(img.offset, str(img.path)) for img in images],
            chip,
            output=str(tmp),
            flash_mode=flash_mode,
            flash_freq=flash_freq,
            flash_size="keep" if flash_size == "detect" else flash_size,
        )
    except FatalError as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"esptool could not merge the images: {exc}") from None
    os.replace(tmp, output)


def write_manifest(
    out: Path,
    output: BuildOutput,
    *,
    board: str,
    chip: str,
    backend: str,
    model: dict,
    sizes: Sizes | None,
    merged: bool = True,
) -> dict:
    """Write ``out/gendertool-build.json`` (and the merged image); return the manifest."""
    out = Path(out)
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "board": board,
        "chip": chip,
        "backend": backend,
        "model": {"name": model.get("name"), "sha256": model.get("sha256")},
        "flash": {"mode": output.flash_mode, "freq": output.flash_freq, "size": output.flash_size},
        "images": [{"name": i.name, "offset": i.offset, "path": _rel(i.path, out)} for i in output.images],
    }
    if merged:
        merge_images(
            output.images,
            out / MERGED_NAME,
            chip=chip,
            flash_mode=output.flash_mode,
            flash_freq=output.flash_freq,
            flash_size=output.flash_size,
        )
        manifest["merged"] = {"offset": 0, "path": MERGED_NAME}
    manifest["elf"] = _rel(output.elf, out) if output.elf else None
    manifest["sizes"] = (sizes or Sizes()).to_manifest()
    path = out / MANIFEST_NAME
    write_json_atomic(path, manifest, indent=2)
    if merged:  # ESP Web Tools manifest next to the merged image (browser flashing)

        write_web_manifest(path)
    return manifest


WEB_MANIFEST_NAME = "manifest.json"


DEFAULT_BUILD_DIR = Path("build")


# --------------------------------------------------------------------------- build manifest


@dataclass(frozen=True)
class FlashImage:
    name: str
    offset: int
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class FlashPlan:
    """What to write: images sorted by offset, flash settings, where they came from."""

    manifest_path: Path
    chip: str
    board: str
    model: dict
    images: tuple[FlashImage, ...]
    flash_mode: str = "keep"
    flash_freq: str = "keep"
    flash_size: str = "keep"
    merged: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(img.size for img in self.images)


def find_build_manifest(build: str | Path | None = None) -> Path:
    """The manifest file for ``build`` (a build folder or the manifest itself)."""
    candidate = Path(build) if build is not None else DEFAULT_BUILD_DIR
    path = candidate if candidate.suffix == ".json" else candidate / MANIFEST_NAME
    if not path.is_file():
        where = f"{candidate}" if build is not None else f"{DEFAULT_BUILD_DIR}/ (the default)"
        folder = path.parent
        if (folder / "platformio.ini").is_file() and (folder / "main").is_dir():  # rendered, never compiled
            raise BuildError(
                f"{folder} holds a rendered firmware project that was not compiled (no {MANIFEST_NAME}: "
                f"`gendertool build --no-compile`, or a compile that failed); compile it with "
                f"`gendertool build --out {folder}` with the options it was rendered with (needs PlatformIO or ESP-IDF), then flash"
            )
        raise BuildError(
            f"no build found: {path} does not exist in {where}; "
            "run `gendertool build` first, or pass --build DIR of a finished build"
        )
    return path


def load_build_manifest(build: str | Path | None = None) -> tuple[Path, dict]:
    path = find_build_manifest(build)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"{path} is not a readable build manifest ({exc}); run `gendertool build` again") from None
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise BuildError(
            f"{path} has an unknown manifest schema ({data.get('schema') if isinstance(data, dict) else type(data).__name__}); "
            f"this gendertool reads schema {MANIFEST_SCHEMA}: rebuild with `gendertool build`"
        )
    return path, data


def plan_flash(build: str | Path | None = None, *, merged: bool = False) -> FlashPlan:
    """Read the build manifest and check every image it names exists and is not empty.

    ``merged=True`` writes the single merged image instead of the separate ones.
    """
    path, data = load_build_manifest(build)
    base = path.parent
    chip = str(data.get("chip", ""))
    if chip.lower().replace("-", "") != REQUIRED_CHIP.lower().replace("-", ""):
        raise BuildError(f"{path} is a build for {chip or 'an unknown chip'}, not {REQUIRED_CHIP}; rebuild for the XIAO ESP32S3")

    if merged:
        entry = data.get("merged")
        if not isinstance(entry, dict) or "path" not in entry:
            raise BuildError(f"{path} lists no merged image; flash the separate images (omit --merged) or rebuild")
        entries = [{"name": "merged", **entry}]
    else:
        entries = data.get("images")
        if not isinstance(entries, list) or not entries:
            raise BuildError(f"{path} lists no images to flash; run `gendertool build` again")

    images: list[FlashImage] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry or "offset" not in entry:
            raise BuildError(f"{path}: image #{i} needs 'path' and 'offset'")
        name = str(entry.get("name") or Path(entry["path"]).stem)
        img = FlashImage(name, parse_offset(entry["offset"], f"{path} image {name!r}"), base / entry["path"])
        if not img.path.is_file():
            raise BuildError(f"{name} image {img.path} is missing; the build is incomplete: run `gendertool build` again")
        if img.size == 0:
            raise BuildError(f"{name} image {img.path} is empty; run `gendertool build` again")
        images.append(img)
    images.sort(key=lambda im: im.offset)
    for prev, nxt in zip(images, images[1:]):
        if prev.offset + prev.size > nxt.offset:
            raise BuildError(
                f"{path}: {prev.name} ({prev.offset:#x}, {prev.size} bytes) overlaps {nxt.name} at {nxt.offset:#x}"
            )

    settings = data.get("flash") if isinstance(data.get("flash"), dict) else {}
    return FlashPlan(
        manifest_path=path,
        chip=chip,
        board=str(data.get("board", "")),
        model=data.get("model") if isinstance(data.get("model"), dict) else {},
        images=tuple(images),
        flash_mode=str(settings.get("mode", "keep")),
        flash_freq=str(settings.get("freq", "keep")),
        flash_size=str(settings.get("size", "keep")),
        merged=merged,
    )


# --------------------------------------------------------------------------- ESP Web Tools


def write_web_manifest(build_manifest_path: str | Path) -> Path:
    """Write an ESP Web Tools ``manifest.json`` next to the merged image; return its path.

    Without a merged image the separate images are listed (paths relative to the manifest).
    """
    path, data = load_build_manifest(build_manifest_path)
    base = path.parent
    merged = data.get("merged")
    if isinstance(merged, dict) and "path" in merged:
        image_path = base / merged["path"]
        out_dir = image_path.parent
        parts = [{"path": image_path.name, "offset": parse_offset(merged.get("offset", 0), f"{path} merged")}]
    else:
        out_dir = base
        parts = [
            {"path": os.path.relpath(base / e["path"], out_dir).replace(os.sep, "/"), "offset": parse_offset(e["offset"], f"{path} image")}
            for e in sorted(data.get("images") or [], key=lambda e: parse_offset(e.get("offset"), f"{path} image"))
        ]
        if not parts:
            raise BuildError(f"{path} lists no images; nothing to put in a web flasher manifest")

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    model_name = model.get("name") or "model"
    sha = str(model.get("sha256") or "")[:12]
    web = {
        "name": f"gendertool {model_name} ({data.get('board', 'esp32s3')})",
        "version": f"{__version__}+{sha}" if sha else __version__,
        "new_install_prompt_erase": True,
        "builds": [{"chipFamily": "ESP32-S3", "parts": parts}],
    }
    out = out_dir / WEB_MANIFEST_NAME
    write_json_atomic(out, web, indent=2)
    return out


@dataclass(frozen=True)
class Sizes:
    """Static memory use from the toolchain's size report (None: the report lacks it)."""

    flash_bytes: int | None = None
    dram_bytes: int | None = None
    iram_bytes: int | None = None
    flash_total: int | None = None
    dram_total: int | None = None

    def to_manifest(self) -> dict[str, int | None]:
        return {"flash_bytes": self.flash_bytes, "dram_bytes": self.dram_bytes, "iram_bytes": self.iram_bytes}


@dataclass(frozen=True)
class Image:
    name: str
    offset: int
    path: Path  # absolute


@dataclass(frozen=True)
class BuildOutput:
    """What a finished compile produced, read from the toolchain's build folder."""

    images: tuple[Image, ...]
    elf: Path | None
    flash_mode: str
    flash_freq: str
    flash_size: str


REQUIRED_CHIP = "ESP32-S3"
