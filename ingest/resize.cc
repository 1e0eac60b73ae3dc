#include "ingest/resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ingest/media_types.h"

namespace avserve::ingest {
namespace {

// Keys cubic convolution with a = -0.5 (PIL's and PyTorch's antialiased bicubic).
double Cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Normalized filter taps of one output axis.
struct AxisTaps {
  int taps = 0;
  std::vector<int> first;      // [out] first input index
  std::vector<int> count;      // [out] number of valid taps
  std::vector<float> weights;  // [out, taps]
};

// The PIL/PyTorch antialias rule: when shrinking, the kernel stretches by the scale (support
// 2 * scale) so every input pixel contributes; when growing it is the plain bicubic kernel.
AxisTaps ComputeTaps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  AxisTaps t;
  t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.taps, 0.0f);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    // Truncation toward zero, as the reference implementations do, then clamp.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = std::min(hi - lo, t.taps);
    std::vector<double> w(n);
    double total = 0.0;
    for (int j = 0; j < n; ++j) {
      w[j] = Cubic((j + lo - center + 0.5) / filter_scale);
      total += w[j];
    }
    for (int j = 0; j < n; ++j) {
      t.weights[static_cast<size_t>(i) * t.taps + j] = static_cast<float>(total != 0.0 ? w[j] / total : 0.0);
    }
    t.first[i] = lo;
    t.count[i] = n;
  }
  return t;
}

// nearbyint (round half to even) then clamp to [0, 255], written so that it vectorizes: adding
// and removing 2^23 rounds any value in [0, 2^23) in the default rounding mode.
inline uint8_t ClampRound(float v) {
  constexpr float kRound = 8388608.0f;  // 2^23
  v = std::min(std::max(v, 0.0f), 255.0f);
  return static_cast<uint8_t>((v + kRound) - kRound);
}

// Resamples along y: [h_in, w, 3] -> [h_out, w, 3]. Each output value sums its taps in order
// (acc = 0; acc += w_j * p_j for j = 0, 1, ...), vectorized across the row.
RgbImage ResizeColumns(const RgbImage& src, int out_height) {
  const AxisTaps t = ComputeTaps(src.height, out_height);
  const size_t stride = static_cast<size_t>(src.width) * 3;
  RgbImage dst{out_height, src.width, std::vector<uint8_t>(static_cast<size_t>(out_height) * stride)};
  std::vector<float> acc(stride);
  for (int y = 0; y < out_height; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* w = &t.weights[static_cast<size_t>(y) * t.taps];
    for (int j = 0; j < t.count[y]; ++j) {
      const uint8_t* row = &src.pixels[static_cast<size_t>(t.first[y] + j) * stride];
      const float wj = w[j];
      float* a = acc.data();
      for (size_t i = 0; i < stride; ++i) a[i] += wj * row[i];
    }
    uint8_t* out = &dst.pixels[static_cast<size_t>(y) * stride];
    for (size_t i = 0; i < stride; ++i) out[i] = ClampRound(acc[i]);
  }
  return dst;
}

// One RGB pixel as floats in the first three lanes of a 4-lane vector (GCC/Clang vector extension).
typedef float Float4 __attribute__((vector_size(16)));

// Resamples along x: [h, w_in, 3] -> [h, w_out, 3]. The three channels of a pixel share one
// vector, so each lane sums its taps in order (acc = 0; acc += w_j * p_j for j = 0, 1, ...), the
// same sums as one channel at a time. Four outputs run side by side (independent sums, so the
// adds overlap); an output with fewer taps than its neighbours adds exact zeros (weight 0 past
// its count, and zero pixels past the row's end), which leaves its sum unchanged.
RgbImage ResizeRows(const RgbImage& src, int out_width) {
  constexpr int kLanes = 4;
  const AxisTaps t = ComputeTaps(src.width, out_width);
  RgbImage dst{src.height, out_width, std::vector<uint8_t>(static_cast<size_t>(src.height) * out_width * 3)};
  std::vector<Float4> line(static_cast<size_t>(src.width) + t.taps, Float4{0.0f, 0.0f, 0.0f, 0.0f});
  for (int y = 0; y < src.height; ++y) {
    const uint8_t* row = &src.pixels[static_cast<size_t>(y) * src.width * 3];
    for (int x = 0; x < src.width; ++x) {
      line[x] = Float4{static_cast<float>(row[3 * x]), static_cast<float>(row[3 * x + 1]),
                       static_cast<float>(row[3 * x + 2]), 0.0f};
    }
    uint8_t* out = &dst.pixels[static_cast<size_t>(y) * out_width * 3];
    int x0 = 0;
    for (; x0 + kLanes <= out_width; x0 += kLanes) {
      Float4 acc[kLanes] = {};
      int taps = 0;
      for (int i = 0; i < kLanes; ++i) taps = std::max(taps, t.count[x0 + i]);
      for (int j = 0; j < taps; ++j) {
        for (int i = 0; i < kLanes; ++i) {
          const float w = t.weights[static_cast<size_t>(x0 + i) * t.taps + j];
          const Float4 term = w * line[t.first[x0 + i] + j];  // its own statement: never an FMA
          acc[i] += term;
        }
      }
      for (int i = 0; i < kLanes; ++i) {
        for (int c = 0; c < 3; ++c) out[(x0 + i) * 3 + c] = ClampRound(acc[i][c]);
      }
    }
    for (; x0 < out_width; ++x0) {  // the last outputs, one at a time
      Float4 acc = {};
      for (int j = 0; j < t.count[x0]; ++j) {
        const Float4 term = t.weights[static_cast<size_t>(x0) * t.taps + j] * line[t.first[x0] + j];
        acc += term;
      }
      for (int c = 0; c < 3; ++c) out[x0 * 3 + c] = ClampRound(acc[c]);
    }
  }
  return dst;
}

}  // namespace

bool IsValidBudget(int budget) {
  return budget == 70 || budget == 140 || budget == 280 || budget == 560 || budget == 1120;
}

absl::StatusOr<std::pair<int, int>> TargetSize(int height, int width, int budget) {
  if (!IsValidBudget(budget)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame budget ", budget, " is not one of 70, 140, 280, 560, 1120"));
  }
  if (height <= 0 || width <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid frame size ", width, "x", height));
  }
  const int64_t max_patches = static_cast<int64_t>(budget) * 9;  // 16x16 teacher patches
  const double target_px = static_cast<double>(max_patches) * 256.0;
  const double factor = std::sqrt(target_px / (static_cast<double>(height) * width));
  int out_h = static_cast<int>(std::floor(factor * height / kPatchSide)) * kPatchSide;
  int out_w = static_cast<int>(std::floor(factor * width / kPatchSide)) * kPatchSide;
  if (out_h == 0 && out_w == 0) {
    return absl::InvalidArgumentError(absl::StrCat("frame ", width, "x", height, " resizes to 0x0"));
  }
  const int max_side = budget * kPatchSide;
  if (out_h == 0) {
    out_h = kPatchSide;
    out_w = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(width / height) * kPatchSide, max_side));
  } else if (out_w == 0) {
    out_w = kPatchSide;
    out_h = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(height / width) * kPatchSide, max_side));
  }
  if (static_cast<double>(out_h) * out_w > target_px) {
    return absl::InvalidArgumentError(absl::StrCat("frame ", width, "x", height, " exceeds budget ", budget));
  }
  return std::make_pair(out_h, out_w);
}

RgbImage ResizeBicubicAntialias(const RgbImage& src, int out_height, int out_width) {
  if (src.height == out_height && src.width == out_width) return src;
  RgbImage horizontal = src.width == out_width ? src : ResizeRows(src, out_width);
  if (horizontal.height == out_height) return horizontal;
  return ResizeColumns(horizontal, out_height);
}

}  // namespace avserve::ingest
