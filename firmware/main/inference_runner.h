// Inference runner: the model, the tensor arena and TFLM's MicroInterpreter.
#pragma once

#include <cstddef>
#include <cstdint>

#include "app_controller.h"  // OpTiming

namespace gt {

class InferenceRunner {
 public:
  static constexpr int kMaxProfiledOps = 256;

  // Places the model (flash or PSRAM copy) and the arena, builds the interpreter and
  // allocates tensors. Errors are logged; returns false if the model cannot run.
  bool Setup();

  int8_t* input() const { return input_; }
  const int8_t* output() const { return output_; }

  // Runs the model; invoke_us receives Invoke()'s wall time.
  bool Invoke(int64_t* invoke_us);

  // Runs the model once with per-operator timing; returns the number of entries in ops.
  int Profile(OpTiming* ops, int max_ops, int64_t* invoke_us);

  size_t arena_bytes() const { return arena_bytes_; }
  size_t arena_used_bytes() const;
  bool arena_in_psram() const { return arena_in_psram_; }
  // hello.arena_in: "internal", "psram", or "none" when no arena could be set up.
  const char* arena_placement() const { return arena_ == nullptr ? "none" : arena_in_psram_ ? "psram" : "internal"; }
  bool model_in_psram() const { return model_in_psram_; }
  size_t model_bytes() const;

 private:
  uint8_t* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  bool arena_in_psram_ = false;
  bool model_in_psram_ = false;
  int8_t* input_ = nullptr;
  int8_t* output_ = nullptr;
};

}  // namespace gt
