// Lays decoded 16 kHz mono audio on the media timeline and cuts it into 640-sample (40 ms) frames.
// Sample i of the timeline is media time i / 16000 s; audio that starts late is preceded by zeros.
#pragma once

#include <cstdint>
#include <vector>

#include "ingest/media_types.h"

namespace avserve::ingest {

class AudioFramer {
 public:
  // Appends samples whose first one is at media time start_us. The first call places the audio
  // on the timeline (zeros before it; samples before time 0 are dropped); later calls continue
  // where the last one ended unless start_us jumps more than 100 ms ahead (a gap: filled with zeros).
  void Append(int64_t start_us, const float* samples, size_t count);
  // No more audio: the last frame is zero-padded.
  void Finish() { finished_ = true; }
  bool finished() const { return finished_; }
  // Timeline samples received so far (including zero fill).
  int64_t end_sample() const { return base_ + static_cast<int64_t>(buffer_.size()); }
  // Number of 640-sample frames in total; valid once finished.
  int64_t total_frames() const { return (end_sample() + kAudioFrameSamples - 1) / kAudioFrameSamples; }
  // Frames [first, last) of the timeline, zero-padded past the end; frees everything before them.
  AudioFrames Take(int64_t first, int64_t last);
  // Frees the samples before timeline sample `sample` that no Take will ask for (amortized).
  void DropBefore(int64_t sample);

 private:
  void Fill(int64_t count);

  bool started_ = false;
  bool finished_ = false;
  int64_t base_ = 0;            // timeline index of buffer_[0]
  std::vector<float> buffer_;   // [samples] mono 16 kHz
};

}  // namespace avserve::ingest
