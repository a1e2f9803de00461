"""Will the firmware's run-time allocations fit the board? Checked before anything is compiled.

The firmware allocates at boot (firmware/main/inference_runner.cc, input_provider.cc,
camera_provider.cc): the tensor arena (one 16-byte aligned block: internal RAM first, PSRAM
if it does not fit, or one of them when ``arena_placement`` forces it), the model copy when
``APP_MODEL_IN_PSRAM`` is set, the upload buffer and, on a camera board, the camera's frame
buffers (both in PSRAM). :func:`check_fit` adds these up against what the board offers;
:meth:`MemoryFit.raise_if_unfit` stops a build before rendering when something fits nowhere.

Internal RAM for the arena: :func:`internal_budget`, item by item, from ESP-IDF v5.5's own
figures for the ESP32-S3 (read upstream, nothing copied; see docs/building.md):

- The heap's one contiguous run: ``components/heap/port/esp32s3/memory_layout.c`` registers
  SRAM1's data-bus window 0x3FC88000 (SOC_DIRAM_DRAM_LOW) up to APP_USABLE_DRAM_END =
  SOC_ROM_STACK_START 0x3FCEB710 - SOC_ROM_STACK_SIZE 0x2000 = 0x3FCE9710 as regions of one
  type, which the heap merges: 399,120 bytes. Above it, the ROM's startup stacks
  (0x3FCE9710-0x3FCF0000) become a separate heap only once the scheduler runs, and SRAM2
  (0x3FCF0000-0x3FD00000) is the 64 KB data cache our sdkconfig asks for.
- What the app's image takes from the bottom of that run: ``components/esp_system/ld/esp32s3/
  memory.ld.in`` starts iram0_0_seg at 0x40370000 + the instruction cache size (our 32 KB
  cache takes all of SRAM0), so all IRAM code lands in SRAM1, and ``sections.ld.in``'s
  ``.dram0.dummy`` moves .data/.bss past the IRAM code's end; memory_layout.c reserves both
  (iram_code, dram_data). Before a compile these are the figures of a link of the rendered
  firmware with ESP-IDF v5.5.3's linker scripts and a GCC stand-in (issue 20: 85,286 bytes,
  57,011 of them IRAM code); after a compile the toolchain's size report replaces them.
- What is allocated before (or must stay free beside) the arena: CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL
  (esp_psram, 32 KiB DMA pool on a PSRAM board), the task stacks of the rendered sdkconfig
  (Kconfig defaults unless it sets them: main task, two IPC tasks, esp_timer, two idle tasks,
  the FreeRTOS timer task, our app task), the USB-Serial-JTAG driver's ring buffers
  (APP_SERIAL_RX/TX_BUFFER) and, on the camera board, esp32-camera's internal DMA buffer (QVGA
  RGB565 at a 20 MHz XCLK is not its PSRAM mode: ll_cam_calc_rgb_dma sizes it within
  CONFIG_CAMERA_DMA_BUFFER_SIZE_MAX) and its task. Task control blocks, heap block headers and
  the small structures of esp_timer, newlib, VFS and the console are an allowance.

The board's hello record says what is left (``heap_internal``, free internal heap after the
arena is allocated); ``bench`` keeps it in bench.json next to this budget, so the first run
on a board calibrates the estimate. An internal miss is not fatal: with placement "auto" the
firmware falls back to PSRAM and logs it.
- PSRAM: the board registry (gendertool.boards: XIAO ESP32S3 = ESP32-S3R8, 8 MB octal PSRAM);
  ESP-IDF adds all of it to the heap (CONFIG_SPIRAM_USE_MALLOC, the default) less the heap's
  own bookkeeping (PSRAM_HEAP_OVERHEAD_BYTES).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gendertool.errors import ModelError
from gendertool.protocol import MAX_UPLOAD_SIDE

# memory_layout.c + soc.h (ESP32-S3): the D/IRAM regions the heap merges into one run.
SOC_DIRAM_DRAM_LOW = 0x3FC88000
SOC_ROM_STACK_START = 0x3FCEB710
SOC_ROM_STACK_SIZE = 0x2000
APP_USABLE_DRAM_END = SOC_ROM_STACK_START - SOC_ROM_STACK_SIZE  # 0x3FCE9710
INTERNAL_DIRAM_RUN_BYTES = APP_USABLE_DRAM_END - SOC_DIRAM_DRAM_LOW  # 399,120

# Static internal RAM of the rendered firmware before it is compiled: a link with ESP-IDF
# v5.5.3's linker scripts and a GCC stand-in (issue 20). The build's size report replaces them.
STATIC_IRAM_ESTIMATE_BYTES = 57_011
STATIC_DRAM_ESTIMATE_BYTES = 85_286 - 57_011  # .data + .bss: 28,275
# sections.ld.in: .dram0.dummy ends at ALIGN(16) + 16 past the IRAM code.
IRAM_DRAM_GAP_BYTES = 32

# CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL default (esp_psram Kconfig): internal DMA-only pool.
SPIRAM_RESERVE_INTERNAL_BYTES = 32 * 1024

# Task stacks the firmware's sdkconfig leaves at their Kconfig defaults (ESP-IDF v5.5), and
# the app's own (templates/main/Kconfig.projbuild.j2). (Kconfig symbol, default, tasks, what).
# Read in stored upstream copies: ESP_MAIN_TASK_STACK_SIZE 3584 (esp_system/Kconfig, which also
# says the stack is freed when app_main returns), ESP_TIMER_TASK_STACK_SIZE 3584
# (esp_timer/Kconfig). The IPC (1280), idle (1536) and FreeRTOS timer (2048) defaults are the
# v5.x ones; the stored copies there were older releases, so the board's heap_internal
# (bench.json) is what confirms them.
TASK_STACKS: tuple[tuple[str, int, int, str], ...] = (
    ("CONFIG_ESP_MAIN_TASK_STACK_SIZE", 3584, 1,
     "main task (app_main returns, but its freed stack lies below the app task's)"),
    ("CONFIG_ESP_IPC_TASK_STACK_SIZE", 1280, 2, "IPC tasks, one per core"),
    ("CONFIG_ESP_TIMER_TASK_STACK_SIZE", 3584, 1, "esp_timer task"),
    ("CONFIG_FREERTOS_IDLE_TASK_STACKSIZE", 1536, 2, "idle tasks, one per core"),
    ("CONFIG_FREERTOS_TIMER_TASK_STACK_DEPTH", 2048, 1, "FreeRTOS timer task"),
    ("CONFIG_APP_TASK_STACK_SIZE", 16384, 1, "gendertool app task (setup/loop)"),
)
# Driver ring buffers (templates/main/Kconfig.projbuild.j2 defaults).
SERIAL_BUFFERS: tuple[tuple[str, int], ...] = (("CONFIG_APP_SERIAL_RX_BUFFER", 4096), ("CONFIG_APP_SERIAL_TX_BUFFER", 4096))

# esp32-camera on the camera board (camera_provider.cc: QVGA RGB565, XCLK 20 MHz, so not its
# PSRAM mode): ll_cam_calc_rgb_dma's internal DMA buffer within CONFIG_CAMERA_DMA_BUFFER_SIZE_MAX
# (32768): 640-byte lines, 3,840-byte nodes, 15,360-byte halves -> 30,720 bytes; its cam_task
# (CAM_TASK_STACK 2 KiB) and descriptors/objects.
CAMERA_DMA_BUFFER_SIZE_MAX = 32768
CAMERA_TASK_STACK_BYTES = 2048
CAMERA_SMALL_BYTES = 1024

# Allowances (estimates until a board run calibrates them): one TCB + heap header per task,
# and esp_timer / newlib / VFS / console / driver objects allocated before the arena.
PER_TASK_OVERHEAD_BYTES = 400
RUNTIME_ALLOWANCE_BYTES = 8 * 1024

# TLSF control structure and block headers of the PSRAM heap (estimate).
PSRAM_HEAP_OVERHEAD_BYTES = 16 * 1024

# camera_provider.cc: RGB565 QVGA frames, fb_count 2, CAMERA_FB_IN_PSRAM.
CAMERA_FRAME_BYTES = 320 * 240 * 2
CAMERA_FRAME_COUNT = 2
CAMERA_FRAME_WIDTH_BYTES = 320 * 2
CAMERA_FRAME_LINES = 240

PSRAM_SPEED_COST = (
    "PSRAM is reached over the octal SPI bus at 80 MHz through the 64 KB data cache instead "
    "of internal SRAM at the CPU's speed, so every Invoke() that streams activations through "
    "the arena runs slower (measure it: `gendertool bench --matrix` compares arena-psram "
    "with the internal baseline)"
)

SOURCES = {
    "internal": "ESP-IDF v5.5 esp32s3: components/heap/port/esp32s3/memory_layout.c (one D/IRAM heap run "
    "0x3FC88000-0x3FCE9710, APP_USABLE_DRAM_END), components/esp_system/ld/esp32s3/memory.ld.in and "
    "sections.ld.in (IRAM code and .data/.bss at its bottom), CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL, "
    "the task stacks of the rendered sdkconfig, the USB-Serial-JTAG and camera buffers; static RAM from "
    "the build's size report or, before a compile, a stand-in link; see internal_budget",
    "psram": "board registry (gendertool.boards); ESP-IDF adds all PSRAM to the heap "
    "(CONFIG_SPIRAM_USE_MALLOC) less its bookkeeping (estimate)",
}


@dataclass(frozen=True)
class BudgetItem:
    what: str
    bytes: int
    source: str  # where the figure comes from
    estimate: bool = False  # an allowance or a stand-in figure, not read from a config or a build

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "bytes": self.bytes, "source": self.source, "estimate": self.estimate}


@dataclass(frozen=True)
class InternalBudget:
    """Internal RAM on the board: the heap's run, what the firmware takes of it, what is left for the arena."""

    run_bytes: int
    items: tuple[BudgetItem, ...]
    static_measured: bool  # static RAM from the build's size report (not the stand-in link)

    @property
    def firmware_bytes(self) -> int:
        return sum(i.bytes for i in self.items)

    @property
    def arena_bytes(self) -> int:
        """The largest arena internal RAM can hold (about: allowances are estimates)."""
        return max(self.run_bytes - self.firmware_bytes, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "heap_run_bytes": self.run_bytes,
            "firmware_bytes": self.firmware_bytes,
            "for_arena_bytes": self.arena_bytes,
            "static_measured": self.static_measured,
            "items": [i.to_dict() for i in self.items],
        }


def _config_int(sdkconfig: Mapping[str, str] | None, key: str, default: int) -> tuple[int, str]:
    if sdkconfig and key in sdkconfig:
        try:
            return int(str(sdkconfig[key]).strip().strip('"'), 0), "rendered sdkconfig"
        except ValueError:
            pass
    return default, "Kconfig default"


def camera_dma_buffer_bytes(line_bytes: int = CAMERA_FRAME_WIDTH_BYTES, lines: int = CAMERA_FRAME_LINES,
                            limit: int = CAMERA_DMA_BUFFER_SIZE_MAX, node_max: int = 4095) -> int:
    """esp32-camera's internal DMA buffer for a raw (RGB565/YUV) frame outside its PSRAM mode,
    sized as its esp32s3 ll_cam_calc_rgb_dma does (node size a multiple of the line width)."""
    node = next(i for i in range(node_max, 0, -1) if i % line_bytes == 0) if line_bytes < node_max else line_bytes
    per_node = node // line_bytes if line_bytes < node_max else 1
    while per_node > 1 and lines % per_node:
        per_node -= 1
        node = per_node * line_bytes
    half_max = limit // 2
    half = (half_max // node) * node
    while half and lines % (half // line_bytes):
        half -= node
    return (2 * half_max // half) * half if half else 0


def internal_budget(board, *, sizes=None, sdkconfig: Mapping[str, str] | None = None) -> InternalBudget:
    """What the firmware takes of the ESP32-S3's internal heap run before (or beside) the arena.

    ``sizes``: the build's size report (manifest.Sizes); its IRAM / DRAM figures replace the
    stand-in link's. ``sdkconfig``: values the rendered sdkconfig sets beyond the board's own lines
    (gendertool.boards), which are read too; the templates set none of these keys (a test checks)."""
    sdkconfig = {**dict(getattr(board, "sdkconfig", None) or {}), **dict(sdkconfig or {})}
    items: list[BudgetItem] = []
    iram = getattr(sizes, "iram_bytes", None)
    dram = getattr(sizes, "dram_bytes", None)
    items.append(BudgetItem(
        "static: IRAM code (all of it in SRAM1: the 32 KB instruction cache takes SRAM0)",
        int(iram) if iram is not None else STATIC_IRAM_ESTIMATE_BYTES,
        "build size report" if iram is not None else "stand-in link of the rendered firmware (issue 20)",
        estimate=iram is None,
    ))
    items.append(BudgetItem(
        "static: .data + .bss (after the IRAM code, sections.ld.in .dram0.dummy)",
        int(dram) if dram is not None else STATIC_DRAM_ESTIMATE_BYTES,
        "build size report" if dram is not None else "stand-in link of the rendered firmware (issue 20)",
        estimate=dram is None,
    ))
    items.append(BudgetItem("static: alignment between IRAM code and .data", IRAM_DRAM_GAP_BYTES, "sections.ld.in"))
    if board.psram_mb:
        size, src = _config_int(sdkconfig, "CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL", SPIRAM_RESERVE_INTERNAL_BYTES)
        items.append(BudgetItem("PSRAM board: internal DMA pool (CONFIG_SPIRAM_MALLOC_RESERVE_INTERNAL)", size, src))
    tasks = 0
    for key, default, count, what in TASK_STACKS:
        size, src = _config_int(sdkconfig, key, default)
        tasks += count
        items.append(BudgetItem(f"stack: {what} ({key}{f' x {count}' if count > 1 else ''})", size * count, src))
    serial = 0
    for key, default in SERIAL_BUFFERS:
        serial += _config_int(sdkconfig, key, default)[0]
    items.append(BudgetItem("USB-Serial-JTAG driver ring buffers (CONFIG_APP_SERIAL_RX/TX_BUFFER)", serial,
                            "templates/main/Kconfig.projbuild.j2 defaults"))
    if board.camera is not None:
        tasks += 1
        items.append(BudgetItem("camera: esp32-camera internal DMA buffer (QVGA RGB565, not its PSRAM mode)",
                                camera_dma_buffer_bytes(), "esp32-camera ll_cam_calc_rgb_dma, CONFIG_CAMERA_DMA_BUFFER_SIZE_MAX"))
        items.append(BudgetItem("camera: cam_task stack, DMA descriptors, driver objects",
                                CAMERA_TASK_STACK_BYTES + CAMERA_SMALL_BYTES, "esp32-camera cam_hal.c", estimate=True))
    items.append(BudgetItem(f"task control blocks and heap headers ({tasks} tasks)", tasks * PER_TASK_OVERHEAD_BYTES,
                            "allowance", estimate=True))
    items.append(BudgetItem("other run-time allocations (esp_timer, newlib, VFS/console, drivers)", RUNTIME_ALLOWANCE_BYTES,
                            "allowance", estimate=True))
    return InternalBudget(INTERNAL_DIRAM_RUN_BYTES, tuple(items), static_measured=iram is not None and dram is not None)


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
    budget: InternalBudget | None = None

    @property
    def internal_margin(self) -> int:
        """Internal RAM left beside the arena (negative: the arena is that much too big for it)."""
        return self.internal_bytes - self.arena_bytes

    def margin_text(self) -> str:
        """'internal RAM: about 229,978 bytes for the arena, 10,362 to spare (static RAM measured)'."""
        measured = [i for i in (self.budget.items if self.budget is not None else ()) if i.source == "build size report"]
        if self.budget is not None and self.budget.static_measured:
            basis = "static RAM measured by the build"
        elif measured:
            basis = "static .data/.bss measured by the build, IRAM code estimated"
        else:
            basis = "static RAM estimated until a build measures it"
        margin = self.internal_margin
        room = f"{margin:,} to spare" if margin >= 0 else f"{-margin:,} short"
        return f"internal RAM: about {self.internal_bytes:,} bytes for the arena, {room} ({basis})"

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
            "internal_margin_bytes": self.internal_margin,
            "internal_budget": self.budget.to_dict() if self.budget is not None else None,
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
    sizes=None,
    sdkconfig: Mapping[str, str] | None = None,
) -> MemoryFit:
    """Place the firmware's allocations for ``model`` (a ModelInfo) on ``board`` (a Board).

    ``sizes``: the build's size report, for the static RAM (else the stand-in link's figures);
    ``sdkconfig``: the rendered sdkconfig's values (see :func:`internal_budget`)."""

    arena = int(arena_bytes if arena_bytes is not None else (model.arena_bytes or 0))
    budget = internal_budget(board, sizes=sizes, sdkconfig=sdkconfig)
    internal = budget.arena_bytes
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
    internal_desc = f"about {internal:,} bytes of internal RAM for it (ESP-IDF's ESP32-S3 figures, see docs/building.md)"
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
            f"RAM the firmware has for it ({arena - internal:,} short; ESP-IDF's ESP32-S3 figures, see docs/building.md) "
            f"and goes to PSRAM: {PSRAM_SPEED_COST}"
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
        budget=budget,
    )
