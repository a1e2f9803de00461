// See tx_queue.h.
#include "tx_queue.h"

#include <cstring>

namespace gt {

TxQueue::TxQueue(char* storage, size_t capacity, TxPort& port, uint32_t max_pauses)
    : buf_(storage), capacity_(capacity), port_(port), max_pauses_(max_pauses) {}

size_t TxQueue::Pump() {
  size_t handed = 0;
  while (used_ > 0) {
    const size_t contiguous = capacity_ - head_ < used_ ? capacity_ - head_ : used_;
    const size_t n = port_.TryWrite(buf_ + head_, contiguous);
    if (n == 0) break;
    head_ = (head_ + n) % capacity_;
    used_ -= n;
    handed += n;
  }
  if (handed > 0) stalled_ = false;
  return handed;
}

bool TxQueue::Send(const char* data, size_t n) {
  if (n == 0) return true;
  Pump();
  if (n > capacity_) {
    ++dropped_;
    return false;
  }
  for (uint32_t pauses = 0; capacity_ - used_ < n;) {
    if (stalled_ || pauses >= max_pauses_) {
      stalled_ = true;
      ++dropped_;
      return false;
    }
    port_.Pause();
    ++pauses;
    Pump();
  }
  size_t tail = (head_ + used_) % capacity_;
  const size_t first = capacity_ - tail < n ? capacity_ - tail : n;
  std::memcpy(buf_ + tail, data, first);
  std::memcpy(buf_, data + first, n - first);
  used_ += n;
  Pump();
  return true;
}

}  // namespace gt
