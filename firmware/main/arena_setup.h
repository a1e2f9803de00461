// The tensor arena's allocate / build / grow-and-retry sequence, without ESP-IDF or TFLM, so
// tests/test_firmware_tx.py runs it on the host against a fake heap and interpreter.
//
// TFLM keeps its allocator and every tensor inside the arena: an interpreter built on an
// arena must be forgotten before that arena is freed, and nothing may ask it anything after
// (arena_used_bytes() read freed memory when a larger retry allocation failed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gt {

class ArenaHost {
 public:
  virtual ~ArenaHost() = default;
  // Allocates `bytes` (16-byte aligned); nullptr when there is no room. *in_psram: placement.
  virtual uint8_t* Alloc(size_t bytes, bool* in_psram) = 0;
  virtual void Free(uint8_t* arena) = 0;
  // Builds the interpreter on the arena and allocates its tensors; true on success.
  virtual bool Build(uint8_t* arena, size_t bytes) = 0;
  // Forgets the interpreter built by Build() (after this nothing refers to its arena).
  virtual void Teardown() = 0;
  // A build with `failed_bytes` failed; the next attempt uses `next_bytes`.
  virtual void Retrying(size_t failed_bytes, size_t next_bytes) = 0;
};

struct ArenaPlan {
  uint8_t* arena;  // nullptr unless ok
  size_t bytes;    // the arena's size when ok; the last size tried otherwise
  bool in_psram;
  bool ok;
};

// x1.5, rounded up to 16 bytes.
size_t GrowArenaBytes(size_t bytes);

// Tries `first_bytes`, then up to `retries` larger arenas. On failure nothing is held: every
// arena allocated was freed, and each interpreter was torn down before its arena.
ArenaPlan SetupArena(ArenaHost& host, size_t first_bytes, int retries);

}  // namespace gt
