// Decodes one audio stream and resamples it to 16 kHz mono float (swresample's default downmix,
// as `ffmpeg -ac 1 -ar 16000` does), handing the samples with their media time to an AudioFramer.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/audio_framer.h"
#include "ingest/ffmpeg_log.h"
#include "ingest/ffmpeg_raii.h"

namespace avserve::ingest {

class AudioDecoder {
 public:
  // origin_us: media time 0 in AV_TIME_BASE units of the container.
  static absl::StatusOr<std::unique_ptr<AudioDecoder>> Open(const AVStream* stream, int64_t origin_us,
                                                            FfmpegErrorLog* log);
  ~AudioDecoder();
  AudioDecoder(const AudioDecoder&) = delete;
  AudioDecoder& operator=(const AudioDecoder&) = delete;

  // Sends one packet (nullptr: end of stream) and moves every decoded frame into `framer`.
  absl::Status Decode(const AVPacket* packet, AudioFramer* framer);
  int64_t samples_out() const { return samples_out_; }

 private:
  AudioDecoder() = default;
  absl::Status ConfigureResampler(const AVFrame* frame);
  absl::Status Convert(const AVFrame* frame, AudioFramer* framer);  // frame == nullptr: flush

  UniqueAVCodecContext codec_;
  UniqueSwrContext swr_;
  UniqueAVFrame frame_ = MakeFrame();
  AVRational time_base_{1, 1};
  int64_t origin_us_ = 0;
  int in_rate_ = 0, in_format_ = -1;
  AVChannelLayout in_layout_{};
  int64_t next_us_ = AV_NOPTS_VALUE;  // media time of the next output sample
  int64_t samples_out_ = 0;
  std::vector<float> out_;            // [samples] resampler output scratch
};

}  // namespace avserve::ingest
