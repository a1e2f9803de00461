// OV2640 through espressif/esp32-camera (XIAO ESP32S3 Sense). Built only for camera boards.
#pragma once

#include "image_preprocess.h"

namespace gt::camera {

// Starts the sensor: RGB565 frames, frame buffers in PSRAM. Idempotent.
bool Init();

// Grabs the latest frame; Release() must follow before the next Capture().
bool Capture(ImageView* view);
void Release();

}  // namespace gt::camera
