"""Boards the firmware can be rendered for: flash, PSRAM, USB ids, camera pins, sdkconfig.

One frozen :class:`Board` per board, found by name in :data:`BOARDS` (like esptool's chip
registry). Adding a board is one ``_register(Board(...))`` call: everything the templates
need is a field here, nothing board-specific lives in the templates.

Sources:
- Seeed XIAO ESP32S3 / Sense: ESP32-S3R8 (8 MB octal PSRAM in package), 8 MB flash, native
  USB-Serial-JTAG (VID:PID 303a:1001); PlatformIO board id ``seeed_xiao_esp32s3``.
- Sense camera (OV2640) pins: Seeed wiki "XIAO ESP32S3 Sense camera usage" and the
  ``CAMERA_MODEL_XIAO_ESP32S3`` block of espressif/arduino-esp32's ``camera_pins.h``.
- ESP32-S3-DevKitC-1 N8R8 (ESP32-S3-WROOM-1-N8R8): 8 MB flash, 8 MB octal PSRAM;
  PlatformIO board id ``esp32-s3-devkitc-1``. Its native USB port is the second connector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gendertool.errors import GendertoolError

ESPRESSIF_USB_VID = 0x303A
USB_SERIAL_JTAG_PID = 0x1001

# The app partition starts at 0x10000 after nvs + phy_init (see templates/partitions.csv.j2).
APP_OFFSET = 0x10000


@dataclass(frozen=True)
class CameraPins:
    """esp32-camera ``camera_config_t`` pins (-1 = not connected)."""

    sensor: str
    pwdn: int
    reset: int
    xclk: int
    sccb_sda: int
    sccb_scl: int
    d7: int
    d6: int
    d5: int
    d4: int
    d3: int
    d2: int
    d1: int
    d0: int
    vsync: int
    href: int
    pclk: int
    xclk_freq_hz: int = 20_000_000


@dataclass(frozen=True)
class Board:
    name: str
    pio_board: str
    idf_target: str
    flash_size_mb: int
    psram_mb: int
    psram_mode: str  # "octal" | "quad" | "none"
    usb_vid_pid: tuple[int, int]
    camera: CameraPins | None
    app_partition_bytes: int  # the largest app partition the flash allows
    sdkconfig: dict[str, str] = field(default_factory=dict)  # board-specific sdkconfig.defaults lines
    description: str = ""

    @property
    def has_camera(self) -> bool:
        return self.camera is not None


def _psram_sdkconfig(mode: str) -> dict[str, str]:
    if mode == "octal":
        return {"CONFIG_SPIRAM": "y", "CONFIG_SPIRAM_MODE_OCT": "y", "CONFIG_SPIRAM_SPEED_80M": "y"}
    if mode == "quad":
        return {"CONFIG_SPIRAM": "y", "CONFIG_SPIRAM_MODE_QUAD": "y", "CONFIG_SPIRAM_SPEED_80M": "y"}
    return {}


def _flash_sdkconfig(size_mb: int) -> dict[str, str]:
    return {f"CONFIG_ESPTOOLPY_FLASHSIZE_{size_mb}MB": "y"}


def _esp32s3_board(
    name: str,
    pio_board: str,
    description: str,
    *,
    flash_mb: int = 8,
    psram_mb: int = 8,
    psram_mode: str = "octal",
    camera: CameraPins | None = None,
) -> Board:
    return Board(
        name=name,
        pio_board=pio_board,
        idf_target="esp32s3",
        flash_size_mb=flash_mb,
        psram_mb=psram_mb,
        psram_mode=psram_mode,
        usb_vid_pid=(ESPRESSIF_USB_VID, USB_SERIAL_JTAG_PID),
        camera=camera,
        app_partition_bytes=flash_mb * 1024 * 1024 - APP_OFFSET,
        sdkconfig={**_flash_sdkconfig(flash_mb), **_psram_sdkconfig(psram_mode)},
        description=description,
    )


XIAO_SENSE_CAMERA = CameraPins(
    sensor="OV2640",
    pwdn=-1,
    reset=-1,
    xclk=10,
    sccb_sda=40,
    sccb_scl=39,
    d7=48,
    d6=11,
    d5=12,
    d4=14,
    d3=16,
    d2=18,
    d1=17,
    d0=15,
    vsync=38,
    href=47,
    pclk=13,
)

BOARDS: dict[str, Board] = {}


def _register(board: Board) -> None:
    BOARDS[board.name] = board


_register(_esp32s3_board("xiao_esp32s3", "seeed_xiao_esp32s3", "Seeed Studio XIAO ESP32S3 (8 MB flash, 8 MB octal PSRAM)"))
_register(
    _esp32s3_board(
        "xiao_esp32s3_sense",
        "seeed_xiao_esp32s3",
        "Seeed Studio XIAO ESP32S3 Sense (XIAO ESP32S3 + OV2640 camera board)",
        camera=XIAO_SENSE_CAMERA,
    )
)
_register(
    _esp32s3_board(
        "esp32s3_devkitc1_n8r8",
        "esp32-s3-devkitc-1",
        "Espressif ESP32-S3-DevKitC-1 N8R8 (8 MB flash, 8 MB octal PSRAM; use the USB port, not UART)",
    )
)

DEFAULT_BOARD = "xiao_esp32s3"


def get_board(name: str | None = None) -> Board:
    """Return the board called ``name`` (default: the plain XIAO ESP32S3)."""
    key = DEFAULT_BOARD if name is None else name.strip().lower().replace("-", "_")
    try:
        return BOARDS[key]
    except KeyError:
        raise GendertoolError(f"unknown board {name!r}; valid boards: {', '.join(sorted(BOARDS))}") from None
