// Image preprocessing: the exact C++ port of host/gendertool/preprocess.py.
// Portable C++17 (no ESP-IDF or TFLM headers): compiled on the host by
// tests/test_firmware_host.py and checked byte for byte against the Python reference.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gt {

// Pixel layouts a source image may have.
enum class PixelFormat : uint8_t {
  kRgb888,     // 3 bytes per pixel, R G B
  kRgb565Be,   // 2 bytes per pixel, big-endian RRRRRGGG GGGBBBBB (esp32-camera's layout)
};

struct ImageView {
  const uint8_t* data;
  int width;
  int height;
  PixelFormat format;
};

// The source region the resize reads (Preprocessing.crop).
enum class CropMode : uint8_t {
  kCenterSquare,  // "center": centred square of side floor(min(h, w) * crop_fraction)
  kWholeFrame,    // "none": centred floor(h * crop_fraction) x floor(w * crop_fraction), stretched
};

// The tensor's channel order (Preprocessing.channel_order): the LUT stage writes the resized
// R, G, B bytes in this order; kInputLut's rows follow the tensor's channels.
enum class ChannelOrder : uint8_t {
  kRgb,  // "rgb"
  kBgr,  // "bgr": OpenCV/mmcv-trained models
};

struct CropBox {
  int y0;
  int x0;
  int h;
  int w;
};

// The region of a height x width image, each side at least 1 (preprocess.crop_rect).
CropBox CropRect(int height, int width, double crop_fraction, CropMode mode);

// Bytes per pixel of a format.
int BytesPerPixel(PixelFormat format);

// Expand one RGB565 big-endian pixel to RGB888 (bit replication: r8 = r5 << 3 | r5 >> 2).
void Rgb565BeToRgb888(const uint8_t* src, uint8_t* rgb);

// Crop (CropRect) + fixed-point bilinear resize to out_h x out_w RGB888 (preprocess.crop_resize).
// Returns false on bad arguments (null pointers, empty images, sizes beyond 16384, a
// crop_fraction outside (0, 1], an unknown mode).
bool CropResize(const ImageView& src, CropMode mode, double crop_fraction, int out_h, int out_w,
                uint8_t* out_rgb);

// Per-channel 3 x 256 lookup to int8 in the tensor's channel order (preprocess.quantize):
// tensor channel c of a pixel is lut[c][its source byte]. False on an unknown order.
bool Quantize(const uint8_t* rgb, size_t pixels, const int8_t (*lut)[256], ChannelOrder order, int8_t* out);

// The whole pipeline into the model's int8 input tensor (crop_resize then quantize), without
// an intermediate RGB888 buffer.
bool Preprocess(const ImageView& src, CropMode mode, double crop_fraction, int out_h, int out_w,
                const int8_t (*lut)[256], ChannelOrder order, int8_t* out);

}  // namespace gt
