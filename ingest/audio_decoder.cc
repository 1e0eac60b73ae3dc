#include "ingest/audio_decoder.h"

#include "absl/strings/str_cat.h"
#include "ingest/demuxer.h"
#include "ingest/media_types.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/mathematics.h>
#include <libavutil/opt.h>
}

namespace avserve::ingest {

absl::StatusOr<std::unique_ptr<AudioDecoder>> AudioDecoder::Open(const AVStream* stream, int64_t origin_us,
                                                                 FfmpegErrorLog* log) {
  const AVCodec* codec = avcodec_find_decoder(stream->codecpar->codec_id);
  if (codec == nullptr) {
    return absl::UnimplementedError(absl::StrCat("unsupported audio codec '",
                                                 avcodec_get_name(stream->codecpar->codec_id), "'"));
  }
  std::unique_ptr<AudioDecoder> dec(new AudioDecoder());
  dec->codec_.reset(avcodec_alloc_context3(codec));
  if (dec->codec_ == nullptr || dec->frame_ == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate audio decoder");
  }
  int ret = avcodec_parameters_to_context(dec->codec_.get(), stream->codecpar);
  if (ret < 0) return absl::InvalidArgumentError(absl::StrCat("bad audio parameters: ", AvErrorString(ret)));
  dec->codec_->pkt_timebase = stream->time_base;
  if (log != nullptr) log->Attach(dec->codec_.get());
  ret = avcodec_open2(dec->codec_.get(), codec, nullptr);
  if (ret < 0) return absl::InvalidArgumentError(absl::StrCat("cannot open audio decoder: ", AvErrorString(ret)));
  dec->time_base_ = stream->time_base;
  dec->origin_us_ = origin_us;
  return dec;
}

AudioDecoder::~AudioDecoder() { av_channel_layout_uninit(&in_layout_); }

absl::Status AudioDecoder::ConfigureResampler(const AVFrame* frame) {
  const bool same = swr_ != nullptr && frame->sample_rate == in_rate_ && frame->format == in_format_ &&
                    av_channel_layout_compare(&frame->ch_layout, &in_layout_) == 0;
  if (same) return absl::OkStatus();
  if (frame->sample_rate <= 0 || frame->sample_rate > kMaxAudioSampleRateHz ||
      frame->ch_layout.nb_channels <= 0 || frame->ch_layout.nb_channels > kMaxAudioChannels) {
    return absl::InvalidArgumentError(absl::StrCat("audio format out of range: ", frame->ch_layout.nb_channels,
                                                   " channels at ", frame->sample_rate, " Hz"));
  }
  // in_layout_ keeps the frame's own layout (for the comparison above); an unspecified order is
  // given the default layout for its channel count only for the resampler.
  av_channel_layout_uninit(&in_layout_);
  if (av_channel_layout_copy(&in_layout_, &frame->ch_layout) < 0) {
    return absl::ResourceExhaustedError("cannot copy the channel layout");
  }
  AVChannelLayout swr_layout{};
  if (frame->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC) {
    av_channel_layout_default(&swr_layout, frame->ch_layout.nb_channels);
  } else if (av_channel_layout_copy(&swr_layout, &frame->ch_layout) < 0) {
    return absl::ResourceExhaustedError("cannot copy the channel layout");
  }
  AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
  SwrContext* raw = nullptr;
  int ret = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, kAudioSampleRateHz, &swr_layout,
                                static_cast<AVSampleFormat>(frame->format), frame->sample_rate, 0, nullptr);
  av_channel_layout_uninit(&swr_layout);
  swr_.reset(raw);
  if (ret >= 0) ret = swr_init(swr_.get());
  if (ret < 0) return absl::InvalidArgumentError(absl::StrCat("cannot set up resampling: ", AvErrorString(ret)));
  in_rate_ = frame->sample_rate;
  in_format_ = frame->format;
  return absl::OkStatus();
}

absl::Status AudioDecoder::Convert(const AVFrame* frame, AudioFramer* framer) {
  if (swr_ == nullptr) return absl::OkStatus();
  const int in_samples = frame != nullptr ? frame->nb_samples : 0;
  const int capacity = swr_get_out_samples(swr_.get(), in_samples);
  if (capacity < 0) return absl::InternalError("resampler failed");
  out_.resize(static_cast<size_t>(capacity) + 16);
  uint8_t* dst[1] = {reinterpret_cast<uint8_t*>(out_.data())};
  const int got = swr_convert(swr_.get(), dst, capacity + 16,
                              frame != nullptr ? const_cast<const uint8_t**>(frame->extended_data) : nullptr,
                              in_samples);
  if (got < 0) return absl::InternalError(absl::StrCat("resampling failed: ", AvErrorString(got)));
  if (next_us_ == AV_NOPTS_VALUE) next_us_ = 0;
  framer->Append(next_us_, out_.data(), static_cast<size_t>(got));
  samples_out_ += got;
  next_us_ += av_rescale(got, 1000000, kAudioSampleRateHz);
  return absl::OkStatus();
}

absl::Status AudioDecoder::Decode(const AVPacket* packet, AudioFramer* framer) {
  int ret = avcodec_send_packet(codec_.get(), packet);
  if (ret < 0 && ret != AVERROR_EOF) {
    return absl::DataLossError(absl::StrCat("audio decoding failed (corrupt or truncated data): ", AvErrorString(ret)));
  }
  while (true) {
    ret = avcodec_receive_frame(codec_.get(), frame_.get());
    if (ret == AVERROR(EAGAIN)) return absl::OkStatus();
    if (ret == AVERROR_EOF) return Convert(nullptr, framer);  // drain the resampler
    if (ret < 0) {
      return absl::DataLossError(
          absl::StrCat("audio decoding failed (corrupt or truncated data): ", AvErrorString(ret)));
    }
    absl::Status status = ConfigureResampler(frame_.get());
    // Place the frame by its timestamp; the resampler's output continues from there.
    const int64_t pts = frame_->best_effort_timestamp;
    if (status.ok() && pts != AV_NOPTS_VALUE) {
      const int64_t frame_us = av_rescale_q(pts, time_base_, AVRational{1, 1000000}) - origin_us_;
      const int64_t buffered_us = swr_get_delay(swr_.get(), 1000000);  // input not yet output
      if (next_us_ == AV_NOPTS_VALUE || frame_us - buffered_us > next_us_ + 100000) {
        next_us_ = frame_us - buffered_us;
      }
    }
    if (status.ok()) status = Convert(frame_.get(), framer);
    av_frame_unref(frame_.get());
    if (!status.ok()) return status;
  }
}

}  // namespace avserve::ingest
