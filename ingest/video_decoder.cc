#include "ingest/video_decoder.h"

#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ingest/demuxer.h"

extern "C" {
#include <libavutil/pixdesc.h>
}

namespace avserve::ingest {

absl::StatusOr<std::unique_ptr<VideoDecoder>> VideoDecoder::Open(const AVStream* stream, int threads,
                                                                 int rotation_deg, FfmpegErrorLog* log) {
  const AVCodec* codec = avcodec_find_decoder(stream->codecpar->codec_id);
  if (codec == nullptr) {
    return absl::UnimplementedError(absl::StrCat("unsupported video codec '",
                                                 avcodec_get_name(stream->codecpar->codec_id), "'"));
  }
  std::unique_ptr<VideoDecoder> dec(new VideoDecoder());
  dec->codec_.reset(avcodec_alloc_context3(codec));
  if (dec->codec_ == nullptr) return absl::ResourceExhaustedError("cannot allocate video decoder");
  AVCodecContext* ctx = dec->codec_.get();
  int ret = avcodec_parameters_to_context(ctx, stream->codecpar);
  if (ret < 0) return absl::InvalidArgumentError(absl::StrCat("bad video parameters: ", AvErrorString(ret)));
  ctx->pkt_timebase = stream->time_base;
  if (log != nullptr) log->Attach(ctx);
  ctx->thread_count = threads;
  ctx->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
  ctx->max_pixels = kMaxFramePixels;  // the decoder refuses larger pictures before allocating
  ret = avcodec_open2(ctx, codec, nullptr);
  if (ret < 0) return absl::InvalidArgumentError(absl::StrCat("cannot open video decoder: ", AvErrorString(ret)));
  dec->rotation_deg_ = rotation_deg;
  return dec;
}

absl::Status VideoDecoder::Send(const AVPacket* packet) {
  const int ret = avcodec_send_packet(codec_.get(), packet);
  if (ret == 0 || ret == AVERROR_EOF) return absl::OkStatus();
  if (ret == AVERROR(EAGAIN)) return absl::InternalError("video decoder did not accept a packet (EAGAIN)");
  return absl::DataLossError(absl::StrCat("video decoding failed: ", AvErrorString(ret)));
}

absl::StatusOr<bool> VideoDecoder::Receive(AVFrame* frame) {
  const int ret = avcodec_receive_frame(codec_.get(), frame);
  if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return false;
  if (ret < 0) return absl::DataLossError(absl::StrCat("video decoding failed: ", AvErrorString(ret)));
  if (frame->decode_error_flags != 0 || (frame->flags & AV_FRAME_FLAG_CORRUPT) != 0) {
    return absl::DataLossError("video decoding failed: corrupt frame");
  }
  return true;
}

absl::StatusOr<RgbImage> VideoDecoder::ToRgb(const AVFrame* frame) {
  const int w = frame->width, h = frame->height;
  if (w <= 0 || h <= 0 || w > kMaxFrameSide || h > kMaxFrameSide || int64_t{w} * h > kMaxFramePixels) {
    return absl::InvalidArgumentError(absl::StrCat("decoded frame size ", w, "x", h, " is out of range"));
  }
  const auto format = static_cast<AVPixelFormat>(frame->format);
  sws_.reset(sws_getCachedContext(sws_.release(), w, h, format, w, h, AV_PIX_FMT_RGB24, SWS_BICUBIC,
                                  nullptr, nullptr, nullptr));
  if (sws_ == nullptr) {
    return absl::UnimplementedError(absl::StrCat("cannot convert pixel format ",
                                                 av_get_pix_fmt_name(format) ? av_get_pix_fmt_name(format) : "?"));
  }
  // Match the CLI's scale filter: the frame's YUV matrix (BT.601 when unspecified) and range.
  int colorspace = frame->colorspace;
  if (colorspace < 1 || colorspace > 10 || colorspace == 8) colorspace = AVCOL_SPC_BT470BG;  // as vf_scale
  const int* coefficients = sws_getCoefficients(colorspace);
  const int src_full_range = frame->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
  sws_setColorspaceDetails(sws_.get(), coefficients, src_full_range, sws_getCoefficients(SWS_CS_DEFAULT),
                           /*dstRange=*/1, 0, 1 << 16, 1 << 16);
  // swscale's SIMD code writes whole blocks of pixels, past the end of a row whose width is not a multiple of the
  // block (valgrind: 8 bytes past a 200x100 RGB buffer; 426-pixel-wide 240p video too: heap corruption). It
  // writes into a frame buffer with FFmpeg's own row alignment and padding; the rows are then copied out.
  UniqueAVFrame rgb = MakeFrame();
  if (rgb == nullptr) return absl::ResourceExhaustedError("cannot allocate an RGB frame");
  rgb->format = AV_PIX_FMT_RGB24;
  rgb->width = w;
  rgb->height = h;
  if (av_frame_get_buffer(rgb.get(), 0) < 0) return absl::ResourceExhaustedError("cannot allocate an RGB frame");
  const int rows = sws_scale(sws_.get(), frame->data, frame->linesize, 0, h, rgb->data, rgb->linesize);
  if (rows != h) return absl::InternalError("pixel format conversion failed");
  const size_t row_bytes = static_cast<size_t>(w) * 3;
  RgbImage image{h, w, std::vector<uint8_t>(row_bytes * h)};
  for (int y = 0; y < h; ++y) {
    std::memcpy(image.pixels.data() + y * row_bytes, rgb->data[0] + static_cast<ptrdiff_t>(y) * rgb->linesize[0],
                row_bytes);
  }
  return RotateClockwise(std::move(image), rotation_deg_);
}

RgbImage RotateClockwise(RgbImage image, int degrees) {
  if (degrees != 90 && degrees != 180 && degrees != 270) return image;
  const int h = image.height, w = image.width;
  const bool swap = degrees != 180;
  RgbImage out{swap ? w : h, swap ? h : w, std::vector<uint8_t>(image.pixels.size())};
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      int oy = 0, ox = 0;
      if (degrees == 90) {  // clockwise: (x, y) -> (h-1-y, x)
        oy = x;
        ox = h - 1 - y;
      } else if (degrees == 180) {
        oy = h - 1 - y;
        ox = w - 1 - x;
      } else {  // 270 clockwise = 90 counter-clockwise: (x, y) -> (y, w-1-x)
        oy = w - 1 - x;
        ox = y;
      }
      const uint8_t* src = &image.pixels[(static_cast<size_t>(y) * w + x) * 3];
      uint8_t* dst = &out.pixels[(static_cast<size_t>(oy) * out.width + ox) * 3];
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return out;
}

}  // namespace avserve::ingest
