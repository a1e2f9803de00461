// See arena_setup.h.
#include "arena_setup.h"

namespace gt {

size_t GrowArenaBytes(size_t bytes) { return (bytes + bytes / 2 + 15) & ~static_cast<size_t>(15); }

ArenaPlan SetupArena(ArenaHost& host, size_t first_bytes, int retries) {
  size_t bytes = first_bytes;
  for (int attempt = 0; attempt <= retries; ++attempt) {
    if (attempt > 0) {
      const size_t grown = GrowArenaBytes(bytes);
      host.Retrying(bytes, grown);
      bytes = grown;
    }
    bool in_psram = false;
    uint8_t* arena = host.Alloc(bytes, &in_psram);
    if (arena == nullptr) return ArenaPlan{nullptr, bytes, false, false};
    if (host.Build(arena, bytes)) return ArenaPlan{arena, bytes, in_psram, true};
    host.Teardown();  // first: the interpreter's allocator lives in this arena
    host.Free(arena);
  }
  return ArenaPlan{nullptr, bytes, false, false};
}

}  // namespace gt
