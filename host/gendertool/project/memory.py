"""Will the firmware's run-time allocations fit the board? Checked before anything is compiled.

The firmware allocates at boot (firmware/main/inference_runner.cc, input_provider.cc,
camera_provider.cc): the tensor arena (one 16-byte aligned block: internal RAM first, PSRAM
if it does not fit, or one of them when ``arena_placement`` forces it), the model copy when
``APP_MODEL_IN_PSRAM`` is set, the upload buffer and, on a camera board, the camera's frame
buffers (both in PSRAM). :func:`check_fit` adds these up against what the board offers;
:meth:`MemoryFit.raise_if_unfit` stops a build before rendering when something fits nowhere.

Sources of the figures (ESP-IDF v5.5, esp32s3; read upstream, nothing copied):

- Internal RAM: ``components/heap/port/esp32s3/memory_layout.c`` registers SRAM1's data-bus
  window as heap regions 0x3FC88000-0x3FCE0000 (D/IRAM, one contiguous run of 360,448 bytes)
  and 0x3FCE0000-0x3FCF0000 (64 KiB holding the startup stacks and, from
  ``soc.h``'s SOC_ROM_STACK_START 0x3FCEB710, the ROM's data: a separate heap, so no arena
  spans both). ``components/esp_system/ld/esp32s3/memory.ld.in`` puts the app's IRAM code
  and static data at the bottom of the same window (dram0_0_seg from 0x3FC88000) and leaves
  SRAM2 (0x3FCF0000-0x3FD00000) to the data cache, which our sdkconfig sets to 64 KB
  (CONFIG_ESP32S3_DATA_CACHE_64KB). With PSRAM on, CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL
  (default 32 KiB) is carved out of internal RAM as a DMA-only pool.
- What the firmware itself takes from that run (IRAM code, .data/.bss, the task stacks and
  driver buffers allocated before the arena) is only known on the board: it is an estimate
  here (FIRMWARE_INTERNAL_ESTIMATE_BYTES), which the board's hello record (heap_internal)
  and the boot log ("arena N bytes in internal RAM|PSRAM") confirm. An internal miss is not
  fatal: with placement "auto" the firmware falls back to PSRAM and logs it.
- PSRAM: the board registry (gendertool.boards: XIAO ESP32S3 = ESP32-S3R8, 8 MB octal PSRAM);
  ESP-IDF adds all of it to the heap (CONFIG_SPIRAM_USE_MALLOC, the default) less the heap's
  own bookkeeping (PSRAM_HEAP_OVERHEAD_BYTES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gendertool.errors import ModelError
from gendertool.protocol import MAX_UPLOAD_SIDE

# SRAM1 D/IRAM heap run 0x3FC88000-0x3FCE0000 (memory_layout.c regions "Level 2".."Level 7").
INTERNAL_DIRAM_RUN_BYTES = 0x3FCE0000 - 0x3FC88000  # 360,448
# CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL default (esp_psram Kconfig): internal DMA-only pool.
SPIRAM_RESERVE_INTERNAL_BYTES = 32 * 1024
# Estimate: the firmware's IRAM code + .data/.bss (PlatformIO reports ~32 KB of static RAM for
# this firmware, docs/building.md) + stacks and buffers allocated before the arena (16 KiB
# app task, FreeRTOS/IPC tasks, USB-Serial-JTAG buffers).
FIRMWARE_INTERNAL_ESTIMATE_BYTES = 64 * 1024
INTERNAL_ARENA_BYTES = INTERNAL_DIRAM_RUN_BYTES - SPIRAM_RESERVE_INTERNAL_BYTES - FIRMWARE_INTERNAL_ESTIMATE_BYTES
# TLSF control structure and block headers of the PSRAM heap (estimate).
PSRAM_HEAP_OVERHEAD_BYTES = 16 * 1024

# camera_provider.cc: RGB565 QVGA frames, fb_count 2, CAMERA_FB_IN_PSRAM.
CAMERA_FRAME_BYTES = 320 * 240 * 2
CAMERA_FRAME_COUNT = 2

PSRAM_SPEED_COST = (
    "PSRAM is reached over the octal SPI bus at 80 MHz through the 64 KB data cache instead "
    "of internal SRAM at the CPU's speed, so every Invoke() that streams activations through "
    "the arena runs slower (measure it: `gendertool bench --matrix` compares arena-psram "
    "with the internal baseline)"
)

SOURCES = {
    "internal": "ESP-IDF v5.5 esp32s3 memory layout: components/heap/port/esp32s3/memory_layout.c "
    "(D/IRAM heap run 0x3FC88000-0x3FCE0000), components/esp_system/ld/esp32s3/memory.ld.in "
    "(code and static data at its bottom; SRAM2 is the 64 KB data cache), "
    "CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL (32 KiB); the firmware's own share is an estimate",
    "psram": "board registry (gendertool.boards); ESP-IDF adds all PSRAM to the heap "
    "(CONFIG_SPIRAM_USE_MALLOC) less its bookkeeping (estimate)",
}


@dataclass(frozen=True)
class Allocation:
    what: str
    bytes: int
    region: str  # "internal" | "psram"

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "bytes": self.bytes, "region": self.region}


@dataclass(frozen=True)
class MemoryFit:
    """Where the firmware's allocations go on ``board`` and whether they fit."""

    board: str
    arena_bytes: int
    arena_placement: str  # requested: auto | internal | psram
    arena_region: str | None  # where the arena goes: internal | psram | None (fits nowhere)
    internal_bytes: int  # what the arena can have of internal RAM (estimate, see module doc)
    psram_bytes: int  # PSRAM heap the firmware can allocate from (0: no PSRAM)
    allocations: tuple[Allocation, ...]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def psram_used(self) -> int:
        return sum(a.bytes for a in self.allocations if a.region == "psram")

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "arena_bytes": self.arena_bytes,
            "arena_placement": self.arena_placement,
            "arena_region": self.arena_region,
            "internal_available_bytes": self.internal_bytes,
            "psram_available_bytes": self.psram_bytes,
            "psram_used_bytes": self.psram_used,
            "allocations": [a.to_dict() for a in self.allocations],
            "fits": self.ok,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "sources": dict(SOURCES),
        }

    def raise_if_unfit(self) -> None:

        if self.errors:
            raise ModelError("; ".join(self.errors))


def psram_heap_bytes(board) -> int:
    return max(board.psram_mb * 1024 * 1024 - PSRAM_HEAP_OVERHEAD_BYTES, 0) if board.psram_mb else 0


def check_fit(
    model,
    board,
    *,
    arena_bytes: int | None = None,
    arena_placement: str = "auto",
    model_in_psram: bool = False,
) -> MemoryFit:
    """Place the firmware's allocations for ``model`` (a ModelInfo) on ``board`` (a Board)."""

    arena = int(arena_bytes if arena_bytes is not None else (model.arena_bytes or 0))
    internal = INTERNAL_ARENA_BYTES if board.psram_mb else INTERNAL_ARENA_BYTES + SPIRAM_RESERVE_INTERNAL_BYTES
    psram = psram_heap_bytes(board)
    where = f"{model.name} on {board.name}"

    # Fixed PSRAM users first: the arena gets what is left.
    fixed: list[Allocation] = []
    if board.psram_mb:
        side = MAX_UPLOAD_SIDE
        fixed.append(Allocation(f"upload buffer ({side}x{side} RGB, the largest upload the protocol takes)", side * side * 3, "psram"))
        if model_in_psram:
            fixed.append(Allocation("model copy (APP_MODEL_IN_PSRAM)", int(model.size), "psram"))
        if board.camera is not None:
            fixed.append(Allocation(
                f"camera frame buffers ({CAMERA_FRAME_COUNT} x 320x240 RGB565)",
                CAMERA_FRAME_COUNT * CAMERA_FRAME_BYTES, "psram",
            ))
    psram_left = psram - sum(a.bytes for a in fixed)

    errors: list[str] = []
    warnings: list[str] = []
    region: str | None
    fits_internal = arena <= internal
    fits_psram = psram > 0 and arena <= psram_left
    psram_desc = (
        f"{psram:,} bytes of PSRAM heap ({board.psram_mb} MB, board registry)"
        + (f" of which {psram - psram_left:,} go to {', '.join(a.what for a in fixed)}" if fixed else "")
        if psram else "no PSRAM"
    )
    internal_desc = f"about {internal:,} bytes of internal RAM for it (ESP32-S3 memory layout, see docs/building.md)"
    if arena_placement == "internal":
        region = "internal" if fits_internal else None
        if not fits_internal:
            errors.append(
                f"{where}: the {arena:,}-byte tensor arena is forced into internal RAM (arena_placement=internal) "
                f"but the firmware has {internal_desc}; use arena_placement auto or psram"
            )
    elif arena_placement == "psram":
        region = "psram" if fits_psram else None
    else:
        region = "internal" if fits_internal else ("psram" if fits_psram else None)
    if region is None and not errors:
        errors.append(
            f"{where}: the {arena:,}-byte tensor arena fits nowhere: {internal_desc}, and "
            f"{psram_desc}, leaving {max(psram_left, 0):,} bytes; use a smaller input or model"
        )
    if region == "psram" and arena_placement == "auto":
        warnings.append(
            f"{where}: the {arena:,}-byte tensor arena does not fit in the about {internal:,} bytes of internal "
            f"RAM the firmware has for it (ESP32-S3 memory layout, see docs/building.md) and goes to PSRAM: {PSRAM_SPEED_COST}"
        )
    allocations = list(fixed)
    if region is not None:
        allocations.insert(0, Allocation("tensor arena", arena, region))
    return MemoryFit(
        board=board.name,
        arena_bytes=arena,
        arena_placement=arena_placement,
        arena_region=region,
        internal_bytes=internal,
        psram_bytes=psram,
        allocations=tuple(allocations),
        errors=tuple(errors),
        warnings=tuple(warnings),
    )
