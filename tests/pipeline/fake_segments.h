// Segments as ingest's MediaReader produces them (media_reader.h contract), synthesized without
// FFmpeg: segment k covers [t_k, t_{k+1}), audio frame j belongs to the segment containing j*40 ms,
// the last audio frame is zero-padded. Patch values encode (segment, patch) so tests can track them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ingest/frame_sampler.h"
#include "ingest/media_types.h"

namespace avserve::testing {

struct FakeMedia {
  int64_t duration_us = 0;
  double fps = 1.0;
  int grid_rows = 0, grid_cols = 0;  // 0: no video
  bool audio = false;
};

inline int64_t FakeAudioFrames(const FakeMedia& media) {
  if (!media.audio) return 0;
  const int64_t samples = (media.duration_us * ingest::kAudioSampleRateHz + 999999) / 1000000;
  return (samples + ingest::kAudioFrameSamples - 1) / ingest::kAudioFrameSamples;
}

inline std::vector<ingest::Segment> MakeFakeSegments(const FakeMedia& media) {
  const ingest::SampleClock clock(media.fps);
  const int64_t num_segments = clock.SegmentCount(media.duration_us);
  const int64_t audio_frames = FakeAudioFrames(media);
  std::vector<ingest::Segment> segments;
  for (int64_t k = 0; k < num_segments; ++k) {
    ingest::Segment seg;
    seg.index = k;
    seg.start_us = clock.SegmentStartUs(k);
    seg.end_us = clock.SegmentStartUs(k + 1);
    if (media.grid_rows > 0) {
      ingest::VideoFrame frame;
      frame.sample_us = frame.pts_us = seg.start_us;
      frame.grid_rows = media.grid_rows;
      frame.grid_cols = media.grid_cols;
      const int n = media.grid_rows * media.grid_cols;
      frame.patches.resize(static_cast<size_t>(n) * ingest::kPatchDim);
      for (int p = 0; p < n; ++p) {
        std::fill_n(frame.patches.begin() + static_cast<size_t>(p) * ingest::kPatchDim, ingest::kPatchDim,
                    static_cast<float>(k * 1000 + p));
      }
      seg.frame = std::move(frame);
    }
    const int64_t first = std::min(clock.FirstAudioFrame(k), audio_frames);
    const int64_t last = std::min(clock.FirstAudioFrame(k + 1), audio_frames);
    seg.audio.start_us = first * ingest::kAudioFrameUs;
    seg.audio.num_frames = static_cast<int>(last - first);
    for (int64_t j = first; j < last; ++j) {
      seg.audio.samples.insert(seg.audio.samples.end(), ingest::kAudioFrameSamples, static_cast<float>(j));
    }
    segments.push_back(std::move(seg));
  }
  return segments;
}

}  // namespace avserve::testing
