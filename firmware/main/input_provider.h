// Input provider: fills the model's int8 input tensor from the current source.
#pragma once

#include <cstddef>
#include <cstdint>

#include "app_config.h"

namespace gt::input {

using Source = gt::Source;

const char* SourceName(Source source);
bool HasCamera();
// Stops the camera (its capture task and DMA) if it is running; a later camera capture starts
// it again. CameraRunning(): it is started now.
void StopCamera();
bool CameraRunning();

// Preprocesses the next image of `source` into tensor. sample_index receives the built-in
// sample used (-1 otherwise); pre_us the preprocessing time. Returns false (error code in
// *error, a protocol error code) when there is no image.
bool Fill(Source source, int8_t* tensor, int* sample_index, int64_t* pre_us, const char** error);

// Built-in sample `index` into tensor.
bool FillSample(int index, int8_t* tensor, int64_t* pre_us);

// Preprocesses an uploaded RGB888 image and keeps it as the `upload` source's image.
bool FillUpload(const uint8_t* rgb, int width, int height, int8_t* tensor, int64_t* pre_us);

// Buffer (PSRAM when present) for receiving an upload of `bytes`; nullptr if no memory.
uint8_t* UploadBuffer(size_t bytes);

}  // namespace gt::input
