#include "pipeline/token_count.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "ingest/frame_sampler.h"
#include "ingest/media_reader.h"

namespace avserve::pipeline {
absl::StatusOr<StreamPlan> PlanStream(const ingest::MediaProbe& probe, const ingest::IngestOptions& options) {
  if (!(options.fps > 0)) return absl::InvalidArgumentError(absl::StrCat("fps must be > 0, got ", options.fps));
  if (probe.duration_us <= 0) return absl::InvalidArgumentError("media has no known duration");
  const bool video = options.use_video && probe.has_video;
  const bool audio = options.use_audio && probe.has_audio;
  if (!video && !audio) return absl::InvalidArgumentError("nothing to ingest: no selected stream in media");
  StreamPlan plan;
  plan.num_segments = ingest::SampleClock(options.fps).SegmentCount(probe.duration_us);
  if (video) {
    ASSIGN_OR_RETURN(const auto size, ingest::TargetSize(probe.height, probe.width, options.frame_budget));
    plan.grid_rows = size.first / ingest::kPatchSide;
    plan.grid_cols = size.second / ingest::kPatchSide;
  }
  if (audio) {
    // ceil(samples / 640) frames for the 16 kHz soundtrack of the whole duration.
    const int64_t samples = (probe.duration_us * ingest::kAudioSampleRateHz + 999999) / 1000000;
    plan.num_audio_frames = (samples + ingest::kAudioFrameSamples - 1) / ingest::kAudioFrameSamples;
  }
  return plan;
}

int64_t CountPlanTokens(const StreamPlan& plan, double fps, const StreamOptions& stream,
                        const engine::Tokenizer& tokenizer) {
  const ingest::SampleClock clock(fps);  // segment times and audio ownership exactly as ingest's
  const int64_t frame_tokens = plan.grid_rows * plan.grid_cols > 0 ? plan.grid_rows * plan.grid_cols + 2 : 0;
  int64_t total = 0;
  if (stream.layout == Layout::kReference) {
    for (int64_t k = 0; frame_tokens > 0 && k < plan.num_segments; ++k) {
      total += static_cast<int64_t>(TimestampIds(tokenizer, k, clock.SegmentStartUs(k)).size()) + frame_tokens;
    }
    if (plan.num_audio_frames > 0) {
      total += static_cast<int64_t>(tokenizer.Encode("\n\n").size()) + plan.num_audio_frames + 2;
    }
    return total;
  }
  for (int64_t k = 0; k < plan.num_segments; ++k) {
    total += static_cast<int64_t>(TimestampIds(tokenizer, k, clock.SegmentStartUs(k)).size()) + frame_tokens;
    const int64_t first = std::min(clock.FirstAudioFrame(k), plan.num_audio_frames);
    const int64_t last = std::min(clock.FirstAudioFrame(k + 1), plan.num_audio_frames);
    if (last > first) total += last - first + 2;
  }
  return total;
}

absl::StatusOr<ingest::IngestOptions> ReferenceIngestOptions(const ingest::MediaProbe& probe,
                                                             ingest::IngestOptions base, int num_frames) {
  if (num_frames <= 0) return absl::InvalidArgumentError("reference layout needs at least one frame");
  if (probe.duration_us <= 0) return absl::InvalidArgumentError("media has no known duration");
  base.fps = num_frames / (static_cast<double>(probe.duration_us) / 1e6);
  const int64_t segments = ingest::SampleClock(base.fps).SegmentCount(probe.duration_us);
  if (segments != num_frames) {
    return absl::InvalidArgumentError(absl::StrCat("cannot sample exactly ", num_frames, " frames from ",
                                                   probe.duration_us, " us of media (got ", segments, ")"));
  }
  return base;
}

absl::StatusOr<int64_t> CountTokens(const ingest::MediaProbe& probe, const ingest::IngestOptions& options,
                                    const StreamOptions& stream, const engine::ModelInfo& info,
                                    const engine::Tokenizer& tokenizer) {
  ASSIGN_OR_RETURN(const StreamPlan plan, PlanStream(probe, options));
  return CountPlanTokens(plan, options.fps, stream, tokenizer);
}

}  // namespace avserve::pipeline
