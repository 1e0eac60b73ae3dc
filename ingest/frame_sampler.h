// Which decoded frame each segment gets (design.md §2): the frame on screen at t_k = k / fps,
// i.e. the last frame whose presentation time is <= t_k, compared exactly in rational time
// (the ffmpeg CLI's `fps=1:round=up` choice). Plain classes, no FFmpeg decoding inside.
#pragma once

#include <cstdint>
#include <utility>

extern "C" {
#include <libavutil/rational.h>
}

namespace avserve::ingest {

// Sample times t_k = k / fps relative to the media origin, in exact integer arithmetic.
class SampleClock {
 public:
  // fps must be positive; it is approximated as a rational with a denominator <= 1001000.
  explicit SampleClock(double fps);
  AVRational fps() const { return fps_; }
  // t_k in microseconds, rounded to nearest.
  int64_t SegmentStartUs(int64_t k) const;
  // Smallest k with t_k >= ticks * time_base (k may be <= 0 for times <= 0).
  int64_t CeilIndex(int64_t ticks, AVRational time_base) const;
  // Number of segments covering [0, duration_us): ceil(duration * fps).
  int64_t SegmentCount(int64_t duration_us) const;
  // First 40 ms audio frame j of segment k: the smallest j with j * 40 ms >= t_k.
  int64_t FirstAudioFrame(int64_t k) const;

 private:
  AVRational fps_;
};

// Whether a frame shown over [pts, next_pts) (ticks relative to the origin) is on screen at a
// sample time t_k with k >= first_sample (>= 0).
bool IsOnScreenAtSample(const SampleClock& clock, AVRational time_base, int64_t pts, int64_t next_pts,
                        int64_t first_sample = 0);

// Feed frames in presentation order; learn which segments each frame is chosen for.
class FrameSampler {
 public:
  FrameSampler(const SampleClock& clock, AVRational time_base) : clock_(clock), time_base_(time_base) {}

  // A new frame with pts (ticks relative to the origin) arrives. Returns the segments [first, last)
  // whose frame is the previous frame (empty for the very first frame, which then also covers the
  // samples before it: a stream that starts late shows its first frame from t_0). The new frame
  // becomes the candidate for the following samples.
  std::pair<int64_t, int64_t> Push(int64_t pts);
  // The first segment not yet given a frame.
  int64_t next_segment() const { return next_segment_; }
  bool has_candidate() const { return has_candidate_; }
  int64_t candidate_pts() const { return candidate_pts_; }

 private:
  SampleClock clock_;
  AVRational time_base_;
  bool has_candidate_ = false;
  int64_t candidate_pts_ = 0;
  int64_t next_segment_ = 0;
};

}  // namespace avserve::ingest
