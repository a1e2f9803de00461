// See image_preprocess.h. Integer arithmetic only after the crop box, so host and device agree
// on every byte.
#include "image_preprocess.h"

namespace gt {
namespace {

constexpr int kMaxSide = 16384;

// Python's max(1, int(size * crop_fraction)): the same double product, truncated; kept within
// [1, size] (the bounds also keep the cast defined for any fraction or NaN).
int ScaledSide(int size, double crop_fraction) {
  const double v = static_cast<double>(size) * crop_fraction;
  if (!(v >= 1.0)) return 1;
  if (v >= static_cast<double>(size)) return size;
  return static_cast<int>(v);
}

// Source indices (lo, hi) and 8-bit weight of hi for output index o (preprocess._axis_taps).
struct Tap {
  int lo;
  int hi;
  int frac;
};

Tap AxisTap(int o, int out_size, int in_size) {
  int64_t num = (2 * static_cast<int64_t>(o) + 1) * in_size - out_size;
  if (num < 0) num = 0;
  const int64_t s8 = (num * 256) / (2 * static_cast<int64_t>(out_size));
  Tap t;
  t.lo = static_cast<int>(s8 >> 8);
  t.frac = static_cast<int>(s8 & 255);
  if (t.lo >= in_size - 1) {
    t.lo = in_size - 1;
    t.hi = in_size - 1;
    t.frac = 0;
  } else {
    t.hi = t.lo + 1;
  }
  return t;
}

inline void FetchRgb(const ImageView& img, int y, int x, uint8_t* rgb) {
  const int bpp = BytesPerPixel(img.format);
  const uint8_t* p = img.data + (static_cast<size_t>(y) * img.width + x) * bpp;
  if (img.format == PixelFormat::kRgb888) {
    rgb[0] = p[0];
    rgb[1] = p[1];
    rgb[2] = p[2];
  } else {
    Rgb565BeToRgb888(p, rgb);
  }
}

// Calls sink(index, channel, value) for every output byte in HWC order.
template <typename Sink>
bool Resample(const ImageView& src, CropMode mode, double crop_fraction, int out_h, int out_w, Sink sink) {
  if (src.data == nullptr || src.width <= 0 || src.height <= 0 || out_h <= 0 || out_w <= 0 ||
      src.width > kMaxSide || src.height > kMaxSide || out_h > kMaxSide || out_w > kMaxSide ||
      !(crop_fraction > 0.0 && crop_fraction <= 1.0) ||
      (mode != CropMode::kCenterSquare && mode != CropMode::kWholeFrame)) {
    return false;
  }
  const CropBox box = CropRect(src.height, src.width, crop_fraction, mode);
  size_t index = 0;
  for (int oy = 0; oy < out_h; ++oy) {
    const Tap ty = AxisTap(oy, out_h, box.h);
    const uint32_t fy = static_cast<uint32_t>(ty.frac);
    for (int ox = 0; ox < out_w; ++ox) {
      const Tap tx = AxisTap(ox, out_w, box.w);
      const uint32_t fx = static_cast<uint32_t>(tx.frac);
      uint8_t a[3], b[3], c[3], d[3];
      FetchRgb(src, box.y0 + ty.lo, box.x0 + tx.lo, a);
      FetchRgb(src, box.y0 + ty.lo, box.x0 + tx.hi, b);
      FetchRgb(src, box.y0 + ty.hi, box.x0 + tx.lo, c);
      FetchRgb(src, box.y0 + ty.hi, box.x0 + tx.hi, d);
      for (int ch = 0; ch < 3; ++ch) {
        const uint32_t top = a[ch] * (256 - fx) + b[ch] * fx;
        const uint32_t bottom = c[ch] * (256 - fx) + d[ch] * fx;
        const uint32_t v = (top * (256 - fy) + bottom * fy + 32768) >> 16;
        sink(index++, ch, static_cast<uint8_t>(v));
      }
    }
  }
  return true;
}

bool KnownOrder(ChannelOrder order) { return order == ChannelOrder::kRgb || order == ChannelOrder::kBgr; }

// Tensor channel of source channel ch (0 R, 1 G, 2 B).
inline int TensorChannel(ChannelOrder order, int ch) { return order == ChannelOrder::kBgr ? 2 - ch : ch; }

}  // namespace

int BytesPerPixel(PixelFormat format) { return format == PixelFormat::kRgb888 ? 3 : 2; }

CropBox CropRect(int height, int width, double crop_fraction, CropMode mode) {
  CropBox box{};
  if (mode == CropMode::kWholeFrame) {
    box.h = ScaledSide(height, crop_fraction);
    box.w = ScaledSide(width, crop_fraction);
  } else {
    box.h = box.w = ScaledSide(height < width ? height : width, crop_fraction);
  }
  box.y0 = (height - box.h) / 2;
  box.x0 = (width - box.w) / 2;
  return box;
}

void Rgb565BeToRgb888(const uint8_t* src, uint8_t* rgb) {
  const uint16_t p = static_cast<uint16_t>((src[0] << 8) | src[1]);
  const uint8_t r5 = (p >> 11) & 0x1f;
  const uint8_t g6 = (p >> 5) & 0x3f;
  const uint8_t b5 = p & 0x1f;
  rgb[0] = static_cast<uint8_t>((r5 << 3) | (r5 >> 2));
  rgb[1] = static_cast<uint8_t>((g6 << 2) | (g6 >> 4));
  rgb[2] = static_cast<uint8_t>((b5 << 3) | (b5 >> 2));
}

bool CropResize(const ImageView& src, CropMode mode, double crop_fraction, int out_h, int out_w,
                uint8_t* out_rgb) {
  if (out_rgb == nullptr) return false;
  return Resample(src, mode, crop_fraction, out_h, out_w,
                  [out_rgb](size_t i, int, uint8_t v) { out_rgb[i] = v; });
}

bool Quantize(const uint8_t* rgb, size_t pixels, const int8_t (*lut)[256], ChannelOrder order, int8_t* out) {
  if (!KnownOrder(order)) return false;
  for (size_t i = 0; i < pixels * 3; ++i) {
    const int c = TensorChannel(order, static_cast<int>(i % 3));
    out[i - i % 3 + c] = lut[c][rgb[i]];
  }
  return true;
}

bool Preprocess(const ImageView& src, CropMode mode, double crop_fraction, int out_h, int out_w,
                const int8_t (*lut)[256], ChannelOrder order, int8_t* out) {
  if (out == nullptr || lut == nullptr || !KnownOrder(order)) return false;
  return Resample(src, mode, crop_fraction, out_h, out_w, [out, lut, order](size_t i, int ch, uint8_t v) {
    const int c = TensorChannel(order, ch);
    out[i - ch + c] = lut[c][v];
  });
}

}  // namespace gt
