// Proto <-> typed structs, once, at the edge. Validation of everything a client can send lives here:
// absurd options come back as INVALID_ARGUMENT with the field name in the message.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "avserve/v1/avserve.pb.h"
#include "service/inference_backend.h"
#include "service/media_store.h"

namespace avserve::service {

inline constexpr int kMaxQuestions = 16;
inline constexpr size_t kMaxQuestionBytes = 8192;
inline constexpr int kMaxNewTokensLimit = 8192;

absl::StatusOr<IngestSpec> ParseIngestOptions(const v1::IngestOptions& proto);
absl::StatusOr<SamplingSpec> ParseSamplingOptions(const v1::SamplingOptions& proto);
absl::StatusOr<std::vector<std::string>> ParseQuestions(const google::protobuf::RepeatedPtrField<std::string>& proto);
MediaRef ToMediaRef(const MediaRecord& record);
// The ingest window must lie within the media (checked once the media is known).
absl::Status CheckWindow(const IngestSpec& ingest, const MediaRecord& record);

void ToProto(const MediaRecord& record, v1::MediaInfo* out);

}  // namespace avserve::service
