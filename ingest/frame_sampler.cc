#include "ingest/frame_sampler.h"

#include <algorithm>

extern "C" {
#include <libavutil/mathematics.h>
}

#include "engine/base/check.h"
#include "ingest/media_types.h"

namespace avserve::ingest {

SampleClock::SampleClock(double fps) {
  AVSERVE_CHECK(fps > 0);
  fps_ = av_d2q(fps, 1001000);
  AVSERVE_CHECK(fps_.num > 0 && fps_.den > 0);
}

int64_t SampleClock::SegmentStartUs(int64_t k) const {
  return av_rescale_rnd(k, int64_t{1000000} * fps_.den, fps_.num, AV_ROUND_NEAR_INF);
}

int64_t SampleClock::CeilIndex(int64_t ticks, AVRational time_base) const {
  // k >= ticks * tb.num / tb.den * fps.num / fps.den; av_rescale_rnd needs a >= 0, so mirror.
  const int64_t b = int64_t{time_base.num} * fps_.num;
  const int64_t c = int64_t{time_base.den} * fps_.den;
  if (ticks >= 0) return av_rescale_rnd(ticks, b, c, AV_ROUND_UP);
  return -av_rescale_rnd(-ticks, b, c, AV_ROUND_DOWN);
}

int64_t SampleClock::SegmentCount(int64_t duration_us) const {
  if (duration_us <= 0) return 0;
  return CeilIndex(duration_us, AVRational{1, 1000000});
}

int64_t SampleClock::FirstAudioFrame(int64_t k) const {
  // j * kAudioFrameUs >= k * 1e6 * den / num  <=>  j >= k * (1e6 / 40000) * den / num.
  return av_rescale_rnd(k, int64_t{1000000 / kAudioFrameUs} * fps_.den, fps_.num, AV_ROUND_UP);
}

bool IsOnScreenAtSample(const SampleClock& clock, AVRational time_base, int64_t pts, int64_t next_pts,
                        int64_t first_sample) {
  const int64_t first = std::max<int64_t>(clock.CeilIndex(pts, time_base), std::max<int64_t>(first_sample, 0));
  return first < clock.CeilIndex(next_pts, time_base);
}

std::pair<int64_t, int64_t> FrameSampler::Push(int64_t pts) {
  if (!has_candidate_) {
    has_candidate_ = true;
    candidate_pts_ = pts;
    return {next_segment_, next_segment_};
  }
  // Samples strictly before the new frame still show the candidate.
  const int64_t end = std::max(clock_.CeilIndex(pts, time_base_), next_segment_);
  const std::pair<int64_t, int64_t> range{next_segment_, end};
  next_segment_ = end;
  candidate_pts_ = pts;
  return range;
}

}  // namespace avserve::ingest
