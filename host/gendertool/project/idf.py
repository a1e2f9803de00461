"""The ESP-IDF backend: find `idf.py`, check its version, build, read sizes."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gendertool.errors import BuildError
from gendertool.project.manifest import (
    BuildOutput,
    Image,
    Sizes,
    flash_settings,
    image_roles,
    parse_offset,
    read_json_file,
)
from gendertool.project.process import (
    LOG_NAME,
    LineCallback,
    ToolchainMissing,
    first_error_line,
    no_toolchain,
    run_streaming,
    tool_env,
)

IDF_VERSION = (5, 5, 3)
IDF_VERSION_STR = ".".join(map(str, IDF_VERSION))


IDF_BUILD_DIR = "build"


_IDF_BIN_SIZE = re.compile(r"(\S+\.bin) binary size (0x[0-9a-fA-F]+) bytes")
_VERSION_CMAKE = re.compile(r"set\s*\(\s*IDF_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)\s*\)")


# --------------------------------------------------------------------------- ESP-IDF


def idf_version_from_path(idf_path: Path) -> tuple[int, int, int] | None:
    """ESP-IDF's version from ``tools/cmake/version.cmake`` (None when unreadable)."""
    try:
        text = (Path(idf_path) / "tools" / "cmake" / "version.cmake").read_text(encoding="utf-8")
    except OSError:
        return None
    parts = dict(_VERSION_CMAKE.findall(text))
    try:
        return int(parts["MAJOR"]), int(parts["MINOR"]), int(parts["PATCH"])
    except KeyError:
        return None


def find_idf() -> tuple[list[str], Path | None]:
    """The idf.py command and IDF_PATH; ToolchainMissing names what is absent."""
    idf_path = os.environ.get("IDF_PATH")
    on_path = shutil.which("idf.py")
    if on_path:
        return [on_path], Path(idf_path) if idf_path else None
    if idf_path:
        script = Path(idf_path) / "tools" / "idf.py"
        if script.is_file():
            return [sys.executable, str(script)], Path(idf_path)
        raise ToolchainMissing(f"IDF_PATH is {idf_path} but {script} does not exist")
    raise ToolchainMissing("ESP-IDF not found: IDF_PATH is not set and idf.py is not on PATH")


def idf_version_warning(version: tuple[int, int, int] | None, where: str) -> str | None:
    if version is None:
        return f"cannot read the ESP-IDF version from {where}; gendertool targets ESP-IDF v{IDF_VERSION_STR}"
    if version != IDF_VERSION:
        have = ".".join(map(str, version))
        same_minor = version[:2] == IDF_VERSION[:2]
        return (
            f"ESP-IDF v{have} found ({where}) but the firmware is written and checked for v{IDF_VERSION_STR}"
            + ("" if same_minor else "; a different minor release may reject sdkconfig keys or APIs")
        )
    return None


def build_idf(
    out: Path, board: Any, jobs: int | None, log: Any, on_line: LineCallback | None, stage: LineCallback, warnings: list
) -> tuple[BuildOutput, Sizes]:
    hint = f"install ESP-IDF v{IDF_VERSION_STR}, run `. $IDF_PATH/export.sh`, then `idf.py -C {out} build`"
    try:
        idf, idf_path = find_idf()
    except ToolchainMissing as exc:
        raise no_toolchain(str(exc), out, hint) from None
    version = idf_version_from_path(idf_path) if idf_path else None
    warning = idf_version_warning(version, f"IDF_PATH={idf_path}" if idf_path else "idf.py on PATH without IDF_PATH")
    if warning:
        warnings.append(warning)
        stage("warning: " + warning)
    if jobs:
        warnings.append("--jobs applies to PlatformIO only; idf.py lets ninja pick the parallelism")
        stage("warning: " + warnings[-1])
    build_dir = out / IDF_BUILD_DIR
    base = idf + ["-C", str(out), "-B", str(build_dir)]
    try:
        if not (build_dir / "CMakeCache.txt").is_file():
            stage(f"configuring for {board.idf_target} (idf.py set-target)")
            code, lines = run_streaming(base + ["set-target", board.idf_target], env=tool_env(), log=log, on_line=on_line)
            if code != 0:
                raise BuildError(
                    f"idf.py set-target {board.idf_target} failed (exit {code}): "
                    f"{first_error_line(lines) or (lines[-1] if lines else 'no output')}; is the ESP-IDF environment "
                    f"exported (`. $IDF_PATH/export.sh`)? full log: {out / LOG_NAME}"
                )
        stage("compiling with ESP-IDF (idf.py build)")
        code, lines = run_streaming(base + ["build"], env=tool_env(), log=log, on_line=on_line)
        if code != 0:
            raise BuildError(
                f"idf.py build failed (exit {code}): {first_error_line(lines) or (lines[-1] if lines else 'no output')}; "
                f"full log: {out / LOG_NAME}"
            )
        stage("measuring sizes (idf.py size)")
        size_code, size_lines = run_streaming(base + ["size", "--format", "json2"], env=tool_env(), log=log)
    except FileNotFoundError as exc:
        raise no_toolchain(f"cannot run idf.py ({exc.filename or exc})", out, hint) from None
    output = read_idf_build(build_dir)
    sizes = parse_idf_size_json(size_lines) if size_code == 0 else None
    if sizes is None:
        sizes = _idf_bin_size(lines)
    return output, sizes


def read_idf_build(build_dir: Path) -> BuildOutput:
    """Images, offsets and flash settings from ESP-IDF's ``build/flasher_args.json``."""
    build_dir = Path(build_dir)
    flasher = build_dir / "flasher_args.json"
    if not flasher.is_file():
        raise BuildError(f"{flasher} is missing; the ESP-IDF build is incomplete")
    fa = read_json_file(flasher)
    settings = flash_settings(fa, flasher)
    files = fa.get("flash_files")
    if not isinstance(files, dict) or not files:
        raise BuildError(f"{flasher} lists no flash_files")
    # Name each file by the role entry pointing at it (bootloader, app, partition-table, ...).
    roles = {str(v["file"]): k for k, v in image_roles(fa).items()}
    images = []
    for off, rel in files.items():
        path = build_dir / str(rel)
        if not path.is_file():
            raise BuildError(f"{flasher} names {rel} but {path} does not exist; the build is incomplete")
        images.append(Image(roles.get(str(rel), Path(str(rel)).stem), parse_offset(off, flasher), path))
    elf = None
    desc = build_dir / "project_description.json"
    if desc.is_file():
        name = read_json_file(desc).get("app_elf")
        if name and (build_dir / name).is_file():
            elf = build_dir / name
    if elf is None:
        app = next((i for i in images if i.name == "app"), None)
        if app is not None and app.path.with_suffix(".elf").is_file():
            elf = app.path.with_suffix(".elf")
    return BuildOutput(tuple(sorted(images, key=lambda i: i.offset)), elf, *settings)


def parse_idf_size_json(lines: Sequence[str]) -> Sizes | None:
    """Sizes from esp-idf-size's ``--format json2`` summary (``layout`` of memory types).

    DRAM counts the data sections in DIRAM/DRAM; IRAM counts IRAM plus the code sections
    (.iram0.text, abbreviated .text) that spill into DIRAM; flash counts "Flash Code" +
    "Flash Data". Section names may be full or abbreviated (esp-idf-size's default).
    """
    text = "\n".join(lines)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    layout = data.get("layout") if isinstance(data, dict) else None
    if not isinstance(layout, list):
        return None
    flash = dram = iram = 0
    dram_total = 0
    seen = False
    for mem in layout:
        if not isinstance(mem, dict):
            continue
        name = str(mem.get("name", ""))
        used = int(mem.get("used") or 0)
        parts = mem.get("parts") if isinstance(mem.get("parts"), dict) else {}
        seen = True
        if name.startswith("Flash"):
            flash += used
        elif name == "IRAM":
            iram += used
        elif name in ("DIRAM", "DRAM"):
            dram_total += int(mem.get("total") or 0)
            part_iram = sum(int(p.get("size") or 0) for k, p in parts.items() if _is_code_section(k) and isinstance(p, dict))
            iram += part_iram
            dram += used - part_iram
    if not seen:
        return None
    return Sizes(flash_bytes=flash, dram_bytes=dram, iram_bytes=iram, dram_total=dram_total or None)


def _is_code_section(name: str) -> bool:
    # esp-idf-size abbreviates section names by default (.iram0.text -> .text, .dram0.bss -> .bss).
    return name.startswith(".iram") or name in (".text", ".vectors", ".literal")


def _idf_bin_size(lines: Sequence[str]) -> Sizes:
    for line in lines:
        m = _IDF_BIN_SIZE.search(line)
        if m and "bootloader" not in m.group(1):
            return Sizes(flash_bytes=int(m.group(2), 16))
    return Sizes()
