#include "service/inference_backend.h"

#include "absl/strings/str_format.h"

namespace avserve::service {

std::string IngestSpec::CacheKey() const {
  return absl::StrFormat("fps=%.6f;budget=%d;layout=%d;audio=%d;video=%d;window=%d-%d", fps, frame_budget,
                         static_cast<int>(layout), use_audio, use_video, start_us, end_us);
}

}  // namespace avserve::service
