// See app_controller.h. Command semantics: docs/protocol.md §2.
#include "app_controller.h"

#include <cstdio>

#include "inference_stats.h"
#include "model_settings.h"
#include "sample_images.h"

namespace gt {

AppController::AppController(Platform& platform, const ControllerConfig& config)
    : platform_(platform), config_(config), source_(config.boot_source) {}

void AppController::Send(bool ok) {
  if (!ok) {
    platform_.Log("record dropped: longer than the protocol's line bound");
    return;
  }
  platform_.Write(writer_.data(), writer_.size());
  last_send_us_ = platform_.NowUs();
}

void AppController::Progress(const char* cmd, uint32_t done, uint32_t total) {
  if (platform_.NowUs() - last_send_us_ < kProgressIntervalUs) return;
  Send(write_progress(writer_, cmd, done, total, false));
}

// The tensor goes out before Invoke(): TFLM's memory planner may reuse the input tensor's
// bytes for later tensors during Invoke(), and a copy would cost kInputBytes of RAM. The
// `input` records carry the seq of the result that follows them (docs/protocol.md §1.4).
void AppController::SendInputIfWanted() {
  const bool every = input_every_ > 0 && seq_ % input_every_ == 0;
  if (!every && !input_once_) return;
  input_once_ = false;
  const int8_t* tensor = platform_.Input();
  const size_t total = static_cast<size_t>(kInputBytes);
  for (size_t off = 0; off < total; off += kInputChunk) {
    const size_t n = total - off < kInputChunk ? total - off : kInputChunk;
    Send(write_input(writer_, seq_, static_cast<uint32_t>(off), static_cast<uint32_t>(total), tensor + off, n, false));
  }
}

void AppController::Ack(const char* cmd) { Send(write_ack(writer_, cmd, false)); }

void AppController::Error(const char* code, const char* cmd, const char* message) {
  Send(write_error(writer_, code, cmd, message, false));
}

void AppController::SendHello() {
  HelloInfo h{};
  h.fw = kFirmwareVersion;
  h.board = kBoardName;
  h.chip = kChipName;
  h.model = kModelName;
  h.model_sha256 = kModelSha256;
  h.labels = kLabels;
  h.num_labels = kNumClasses;
  h.input_shape = kInputShape;
  h.input_dims = kInputDims;
  h.in_scale = kInputScale;
  h.in_zp = kInputZeroPoint;
  h.out_scale = kOutputScale;
  h.out_zp = kOutputZeroPoint;
  h.device = platform_.Status();
  h.tflm = kTflmVersion;
  h.esp_nn = kEspNnVersion;
  h.samples = kNumSampleImages;
  h.sample_names = kSampleNames;
  h.sample_truth = kSampleTruth;
  h.source = source_name(source_);
  h.running = running_;
  h.simulated = false;
  Send(write_hello(writer_, h));
}

void AppController::SendResult(Source source, int sample, int64_t pre_us, int64_t invoke_us) {
  const int8_t* scores = platform_.Output();
  float probs[kNumClasses];
  Probabilities(scores, kNumClasses, static_cast<float>(kOutputScale), kOutputZeroPoint, probs);
  const int cls = ArgMax(scores, kNumClasses);
  ResultInfo r{};
  r.seq = seq_++;
  r.source = source_name(source);
  r.sample = sample;
  r.class_index = cls;
  r.label = kLabels[cls];
  r.scores = scores;
  r.probs = probs;
  r.num_classes = kNumClasses;
  r.pre_us = static_cast<uint32_t>(pre_us);
  r.invoke_us = static_cast<uint32_t>(invoke_us);
  r.simulated = false;
  Send(write_result(writer_, r));
}

bool AppController::RunOnce(Source source, const char* cmd) {
  if (!platform_.ModelReady()) {
    Error("internal", cmd, "model not loaded (see the boot log)");
    return false;
  }
  int sample = -1;
  int64_t pre_us = 0;
  int64_t invoke_us = 0;
  const char* error = "internal";
  if (!platform_.FillInput(source, &sample, &pre_us, &error)) {
    Error(error, cmd, source == Source::kUpload ? "no image uploaded yet" : "no input image");
    return false;
  }
  SendInputIfWanted();
  if (!platform_.Invoke(&invoke_us)) {
    Error("invoke_failed", cmd, "Invoke() failed");
    return false;
  }
  SendResult(source, sample, pre_us, invoke_us);
  return true;
}

void AppController::RunSelftest() {
  if (!platform_.ModelReady()) {
    Error("internal", "selftest", "model not loaded (see the boot log)");
    return;
  }
  SelftestEntry entries[kSelftestMaxResults];
  uint32_t failed = 0;
  char line[160];
  for (int i = 0; i < kNumSampleImages; ++i) {
    const SampleImage& s = kSampleImages[i];
    int64_t invoke_us = 0;
    const bool ran = platform_.FillSample(i, nullptr) && platform_.Invoke(&invoke_us);
    const int got = ran ? ArgMax(platform_.Output(), kNumClasses) : -1;
    const int diff = ran ? MaxAbsDiff(platform_.Output(), s.expected, kNumClasses) : 255;
    const bool ok = ran && got == s.expected_class && diff <= config_.selftest_tolerance;
    if (!ok) ++failed;
    std::snprintf(line, sizeof line, "selftest %s: expect %d got %d, max diff %d -> %s", s.name, s.expected_class,
                  got, diff, ok ? "ok" : "FAIL");
    platform_.Log(line);
    if (static_cast<size_t>(i) < kSelftestMaxResults) entries[i] = SelftestEntry{i, s.expected_class, got, diff, ok};
    Progress("selftest", static_cast<uint32_t>(i + 1), static_cast<uint32_t>(kNumSampleImages));
  }
  const size_t shown = static_cast<size_t>(kNumSampleImages) < kSelftestMaxResults
                           ? static_cast<size_t>(kNumSampleImages)
                           : kSelftestMaxResults;
  std::snprintf(line, sizeof line, "selftest %s (%u of %d failed)", failed == 0 ? "PASS" : "FAIL",
                static_cast<unsigned>(failed), kNumSampleImages);
  platform_.Log(line);
  Send(write_selftest(writer_, failed == 0, kNumSampleImages, failed, entries, shown, false));
}

// Fills the input from the current source for `cmd`; on failure sends its error record.
bool AppController::PrepareInput(const char* cmd, const char* message, int* sample, int64_t* pre_us) {
  const char* error = "internal";
  if (!platform_.ModelReady() || !platform_.FillInput(source_, sample, pre_us, &error)) {
    Error(platform_.ModelReady() ? error : "internal", cmd, message);
    return false;
  }
  return true;
}

void AppController::RunProfile() {
  int sample = -1;
  int64_t pre_us = 0;
  if (!PrepareInput("profile", "no input for the profiled run", &sample, &pre_us)) return;
  int64_t invoke_us = 0;
  const int n = platform_.Profile(ops_, kMaxProfiledOps, &invoke_us);
  if (n < 0) {
    Error("invoke_failed", "profile", "Invoke() failed");
    return;
  }
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) {
    total += static_cast<uint64_t>(ops_[i].us);
    Send(write_profile(writer_, static_cast<uint32_t>(i), ops_[i].tag, static_cast<uint32_t>(ops_[i].us), false, false));
  }
  Send(write_psummary(writer_, static_cast<uint32_t>(n), total, static_cast<uint32_t>(invoke_us), false, false));
}

// One benchmark run's input, preprocessed again every run (docs/protocol.md §2 `bench`): the
// same built-in sample each run so runs stay comparable, the last upload, or a fresh camera
// frame (its capture is not in pre_us: that waits on the sensor, not on the CPU).
bool AppController::BenchInput(Source source, int sample, int64_t* pre_us, const char** error) {
  if (source == Source::kSample) {
    *error = "internal";
    return platform_.FillSample(sample, pre_us);
  }
  int ignored = -1;
  return platform_.FillInput(source, &ignored, pre_us, error);
}

void AppController::RunBench(uint32_t n, uint32_t warmup) {
  // A camera left running from an earlier camera source would keep capturing into PSRAM
  // during a sample/upload benchmark and change its figures.
  if (source_ != Source::kCamera) platform_.StopCamera();
  int sample = -1;
  int64_t pre_us = 0;
  // Picks the input (the next sample, as continuous inference would) and checks there is one.
  if (!PrepareInput("bench", "no input for the benchmark", &sample, &pre_us)) return;
  const char* error = "internal";
  int64_t invoke_us = 0;
  BenchStats stats;
  uint32_t pre_batch[kBenchBatch];
  uint32_t invoke_batch[kBenchBatch];
  size_t in_batch = 0;
  // Warm-up runs do the same work as timed ones (preprocessing + Invoke()), unreported.
  for (uint32_t i = 0; i < warmup + n; ++i) {
    if (!BenchInput(source_, sample, &pre_us, &error)) {
      Error(error, "bench", "input failed during the benchmark");
      return;
    }
    if (!platform_.Invoke(&invoke_us)) {
      Error("invoke_failed", "bench", "Invoke() failed");
      return;
    }
    // the host waits at most a few seconds between records, whatever warmup + n are
    Progress("bench", i + 1, warmup + n);
    if (i < warmup) continue;
    pre_batch[in_batch] = static_cast<uint32_t>(pre_us);
    invoke_batch[in_batch++] = static_cast<uint32_t>(invoke_us);
    stats.Add(static_cast<uint32_t>(invoke_us));
    const uint32_t done = i + 1 - warmup;
    if (in_batch == kBenchBatch || done == n) {
      Send(write_bsample(writer_, static_cast<uint32_t>(done - in_batch), pre_batch, invoke_batch, in_batch, false));
      in_batch = 0;
    }
  }
  const DeviceStatus status = platform_.Status();
  const BenchSummaryInfo s{stats.n,          warmup, stats.min_us,           stats.max_us,      stats.mean_us(),
                           stats.total_us,   false,  status.arena_in,        status.camera_running,
                           status.tx_dropped};
  Send(write_bsummary(writer_, s));
}

void AppController::Handle(const Command& c) {
  if (c.error != nullptr) {
    Error(c.error, c.word, "command refused");
    return;
  }
  const char* name = cmd_name(c.cmd);
  switch (c.cmd) {
    case Cmd::kPing:
      Ack(name);
      break;
    case Cmd::kInfo:
      // `info <proto>`: a host that speaks another protocol version is told so, by name
      if (c.proto != 0 && c.proto != static_cast<uint32_t>(kProtoVersion)) {
        char message[120];
        std::snprintf(message, sizeof message,
                      "this firmware speaks protocol v%d, the host v%u: rebuild and flash the firmware with the "
                      "host's gendertool",
                      kProtoVersion, static_cast<unsigned>(c.proto));
        Error("proto_mismatch", name, message);
        break;
      }
      Ack(name);
      SendHello();
      break;
    case Cmd::kInput:
      if (c.once) {
        input_once_ = true;  // `input once` leaves a periodic `input <n>` as it was
      } else {
        input_every_ = c.every;
      }
      Ack(name);
      break;
    case Cmd::kSource:
      if (c.source == Source::kCamera && !platform_.HasCamera()) {
        Error("unsupported", name, "this board has no camera");
        break;
      }
      if (source_ == Source::kCamera && c.source != Source::kCamera) platform_.StopCamera();
      source_ = c.source;
      Ack(name);
      break;
    case Cmd::kStart:
      running_ = true;
      next_run_us_ = 0;
      Ack(name);
      break;
    case Cmd::kStop:
      running_ = false;
      Ack(name);
      break;
    case Cmd::kInfer: {
      uint8_t* buf = platform_.UploadBuffer(c.len);
      if (buf == nullptr) {
        Error("no_memory", name, "no memory for the upload");
        break;
      }
      Ack(name);
      upload_cmd_ = c;
      upload_.begin(buf, c.len, c.crc);
      upload_last_byte_us_ = platform_.NowUs();
      break;
    }
    case Cmd::kBench:
      Ack(name);
      RunBench(c.n, c.warmup);
      break;
    case Cmd::kProfile:
      Ack(name);
      RunProfile();
      break;
    case Cmd::kSelftest:
      Ack(name);
      RunSelftest();
      break;
    case Cmd::kReset:
      Ack(name);
      platform_.Restart();
      break;
    case Cmd::kPanic:  // a test of the host's panic decoding (docs/first-board-run.md)
      Ack(name);
      platform_.Panic();
      break;
    default:
      Error("internal", c.word, "unhandled command");
      break;
  }
}

void AppController::FinishUpload() {
  const bool crc_ok = upload_.crc_ok();
  upload_.finish();
  if (!crc_ok) {
    Error("upload_crc", "infer", "upload CRC mismatch; nothing inferred");
    return;
  }
  if (!platform_.ModelReady()) {
    Error("internal", "infer", "model not loaded (see the boot log)");
    return;
  }
  int64_t pre_us = 0;
  int64_t invoke_us = 0;
  uint8_t* buf = platform_.UploadBuffer(upload_cmd_.len);
  if (!platform_.FillUpload(buf, static_cast<int>(upload_cmd_.w), static_cast<int>(upload_cmd_.h), &pre_us)) {
    Error("internal", "infer", "preprocessing failed");
    return;
  }
  SendInputIfWanted();
  if (!platform_.Invoke(&invoke_us)) {
    Error("invoke_failed", "infer", "Invoke() failed");
    return;
  }
  SendResult(Source::kUpload, -1, pre_us, invoke_us);
}

void AppController::Boot() {
  SendHello();
  if (!platform_.ModelReady()) {
    Error("internal", "", "model setup failed (see the log above)");
    return;
  }
  if (config_.selftest_on_boot) RunSelftest();
  if (config_.profile_on_boot) RunProfile();
  running_ = config_.autostart;
}

void AppController::Feed(const uint8_t* data, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (upload_.active()) {
      i += upload_.feed(data + i, n - i);
      upload_last_byte_us_ = platform_.NowUs();
      if (upload_.complete()) FinishUpload();
      continue;
    }
    if (lines_.push(static_cast<char>(data[i++]))) {
      Command c;
      if (lines_.take(&c)) Handle(c);
    }
  }
}

void AppController::Tick() {
  const int64_t now = platform_.NowUs();
  if (upload_.active() && now - upload_last_byte_us_ > static_cast<int64_t>(kUploadIdleMs) * 1000) {
    upload_.abort();
    Error("upload_timeout", "infer", "upload stalled; dropped");
  }
  // `upload` runs only on uploads (docs/protocol.md §2); uploads pause continuous inference.
  if (running_ && source_ != Source::kUpload && !upload_.active() && now >= next_run_us_) {
    next_run_us_ = now + static_cast<int64_t>(config_.period_ms) * 1000;
    RunOnce(source_, "");
  }
}

uint32_t AppController::IdleWaitMs() const {
  if (upload_.active()) return 10;
  if (!running_ || source_ == Source::kUpload) return 20;
  const int64_t wait_us = next_run_us_ - platform_.NowUs();
  if (wait_us <= 0) return 0;
  return wait_us > 20000 ? 20 : static_cast<uint32_t>(wait_us / 1000);
}

}  // namespace gt
