// setup(): serial link, versions, memory report, model, hello, self-test.
// loop(): serial commands (docs/protocol.md §2), uploads, continuous inference.
#include "main_functions.h"

#include "app_config.h"
#include "esp_heap_caps.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "inference_runner.h"
#include "inference_stats.h"
#include "input_provider.h"
#include "model_settings.h"
#include "protocol.h"
#include "result_reporter.h"
#include "sample_images.h"
#include "sdkconfig.h"
#include "serial_link.h"

namespace {

constexpr const char* kTag = "app";

gt::InferenceRunner g_runner;
bool g_model_ok = false;
gt::Source g_source = gt::config::kBootSource;
bool g_running = false;
uint32_t g_seq = 0;
int64_t g_next_run_us = 0;

gt::RecordWriter g_writer;
gt::LineReader g_lines;
gt::UploadReceiver g_upload;
gt::Command g_upload_cmd;
int64_t g_upload_last_byte_us = 0;

gt::OpTiming g_ops[gt::InferenceRunner::kMaxProfiledOps];

uint32_t FreeInternal() { return heap_caps_get_free_size(MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT); }
uint32_t FreePsram() { return heap_caps_get_free_size(MALLOC_CAP_SPIRAM); }

void SendHello() {
  gt::HelloInfo h{};
  h.fw = gt::kFirmwareVersion;
  h.board = gt::kBoardName;
  h.chip = gt::kChipName;
  h.model = gt::kModelName;
  h.model_sha256 = gt::kModelSha256;
  h.labels = gt::kLabels;
  h.num_labels = gt::kNumClasses;
  h.input_shape = gt::kInputShape;
  h.input_dims = gt::kInputDims;
  h.in_scale = gt::kInputScale;
  h.in_zp = gt::kInputZeroPoint;
  h.out_scale = gt::kOutputScale;
  h.out_zp = gt::kOutputZeroPoint;
  h.arena_bytes = static_cast<uint32_t>(g_runner.arena_bytes());
  h.arena_used = static_cast<uint32_t>(g_runner.arena_used_bytes());
  h.heap_internal = FreeInternal();
  h.heap_psram = FreePsram();
  h.cpu_mhz = CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ;
  h.idf = esp_get_idf_version();
  h.tflm = gt::kTflmVersion;
  h.esp_nn = gt::kEspNnVersion;
  h.samples = gt::kNumSampleImages;
  h.source = gt::source_name(g_source);
  h.running = g_running;
  h.simulated = false;
  gt::report::Send(g_writer, gt::write_hello(g_writer, h));
}

void SendResult(gt::Source source, int sample, int64_t pre_us, int64_t invoke_us) {
  const int8_t* scores = g_runner.output();
  float probs[gt::kNumClasses];
  gt::Probabilities(scores, gt::kNumClasses, gt::kOutputScale, gt::kOutputZeroPoint, probs);
  const int cls = gt::ArgMax(scores, gt::kNumClasses);
  gt::ResultInfo r{};
  r.seq = g_seq++;
  r.source = gt::source_name(source);
  r.sample = sample;
  r.class_index = cls;
  r.label = gt::kLabels[cls];
  r.scores = scores;
  r.probs = probs;
  r.num_classes = gt::kNumClasses;
  r.pre_us = static_cast<uint32_t>(pre_us);
  r.invoke_us = static_cast<uint32_t>(invoke_us);
  r.simulated = false;
  gt::report::Send(g_writer, gt::write_result(g_writer, r));
}

// Fills the input from `source` and runs the model; reports errors under `cmd`.
bool RunOnce(gt::Source source, const char* cmd, bool report_result) {
  if (!g_model_ok) {
    gt::report::Error("internal", cmd, "model not loaded (see the boot log)");
    return false;
  }
  int sample = -1;
  int64_t pre_us = 0;
  int64_t invoke_us = 0;
  const char* error = "internal";
  if (!gt::input::Fill(source, g_runner.input(), &sample, &pre_us, &error)) {
    gt::report::Error(error, cmd, source == gt::Source::kUpload ? "no image uploaded yet" : "no input image");
    return false;
  }
  if (!g_runner.Invoke(&invoke_us)) {
    gt::report::Error("invoke_failed", cmd, "Invoke() failed");
    return false;
  }
  if (report_result) SendResult(source, sample, pre_us, invoke_us);
  return true;
}

void RunSelftest() {
  if (!g_model_ok) {
    gt::report::Error("internal", "selftest", "model not loaded (see the boot log)");
    return;
  }
  gt::SelftestEntry entries[gt::kSelftestMaxResults];
  uint32_t failed = 0;
  for (int i = 0; i < gt::kNumSampleImages; ++i) {
    const gt::SampleImage& s = gt::kSampleImages[i];
    int64_t invoke_us = 0;
    const bool ran = gt::input::FillSample(i, g_runner.input(), nullptr) && g_runner.Invoke(&invoke_us);
    const int got = ran ? gt::ArgMax(g_runner.output(), gt::kNumClasses) : -1;
    const int diff = ran ? gt::MaxAbsDiff(g_runner.output(), s.expected, gt::kNumClasses) : 255;
    const bool ok = ran && got == s.expected_class && diff <= gt::config::kSelftestTolerance;
    if (!ok) ++failed;
    ESP_LOGI(kTag, "selftest %s: expect %s got %s, max diff %d -> %s", s.name, gt::kLabels[s.expected_class],
             got >= 0 ? gt::kLabels[got] : "-", diff, ok ? "ok" : "FAIL");
    if (static_cast<size_t>(i) < gt::kSelftestMaxResults) entries[i] = gt::SelftestEntry{i, s.expected_class, got, diff, ok};
  }
  const size_t shown = static_cast<size_t>(gt::kNumSampleImages) < gt::kSelftestMaxResults
                           ? static_cast<size_t>(gt::kNumSampleImages) : gt::kSelftestMaxResults;
  const bool pass = failed == 0;
  ESP_LOGI(kTag, "selftest %s (%u of %d failed)", pass ? "PASS" : "FAIL", static_cast<unsigned>(failed),
           gt::kNumSampleImages);
  gt::report::Send(g_writer, gt::write_selftest(g_writer, pass, gt::kNumSampleImages, failed, entries, shown, false));
}

void RunProfile() {
  int sample = -1;
  int64_t pre_us = 0;
  const char* error = "internal";
  if (!g_model_ok || !gt::input::Fill(g_source, g_runner.input(), &sample, &pre_us, &error)) {
    gt::report::Error(g_model_ok ? error : "internal", "profile", "no input for the profiled run");
    return;
  }
  int64_t invoke_us = 0;
  const int n = g_runner.Profile(g_ops, gt::InferenceRunner::kMaxProfiledOps, &invoke_us);
  if (n < 0) {
    gt::report::Error("invoke_failed", "profile", "Invoke() failed");
    return;
  }
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) {
    total += static_cast<uint64_t>(g_ops[i].us);
    gt::report::Send(g_writer, gt::write_profile(g_writer, i, g_ops[i].tag, static_cast<uint32_t>(g_ops[i].us), false, false));
  }
  gt::report::Send(g_writer, gt::write_psummary(g_writer, n, total, static_cast<uint32_t>(invoke_us), false, false));
}

void RunBench(uint32_t n, uint32_t warmup) {
  int sample = -1;
  int64_t pre_us = 0;
  const char* error = "internal";
  if (!g_model_ok || !gt::input::Fill(g_source, g_runner.input(), &sample, &pre_us, &error)) {
    gt::report::Error(g_model_ok ? error : "internal", "bench", "no input for the benchmark");
    return;
  }
  int64_t us = 0;
  for (uint32_t i = 0; i < warmup; ++i) g_runner.Invoke(&us);
  gt::BenchStats stats;
  uint32_t batch[gt::kBenchBatch];
  size_t in_batch = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (!g_runner.Invoke(&us)) {
      gt::report::Error("invoke_failed", "bench", "Invoke() failed");
      return;
    }
    batch[in_batch++] = static_cast<uint32_t>(us);
    stats.Add(static_cast<uint32_t>(us));
    if (in_batch == gt::kBenchBatch || i + 1 == n) {
      gt::report::Send(g_writer, gt::write_bsample(g_writer, i + 1 - in_batch, batch, in_batch, false));
      in_batch = 0;
    }
  }
  gt::BenchSummaryInfo s{stats.n, warmup, stats.min_us, stats.max_us, stats.mean_us(), stats.total_us, false};
  gt::report::Send(g_writer, gt::write_bsummary(g_writer, s));
}

void Handle(const gt::Command& c) {
  if (c.error != nullptr) {
    gt::report::Error(c.error, c.word, "command refused");
    return;
  }
  const char* name = gt::cmd_name(c.cmd);
  switch (c.cmd) {
    case gt::Cmd::kPing:
      gt::report::Ack(name);
      break;
    case gt::Cmd::kInfo:
      gt::report::Ack(name);
      SendHello();
      break;
    case gt::Cmd::kSource:
      if (c.source == gt::Source::kCamera && !gt::input::HasCamera()) {
        gt::report::Error("unsupported", name, "this board has no camera");
        break;
      }
      g_source = c.source;
      gt::report::Ack(name);
      break;
    case gt::Cmd::kStart:
      g_running = true;
      g_next_run_us = 0;
      gt::report::Ack(name);
      break;
    case gt::Cmd::kStop:
      g_running = false;
      gt::report::Ack(name);
      break;
    case gt::Cmd::kInfer: {
      uint8_t* buf = gt::input::UploadBuffer(c.len);
      if (buf == nullptr) {
        gt::report::Error("no_memory", name, "no memory for the upload");
        break;
      }
      gt::report::Ack(name);
      g_upload_cmd = c;
      g_upload.begin(buf, c.len, c.crc);
      g_upload_last_byte_us = esp_timer_get_time();
      break;
    }
    case gt::Cmd::kBench:
      gt::report::Ack(name);
      RunBench(c.n, c.warmup);
      break;
    case gt::Cmd::kProfile:
      gt::report::Ack(name);
      RunProfile();
      break;
    case gt::Cmd::kSelftest:
      gt::report::Ack(name);
      RunSelftest();
      break;
    case gt::Cmd::kReset:
      gt::report::Ack(name);
      vTaskDelay(pdMS_TO_TICKS(50));  // let the ack leave the TX buffer
      esp_restart();
      break;
    default:
      gt::report::Error("internal", c.word, "unhandled command");
      break;
  }
}

void FinishUpload() {
  const bool crc_ok = g_upload.crc_ok();
  g_upload.finish();
  if (!crc_ok) {
    gt::report::Error("upload_crc", "infer", "upload CRC mismatch; nothing inferred");
    return;
  }
  int64_t pre_us = 0;
  int64_t invoke_us = 0;
  uint8_t* buf = gt::input::UploadBuffer(g_upload_cmd.len);
  if (!g_model_ok) {
    gt::report::Error("internal", "infer", "model not loaded (see the boot log)");
    return;
  }
  if (!gt::input::FillUpload(buf, static_cast<int>(g_upload_cmd.w), static_cast<int>(g_upload_cmd.h),
                             g_runner.input(), &pre_us)) {
    gt::report::Error("internal", "infer", "preprocessing failed");
    return;
  }
  if (!g_runner.Invoke(&invoke_us)) {
    gt::report::Error("invoke_failed", "infer", "Invoke() failed");
    return;
  }
  SendResult(gt::Source::kUpload, -1, pre_us, invoke_us);
}

void PollSerial(uint32_t timeout_ms) {
  uint8_t buf[256];
  const int n = gt::serial::Read(buf, sizeof buf, timeout_ms);
  size_t i = 0;
  while (i < static_cast<size_t>(n)) {
    if (g_upload.active()) {
      i += g_upload.feed(buf + i, static_cast<size_t>(n) - i);
      g_upload_last_byte_us = esp_timer_get_time();
      if (g_upload.complete()) FinishUpload();
      continue;
    }
    if (g_lines.push(static_cast<char>(buf[i++]))) {
      gt::Command c;
      if (g_lines.take(&c)) Handle(c);
    }
  }
  if (g_upload.active() &&
      esp_timer_get_time() - g_upload_last_byte_us > static_cast<int64_t>(gt::kUploadIdleMs) * 1000) {
    g_upload.abort();
    gt::report::Error("upload_timeout", "infer", "upload stalled; dropped");
  }
}

void LogBootReport() {
  ESP_LOGI(kTag, "gendertool firmware %s, board %s, ESP-IDF %s, esp-tflite-micro %s, esp-nn %s",
           gt::kFirmwareVersion, gt::kBoardName, esp_get_idf_version(), gt::kTflmVersion, gt::kEspNnVersion);
  ESP_LOGI(kTag, "model %s (%u bytes, sha256 %s), %s", gt::kModelName, static_cast<unsigned>(g_runner.model_bytes()),
           gt::kModelSha256, g_runner.model_in_psram() ? "copied to PSRAM" : "in flash");
  ESP_LOGI(kTag, "arena %u bytes in %s, %u used; free heap: internal %u, PSRAM %u",
           static_cast<unsigned>(g_runner.arena_bytes()), g_runner.arena_in_psram() ? "PSRAM" : "internal RAM",
           static_cast<unsigned>(g_runner.arena_used_bytes()), static_cast<unsigned>(FreeInternal()),
           static_cast<unsigned>(FreePsram()));
}

}  // namespace

void setup() {
  gt::serial::Init(gt::config::kSerialRxBufferBytes, gt::config::kSerialTxBufferBytes);
  g_model_ok = g_runner.Setup();
  LogBootReport();
  SendHello();
  if (!g_model_ok) {
    gt::report::Error("internal", "", "model setup failed (see the log above)");
    return;
  }
  if (gt::config::kSelftestOnBoot) RunSelftest();
  if (gt::config::kProfileOnBoot) RunProfile();
  g_running = gt::config::kAutostart && g_source != gt::Source::kUpload;
}

void loop() {
  const int64_t now = esp_timer_get_time();
  // `upload` runs only on uploads (docs/protocol.md §2)
  const bool due = g_running && g_source != gt::Source::kUpload && !g_upload.active() && now >= g_next_run_us;
  PollSerial(g_running ? 0 : 20);
  if (due && g_running) {
    g_next_run_us = now + static_cast<int64_t>(gt::config::kInferencePeriodMs) * 1000;
    RunOnce(g_source, "", true);
  }
  vTaskDelay(1);  // let lower-priority tasks on this core run between inferences
}
