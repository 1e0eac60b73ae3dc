// A decoded RGB picture (tightly packed, HWC) — the unit that resize and patchify work on.
#pragma once

#include <cstdint>
#include <vector>

namespace avserve::ingest {

struct RgbImage {
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3] RGB
};

}  // namespace avserve::ingest
