// Token accounting before any work (design.md §2): from a probe and the options, the exact number
// of tokens the Interleaver will produce, so a request that cannot fit is refused or adapted up
// front. Exact as long as the decoded streams last as long as the probe says (ingest reports
// truncated media as an error); tests/pipeline/token_count_test.cc checks it on generated media.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/model/tokenizer.h"
#include "ingest/media_types.h"
#include "pipeline/interleaver.h"

namespace avserve::pipeline {

// What the stream will hold, from which the count follows (also useful for progress totals).
struct StreamPlan {
  int64_t num_segments = 0;
  int grid_rows = 0, grid_cols = 0;  // 0 x 0 without video
  int64_t num_audio_frames = 0;      // 0 without audio
};

// The plan ingest will follow for `probe` with `options` (segment count, frame grid, audio frames).
absl::StatusOr<StreamPlan> PlanStream(const ingest::MediaProbe& probe, const ingest::IngestOptions& options);

// Exact token count of the media stream (the Interleaver's chunks, excluding prompt prefix/suffix).
absl::StatusOr<int64_t> CountTokens(const ingest::MediaProbe& probe, const ingest::IngestOptions& options,
                                    const StreamOptions& stream, const engine::ModelInfo& info,
                                    const engine::Tokenizer& tokenizer);

// Ingest options for the reference layout: `num_frames` samples spread uniformly over the media
// (fps = num_frames / duration), so the frame on screen at t_i = i * duration / num_frames is
// frame floor(i * T / num_frames) of a constant-rate video of T frames, as transformers picks.
// Error when the media is too short for the sampling to give exactly `num_frames` segments.
absl::StatusOr<ingest::IngestOptions> ReferenceIngestOptions(const ingest::MediaProbe& probe,
                                                             ingest::IngestOptions base, int num_frames = 32);

// The same from a plan (pure; no ingest arithmetic), `fps` giving the segment start times.
int64_t CountPlanTokens(const StreamPlan& plan, double fps, const StreamOptions& stream,
                        const engine::Tokenizer& tokenizer);

}  // namespace avserve::pipeline
