// See camera_provider.h. Pins come from the board registry (board_config.h).
#include "camera_provider.h"

#include "board_config.h"
#include "esp_camera.h"
#include "esp_log.h"

namespace gt::camera {
namespace {

constexpr const char* kTag = "camera";
bool g_ready = false;
camera_fb_t* g_frame = nullptr;

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
  const esp_err_t err = esp_camera_init(&cfg);
  if (err != ESP_OK) {
    ESP_LOGE(kTag, "esp_camera_init failed: %s", esp_err_to_name(err));
    return false;
  }
  g_ready = true;
  return true;
}

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
