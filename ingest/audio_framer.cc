#include "ingest/audio_framer.h"

#include <algorithm>

extern "C" {
#include <libavutil/mathematics.h>
}

namespace avserve::ingest {
namespace {
constexpr int64_t kGapSamples = kAudioSampleRateHz / 10;  // 100 ms
}  // namespace

void AudioFramer::Fill(int64_t count) { buffer_.insert(buffer_.end(), static_cast<size_t>(count), 0.0f); }

void AudioFramer::Append(int64_t start_us, const float* samples, size_t count) {
  const int64_t start = av_rescale_rnd(start_us, kAudioSampleRateHz, 1000000, AV_ROUND_NEAR_INF);
  if (!started_) {
    started_ = true;
    if (start > end_sample()) Fill(start - end_sample());
    if (start < 0) {  // drop what precedes media time 0
      const size_t drop = static_cast<size_t>(std::min<int64_t>(-start, static_cast<int64_t>(count)));
      samples += drop;
      count -= drop;
    }
  } else if (start > end_sample() + kGapSamples) {
    Fill(start - end_sample());
  }
  buffer_.insert(buffer_.end(), samples, samples + count);
}

AudioFrames AudioFramer::Take(int64_t first, int64_t last) {
  AudioFrames out;
  out.start_us = first * kAudioFrameUs;
  out.num_frames = static_cast<int>(std::max<int64_t>(last - first, 0));
  out.samples.assign(static_cast<size_t>(out.num_frames) * kAudioFrameSamples, 0.0f);
  const int64_t from = first * kAudioFrameSamples;
  const int64_t to = std::min(last * kAudioFrameSamples, end_sample());
  for (int64_t i = std::max(from, base_); i < to; ++i) {
    out.samples[static_cast<size_t>(i - from)] = buffer_[static_cast<size_t>(i - base_)];
  }
  // Release consumed samples (amortized: only once they are most of the buffer).
  const int64_t consumed = std::clamp<int64_t>(to - base_, 0, static_cast<int64_t>(buffer_.size()));
  if (consumed > 0 && consumed * 2 >= static_cast<int64_t>(buffer_.size())) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + consumed);
    base_ += consumed;
  }
  return out;
}

void AudioFramer::DropBefore(int64_t sample) {
  const int64_t n = std::clamp<int64_t>(sample - base_, 0, static_cast<int64_t>(buffer_.size()));
  if (n > 0 && n * 2 >= static_cast<int64_t>(buffer_.size())) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + n);
    base_ += n;
  }
}

}  // namespace avserve::ingest
