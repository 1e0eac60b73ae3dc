// The product prober: ingest's ProbeFile, plus the checks the service adds (something to ingest).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ingest/media_types.h"

namespace avserve::service {

// INVALID_ARGUMENT for files no demuxer accepts, or with neither a video nor an audio stream.
// UNIMPLEMENTED when avserve was built without ingest/.
absl::StatusOr<ingest::MediaProbe> ProbeMediaFile(const std::string& path);

}  // namespace avserve::service
