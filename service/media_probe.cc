#include "service/media_probe.h"

#include "absl/status/status.h"

#if AVSERVE_HAVE_INGEST
#include "ingest/media_reader.h"
#endif

namespace avserve::service {

absl::StatusOr<ingest::MediaProbe> ProbeMediaFile(const std::string& path) {
#if AVSERVE_HAVE_INGEST
  auto probe = ingest::ProbeFile(path);
  if (!probe.ok()) return absl::InvalidArgumentError(probe.status().message());
  if (!probe->has_video && !probe->has_audio) {
    return absl::InvalidArgumentError("media has neither a video nor an audio stream");
  }
  return probe;
#else
  return absl::UnimplementedError("this avserve was built without ingest/ (no media probing)");
#endif
}

}  // namespace avserve::service
