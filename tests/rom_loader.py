"""An emulated ESP32-S3 ROM serial loader on 127.0.0.1, reached by esptool over socket://.

The protocol side is PyPI's esp32-mock-bootloader (SLIP framing; SYNC, READ_REG with the
ESP32-S3 detection/efuse registers from esptool's own target classes, GET_SECURITY_INFO
with the chip id, SPI_ATTACH / SPI_SET_PARAMS, FLASH_DEFL_BEGIN/DATA/END with checksums,
SPI_FLASH_MD5, CHANGE_BAUDRATE, and the stub upload MEM_BEGIN/DATA/END answered with "OHAI").
This module adds what the tests need around it: one board per emulator with its own 8 MB
flash (the XIAO's, so esptool's flash-size detection agrees), a log of the commands the
client sent, and faults: the link dropped after N flash data blocks, a block corrupted on
its way into flash (so only the MD5 check can notice).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from esp32_mock_bootloader import protocol as mock_protocol
from esp32_mock_bootloader import server as mock

FLASH_BYTES = 8 * 1024 * 1024
# JEDEC id read by esptool's flash_id: manufacturer 0x20, capacity byte 0x17 = 2^23 = 8 MB
FLASH_ID_8MB = 0x00174020

SLIP_END, SLIP_ESC = 0xC0, 0xDB


@dataclass
class Faults:
    drop_after_blocks: int | None = None  # close the link once this many FLASH_(DEFL_)DATA blocks arrived
    corrupt_block: int | None = None  # flip one byte of the data this block writes


class _Flash(mock.FlashImage):
    """The mock's flash store, sized for the board, with the fault hooks."""

    def __init__(self, emulator: "RomLoader") -> None:
        super().__init__()
        self.data = bytearray(b"\xff" * FLASH_BYTES)
        self.emu = emulator
        self.blocks = 0

    def _block(self, write, payload: bytes, offset_attr: str) -> None:
        self.blocks += 1
        faults = self.emu.faults
        if faults.drop_after_blocks is not None and self.blocks > faults.drop_after_blocks:
            self.emu.drop_link()
            return
        before = getattr(self, offset_attr)
        write(payload)
        if faults.corrupt_block == self.blocks and getattr(self, offset_attr) > before:
            self.data[before] ^= 0xFF
        self.emu.blocks_written = self.blocks

    def write_defl_block(self, payload: bytes) -> None:
        self._block(super().write_defl_block, payload, "_defl_offset")

    def write_plain_block(self, payload: bytes) -> None:
        self._block(super().write_plain_block, payload, "_plain_offset")


class _LoggingConnection(mock.BootloaderConnection):
    """Records the command byte of every request frame the client sends."""

    def __init__(self, sock: socket.socket, emulator: "RomLoader") -> None:
        super().__init__(sock=sock)
        self.emu = emulator
        self._frame = bytearray()

    def recv(self, size: int) -> bytes:
        chunk = super().recv(size)
        for b in chunk:
            if b == SLIP_END:
                if len(self._frame) >= 2 and self._frame[0] == 0x00:
                    self.emu.commands.append(self._frame[1])
                self._frame.clear()
            else:
                self._frame.append(b)
        return chunk


@dataclass
class RomLoader:
    """Serve one ESP32-S3 ROM loader session at a time on an ephemeral loopback port."""

    faults: Faults = field(default_factory=Faults)
    commands: list[int] = field(default_factory=list)
    blocks_written: int = 0
    dropped: bool = False

    def __post_init__(self) -> None:
        self.flash = _Flash(self)
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="rom-loader", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except (socket.timeout, OSError):
                continue
            self._conn = conn
            try:
                mock.handle_client(_LoggingConnection(conn, self), self._stop, "esp32s3", exit_on_disconnect=True, flash=self.flash)
            except OSError:
                pass  # the fault closed the socket under the session

    def drop_link(self) -> None:
        """The cable pulled: the client's next read sees the connection closed."""
        self.dropped = True
        if self._conn is not None:
            try:
                self._conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        self._thread.join(timeout=5)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.flash.data[offset : offset + length])

    def saw(self, *names: str) -> bool:
        """Whether every command named (mock_protocol.CMD_* without the prefix) was sent."""
        return all(getattr(mock_protocol, f"CMD_{n}") in self.commands for n in names)
