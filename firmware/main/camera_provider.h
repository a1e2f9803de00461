// OV2640 through espressif/esp32-camera (XIAO ESP32S3 Sense). Built only for camera boards.
#pragma once

#include "image_preprocess.h"

namespace gt::camera {

// Starts the sensor from a task on CPU0 (its interrupts stay off the inference core):
// RGB565 frames, frame buffers in PSRAM; the first frames (exposure settling) are discarded.
// Idempotent.
bool Init();

// Stops the sensor and its capture task (esp_camera_deinit, also on CPU0). Idempotent.
void Stop();

// The driver is started and capturing.
bool Running();

// Grabs the latest frame; Release() must follow before the next Capture().
bool Capture(ImageView* view);
void Release();

}  // namespace gt::camera
