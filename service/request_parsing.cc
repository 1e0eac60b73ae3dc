#include "service/request_parsing.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace avserve::service {

absl::StatusOr<IngestSpec> ParseIngestOptions(const v1::IngestOptions& proto) {
  IngestSpec spec;
  if (proto.fps() != 0) {
    if (!std::isfinite(proto.fps()) || proto.fps() <= 0 || proto.fps() > 30) {
      return absl::InvalidArgumentError(absl::StrCat("ingest.fps must be in (0, 30], got ", proto.fps()));
    }
    spec.fps = proto.fps();
  }
  if (proto.frame_budget() != 0) {
    int b = proto.frame_budget();
    if (b != 70 && b != 140 && b != 280 && b != 560 && b != 1120) {
      return absl::InvalidArgumentError(
          absl::StrCat("ingest.frame_budget must be one of 70, 140, 280, 560, 1120; got ", b));
    }
    spec.frame_budget = b;
  }
  switch (proto.layout()) {
    case v1::LAYOUT_UNSPECIFIED:
    case v1::LAYOUT_INTERLEAVED: spec.layout = PromptLayout::kInterleaved; break;
    case v1::LAYOUT_REFERENCE: spec.layout = PromptLayout::kReference; break;
    default: return absl::InvalidArgumentError(absl::StrCat("unknown ingest.layout ", proto.layout()));
  }
  spec.use_audio = !proto.ignore_audio();
  spec.use_video = !proto.ignore_video();
  if (!spec.use_audio && !spec.use_video) {
    return absl::InvalidArgumentError("ingest ignores both audio and video: nothing to ask about");
  }
  if (proto.start_us() < 0 || proto.end_us() < 0 || (proto.end_us() != 0 && proto.end_us() <= proto.start_us())) {
    return absl::InvalidArgumentError("ingest window must satisfy 0 <= start_us < end_us (end_us 0 = to the end)");
  }
  spec.start_us = proto.start_us();
  spec.end_us = proto.end_us();
  return spec;
}

absl::StatusOr<SamplingSpec> ParseSamplingOptions(const v1::SamplingOptions& proto) {
  SamplingSpec spec;
  if (!std::isfinite(proto.temperature()) || proto.temperature() < 0 || proto.temperature() > 10) {
    return absl::InvalidArgumentError("sampling.temperature must be in [0, 10]");
  }
  spec.temperature = proto.temperature();
  if (proto.top_k() < 0 || proto.top_k() > 1000000) {
    return absl::InvalidArgumentError("sampling.top_k must be in [0, 1000000]");
  }
  spec.top_k = proto.top_k();
  if (!std::isfinite(proto.top_p()) || proto.top_p() < 0 || proto.top_p() > 1) {
    return absl::InvalidArgumentError("sampling.top_p must be in [0, 1]");
  }
  spec.top_p = proto.top_p() == 0 ? 1.0f : proto.top_p();
  spec.seed = proto.seed();
  if (proto.max_new_tokens() < 0 || proto.max_new_tokens() > kMaxNewTokensLimit) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.max_new_tokens must be in [1, ", kMaxNewTokensLimit, "]"));
  }
  if (proto.max_new_tokens() != 0) spec.max_new_tokens = proto.max_new_tokens();
  return spec;
}

absl::StatusOr<std::vector<std::string>> ParseQuestions(
    const google::protobuf::RepeatedPtrField<std::string>& proto) {
  if (proto.empty()) return absl::InvalidArgumentError("at least one question is required");
  if (proto.size() > kMaxQuestions) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxQuestions, " questions per request"));
  }
  std::vector<std::string> out;
  for (const std::string& q : proto) {
    if (q.empty()) return absl::InvalidArgumentError("questions must not be empty");
    if (q.size() > kMaxQuestionBytes) {
      return absl::InvalidArgumentError(absl::StrCat("a question is longer than ", kMaxQuestionBytes, " bytes"));
    }
    out.push_back(q);
  }
  return out;
}

MediaRef ToMediaRef(const MediaRecord& record) {
  MediaRef ref;
  ref.media_id = record.media_id;
  ref.file_path = record.file_path;
  ref.duration_us = record.probe.duration_us;
  ref.has_video = record.probe.has_video;
  ref.has_audio = record.probe.has_audio;
  return ref;
}

absl::Status CheckWindow(const IngestSpec& ingest, const MediaRecord& record) {
  if (record.probe.duration_us > 0 && ingest.start_us >= record.probe.duration_us) {
    return absl::OutOfRangeError(absl::StrCat("ingest.start_us ", ingest.start_us, " is past the end of the media (",
                                              record.probe.duration_us, " us)"));
  }
  if (!ingest.use_audio && !record.probe.has_video) {
    return absl::InvalidArgumentError("media has no video and the request ignores its audio");
  }
  if (!ingest.use_video && !record.probe.has_audio) {
    return absl::InvalidArgumentError("media has no audio and the request ignores its video");
  }
  return absl::OkStatus();
}

void ToProto(const MediaRecord& record, v1::MediaInfo* out) {
  out->set_media_id(record.media_id);
  out->set_source(record.source == MediaSourceKind::kUpload ? v1::MEDIA_SOURCE_UPLOAD : v1::MEDIA_SOURCE_PATH);
  out->set_size_bytes(record.size_bytes);
  out->set_display_name(record.display_name);
  out->set_created_unix_ms(record.created_unix_ms);
  const ingest::MediaProbe& p = record.probe;
  v1::MediaProbe* probe = out->mutable_probe();
  probe->set_container(p.container);
  probe->set_duration_us(p.duration_us);
  probe->set_has_video(p.has_video);
  probe->set_video_codec(p.video_codec);
  probe->set_width(p.width);
  probe->set_height(p.height);
  probe->set_avg_frame_rate(p.avg_frame_rate);
  probe->set_has_audio(p.has_audio);
  probe->set_audio_codec(p.audio_codec);
  probe->set_audio_sample_rate_hz(p.audio_sample_rate_hz);
  probe->set_audio_channels(p.audio_channels);
  probe->set_rotation_deg(p.rotation_deg);
}

}  // namespace avserve::service
