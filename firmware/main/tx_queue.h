// Whole lines or nothing on a port that can stall (docs/protocol.md §1.1, "one write").
//
// The USB-Serial-JTAG driver queues each write into its TX ring buffer on its own; when the
// host stops reading, a record written in several pieces can be cut after any of them and
// leave a line without its end. TxQueue puts a line into its own ring only when the whole
// line fits, and feeds the port only what the port takes without blocking, so a line is
// either sent whole (perhaps later, once the host reads again) or dropped whole and counted.
// Portable C++17, no ESP-IDF includes: tests/test_firmware_tx.py runs it on the host.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gt {

class TxPort {
 public:
  virtual ~TxPort() = default;
  // Hands up to n bytes to the port without waiting; returns how many it took (all of a
  // piece or none: 0 when its buffer is full).
  virtual size_t TryWrite(const char* data, size_t n) = 0;
  // Waits a little (one scheduler tick on the device) so a reading host can make room.
  virtual void Pause() = 0;
};

class TxQueue {
 public:
  // storage: capacity bytes owned by the caller. max_pauses: how long one line may wait for
  // room (in Pause() calls) before the port counts as stalled; while stalled, lines that do
  // not fit are dropped at once instead of waiting again, until the port takes bytes again.
  TxQueue(char* storage, size_t capacity, TxPort& port, uint32_t max_pauses);

  // Queues the line (all n bytes) and sends what the port takes now. Returns false, and
  // counts the line in dropped(), when it could not be queued whole.
  bool Send(const char* data, size_t n);
  // Hands queued bytes to the port until it takes no more; returns the bytes handed over.
  size_t Pump();

  size_t queued() const { return used_; }
  size_t capacity() const { return capacity_; }
  uint32_t dropped() const { return dropped_; }
  bool stalled() const { return stalled_; }

 private:
  char* buf_;
  size_t capacity_;
  TxPort& port_;
  uint32_t max_pauses_;
  size_t head_ = 0;  // next byte to hand to the port
  size_t used_ = 0;
  uint32_t dropped_ = 0;
  bool stalled_ = false;
};

}  // namespace gt
