// See result_reporter.h.
#include "result_reporter.h"

#include "esp_log.h"
#include "serial_link.h"

namespace gt::report {
namespace {
RecordWriter g_writer;  // one record at a time: only the app task reports
}

void Send(RecordWriter& w, bool ok) {
  if (!ok) {
    ESP_LOGE("report", "record dropped: longer than %u bytes", static_cast<unsigned>(kMaxRecord));
    return;
  }
  serial::WriteLine(w.data(), w.size());
}

void Ack(const char* cmd) { Send(g_writer, write_ack(g_writer, cmd, false)); }

void Error(const char* code, const char* cmd, const char* message) {
  Send(g_writer, write_error(g_writer, code, cmd, message, false));
}

}  // namespace gt::report
