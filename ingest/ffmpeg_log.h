// Turns FFmpeg's error-level log messages into data for our Status messages. FFmpeg reports much
// damage only by logging (a decoder concealing a corrupt slice, a demuxer refusing a picture
// size), so each demuxer/decoder routes its errors to an FfmpegErrorLog: through the context's
// `opaque` pointer (which frame-threading copies keep) or, for messages without an attributable
// context, through the log attached to the calling thread by a ScopedThreadErrorLog.
// Invariant: in this process every AVFormatContext/AVCodecContext `opaque` is null or an
// FfmpegErrorLog that outlives the context (ingest is avserve's only FFmpeg user).
#pragma once

#include <mutex>
#include <string>

#include "ingest/ffmpeg_raii.h"

namespace avserve::ingest {

class FfmpegErrorLog {
 public:
  FfmpegErrorLog();  // installs the process-wide log hook once
  void Attach(AVCodecContext* codec) { codec->opaque = this; }
  void Attach(AVFormatContext* format) { format->opaque = this; }
  void Record(const std::string& message);
  // The first error message recorded since the last call ("" if none); clears it.
  std::string TakeFirst();

 private:
  std::mutex mu_;
  std::string first_;
};

// Attaches `log` to the current thread for the scope (nullptr: none).
class ScopedThreadErrorLog {
 public:
  explicit ScopedThreadErrorLog(FfmpegErrorLog* log);
  ~ScopedThreadErrorLog();
  ScopedThreadErrorLog(const ScopedThreadErrorLog&) = delete;
  ScopedThreadErrorLog& operator=(const ScopedThreadErrorLog&) = delete;

 private:
  FfmpegErrorLog* previous_;
};

}  // namespace avserve::ingest
