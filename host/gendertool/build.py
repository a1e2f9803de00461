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

import collections
import contextlib
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gendertool.errors import BuildError, GendertoolError
from gendertool.files import write_json_atomic

PIO_PLATFORM = "espressif32"
PIO_PLATFORM_VERSION = "6.13.0"
PIO_PLATFORM_SPEC = f"platformio/{PIO_PLATFORM}@{PIO_PLATFORM_VERSION}"
IDF_VERSION = (5, 5, 3)
IDF_VERSION_STR = ".".join(map(str, IDF_VERSION))

BACKENDS = ("pio", "idf")
INPUT_SOURCES = ("sample", "upload", "camera")
MANIFEST_NAME = "gendertool-build.json"
MANIFEST_SCHEMA = 1
MERGED_NAME = "gendertool-merged.bin"
LOG_NAME = "build.log"
IDF_BUILD_DIR = "build"
DEFAULT_OUT = Path("build")

# Environment overrides (tests, unusual installs): the PlatformIO command line, and how
# long one attempt to install the platform may take before we call it unreachable.
PIO_CMD_ENV = "GENDERTOOL_PIO"
PIO_INSTALL_TIMEOUT_ENV = "GENDERTOOL_PIO_INSTALL_TIMEOUT"
PIO_INSTALL_TIMEOUT_S = 90.0
# Before installing the platform, one quick connection to PlatformIO's registry (or the HTTPS
# proxy): offline, that fails in seconds where `pio pkg install` retries for a minute.
PIO_REGISTRY_ENV = "GENDERTOOL_PIO_REGISTRY"
PIO_REGISTRY = "api.registry.platformio.org:443"
REGISTRY_PROBE_TIMEOUT_S = 5.0

TAIL_LINES = 200

# Lines of `pio` output that mean a package could not be fetched (registry unreachable,
# package unknown), as opposed to a compile error in the project.
_PIO_FETCH_FAILURE = re.compile(
    r"HTTPClientError|InternetConnectionError|Could not resolve|Max retries exceeded|"
    r"Failed to establish a new connection|Name or service not known|Temporary failure in name resolution|"
    r"UnknownPackageError|UnknownPlatform|Could not find the package|PackageException|"
    r"ConnectionError|ReadTimeout|timed out",
    re.IGNORECASE,
)
_PIO_INSTALLING = re.compile(r"(Platform|Tool|Library) Manager: Installing (.+)")
_PIO_SIZE = re.compile(r"^(RAM|Flash):\s+\[[= ]*\]\s+[\d.]+%\s+\(used (\d+) bytes from (\d+) bytes\)")
_IDF_BIN_SIZE = re.compile(r"(\S+\.bin) binary size (0x[0-9a-fA-F]+) bytes")
_VERSION_CMAKE = re.compile(r"set\s*\(\s*IDF_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)\s*\)")

LineCallback = Callable[[str], None]


# --------------------------------------------------------------------------- results


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


class ToolchainMissing(BuildError):
    """The compiler toolchain is not installed and cannot be installed here."""


# --------------------------------------------------------------------------- entry point


def check_options(backend: str, input_source: str, jobs: int | None) -> None:
    if backend not in BACKENDS:
        raise BuildError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if input_source not in INPUT_SOURCES:
        raise BuildError(f"unknown input source {input_source!r}; choose one of: {', '.join(INPUT_SOURCES)}")
    if jobs is not None and jobs < 1:
        raise BuildError(f"--jobs must be at least 1 (got {jobs})")


def build(
    model: str | Path | None = None,
    *,
    board: str | None = None,
    out_dir: str | Path = DEFAULT_OUT,
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
    ``compile=False``) compile it. ``on_line`` receives every toolchain output line,
    ``on_stage`` a short description of each step."""
    from gendertool.boards import get_board

    check_options(backend, input_source, jobs)
    brd = get_board(board)
    if input_source == "camera" and brd.camera is None:
        raise BuildError(f"board {brd.name} has no camera; use --board xiao_esp32s3_sense or --input sample|upload")
    stage = on_stage or (lambda _msg: None)

    stage("checking the model")
    from gendertool.model import load_model

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
            output, sizes = _build_pio(out, brd, jobs, log, on_line, stage, result.warnings)
        else:
            output, sizes = _build_idf(out, brd, jobs, log, on_line, stage, result.warnings)
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
    return result


def render(info: Any, board: Any, out: Path, *, input_source: str = "sample", options: dict | None = None) -> Any:
    """Render the project (FIRMWARE's renderer); turn filesystem trouble into BuildError."""
    from gendertool.render import render_project

    try:
        return render_project(info, board, out, input_source=input_source, options=options)
    except GendertoolError:
        raise
    except OSError as exc:
        raise BuildError(f"cannot write the project into {out}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- process runner


def run_streaming(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Any = None,
    on_line: LineCallback | None = None,
    timeout: float | None = None,
) -> tuple[int, list[str]]:
    """Run ``cmd``, passing each output line (stdout+stderr) to ``on_line`` and ``log``.

    Returns (exit code, last lines). A timeout kills the process and returns code -9.
    Raises FileNotFoundError when the program does not exist.
    """
    import threading

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    if log is not None:
        log.write("$ " + " ".join(shlex.quote(str(c)) for c in cmd) + "\n")
        log.flush()
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=str(cwd) if cwd else None,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    timer = None
    timed_out = threading.Event()
    if timeout is not None:

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, _kill)
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\r\n")
            tail.append(line)
            if log is not None:
                log.write(line + "\n")
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if log is not None:
            log.flush()
    return (-9 if timed_out.is_set() else code), list(tail)


# --------------------------------------------------------------------------- PlatformIO


def pio_command() -> list[str]:
    """The PlatformIO command: the one installed next to gendertool (``python -m platformio``)."""
    override = os.environ.get(PIO_CMD_ENV)
    if override:
        return shlex.split(override)
    import importlib.util

    if importlib.util.find_spec("platformio") is None:
        raise ToolchainMissing(
            f"PlatformIO is not installed in this Python ({sys.executable}): `pip install platformio`"
        )
    return [sys.executable, "-m", "platformio"]


def _tool_env(**extra: str) -> dict[str, str]:
    # Line-buffered output so progress streams live through the pipe.
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _pio_env() -> dict[str, str]:
    # Download progress bars would fill build.log with redraws.
    return _tool_env(PLATFORMIO_DISABLE_PROGRESSBAR="true")


def _no_toolchain(what: str, out: Path, hint: str) -> ToolchainMissing:
    return ToolchainMissing(f"{what}; the rendered project is in {out} ({hint})")


def _pio_platform_installed(pio: list[str], log: Any) -> bool:
    try:
        code, lines = run_streaming(
            pio + ["pkg", "list", "-g", "--only-platforms", "-p", PIO_PLATFORM_SPEC], env=_pio_env(), log=log, timeout=120
        )
    except FileNotFoundError:
        raise
    if code != 0:
        return False
    pattern = re.compile(rf"\b{PIO_PLATFORM} @ {re.escape(PIO_PLATFORM_VERSION)}\b")
    return any(pattern.search(line) for line in lines)


def registry_unreachable(timeout: float = REGISTRY_PROBE_TIMEOUT_S) -> str | None:
    """Why PlatformIO's registry cannot be reached from here, or None when a connection opens.

    Connects to $GENDERTOOL_PIO_REGISTRY (HOST:PORT), else to the HTTPS proxy when one is set
    (PlatformIO goes through it), else to the registry itself.
    """
    import socket
    from urllib.parse import urlsplit

    target = os.environ.get(PIO_REGISTRY_ENV)
    if not target:
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
        if proxy:
            u = urlsplit(proxy if "://" in proxy else "http://" + proxy)
            target = f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
        else:
            target = PIO_REGISTRY
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return f"{target}: {getattr(exc, 'strerror', None) or exc}"


def _fetch_failure(lines: Sequence[str]) -> str | None:
    """The line saying why PlatformIO could not fetch a package, if that is why it failed."""
    installing = None
    for line in lines:
        m = _PIO_INSTALLING.search(line)
        if m:
            installing = m.group(2).strip()
        if _PIO_FETCH_FAILURE.search(line):
            reason = line.strip().rstrip(":")
            if reason in ("HTTPClientError", "InternetConnectionError"):
                reason += ", the PlatformIO registry or its download servers are unreachable from here"
            return f"{installing}: {reason}" if installing else reason
    return None


def _first_error(lines: Sequence[str]) -> str | None:
    for line in lines:
        if re.search(r"\berror\b", line, re.IGNORECASE) and not line.lstrip().startswith("="):
            return line.strip()
    return None


def _build_pio(
    out: Path, board: Any, jobs: int | None, log: Any, on_line: LineCallback | None, stage: LineCallback, warnings: list
) -> tuple[BuildOutput, Sizes]:
    hint = f"build it where PlatformIO can reach its registry: `pio run -d {out}`"
    try:
        pio = pio_command()
        stage(f"checking PlatformIO platform {PIO_PLATFORM} @ {PIO_PLATFORM_VERSION}")
        installed = _pio_platform_installed(pio, log)
        if not installed:
            stage("checking that the PlatformIO registry can be reached")
            offline = registry_unreachable()
            if offline:
                raise _no_toolchain(
                    f"PlatformIO platform {PIO_PLATFORM} @ {PIO_PLATFORM_VERSION} (ESP-IDF {IDF_VERSION_STR} + Xtensa toolchain) "
                    f"is not installed and its registry cannot be reached ({offline})",
                    out,
                    hint,
                )
            timeout = float(os.environ.get(PIO_INSTALL_TIMEOUT_ENV, PIO_INSTALL_TIMEOUT_S))
            stage(f"installing PlatformIO platform {PIO_PLATFORM} @ {PIO_PLATFORM_VERSION}")
            code, lines = run_streaming(
                pio + ["pkg", "install", "-g", "-p", PIO_PLATFORM_SPEC], env=_pio_env(), log=log, on_line=on_line,
                timeout=timeout,
            )
            if code != 0:
                why = "timed out" if code == -9 else (_fetch_failure(lines) or (lines[-1].strip() if lines else f"exit {code}"))
                raise _no_toolchain(
                    f"PlatformIO platform {PIO_PLATFORM} @ {PIO_PLATFORM_VERSION} (ESP-IDF {IDF_VERSION_STR} + Xtensa toolchain) "
                    f"is not installed and could not be installed ({why})",
                    out,
                    hint,
                )
        stage("compiling with PlatformIO (pio run)")
        cmd = pio + ["run", "-d", str(out), "-e", board.name]
        if jobs:
            cmd += ["-j", str(jobs)]
        code, lines = run_streaming(cmd, env=_pio_env(), log=log, on_line=on_line)
    except FileNotFoundError as exc:
        raise _no_toolchain(f"PlatformIO not found ({exc.filename or exc})", out, f"install it: `pip install platformio`") from None
    if code != 0:
        why = _fetch_failure(lines)
        if why:
            raise _no_toolchain(
                f"PlatformIO could not install the ESP32-S3 toolchain packages ({why})", out, hint
            )
        raise BuildError(
            f"pio run failed (exit {code}): {_first_error(lines) or (lines[-1] if lines else 'no output')}; "
            f"full log: {out / LOG_NAME}"
        )
    build_dir = out / ".pio" / "build" / board.name
    output = read_pio_build(build_dir, firmware_name="firmware")
    return output, parse_pio_sizes(lines)


def parse_pio_sizes(lines: Sequence[str]) -> Sizes:
    """PlatformIO's "RAM: [..] x% (used N bytes from M bytes)" / "Flash: ..." lines."""
    found: dict[str, tuple[int, int]] = {}
    for line in lines:
        m = _PIO_SIZE.match(line.strip())
        if m:
            found[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    ram = found.get("RAM")
    flash = found.get("Flash")
    return Sizes(
        flash_bytes=flash[0] if flash else None,
        dram_bytes=ram[0] if ram else None,
        iram_bytes=None,
        flash_total=flash[1] if flash else None,
        dram_total=ram[1] if ram else None,
    )


def read_pio_build(build_dir: Path, *, firmware_name: str = "firmware") -> BuildOutput:
    """Images and offsets of a PlatformIO espidf build (``.pio/build/<env>``).

    PlatformIO's espidf builder writes ``bootloader.bin``, ``partitions.bin`` and
    ``<PROGNAME>.bin``/``.elf`` into the build dir, and runs ESP-IDF's CMake configure there,
    which leaves ``flasher_args.json`` (offsets + flash settings) and ``config/sdkconfig.json``.
    Offsets come from flasher_args.json; without it from sdkconfig.json
    (BOOTLOADER_OFFSET_IN_FLASH, PARTITION_TABLE_OFFSET) and the app partition in
    partitions.bin, the same partition PlatformIO flashes the app to.
    """
    build_dir = Path(build_dir)
    files = {
        "bootloader": build_dir / "bootloader.bin",
        "partition-table": build_dir / "partitions.bin",
        "app": build_dir / f"{firmware_name}.bin",
        "otadata": build_dir / "ota_data_initial.bin",
    }
    for name in ("bootloader", "partition-table", "app"):
        if not files[name].is_file():
            raise BuildError(f"the PlatformIO build in {build_dir} has no {files[name].name}; the build is incomplete")
    elf = build_dir / f"{firmware_name}.elf"

    flasher = build_dir / "flasher_args.json"
    if flasher.is_file():
        fa = _load_json(flasher)
        settings = _flash_settings(fa, flasher)
        offsets = {role: _role_offset(fa, role, flasher) for role in ("bootloader", "partition-table", "app")}
        if "otadata" in _roles(fa):
            offsets["otadata"] = _role_offset(fa, "otadata", flasher)
    else:
        sdk_path = build_dir / "config" / "sdkconfig.json"
        if not sdk_path.is_file():
            raise BuildError(
                f"cannot tell the flash offsets of the PlatformIO build in {build_dir}: "
                "neither flasher_args.json nor config/sdkconfig.json is there"
            )
        sdk = _load_json(sdk_path)
        try:
            pt_offset = int(sdk["PARTITION_TABLE_OFFSET"])
            settings = (str(sdk["ESPTOOLPY_FLASHMODE"]), str(sdk["ESPTOOLPY_FLASHFREQ"]), str(sdk["ESPTOOLPY_FLASHSIZE"]))
            boot_offset = int(sdk["BOOTLOADER_OFFSET_IN_FLASH"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BuildError(f"{sdk_path} lacks {exc}; cannot tell the flash offsets") from None
        table = parse_partition_table(files["partition-table"].read_bytes())
        offsets = {"bootloader": boot_offset, "partition-table": pt_offset, "app": boot_app_partition(table)["offset"]}
        ota = [p for p in table if p["type"] == 1 and p["subtype"] == 0]
        if ota and files["otadata"].is_file():
            offsets["otadata"] = ota[0]["offset"]
    images = tuple(
        sorted((Image(name, off, files[name]) for name, off in offsets.items() if files[name].is_file()), key=lambda i: i.offset)
    )
    return BuildOutput(images, elf if elf.is_file() else None, *settings)


# --------------------------------------------------------------------------- partition table

_PT_MAGIC = b"\xaa\x50"
_PT_ENTRY = struct.Struct("<2sBBII16sI")


def parse_partition_table(data: bytes) -> list[dict]:
    """Entries of an ESP-IDF binary partition table (32-byte records, magic 0xAA50)."""
    entries = []
    for pos in range(0, len(data) - _PT_ENTRY.size + 1, _PT_ENTRY.size):
        chunk = data[pos : pos + _PT_ENTRY.size]
        if chunk[:2] != _PT_MAGIC:
            break  # 0xEBEB MD5 record or 0xFF padding ends the table
        _, ptype, subtype, offset, size, label, flags = _PT_ENTRY.unpack(chunk)
        entries.append(
            {
                "label": label.rstrip(b"\x00").decode("ascii", "replace"),
                "type": ptype,
                "subtype": subtype,
                "offset": offset,
                "size": size,
                "flags": flags,
            }
        )
    if not entries:
        raise BuildError("the partition table image holds no partition entries")
    return entries


def boot_app_partition(table: list[dict]) -> dict:
    """The partition the bootloader starts by default (parttool's --partition-boot-default):
    factory, else ota_0, else the first app partition."""
    apps = [p for p in table if p["type"] == 0]
    for subtype in (0x00, 0x10):
        for p in apps:
            if p["subtype"] == subtype:
                return p
    if apps:
        return apps[0]
    raise BuildError("the partition table has no app partition")


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


def _build_idf(
    out: Path, board: Any, jobs: int | None, log: Any, on_line: LineCallback | None, stage: LineCallback, warnings: list
) -> tuple[BuildOutput, Sizes]:
    hint = f"install ESP-IDF v{IDF_VERSION_STR}, run `. $IDF_PATH/export.sh`, then `idf.py -C {out} build`"
    try:
        idf, idf_path = find_idf()
    except ToolchainMissing as exc:
        raise _no_toolchain(str(exc), out, hint) from None
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
            code, lines = run_streaming(base + ["set-target", board.idf_target], env=_tool_env(), log=log, on_line=on_line)
            if code != 0:
                raise BuildError(
                    f"idf.py set-target {board.idf_target} failed (exit {code}): "
                    f"{_first_error(lines) or (lines[-1] if lines else 'no output')}; is the ESP-IDF environment "
                    f"exported (`. $IDF_PATH/export.sh`)? full log: {out / LOG_NAME}"
                )
        stage("compiling with ESP-IDF (idf.py build)")
        code, lines = run_streaming(base + ["build"], env=_tool_env(), log=log, on_line=on_line)
        if code != 0:
            raise BuildError(
                f"idf.py build failed (exit {code}): {_first_error(lines) or (lines[-1] if lines else 'no output')}; "
                f"full log: {out / LOG_NAME}"
            )
        stage("measuring sizes (idf.py size)")
        size_code, size_lines = run_streaming(base + ["size", "--format", "json2"], env=_tool_env(), log=log)
    except FileNotFoundError as exc:
        raise _no_toolchain(f"cannot run idf.py ({exc.filename or exc})", out, hint) from None
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
    fa = _load_json(flasher)
    settings = _flash_settings(fa, flasher)
    files = fa.get("flash_files")
    if not isinstance(files, dict) or not files:
        raise BuildError(f"{flasher} lists no flash_files")
    # Name each file by the role entry pointing at it (bootloader, app, partition-table, ...).
    roles = {str(v["file"]): k for k, v in _roles(fa).items()}
    images = []
    for off, rel in files.items():
        path = build_dir / str(rel)
        if not path.is_file():
            raise BuildError(f"{flasher} names {rel} but {path} does not exist; the build is incomplete")
        images.append(Image(roles.get(str(rel), Path(str(rel)).stem), _parse_offset(off, flasher), path))
    elf = None
    desc = build_dir / "project_description.json"
    if desc.is_file():
        name = _load_json(desc).get("app_elf")
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


# --------------------------------------------------------------------------- manifest


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BuildError(f"{path} is not a JSON object")
    return data


def _parse_offset(value: Any, where: Path) -> int:
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise BuildError(f"{where}: offset {value!r} is not a number") from None


# ESP-IDF 5.x names the partition table image "partition-table" in flasher_args.json; newer
# releases register it as "partition_table". The manifest always uses the first spelling.
_ROLE_ALIASES = {"partition_table": "partition-table"}


def _roles(fa: dict) -> dict[str, dict]:
    """flasher_args.json's per-image entries ({"offset", "file", ...}) by normalised name."""
    return {
        _ROLE_ALIASES.get(k, k): v for k, v in fa.items() if isinstance(v, dict) and "offset" in v and "file" in v
    }


def _role_offset(fa: dict, role: str, where: Path) -> int:
    entry = _roles(fa).get(role)
    if entry is None:
        raise BuildError(f"{where} has no {role!r} entry with an offset")
    return _parse_offset(entry["offset"], where)


def _flash_settings(fa: dict, where: Path) -> tuple[str, str, str]:
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
        from gendertool.flash import write_web_manifest

        write_web_manifest(path)
    return manifest
