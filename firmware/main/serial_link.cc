// See serial_link.h. ESP-IDF APIs used here are listed in firmware/README.md.
#include "serial_link.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "driver/usb_serial_jtag.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "sdkconfig.h"
#include "tx_queue.h"

// esp_driver_usb_serial_jtag builds its VFS part (and links the vfs component that its
// header needs) only when the console is on USB-Serial-JTAG; sdkconfig.defaults puts it
// there, but a console moved to UART in menuconfig must still build.
#define GT_USJ_VFS (CONFIG_VFS_SUPPORT_IO && CONFIG_ESP_CONSOLE_USB_SERIAL_JTAG_ENABLED)
#if GT_USJ_VFS
#include "driver/usb_serial_jtag_vfs.h"
#endif

namespace gt::serial {
namespace {

SemaphoreHandle_t g_lock = nullptr;
bool g_ready = false;

// A log line may arrive in several pieces (ESP-IDF log v2 prints timestamp, tag and message
// separately; TFLM's DebugLog prints the message, then "\r\n"); the pieces are held here and
// written as one line once the newline arrives.
constexpr size_t kLogLineMax = 512;
char g_pending[kLogLineMax];
size_t g_pending_len = 0;

// usb_serial_jtag_write_bytes() does not write a buffer as one unit. In the driver source we
// read (esp-idf components/esp_driver_usb_serial_jtag/src/usb_serial_jtag.c) it puts what
// fits into the 64-byte hardware FIFO when the FIFO is idle, queues the rest into the TX
// ring buffer waiting up to its timeout, and returns 0 when that fails even though the FIFO
// part went out; the v5.5.3 driver also takes a TX lock with the same timeout first, so one
// call can wait twice. The old code wrote records in 256-byte pieces, each with a 100 ms
// timeout, so a record whose later piece timed out left a line without its end. Now: pieces
// of at most one packet with no wait (the FIFO is idle only when the ring buffer is empty,
// so such a piece goes out whole or is refused whole), and the line is held whole in a
// TxQueue until the host reads again, or dropped whole and counted.
constexpr size_t kWritePiece = 64;
// How long one line may wait for room while the host reads slowly: 10 ticks (100 ms at
// the default 100 Hz tick), as the old per-write timeout; after that the port counts as
// stalled and lines that do not fit are dropped at once (no 100 ms per line).
constexpr uint32_t kMaxPauses = 10;
constexpr size_t kQueueBytes = 4096;

class UsjPort : public TxPort {
 public:
  size_t TryWrite(const char* data, size_t n) override {
    const size_t piece = n < kWritePiece ? n : kWritePiece;
    return usb_serial_jtag_write_bytes(data, piece, 0) > 0 ? piece : 0;
  }
  void Pause() override { vTaskDelay(1); }
};

char g_queue_storage[kQueueBytes];
UsjPort g_port;
TxQueue g_queue(g_queue_storage, sizeof g_queue_storage, g_port, kMaxPauses);

void WriteLocked(const char* data, size_t len) { g_queue.Send(data, len); }

bool g_discarding = false;  // the rest of an over-long log line, up to its newline

// Appends text to the pending log line, writing each completed line (caller holds g_lock).
void AppendLogLocked(const char* text, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    const char c = text[i];
    if (g_discarding) {
      g_discarding = c != '\n';
      continue;
    }
    g_pending[g_pending_len++] = c;
    if (c == '\n' || g_pending_len == kLogLineMax) {
      g_discarding = c != '\n';  // over-long: end the line here, drop the rest of it
      g_pending[g_pending_len - 1] = '\n';
      WriteLocked(g_pending, g_pending_len);
      g_pending_len = 0;
    }
  }
}

int LogVprintf(const char* fmt, va_list args) {
  char chunk[320];  // on the calling task's stack: keep it modest
  const int n = vsnprintf(chunk, sizeof chunk, fmt, args);
  if (n <= 0) return n;
  size_t len = static_cast<size_t>(n);
  if (len >= sizeof chunk) {  // truncated: end the line here rather than join the next one
    len = sizeof chunk - 1;
    chunk[len - 1] = '\n';
  }
  xSemaphoreTakeRecursive(g_lock, portMAX_DELAY);
  AppendLogLocked(chunk, len);
  xSemaphoreGiveRecursive(g_lock);
  return n;
}

// TFLM's DebugLog (esp-tflite-micro builds the reference tensorflow/lite/micro/debug_log.cc,
// which prints to stderr) would go through the VFS, which drops characters when its buffer
// is full. The app task's stderr is replaced by this stream, so TFLM's messages (an
// AllocateTensors error at boot) become whole log lines through the same mutex and queue.
// Declared from newlib's own cookie_write_function_t, whatever its return and size types.
#if !defined(CONFIG_LIBC_PICOLIBC)
template <typename Fn>
struct StderrSink;
template <typename Ret, typename Size>
struct StderrSink<Ret(void*, const char*, Size)> {
  static Ret Write(void*, const char* buf, Size size) {
    if (g_ready && size > 0) {
      xSemaphoreTakeRecursive(g_lock, portMAX_DELAY);
      AppendLogLocked(buf, static_cast<size_t>(size));
      xSemaphoreGiveRecursive(g_lock);
    }
    return static_cast<Ret>(size);
  }
};
#endif

}  // namespace

bool Init(uint32_t rx_buffer_bytes, uint32_t tx_buffer_bytes) {
  if (g_ready) return true;
  g_lock = xSemaphoreCreateRecursiveMutex();
  if (g_lock == nullptr) return false;
  usb_serial_jtag_driver_config_t cfg = {};
  cfg.rx_buffer_size = rx_buffer_bytes;
  cfg.tx_buffer_size = tx_buffer_bytes;
  if (usb_serial_jtag_driver_install(&cfg) != ESP_OK) return false;
#if GT_USJ_VFS
  // stdio of other tasks also through the interrupt-driven driver.
  usb_serial_jtag_vfs_use_driver();
#endif
  esp_log_set_vprintf(&LogVprintf);
  g_ready = true;
#if !defined(CONFIG_LIBC_PICOLIBC)
  // newlib (ESP-IDF's default C library): stdin/stdout/stderr are per task, so this replaces
  // the calling (app) task's stderr, the task that runs TFLM. Unbuffered: every piece
  // reaches the line assembler. (picolibc's stderr is a constant: TFLM's messages then keep
  // going through the VFS.)
  cookie_io_functions_t io = {};
  io.write = &StderrSink<cookie_write_function_t>::Write;
  FILE* err = fopencookie(nullptr, "w", io);
  if (err != nullptr) {
    setvbuf(err, nullptr, _IONBF, 0);
    stderr = err;
  }
#endif
  return true;
}

void WriteLine(const char* data, size_t len) {
  if (!g_ready) return;
  xSemaphoreTakeRecursive(g_lock, portMAX_DELAY);
  WriteLocked(data, len);
  xSemaphoreGiveRecursive(g_lock);
}

void Flush() {
  if (!g_ready) return;
  xSemaphoreTakeRecursive(g_lock, portMAX_DELAY);
  g_queue.Pump();
  xSemaphoreGiveRecursive(g_lock);
}

uint32_t Dropped() {
  if (!g_ready) return 0;
  xSemaphoreTakeRecursive(g_lock, portMAX_DELAY);
  const uint32_t n = g_queue.dropped();
  xSemaphoreGiveRecursive(g_lock);
  return n;
}

int Read(uint8_t* buf, size_t max, uint32_t timeout_ms) {
  if (!g_ready || max == 0) return 0;
  const int n = usb_serial_jtag_read_bytes(buf, static_cast<uint32_t>(max), pdMS_TO_TICKS(timeout_ms));
  return n < 0 ? 0 : n;
}

}  // namespace gt::serial
