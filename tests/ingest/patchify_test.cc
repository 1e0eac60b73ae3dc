#include "ingest/patchify.h"

#include "gtest/gtest.h"
#include "ingest/media_types.h"

namespace avserve::ingest {
namespace {

// A pixel value that identifies its position and channel.
uint8_t Code(int y, int x, int c) { return static_cast<uint8_t>((y * 7 + x * 3 + c * 101) % 251); }

TEST(PatchifyTest, RowMajorGridOfHwcRasterBlocks) {
  const int rows = 2, cols = 3;
  RgbImage image{rows * 48, cols * 48, {}};
  image.pixels.resize(size_t(image.height) * image.width * 3);
  for (int y = 0; y < image.height; ++y)
    for (int x = 0; x < image.width; ++x)
      for (int c = 0; c < 3; ++c) image.pixels[(size_t(y) * image.width + x) * 3 + c] = Code(y, x, c);
  auto patches = Patchify(image);
  ASSERT_TRUE(patches.ok());
  ASSERT_EQ(patches->size(), size_t(rows * cols) * kPatchDim);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      for (int y = 0; y < 48; y += 5)
        for (int x = 0; x < 48; x += 7)
          for (int ch = 0; ch < 3; ++ch) {
            const float v = (*patches)[size_t(r * cols + c) * kPatchDim + (y * 48 + x) * 3 + ch];
            ASSERT_FLOAT_EQ(v, Code(48 * r + y, 48 * c + x, ch) / 255.0f) << r << "," << c << "," << y << "," << x;
          }
}

TEST(PatchifyTest, ValuesSpanZeroToOne) {
  RgbImage image{48, 48, std::vector<uint8_t>(48 * 48 * 3, 255)};
  image.pixels[0] = 0;
  auto patches = Patchify(image);
  ASSERT_TRUE(patches.ok());
  EXPECT_EQ((*patches)[0], 0.0f);
  EXPECT_EQ((*patches)[1], 1.0f);
}

TEST(PatchifyTest, RejectsSidesThatAreNotMultiplesOf48) {
  RgbImage image{50, 48, std::vector<uint8_t>(50 * 48 * 3)};
  EXPECT_EQ(Patchify(image).status().code(), absl::StatusCode::kInvalidArgument);
  RgbImage short_buffer{48, 48, std::vector<uint8_t>(10)};
  EXPECT_EQ(Patchify(short_buffer).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace avserve::ingest
