// Decodes one video stream (threaded) and converts chosen frames to RGB at their displayed size.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/ffmpeg_log.h"
#include "ingest/ffmpeg_raii.h"
#include "ingest/rgb_image.h"

namespace avserve::ingest {

class VideoDecoder {
 public:
  // threads: 0 = FFmpeg's choice. rotation_deg: 0/90/180/270 clockwise, applied by ToRgb.
  // Error-level log messages of the decoder go to `log` (may be nullptr).
  static absl::StatusOr<std::unique_ptr<VideoDecoder>> Open(const AVStream* stream, int threads,
                                                            int rotation_deg, FfmpegErrorLog* log);

  // Sends one packet; nullptr starts draining at the end of the stream.
  absl::Status Send(const AVPacket* packet);
  // Receives the next decoded frame into `frame`; false when more input is needed or drained.
  absl::StatusOr<bool> Receive(AVFrame* frame);

  // RGB24 at the frame's size, converted as the ffmpeg CLI's auto-inserted scaler does
  // (swscale bicubic, the frame's matrix and range, full-range RGB), then rotated.
  absl::StatusOr<RgbImage> ToRgb(const AVFrame* frame);

 private:
  VideoDecoder() = default;
  UniqueAVCodecContext codec_;
  UniqueSwsContext sws_;
  int rotation_deg_ = 0;
};

// Rotates an RGB image clockwise by 90, 180 or 270 degrees (0 returns it unchanged).
RgbImage RotateClockwise(RgbImage image, int degrees);

}  // namespace avserve::ingest
