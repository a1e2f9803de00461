// Result arithmetic and benchmark statistics. Portable C++17, compiled on the host by
// tests/test_firmware_host.py.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace gt {

// arg-max class of int8 scores (lowest index wins ties, like numpy.argmax).
inline int ArgMax(const int8_t* scores, size_t n) {
  int best = 0;
  for (size_t i = 1; i < n; ++i) {
    if (scores[i] > scores[best]) best = static_cast<int>(i);
  }
  return best;
}

// Class probabilities (docs/protocol.md: result.probs), the rule of the host's
// runtime.softmax_probs: an output quantised like TFLM's int8 softmax (scale 1/256, zero
// point -128) already holds probabilities and is only dequantised; anything else is treated
// as logits and put through a softmax.
inline void Probabilities(const int8_t* scores, size_t n, float scale, int zero_point, float* probs) {
  if (n == 0) return;
  float max_v = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    probs[i] = scale * static_cast<float>(scores[i] - zero_point);
    if (probs[i] > max_v) max_v = probs[i];
  }
  if (std::fabs(scale - 1.0f / 256) < 1e-9f && zero_point == -128) return;
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    probs[i] = std::exp(probs[i] - max_v);
    sum += probs[i];
  }
  for (size_t i = 0; i < n; ++i) probs[i] /= sum;
}

// Largest absolute difference between two int8 score vectors (selftest.diff).
inline int MaxAbsDiff(const int8_t* a, const int8_t* b, size_t n) {
  int worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const int d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
    if (d > worst) worst = d;
  }
  return worst;
}

// Running min / max / sum of benchmark times (bsummary).
struct BenchStats {
  uint32_t n = 0;
  uint32_t min_us = 0;
  uint32_t max_us = 0;
  uint64_t total_us = 0;

  void Add(uint32_t us) {
    if (n == 0 || us < min_us) min_us = us;
    if (n == 0 || us > max_us) max_us = us;
    total_us += us;
    ++n;
  }
  double mean_us() const { return n == 0 ? 0.0 : static_cast<double>(total_us) / n; }
};

}  // namespace gt
