// The XIAO's native USB-Serial-JTAG port: driver-backed reads and whole-line writes.
//
// All output (ESP-IDF log lines through an esp_log_set_vprintf hook, TFLM's DebugLog through
// the app task's stderr, protocol records) goes through WriteLine under one mutex and a
// TxQueue, so a record never lands in the middle of a log line and a line is sent whole or
// dropped whole (counted: Dropped()). What can still interleave: text printed with
// ets_printf/esp_rom_printf (esp32-camera's frame-overflow messages, some from an interrupt;
// panic and boot ROM output) goes straight to the hardware FIFO; the host's parser counts
// a record cut by it as damaged (bad_crc/partial), never as a good record.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gt::serial {

// Installs the USB-Serial-JTAG driver, routes stdio and ESP-IDF logging through it.
bool Init(uint32_t rx_buffer_bytes, uint32_t tx_buffer_bytes);

// Writes len bytes (one or more complete lines) atomically with respect to other writers:
// whole, or not at all when the host has not read for a while (then counted in Dropped()).
void WriteLine(const char* data, size_t len);

// Hands queued bytes to the driver (call between commands: a line queued while the host was
// not reading goes out once it reads again).
void Flush();

// Lines dropped whole since boot because the host did not read (hello/bsummary tx_dropped).
uint32_t Dropped();

// Reads up to max bytes, waiting at most timeout_ms for the first one. Returns bytes read.
int Read(uint8_t* buf, size_t max, uint32_t timeout_ms);

}  // namespace gt::serial
