// Token-budget target size (spec §2.1) and antialiased bicubic resizing (PIL / torchvision
// `resize(..., BICUBIC, antialias=True)`, cubic a = -0.5), the resize transformers applies.
#pragma once

#include <utility>

#include "absl/status/statusor.h"
#include "ingest/rgb_image.h"

namespace avserve::ingest {

// True for the budgets the model supports: 70, 140, 280, 560, 1120.
bool IsValidBudget(int budget);

// Declared in media_reader.h as part of the public API; defined in resize.cc.
absl::StatusOr<std::pair<int, int>> TargetSize(int height, int width, int budget);

// Resizes `src` to out_height x out_width. Horizontal pass first, rounded to uint8 in between,
// then the vertical pass (the order and rounding of torchvision's uint8 path). Returns a copy of
// `src` when the size does not change.
RgbImage ResizeBicubicAntialias(const RgbImage& src, int out_height, int out_width);

}  // namespace avserve::ingest
