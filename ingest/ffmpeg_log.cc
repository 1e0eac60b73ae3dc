#include "ingest/ffmpeg_log.h"

#include <cstdarg>
#include <cstdio>

namespace avserve::ingest {
namespace {

thread_local FfmpegErrorLog* t_thread_log = nullptr;

// The FfmpegErrorLog a log context belongs to, if it is one of our demuxers or decoders.
FfmpegErrorLog* LogOf(void* avcl) {
  if (avcl != nullptr) {
    const AVClass* cls = *static_cast<const AVClass**>(avcl);
    if (cls == avcodec_get_class()) return static_cast<FfmpegErrorLog*>(static_cast<AVCodecContext*>(avcl)->opaque);
    if (cls == avformat_get_class()) return static_cast<FfmpegErrorLog*>(static_cast<AVFormatContext*>(avcl)->opaque);
  }
  return t_thread_log;
}

void LogHook(void* avcl, int level, const char* fmt, va_list args) {
  if (level <= AV_LOG_ERROR) {
    if (FfmpegErrorLog* log = LogOf(avcl); log != nullptr) {
      va_list copy;
      va_copy(copy, args);
      char line[512];
      int print_prefix = 0;  // no "[name @ 0x...]": addresses make poor error messages
      av_log_format_line2(avcl, level, fmt, copy, line, sizeof(line), &print_prefix);
      va_end(copy);
      std::string message(line);
      if (avcl != nullptr) {
        const AVClass* cls = *static_cast<const AVClass**>(avcl);
        if (cls != nullptr && cls->item_name != nullptr) message = std::string(cls->item_name(avcl)) + ": " + message;
      }
      while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
      log->Record(message);
    }
  }
  av_log_default_callback(avcl, level, fmt, args);
}

}  // namespace

FfmpegErrorLog::FfmpegErrorLog() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_callback(&LogHook); });
}

void FfmpegErrorLog::Record(const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (first_.empty()) first_ = message;
}

std::string FfmpegErrorLog::TakeFirst() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out.swap(first_);
  return out;
}

ScopedThreadErrorLog::ScopedThreadErrorLog(FfmpegErrorLog* log) : previous_(t_thread_log) { t_thread_log = log; }
ScopedThreadErrorLog::~ScopedThreadErrorLog() { t_thread_log = previous_; }

}  // namespace avserve::ingest
