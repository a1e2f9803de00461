// The XIAO's native USB-Serial-JTAG port: driver-backed reads and whole-line writes.
//
// All output (ESP-IDF log lines through an esp_log_set_vprintf hook, protocol records) goes
// through WriteLine under one mutex, so a record never lands in the middle of a log line.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gt::serial {

// Installs the USB-Serial-JTAG driver, routes stdio and ESP-IDF logging through it.
bool Init(uint32_t rx_buffer_bytes, uint32_t tx_buffer_bytes);

// Writes len bytes (one or more complete lines) atomically with respect to other writers.
void WriteLine(const char* data, size_t len);

// Reads up to max bytes, waiting at most timeout_ms for the first one. Returns bytes read.
int Read(uint8_t* buf, size_t max, uint32_t timeout_ms);

}  // namespace gt::serial
