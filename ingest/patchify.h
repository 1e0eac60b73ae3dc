// Cuts a resized RGB frame into the model's 48x48 patches (spec §2.1 step 5).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "ingest/rgb_image.h"

namespace avserve::ingest {

// Row-major over the (height/48) x (width/48) grid; each patch is its 48x48x3 block in HWC
// raster order: vec[(y*48 + x)*3 + ch] = pixel[48r + y][48c + x][ch] / 255.
// Fails unless both sides are positive multiples of 48.
absl::StatusOr<std::vector<float>> Patchify(const RgbImage& image);  // [rows*cols, kPatchDim]

}  // namespace avserve::ingest
