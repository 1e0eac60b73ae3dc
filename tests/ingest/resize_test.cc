#include "ingest/resize.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "ingest/media_reader.h"

namespace avserve::ingest {
namespace {

using Size = std::pair<int, int>;  // (height, width)

TEST(TargetSizeTest, MatchesTheSpecExamples) {
  EXPECT_EQ(*TargetSize(1080, 1920, 280), Size(576, 1056));  // 22 x 12 = 264 tokens
  EXPECT_EQ(*TargetSize(480, 640, 280), Size(672, 912));
  EXPECT_EQ(*TargetSize(1000, 1000, 280), Size(768, 768));
  EXPECT_EQ(*TargetSize(224, 224, 280), Size(768, 768));     // small images are upscaled
  EXPECT_EQ(*TargetSize(360, 640, 70), Size(288, 528));      // 6 x 11 = 66 tokens
  EXPECT_EQ(*TargetSize(10, 5000, 280), Size(48, 13440));    // a strip: 280 x 1
}

TEST(TargetSizeTest, NeverExceedsTheBudgetAndKeepsMultiplesOf48) {
  for (int budget : {70, 140, 280, 560, 1120}) {
    for (int h : {1, 7, 48, 97, 360, 1080, 4000}) {
      for (int w : {1, 13, 64, 641, 1920, 7000}) {
        auto size = TargetSize(h, w, budget);
        if (!size.ok()) continue;  // e.g. 1x1 with a tiny budget is still fine; errors are allowed
        EXPECT_EQ(size->first % 48, 0);
        EXPECT_EQ(size->second % 48, 0);
        EXPECT_LE((size->first / 48) * (size->second / 48), budget) << h << "x" << w << " @" << budget;
      }
    }
  }
}

TEST(TargetSizeTest, RejectsBadBudgetsAndSizes) {
  EXPECT_EQ(TargetSize(100, 100, 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TargetSize(0, 100, 70).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TargetSize(100, -3, 70).status().code(), absl::StatusCode::kInvalidArgument);
}

RgbImage Constant(int h, int w, uint8_t v) { return RgbImage{h, w, std::vector<uint8_t>(size_t(h) * w * 3, v)}; }

// Straightforward per-pixel antialiased bicubic (horizontal pass, uint8 rounding, vertical pass),
// one output value at a time: the optimized resize must equal it bit for bit.
double RefCubic(double x) {
  x = std::fabs(x);
  if (x < 1.0) return (1.5 * x - 2.5) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5;
  return 0.0;
}

// Output sample i of a line of `in_size` values read through `at(index)`.
template <typename At>
uint8_t RefSample(int in_size, int out_size, int i, At at) {
  const double scale = static_cast<double>(in_size) / out_size, filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale, center = (i + 0.5) * scale;
  const int taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
  const int n = std::min(std::min(static_cast<int>(center + support + 0.5), in_size) - lo, taps);
  std::vector<double> w(n);
  double total = 0.0;
  for (int j = 0; j < n; ++j) total += (w[j] = RefCubic((j + lo - center + 0.5) / filter_scale));
  float acc = 0.0f;
  for (int j = 0; j < n; ++j) acc += static_cast<float>(total != 0.0 ? w[j] / total : 0.0) * at(lo + j);
  return static_cast<uint8_t>(std::clamp(std::nearbyint(acc), 0.0f, 255.0f));
}

RgbImage RefResize(const RgbImage& src, int out_h, int out_w) {
  RgbImage mid{src.height, out_w, std::vector<uint8_t>(size_t(src.height) * out_w * 3)};
  for (int y = 0; y < src.height; ++y)
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < 3; ++c)
        mid.pixels[(size_t(y) * out_w + x) * 3 + c] =
            out_w == src.width ? src.pixels[(size_t(y) * src.width + x) * 3 + c]
                               : RefSample(src.width, out_w, x, [&](int i) { return src.pixels[(size_t(y) * src.width + i) * 3 + c]; });
  if (out_h == src.height) return mid;
  RgbImage out{out_h, out_w, std::vector<uint8_t>(size_t(out_h) * out_w * 3)};
  for (int y = 0; y < out_h; ++y)
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < 3; ++c)
        out.pixels[(size_t(y) * out_w + x) * 3 + c] =
            RefSample(src.height, out_h, y, [&](int i) { return mid.pixels[(size_t(i) * out_w + x) * 3 + c]; });
  return out;
}

TEST(ResizeTest, EqualsThePerPixelReferenceBitForBit) {
  std::mt19937 rng(7);
  for (auto [in, out] : {std::pair(Size(1080, 1920), Size(288, 528)), std::pair(Size(97, 131), Size(240, 528)),
                         std::pair(Size(333, 50), Size(48, 96)), std::pair(Size(720, 1280), Size(720, 528)),
                         std::pair(Size(31, 700), Size(96, 700))}) {
    RgbImage src = Constant(in.first, in.second, 0);
    // Smooth gradients plus noise: values near the rounding boundaries and the clamps both occur.
    for (size_t i = 0; i < src.pixels.size(); ++i) src.pixels[i] = static_cast<uint8_t>((i / 7) % 256 ^ (rng() & 0x1f));
    const RgbImage got = ResizeBicubicAntialias(src, out.first, out.second);
    const RgbImage want = RefResize(src, out.first, out.second);
    ASSERT_EQ(got.height, out.first);
    ASSERT_EQ(got.width, out.second);
    EXPECT_TRUE(got.pixels == want.pixels) << in.first << "x" << in.second << " -> " << out.first << "x" << out.second;
  }
}

TEST(ResizeTest, KeepsAConstantImageConstant) {
  for (auto [h, w] : {Size(240, 528), Size(1000, 37), Size(30, 30)}) {
    const RgbImage out = ResizeBicubicAntialias(Constant(97, 131, 77), h, w);
    ASSERT_EQ(out.pixels.size(), size_t(h) * w * 3);
    for (uint8_t v : out.pixels) ASSERT_EQ(v, 77);
  }
}

TEST(ResizeTest, SameSizeIsIdentity) {
  RgbImage in = Constant(5, 6, 0);
  for (size_t i = 0; i < in.pixels.size(); ++i) in.pixels[i] = static_cast<uint8_t>(i * 37);
  EXPECT_EQ(ResizeBicubicAntialias(in, 5, 6).pixels, in.pixels);
}

TEST(ResizeTest, DownscalingAveragesLikeAnAntialiasedFilter) {
  // Alternating black/white columns shrunk 4x: antialiasing gives mid grey, not aliasing.
  RgbImage in = Constant(8, 64, 0);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 64; x += 2)
      for (int c = 0; c < 3; ++c) in.pixels[(size_t(y) * 64 + x) * 3 + c] = 255;
  const RgbImage out = ResizeBicubicAntialias(in, 8, 16);
  for (int x = 2; x < 14; ++x) EXPECT_NEAR(out.pixels[(3 * 16 + x) * 3], 128, 3) << x;
}

TEST(ResizeTest, BicubicOvershootsAtEdgesAndClamps) {
  // A step upscaled 4x: a = -0.5 rings, so values near the step leave [0,255] before clamping.
  RgbImage in = Constant(1, 8, 0);
  for (int x = 4; x < 8; ++x)
    for (int c = 0; c < 3; ++c) in.pixels[x * 3 + c] = 200;
  const RgbImage out = ResizeBicubicAntialias(in, 1, 32);
  int max_v = 0;
  for (int x = 0; x < 32; ++x) max_v = std::max<int>(max_v, out.pixels[x * 3]);
  EXPECT_GT(max_v, 200);  // overshoot exists
  EXPECT_EQ(out.pixels[0], 0);
  EXPECT_EQ(out.pixels[31 * 3], 200);
}

}  // namespace
}  // namespace avserve::ingest
