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

// A log line may arrive in several vprintf calls (ESP-IDF log v2 prints timestamp, tag and
// message separately); the pieces are held here and written once the newline arrives.
constexpr size_t kLogLineMax = 512;
char g_pending[kLogLineMax];
size_t g_pending_len = 0;

// The driver's TX ring buffer is a byte buffer: one write larger than the whole buffer
// fails at once (after up to 64 bytes went straight to the FIFO), so records are written in
// pieces no larger than the smallest APP_SERIAL_TX_BUFFER (256).
constexpr size_t kWritePiece = 256;
// Set after a write timed out (port closed: the host stops polling, the ring buffer stays
// full): later lines wait only 10 ms until one fits again, not 100 ms each.
bool g_tx_stalled = false;

void WriteLocked(const char* data, size_t len) {
  while (len > 0) {
    const size_t piece = len < kWritePiece ? len : kWritePiece;
    const int n = usb_serial_jtag_write_bytes(data, piece, pdMS_TO_TICKS(g_tx_stalled ? 10 : 100));
    if (n <= 0) {  // host not reading: drop rather than stall inference
      g_tx_stalled = true;
      return;
    }
    g_tx_stalled = false;
    data += piece;
    len -= piece;
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
  const size_t room = kLogLineMax - g_pending_len;
  const size_t take = len < room ? len : room;
  memcpy(g_pending + g_pending_len, chunk, take);
  g_pending_len += take;
  const bool line_done = chunk[len - 1] == '\n' || g_pending_len == kLogLineMax;
  if (line_done) {
    WriteLocked(g_pending, g_pending_len);
    g_pending_len = 0;
  }
  xSemaphoreGiveRecursive(g_lock);
  return n;
}

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
  // stdio (TFLM's MicroPrintf ends up in printf) also through the interrupt-driven driver.
  usb_serial_jtag_vfs_use_driver();
#endif
  esp_log_set_vprintf(&LogVprintf);
  g_ready = true;
  return true;
}

void WriteLine(const char* data, size_t len) {
  if (!g_ready) return;
  xSemaphoreTakeRecursive(g_lock, portMAX_DELAY);
  WriteLocked(data, len);
  xSemaphoreGiveRecursive(g_lock);
}

int Read(uint8_t* buf, size_t max, uint32_t timeout_ms) {
  if (!g_ready || max == 0) return 0;
  const int n = usb_serial_jtag_read_bytes(buf, static_cast<uint32_t>(max), pdMS_TO_TICKS(timeout_ms));
  return n < 0 ? 0 : n;
}

}  // namespace gt::serial
