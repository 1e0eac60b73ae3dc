// The product InferenceBackend: ingest (MediaReader) -> pipeline (prompt split + Interleaver) ->
// engine (Sequence prefill, Fork per question, Generate), with the media prefix kept in the
// PrefixCache. Engine-thread only (see engine_worker.h), except stats().
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "service/inference_backend.h"
#include "service/server.h"

namespace avserve::service {

absl::StatusOr<std::unique_ptr<InferenceBackend>> CreateModelBackend(const ServerConfig& config);

}  // namespace avserve::service
