// RAII owners for FFmpeg objects. This is the only file that names the av_*_free functions
// (style.md §5): every other file holds FFmpeg objects through these aliases.
#pragma once

#include <memory>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavformat/avio.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libavutil/mem.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}

namespace avserve::ingest {

// Deleter for free functions taking T** (they also null the pointer).
template <typename T, void (*Fn)(T**)>
struct PtrPtrDeleter {
  void operator()(T* p) const {
    if (p != nullptr) Fn(&p);
  }
};

// Deleter for free functions taking T*.
template <typename T, void (*Fn)(T*)>
struct PtrDeleter {
  void operator()(T* p) const {
    if (p != nullptr) Fn(p);
  }
};

inline void FreeAvioContext(AVIOContext** ctx) {
  // The AVIOContext owns its buffer only through ctx->buffer (it may have been reallocated).
  if (*ctx != nullptr) av_freep(&(*ctx)->buffer);
  avio_context_free(ctx);
}

using UniqueAVFormatContext =
    std::unique_ptr<AVFormatContext, PtrPtrDeleter<AVFormatContext, avformat_close_input>>;
using UniqueAVCodecContext =
    std::unique_ptr<AVCodecContext, PtrPtrDeleter<AVCodecContext, avcodec_free_context>>;
using UniqueAVFrame = std::unique_ptr<AVFrame, PtrPtrDeleter<AVFrame, av_frame_free>>;
using UniqueAVPacket = std::unique_ptr<AVPacket, PtrPtrDeleter<AVPacket, av_packet_free>>;
using UniqueSwsContext = std::unique_ptr<SwsContext, PtrDeleter<SwsContext, sws_freeContext>>;
using UniqueSwrContext = std::unique_ptr<SwrContext, PtrPtrDeleter<SwrContext, swr_free>>;
using UniqueAVIOContext = std::unique_ptr<AVIOContext, PtrPtrDeleter<AVIOContext, FreeAvioContext>>;

// A buffer from av_malloc, released with av_free.
struct AvFreeDeleter {
  void operator()(void* p) const { av_free(p); }
};
using UniqueAvBuffer = std::unique_ptr<uint8_t, AvFreeDeleter>;

// Unrefs a packet at the end of a scope (the packet object itself is reused).
class PacketRef {
 public:
  explicit PacketRef(AVPacket* packet) : packet_(packet) {}
  ~PacketRef() { av_packet_unref(packet_); }
  PacketRef(const PacketRef&) = delete;
  PacketRef& operator=(const PacketRef&) = delete;
  AVPacket* get() const { return packet_; }

 private:
  AVPacket* packet_;
};

inline UniqueAVFrame MakeFrame() { return UniqueAVFrame(av_frame_alloc()); }
inline UniqueAVPacket MakePacket() { return UniqueAVPacket(av_packet_alloc()); }

// The av_strerror text of an FFmpeg error code.
inline std::string AvErrorString(int errnum) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(errnum, buf, sizeof(buf));
  return std::string(buf);
}

}  // namespace avserve::ingest
