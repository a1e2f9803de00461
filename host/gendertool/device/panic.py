"""Decode ESP-IDF panics in the device log (backtraces through addr2line)."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLCHAIN_PREFIX = "xtensa-esp32s3-elf-"


# --------------------------------------------------------------------------- panics

# ESP-IDF's panic handler output (esp_system/port/panic_handler.c, panic_print_backtrace)
_PANIC_START = re.compile(r"Guru Meditation Error|abort\(\) was called at PC|\*\*\*ERROR\*\*\* A stack overflow|assert failed:|Stack smashing protect failure")
_BACKTRACE = re.compile(r"^\s*Backtrace:\s*((?:0x[0-9a-fA-F]{8}:0x[0-9a-fA-F]{8}\s*)+)(\|<-CORRUPTED)?")
_ELF_SHA = re.compile(r"ELF file SHA256:\s*([0-9a-fA-F]+)")


@dataclass
class Frame:
    pc: str
    sp: str
    function: str | None = None
    location: str | None = None  # "path:line"
    inlined: list[str] = field(default_factory=list)


@dataclass
class PanicReport:
    reason: str  # the "Guru Meditation Error: ..." line (or the first panic line seen)
    backtrace: str  # the raw "Backtrace: ..." line
    frames: list[Frame]
    decoded: bool
    hint: str | None = None  # why it is not decoded, or a warning about the ELF
    corrupted: bool = False


def find_addr2line(prefix: str = TOOLCHAIN_PREFIX) -> str | None:
    """The toolchain's addr2line: on PATH, in ESP-IDF's tools folder, or PlatformIO's package."""
    exe = prefix + "addr2line"
    found = shutil.which(exe)
    if found:
        return found
    if not prefix:
        return None
    home = Path.home()
    idf_tools = Path(os.environ.get("IDF_TOOLS_PATH", home / ".espressif"))
    candidates = [
        *glob.glob(str(idf_tools / "tools" / "xtensa-esp-elf" / "*" / "xtensa-esp-elf" / "bin" / exe)),
        *glob.glob(str(idf_tools / "tools" / "xtensa-esp32s3-elf" / "*" / "xtensa-esp32s3-elf" / "bin" / exe)),
        str(Path(os.environ.get("PLATFORMIO_CORE_DIR", home / ".platformio")) / "packages" / "toolchain-xtensa-esp32s3" / "bin" / exe),
    ]
    for cand in sorted(candidates, reverse=True):
        if os.access(cand, os.X_OK):
            return cand
    return None


class PanicDecoder:
    """Decode ``Backtrace:`` lines with esp-idf-panic-decoder's PcAddressDecoder (addr2line).

    Without an ELF, or without the Xtensa toolchain, reports carry the raw addresses and a
    hint saying what is missing.
    """

    def __init__(self, elf: str | Path | None, toolchain_prefix: str = TOOLCHAIN_PREFIX) -> None:
        self.elf = Path(elf) if elf else None
        self.toolchain_prefix = toolchain_prefix
        self._decoder = None
        self._elf_sha: str | None = None
        self.problem: str | None = None
        if self.elf is None:
            self.problem = "no ELF known to decode it: pass --elf build/gendertool.elf (or --build DIR of the flashed build)"
            return
        if not self.elf.is_file():
            self.problem = f"ELF {self.elf} does not exist; pass --elf of the flashed build to decode it"
            return
        addr2line = find_addr2line(toolchain_prefix)
        if addr2line is None:
            self.problem = (
                f"{toolchain_prefix}addr2line not found (the Xtensa toolchain of ESP-IDF or PlatformIO); "
                "install it or put it on PATH to decode"
            )
            return
        from esp_idf_panic_decoder import PcAddressDecoder

        # PcAddressDecoder runs "<prefix>addr2line"; give it the directory we found it in.
        full_prefix = str(Path(addr2line).parent / toolchain_prefix) if not shutil.which(toolchain_prefix + "addr2line") else toolchain_prefix
        self._decoder = PcAddressDecoder(full_prefix, str(self.elf))

    @property
    def elf_sha256(self) -> str | None:
        if self.elf is None or not self.elf.is_file():
            return None
        if self._elf_sha is None:
            self._elf_sha = hashlib.sha256(self.elf.read_bytes()).hexdigest()
        return self._elf_sha

    def decode(self, reason: str, backtrace_line: str, device_elf_sha: str | None = None) -> PanicReport:
        m = _BACKTRACE.match(backtrace_line)
        pairs = re.findall(r"(0x[0-9a-fA-F]{8}):(0x[0-9a-fA-F]{8})", m.group(1) if m else backtrace_line)
        frames = [Frame(pc.lower(), sp.lower()) for pc, sp in pairs]
        corrupted = bool(m and m.group(2))
        if self._decoder is None:
            return PanicReport(reason, backtrace_line.strip(), frames, False, self.problem, corrupted)
        hint = None
        mine = self.elf_sha256
        if device_elf_sha and mine and not mine.startswith(device_elf_sha.lower()):
            hint = (
                f"the device runs ELF {device_elf_sha.lower()}..., but {self.elf} is {mine[:len(device_elf_sha)]}...: "
                "decoded lines may be wrong (flash this build or pass its --elf)"
            )
        # Only PCs: the SPs are data addresses and the matcher would skip them anyway.
        translated = dict(self._decoder.translate_addresses(" ".join(f.pc for f in frames)))
        any_decoded = False
        for f in frames:
            locs = translated.get(f.pc)
            if not locs:
                continue
            any_decoded = True
            first = locs[0]
            f.function = first.func
            f.location = f"{first.path}:{first.line}" if first.line else first.path
            f.inlined = [f"{loc.func} at {loc.path}:{loc.line}" for loc in locs[1:]]
        if not any_decoded and hint is None:
            hint = f"no backtrace address is inside {self.elf}'s code: is it the ELF of the running firmware?"
        return PanicReport(reason, backtrace_line.strip(), frames, any_decoded, hint, corrupted)


class PanicTracker:
    """Collects a panic's lines: reason, backtrace, then the ELF SHA256 printed after it.

    ESP-IDF prints "ELF file SHA256" after the backtrace, so a report waits for that line
    (or "Rebooting...", the next record, a reconnect) before it is decoded and reported.
    """

    def __init__(self, decoder: PanicDecoder, sink: Any, session: Any) -> None:
        self.decoder = decoder
        self.sink = sink
        self.session = session
        self.reason: str | None = None
        self.backtrace: str | None = None
        self.after = 0

    def line(self, text: str) -> None:
        if _PANIC_START.search(text):
            self.flush()
            self.reason = text.strip()
            return
        if _BACKTRACE.match(text):
            self.flush_backtrace_only()
            self.backtrace = text
            self.after = 0
            return
        if self.backtrace is None:
            return
        m = _ELF_SHA.search(text)
        if m:
            self.flush(m.group(1))
            return
        self.after += 1
        if "Rebooting" in text or "CPU halted" in text or self.after >= 4:
            self.flush()

    def flush_backtrace_only(self) -> None:
        if self.backtrace is not None:
            self.flush()

    def flush(self, elf_sha: str | None = None) -> None:
        if self.backtrace is None:
            return
        self.session.panics += 1
        report = self.decoder.decode(self.reason or "panic", self.backtrace, elf_sha)
        self.reason = self.backtrace = None
        self.after = 0
        self.sink.panic(report)
