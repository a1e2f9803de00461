// See input_provider.h.
#include "input_provider.h"

#include "board_config.h"
#include "esp_heap_caps.h"
#include "esp_timer.h"
#include "image_preprocess.h"
#include "model_settings.h"
#include "sample_images.h"
#if GT_BOARD_HAS_CAMERA
#include "camera_provider.h"
#endif

namespace gt::input {
namespace {

int g_next_sample = 0;
uint8_t* g_upload = nullptr;
size_t g_upload_capacity = 0;
int g_upload_w = 0;
int g_upload_h = 0;

bool Run(const ImageView& view, int8_t* tensor, int64_t* pre_us) {
  const int64_t t0 = esp_timer_get_time();
  const bool ok = Preprocess(view, kCropMode, kCropFraction, kInputHeight, kInputWidth, kInputLut, kChannelOrder,
                             tensor);
  if (pre_us != nullptr) *pre_us = esp_timer_get_time() - t0;
  return ok;
}

}  // namespace

const char* SourceName(Source source) {
  switch (source) {
    case Source::kUpload:
      return "upload";
    case Source::kCamera:
      return "camera";
    default:
      return "sample";
  }
}

bool HasCamera() { return GT_BOARD_HAS_CAMERA != 0; }

void StopCamera() {
#if GT_BOARD_HAS_CAMERA
  camera::Stop();
#endif
}

bool CameraRunning() {
#if GT_BOARD_HAS_CAMERA
  return camera::Running();
#else
  return false;
#endif
}

bool FillSample(int index, int8_t* tensor, int64_t* pre_us) {
  if (index < 0 || index >= kNumSampleImages) return false;
  const SampleImage& s = kSampleImages[index];
  return Run(ImageView{s.rgb, s.width, s.height, PixelFormat::kRgb888}, tensor, pre_us);
}

uint8_t* UploadBuffer(size_t bytes) {
  if (bytes <= g_upload_capacity) return g_upload;
  heap_caps_free(g_upload);
  g_upload = static_cast<uint8_t*>(heap_caps_malloc(bytes, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT));
  if (g_upload == nullptr) {
    g_upload = static_cast<uint8_t*>(heap_caps_malloc(bytes, MALLOC_CAP_8BIT));
  }
  g_upload_capacity = g_upload != nullptr ? bytes : 0;
  g_upload_w = g_upload_h = 0;
  return g_upload;
}

bool FillUpload(const uint8_t* rgb, int width, int height, int8_t* tensor, int64_t* pre_us) {
  if (rgb == g_upload) {
    g_upload_w = width;
    g_upload_h = height;
  }
  return Run(ImageView{rgb, width, height, PixelFormat::kRgb888}, tensor, pre_us);
}

bool Fill(Source source, int8_t* tensor, int* sample_index, int64_t* pre_us, const char** error) {
  *sample_index = -1;
  switch (source) {
    case Source::kSample: {
      const int index = g_next_sample;
      g_next_sample = (g_next_sample + 1) % kNumSampleImages;
      *sample_index = index;
      if (!FillSample(index, tensor, pre_us)) {
        *error = "internal";
        return false;
      }
      return true;
    }
    case Source::kUpload:
      if (g_upload_w == 0) {
        *error = "bad_args";  // nothing uploaded yet
        return false;
      }
      return Run(ImageView{g_upload, g_upload_w, g_upload_h, PixelFormat::kRgb888}, tensor, pre_us);
    case Source::kCamera: {
#if GT_BOARD_HAS_CAMERA
      ImageView view{};
      if (!camera::Capture(&view)) {
        *error = "camera_failed";
        return false;
      }
      const bool ok = Run(view, tensor, pre_us);
      camera::Release();
      if (!ok) *error = "camera_failed";
      return ok;
#else
      *error = "unsupported";
      return false;
#endif
    }
  }
  *error = "internal";
  return false;
}

}  // namespace gt::input
