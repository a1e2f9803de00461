"""The PlatformIO backend: the pinned espressif32 platform, `pio run`, its output and sizes."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gendertool.errors import BuildError
from gendertool.project.idf import IDF_VERSION_STR
from gendertool.project.manifest import (
    BuildOutput,
    Image,
    Sizes,
    flash_settings,
    image_roles,
    read_json_file,
    role_offset,
)
from gendertool.project.partitions import boot_app_partition, parse_partition_table
from gendertool.project.process import (
    LOG_NAME,
    LineCallback,
    ToolchainMissing,
    first_error_line,
    no_toolchain,
    run_streaming,
    tool_env,
)

PIO_PLATFORM = "espressif32"
PIO_PLATFORM_VERSION = "6.13.0"
PIO_PLATFORM_SPEC = f"platformio/{PIO_PLATFORM}@{PIO_PLATFORM_VERSION}"


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




def _pio_env() -> dict[str, str]:
    # Download progress bars would fill build.log with redraws.
    return tool_env(PLATFORMIO_DISABLE_PROGRESSBAR="true")




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


def build_pio(
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
                raise no_toolchain(
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
                raise no_toolchain(
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
        raise no_toolchain(f"PlatformIO not found ({exc.filename or exc})", out, f"install it: `pip install platformio`") from None
    if code != 0:
        why = _fetch_failure(lines)
        if why:
            raise no_toolchain(
                f"PlatformIO could not install the ESP32-S3 toolchain packages ({why})", out, hint
            )
        raise BuildError(
            f"pio run failed (exit {code}): {first_error_line(lines) or (lines[-1] if lines else 'no output')}; "
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
        fa = read_json_file(flasher)
        settings = flash_settings(fa, flasher)
        offsets = {role: role_offset(fa, role, flasher) for role in ("bootloader", "partition-table", "app")}
        if "otadata" in image_roles(fa):
            offsets["otadata"] = role_offset(fa, "otadata", flasher)
    else:
        sdk_path = build_dir / "config" / "sdkconfig.json"
        if not sdk_path.is_file():
            raise BuildError(
                f"cannot tell the flash offsets of the PlatformIO build in {build_dir}: "
                "neither flasher_args.json nor config/sdkconfig.json is there"
            )
        sdk = read_json_file(sdk_path)
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
