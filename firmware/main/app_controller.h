// The app's behaviour on the serial link (docs/protocol.md): boot report, commands,
// uploads, continuous inference, benchmark, profile, self-test. Portable C++17: everything
// device-specific sits behind Platform (implemented with ESP-IDF in main_functions.cc), so
// tests/test_firmware_link.py runs this exact logic on the host against the Python client.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol.h"

namespace gt {

// One operator's time in a profiled Invoke() (tag = TFLM's profiler tag, e.g. "CONV_2D").
struct OpTiming {
  const char* tag;
  int64_t us;
};

class Platform {
 public:
  virtual ~Platform() = default;
  virtual int64_t NowUs() = 0;
  virtual void Write(const char* data, size_t len) = 0;  // whole record lines
  virtual void Log(const char* text) = 0;                // one human-readable log line
  virtual bool ModelReady() = 0;
  virtual bool HasCamera() = 0;
  // Stops the camera if it runs (leaving the camera source, before a non-camera benchmark);
  // the next camera capture starts it again. Status().camera_running says whether it runs.
  virtual void StopCamera() = 0;
  // Preprocesses the next image of `source` into the input tensor; on failure *error is a
  // protocol error code.
  virtual bool FillInput(Source source, int* sample, int64_t* pre_us, const char** error) = 0;
  // Built-in sample `index` into the input tensor; pre_us (may be nullptr) its preprocessing time.
  virtual bool FillSample(int index, int64_t* pre_us) = 0;
  virtual uint8_t* UploadBuffer(size_t bytes) = 0;
  virtual bool FillUpload(const uint8_t* rgb, int width, int height, int64_t* pre_us) = 0;
  virtual bool Invoke(int64_t* invoke_us) = 0;
  virtual int Profile(OpTiming* ops, int max_ops, int64_t* invoke_us) = 0;  // -1 on failure
  virtual const int8_t* Output() = 0;
  virtual const int8_t* Input() = 0;  // the input tensor (kInputBytes), valid until Invoke()
  virtual DeviceStatus Status() = 0;
  virtual void Restart() = 0;
  // The `panic` test command: abort() as a crash would (panic dump on the console, reboot).
  virtual void Panic() = 0;
};

struct ControllerConfig {
  Source boot_source;
  uint32_t period_ms;
  int selftest_tolerance;
  bool selftest_on_boot;
  bool profile_on_boot;
  bool autostart;
};

class AppController {
 public:
  static constexpr int kMaxProfiledOps = 256;

  AppController(Platform& platform, const ControllerConfig& config);

  // hello, then the self-test and profile if configured, then continuous inference if set.
  void Boot();
  // Bytes received from the host (commands, upload payloads).
  void Feed(const uint8_t* data, size_t n);
  // Upload timeout and continuous inference; call after each read.
  void Tick();
  // How long the caller may block waiting for serial bytes before calling Tick() again.
  uint32_t IdleWaitMs() const;

  bool running() const { return running_; }
  Source source() const { return source_; }

 private:
  void Send(bool ok);
  // A `progress` record for long work when nothing was sent for kProgressIntervalUs.
  void Progress(const char* cmd, uint32_t done, uint32_t total);
  // The input tensor of the next result (seq_) when the host asked for it (`input`).
  void SendInputIfWanted();
  void Ack(const char* cmd);
  void Error(const char* code, const char* cmd, const char* message);
  void Handle(const Command& c);
  void SendHello();
  void SendResult(Source source, int sample, int64_t pre_us, int64_t invoke_us);
  bool RunOnce(Source source, const char* cmd);
  void RunSelftest();
  bool PrepareInput(const char* cmd, const char* message, int* sample, int64_t* pre_us);
  void RunProfile();
  void RunBench(uint32_t n, uint32_t warmup);
  bool BenchInput(Source source, int sample, int64_t* pre_us, const char** error);
  void FinishUpload();

  Platform& platform_;
  ControllerConfig config_;
  Source source_;
  bool running_ = false;
  uint32_t seq_ = 0;
  int64_t next_run_us_ = 0;
  int64_t last_send_us_ = 0;
  uint32_t input_every_ = 0;  // `input <n>`
  bool input_once_ = false;   // `input once`
  RecordWriter writer_;
  LineReader lines_;
  UploadReceiver upload_;
  Command upload_cmd_;
  int64_t upload_last_byte_us_ = 0;
  OpTiming ops_[kMaxProfiledOps] = {};
};

}  // namespace gt
