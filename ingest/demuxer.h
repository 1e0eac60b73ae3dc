// Opens a container (file or ByteSource), probes it, validates it against avserve's limits and
// hands out packets of the chosen video and audio streams in file order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/byte_source_io.h"
#include "ingest/ffmpeg_log.h"
#include "ingest/ffmpeg_raii.h"
#include "ingest/media_types.h"

namespace avserve::ingest {

// Limits on outside input, checked before anything is allocated for it.
inline constexpr int kMaxFrameSide = 16384;                       // pixels
inline constexpr int64_t kMaxFramePixels = int64_t{8192} * 8192;   // 67 Mpx (8K is 33 Mpx)
inline constexpr int64_t kMaxDurationUs = int64_t{24} * 3600 * 1000000;  // 24 hours
inline constexpr int kMaxAudioChannels = 64;
inline constexpr int kMaxAudioSampleRateHz = 768000;

class Demuxer {
 public:
  static absl::StatusOr<std::unique_ptr<Demuxer>> OpenFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Demuxer>> OpenSource(std::unique_ptr<ByteSource> source);

  const MediaProbe& probe() const { return probe_; }
  AVFormatContext* format() const { return format_.get(); }
  int video_index() const { return video_index_; }  // -1 without video
  int audio_index() const { return audio_index_; }  // -1 without audio
  AVStream* stream(int index) const { return format_->streams[index]; }
  // Error messages FFmpeg logged for this media (the decoders attach to it too).
  FfmpegErrorLog* error_log() const { return log_.get(); }

  // Reads the next packet of any stream into `packet` (the caller unrefs it).
  // Returns false at the end of the input.
  absl::StatusOr<bool> ReadPacket(AVPacket* packet);

 private:
  Demuxer() = default;
  absl::Status Open(const std::string& url);
  absl::Status ChooseStreams();
  absl::Status FillProbe();

  std::unique_ptr<FfmpegErrorLog> log_ = std::make_unique<FfmpegErrorLog>();
  std::unique_ptr<ByteSourceIo> io_;  // set for OpenSource; outlives format_ (declared first)
  UniqueAVFormatContext format_;
  int video_index_ = -1;
  int audio_index_ = -1;
  MediaProbe probe_;
};

// Display rotation of a stream in degrees clockwise (0, 90, 180 or 270), as the ffmpeg CLI reads it.
int StreamRotationDegrees(const AVStream* stream);

}  // namespace avserve::ingest
