// Parity with transformers' Gemma4UnifiedImageProcessor (goldens from
// tests/data/ingest/make_image_goldens.py, run on the GPU machine with transformers 5.17):
// same grid for every budget, pixel values within 2/255 mean absolute difference.
#include <cmath>
#include <cstdint>
#include <fstream>

#include "gtest/gtest.h"
#include "ingest/media_reader.h"
#include "ingest/patchify.h"
#include "ingest/resize.h"
#include "nlohmann/json.hpp"
#include "tests/ingest/test_media.h"

namespace avserve::ingest {
namespace {

// The script's test_image(): channel gradients plus 6 bits of hashed noise.
RgbImage TestImage(int height, int width, uint64_t seed) {
  RgbImage image{height, width, std::vector<uint8_t>(size_t(height) * width * 3)};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        uint64_t h = (uint64_t(x) * 374761393u + uint64_t(y) * 668265263u + uint64_t(c) * 1442695040u +
                      seed * 2654435761u) & 0xFFFFFFFFu;
        h = ((h ^ (h >> 13)) * 1274126177u) & 0xFFFFFFFFu;
        h ^= h >> 16;
        const int64_t noise = int64_t(h & 63);
        int64_t base = 0;
        if (c == 0) base = int64_t(x) * 255 / std::max(width - 1, 1);
        if (c == 1) base = int64_t(y) * 255 / std::max(height - 1, 1);
        if (c == 2) base = int64_t(x + y) * 255 / std::max(width + height - 2, 1);
        image.pixels[(size_t(y) * width + x) * 3 + c] = uint8_t(std::min<int64_t>(base * 3 / 4 + noise, 255));
      }
    }
  }
  return image;
}

TEST(ImageParityTest, MatchesTransformersForEveryBudget) {
  const std::string dir = std::string(AVSERVE_SOURCE_DIR) + "/tests/data/ingest/";
  std::ifstream json_file(dir + "image_goldens.json");
  if (!json_file.good()) GTEST_SKIP() << "no goldens: run tests/data/ingest/make_image_goldens.py on the GPU machine";
  const nlohmann::json meta = nlohmann::json::parse(json_file);
  const std::vector<uint8_t> blob = testing::ReadBytes(dir + "image_goldens.bin");
  ASSERT_FALSE(meta["cases"].empty());
  for (const auto& c : meta["cases"]) {
    const int height = c["height"], width = c["width"], budget = c["budget"];
    SCOPED_TRACE(std::to_string(height) + "x" + std::to_string(width) + " @" +
                 std::to_string(budget));
    auto size = TargetSize(height, width, budget);
    ASSERT_TRUE(size.ok()) << size.status();
    const int rows = c["rows"], cols = c["cols"];
    ASSERT_EQ(size->first / 48, rows);
    ASSERT_EQ(size->second / 48, cols);
    const RgbImage resized = ResizeBicubicAntialias(TestImage(height, width, c["seed"].get<uint64_t>()),
                                                    size->first, size->second);
    auto patches = Patchify(resized);
    ASSERT_TRUE(patches.ok());
    // Sampled elements: mean |ours - theirs| <= 2/255 (uint8 units: <= 2).
    const size_t offset = c["offset"], count = c["count"], stride = c["stride"];
    ASSERT_LE(offset + count, blob.size());
    double abs_sum = 0;
    int max_diff = 0;
    for (size_t i = 0; i < count; ++i) {
      const int ours = int(std::lround((*patches)[i * stride] * 255.0f));
      const int diff = std::abs(ours - int(blob[offset + i]));
      abs_sum += diff;
      max_diff = std::max(max_diff, diff);
    }
    EXPECT_LE(abs_sum / count, 2.0) << "max diff " << max_diff;
    // Per-patch means over every element.
    const auto& means = c["patch_means"];
    ASSERT_EQ(means.size(), size_t(rows * cols));
    double mean_err = 0;
    for (size_t p = 0; p < means.size(); ++p) {
      double sum = 0;
      for (int i = 0; i < kPatchDim; ++i) sum += (*patches)[p * kPatchDim + i];
      mean_err += std::fabs(sum / kPatchDim - means[p].get<double>());
    }
    EXPECT_LE(mean_err / means.size(), 2.0 / 255);
  }
}

}  // namespace
}  // namespace avserve::ingest
