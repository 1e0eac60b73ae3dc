#include "ingest/patchify.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ingest/media_types.h"

namespace avserve::ingest {

absl::StatusOr<std::vector<float>> Patchify(const RgbImage& image) {
  if (image.height <= 0 || image.width <= 0 || image.height % kPatchSide != 0 ||
      image.width % kPatchSide != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("patchify needs sides that are multiples of 48, got ", image.width, "x", image.height));
  }
  if (image.pixels.size() != static_cast<size_t>(image.height) * image.width * 3) {
    return absl::InvalidArgumentError("patchify: pixel buffer does not match the image size");
  }
  const int rows = image.height / kPatchSide;
  const int cols = image.width / kPatchSide;
  constexpr float kScale = 1.0f / 255.0f;
  constexpr int kRowFloats = kPatchSide * 3;  // one patch row, HWC
  std::vector<float> patches(static_cast<size_t>(rows) * cols * kPatchDim);  // [rows*cols, 6912]
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      float* dst = &patches[(static_cast<size_t>(r) * cols + c) * kPatchDim];
      for (int y = 0; y < kPatchSide; ++y) {
        // A patch row is contiguous in the image: 48 pixels x 3 channels.
        const uint8_t* src = &image.pixels[((static_cast<size_t>(r) * kPatchSide + y) * image.width +
                                            static_cast<size_t>(c) * kPatchSide) * 3];
        for (int i = 0; i < kRowFloats; ++i) dst[y * kRowFloats + i] = src[i] * kScale;
      }
    }
  }
  return patches;
}

}  // namespace avserve::ingest
