// setup() and loop(): the ESP-IDF side of the app. AppController (portable, host-tested)
// holds the behaviour; EspPlatform gives it the serial link, the inputs and the model.
#include "main_functions.h"

#include <cstdlib>

#include "app_config.h"
#include "app_controller.h"
#include "esp_heap_caps.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "inference_runner.h"
#include "input_provider.h"
#include "model_settings.h"
#include "sdkconfig.h"
#include "serial_link.h"

namespace {

constexpr const char* kTag = "app";

gt::InferenceRunner g_runner;
bool g_model_ok = false;

uint32_t FreeInternal() { return heap_caps_get_free_size(MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT); }
uint32_t FreePsram() { return heap_caps_get_free_size(MALLOC_CAP_SPIRAM); }

class EspPlatform : public gt::Platform {
 public:
  int64_t NowUs() override { return esp_timer_get_time(); }
  void Write(const char* data, size_t len) override { gt::serial::WriteLine(data, len); }
  void Log(const char* text) override { ESP_LOGI(kTag, "%s", text); }
  bool ModelReady() override { return g_model_ok; }
  bool HasCamera() override { return gt::input::HasCamera(); }
  void StopCamera() override { gt::input::StopCamera(); }
  bool FillInput(gt::Source source, int* sample, int64_t* pre_us, const char** error) override {
    return gt::input::Fill(source, g_runner.input(), sample, pre_us, error);
  }
  bool FillSample(int index, int64_t* pre_us) override {
    return gt::input::FillSample(index, g_runner.input(), pre_us);
  }
  uint8_t* UploadBuffer(size_t bytes) override { return gt::input::UploadBuffer(bytes); }
  bool FillUpload(const uint8_t* rgb, int width, int height, int64_t* pre_us) override {
    return gt::input::FillUpload(rgb, width, height, g_runner.input(), pre_us);
  }
  bool Invoke(int64_t* invoke_us) override { return g_runner.Invoke(invoke_us); }
  int Profile(gt::OpTiming* ops, int max_ops, int64_t* invoke_us) override {
    return g_runner.Profile(ops, max_ops, invoke_us);
  }
  const int8_t* Output() override { return g_runner.output(); }
  const int8_t* Input() override { return g_runner.input(); }
  gt::DeviceStatus Status() override {
    return gt::DeviceStatus{static_cast<uint32_t>(g_runner.arena_bytes()),
                            static_cast<uint32_t>(g_runner.arena_used_bytes()),
                            FreeInternal(),
                            FreePsram(),
                            CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ,
                            esp_get_idf_version(),
                            g_runner.arena_placement(),
                            gt::input::CameraRunning(),
                            gt::serial::Dropped()};
  }
  void Restart() override {
    vTaskDelay(pdMS_TO_TICKS(50));  // let the ack leave the TX buffer
    esp_restart();
  }
  void Panic() override {
    vTaskDelay(pdMS_TO_TICKS(50));  // let the ack leave the TX buffer
    std::abort();  // ESP-IDF: "abort() was called at PC ... on core 1", backtrace, reboot
  }
};

EspPlatform g_platform;
gt::AppController g_app(g_platform, gt::ControllerConfig{gt::config::kBootSource, gt::config::kInferencePeriodMs,
                                                         gt::config::kSelftestTolerance, gt::config::kSelftestOnBoot,
                                                         gt::config::kProfileOnBoot, gt::config::kAutostart});

void LogBootReport() {
  ESP_LOGI(kTag, "gendertool firmware %s, board %s, ESP-IDF %s, esp-tflite-micro %s, esp-nn %s",
           gt::kFirmwareVersion, gt::kBoardName, esp_get_idf_version(), gt::kTflmVersion, gt::kEspNnVersion);
  ESP_LOGI(kTag, "model %s (%u bytes, sha256 %s), %s", gt::kModelName, static_cast<unsigned>(g_runner.model_bytes()),
           gt::kModelSha256, g_runner.model_in_psram() ? "copied to PSRAM" : "in flash");
  ESP_LOGI(kTag, "arena %u bytes in %s, %u used; free heap: internal %u, PSRAM %u",
           static_cast<unsigned>(g_runner.arena_bytes()), g_runner.arena_placement(),
           static_cast<unsigned>(g_runner.arena_used_bytes()), static_cast<unsigned>(FreeInternal()),
           static_cast<unsigned>(FreePsram()));
}

}  // namespace

void setup() {
  if (!gt::serial::Init(gt::config::kSerialRxBufferBytes, gt::config::kSerialTxBufferBytes)) {
    ESP_LOGE(kTag, "USB-Serial-JTAG driver could not be installed");
  }
  g_model_ok = g_runner.Setup();
  LogBootReport();
  g_app.Boot();
}

void loop() {
  // The driver's ISR drops received bytes once its RX ring buffer is full, so while bytes
  // arrive (an upload) they are drained without a pause; only an idle pass yields a tick.
  uint8_t buf[1024];
  const int n = gt::serial::Read(buf, sizeof buf, g_app.IdleWaitMs());
  if (n > 0) g_app.Feed(buf, static_cast<size_t>(n));
  g_app.Tick();
  gt::serial::Flush();  // a line held while the host was not reading goes out once it reads
  if (n <= 0) vTaskDelay(1);  // let lower-priority tasks on this core run between inferences
}
