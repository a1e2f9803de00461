// See camera_provider.h. Pins come from the board registry (board_config.h).
#include "camera_provider.h"

#include "board_config.h"
#include "esp_camera.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

namespace gt::camera {
namespace {

constexpr const char* kTag = "camera";
// esp_intr_alloc() allocates an interrupt on the calling core: the camera's driver is started
// (and stopped) from a short-lived task pinned to CPU0, so its interrupts stay off CPU1, the
// core that runs the app task and every Invoke().
constexpr BaseType_t kCameraCore = 0;
constexpr uint32_t kCoreTaskStack = 8192;
// The OV2640 adjusts exposure, gain and white balance over its first frames after start:
// the first frames are too dark or tinted. They are grabbed and thrown away before the first
// frame is used. 8 frames is about 0.3-0.5 s at QVGA; not measured here (no board), see
// docs/first-board-run.md for the check.
constexpr int kSettleFrames = 8;
bool g_ready = false;
camera_fb_t* g_frame = nullptr;
camera_config_t g_cfg = {};

struct CoreCall {
  esp_err_t (*fn)();
  esp_err_t result;
  TaskHandle_t caller;
};

void CoreCallTask(void* arg) {
  CoreCall* call = static_cast<CoreCall*>(arg);
  call->result = call->fn();
  xTaskNotifyGive(call->caller);
  vTaskDelete(nullptr);
}

// Runs fn in a task pinned to kCameraCore and waits for it.
esp_err_t RunOnCameraCore(esp_err_t (*fn)()) {
  CoreCall call{fn, ESP_FAIL, xTaskGetCurrentTaskHandle()};
  if (xTaskCreatePinnedToCore(CoreCallTask, "gt_cam", kCoreTaskStack, &call, uxTaskPriorityGet(nullptr), nullptr,
                              kCameraCore) != pdPASS) {
    return ESP_ERR_NO_MEM;
  }
  ulTaskNotifyTake(pdTRUE, portMAX_DELAY);
  return call.result;
}

esp_err_t StartDriver() { return esp_camera_init(&g_cfg); }
esp_err_t StopDriver() { return esp_camera_deinit(); }

}  // namespace

bool Init() {
  if (g_ready) return true;
  camera_config_t cfg = {};
  cfg.pin_pwdn = board::kCamPwdn;
  cfg.pin_reset = board::kCamReset;
  cfg.pin_xclk = board::kCamXclk;
  cfg.pin_sccb_sda = board::kCamSccbSda;
  cfg.pin_sccb_scl = board::kCamSccbScl;
  cfg.pin_d7 = board::kCamD7;
  cfg.pin_d6 = board::kCamD6;
  cfg.pin_d5 = board::kCamD5;
  cfg.pin_d4 = board::kCamD4;
  cfg.pin_d3 = board::kCamD3;
  cfg.pin_d2 = board::kCamD2;
  cfg.pin_d1 = board::kCamD1;
  cfg.pin_d0 = board::kCamD0;
  cfg.pin_vsync = board::kCamVsync;
  cfg.pin_href = board::kCamHref;
  cfg.pin_pclk = board::kCamPclk;
  cfg.xclk_freq_hz = board::kCamXclkHz;
  cfg.ledc_timer = LEDC_TIMER_0;
  cfg.ledc_channel = LEDC_CHANNEL_0;
  // RGB565 keeps the decode off the CPU; QVGA is the smallest 4:3 frame the model's crop
  // (centre square or whole frame) can still be taken from at more than 64 px.
  cfg.pixel_format = PIXFORMAT_RGB565;
  cfg.frame_size = FRAMESIZE_QVGA;
  cfg.jpeg_quality = 12;
  cfg.fb_count = 2;
  cfg.fb_location = CAMERA_FB_IN_PSRAM;
  cfg.grab_mode = CAMERA_GRAB_LATEST;
  g_cfg = cfg;
  const esp_err_t err = RunOnCameraCore(&StartDriver);
  if (err != ESP_OK) {
    ESP_LOGE(kTag, "esp_camera_init failed: %s", esp_err_to_name(err));
    return false;
  }
  g_ready = true;
  for (int i = 0; i < kSettleFrames; ++i) {
    camera_fb_t* fb = esp_camera_fb_get();
    if (fb != nullptr) esp_camera_fb_return(fb);
  }
  ESP_LOGI(kTag, "camera started on CPU%d, %d settling frames discarded", static_cast<int>(kCameraCore), kSettleFrames);
  return true;
}

// With two frame buffers the driver captures continuously (esp32-camera's README) and copies
// every frame into PSRAM until it is stopped: stopped when the camera is not the source.
void Stop() {
  if (!g_ready) return;
  Release();
  const esp_err_t err = RunOnCameraCore(&StopDriver);
  if (err != ESP_OK) ESP_LOGW(kTag, "esp_camera_deinit failed: %s", esp_err_to_name(err));
  g_ready = false;
  ESP_LOGI(kTag, "camera stopped");
}

bool Running() { return g_ready; }

bool Capture(ImageView* view) {
  if (!g_ready && !Init()) return false;
  if (g_frame != nullptr) Release();
  g_frame = esp_camera_fb_get();
  if (g_frame == nullptr) return false;
  if (g_frame->format != PIXFORMAT_RGB565) {
    Release();
    return false;
  }
  *view = ImageView{g_frame->buf, static_cast<int>(g_frame->width), static_cast<int>(g_frame->height),
                    PixelFormat::kRgb565Be};
  return true;
}

void Release() {
  if (g_frame != nullptr) {
    esp_camera_fb_return(g_frame);
    g_frame = nullptr;
  }
}

}  // namespace gt::camera
