#include "ingest/demuxer.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

extern "C" {
#include <libavutil/display.h>
}

namespace avserve::ingest {
namespace {

std::string CodecName(AVCodecID id) {
  const char* name = avcodec_get_name(id);
  return name != nullptr ? name : "unknown";
}

// Options for the decoders that avformat_find_stream_info opens internally: the same pixel
// limit as ours, so a huge header cannot make it allocate a huge picture.
absl::Status FindStreamInfo(AVFormatContext* format) {
  const unsigned n = format->nb_streams;
  if (n == 0) return absl::InvalidArgumentError("media has no streams");
  if (n > 1024) return absl::InvalidArgumentError(absl::StrCat("media has ", n, " streams"));
  std::vector<AVDictionary*> options(n, nullptr);
  for (auto& dict : options) av_dict_set_int(&dict, "max_pixels", kMaxFramePixels, 0);
  const int ret = avformat_find_stream_info(format, options.data());
  for (auto& dict : options) av_dict_free(&dict);
  if (ret < 0) return absl::InvalidArgumentError(absl::StrCat("cannot read stream info: ", AvErrorString(ret)));
  return absl::OkStatus();
}

}  // namespace

int StreamRotationDegrees(const AVStream* stream) {
  const uint8_t* matrix = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, nullptr);
  if (matrix == nullptr) return 0;
  const double theta = -av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix));
  if (std::isnan(theta)) return 0;
  const double wrapped = theta - 360.0 * std::floor(theta / 360.0 + 0.9 / 360.0);
  const int quarter = static_cast<int>(std::lround(wrapped / 90.0)) % 4;
  return quarter * 90;
}

absl::StatusOr<std::unique_ptr<Demuxer>> Demuxer::OpenFile(const std::string& path) {
  std::error_code error;
  const auto file_size = std::filesystem::file_size(path, error);
  if (error) return absl::NotFoundError(absl::StrCat(path, ": cannot open file: ", error.message()));
  if (file_size == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": input is empty (0 bytes)"));
  std::unique_ptr<Demuxer> demuxer(new Demuxer());
  absl::Status status = demuxer->Open(path);
  if (!status.ok()) return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  return demuxer;
}

absl::StatusOr<std::unique_ptr<Demuxer>> Demuxer::OpenSource(std::unique_ptr<ByteSource> source) {
  std::unique_ptr<Demuxer> demuxer(new Demuxer());
  auto io = ByteSourceIo::Create(std::move(source));
  if (!io.ok()) return io.status();
  demuxer->io_ = std::move(*io);
  absl::Status status = demuxer->Open("");
  if (!status.ok() && !demuxer->io_->source_status().ok()) {
    return absl::Status(status.code(), absl::StrCat(status.message(), " (upload failed: ",
                                                    demuxer->io_->source_status().ToString(), ")"));
  }
  if (!status.ok()) return status;
  return demuxer;
}

absl::Status Demuxer::Open(const std::string& url) {
  AVFormatContext* raw = avformat_alloc_context();
  if (raw == nullptr) return absl::ResourceExhaustedError("cannot allocate AVFormatContext");
  log_->Attach(raw);
  ScopedThreadErrorLog scoped_log(log_.get());
  if (io_ != nullptr) {
    raw->pb = io_->context();
    raw->flags |= AVFMT_FLAG_CUSTOM_IO;
  }
  const int ret = avformat_open_input(&raw, url.empty() ? nullptr : url.c_str(), nullptr, nullptr);
  format_.reset(raw);  // on failure FFmpeg already freed it and nulled `raw`
  if (ret < 0) {
    if (io_ != nullptr && io_->bytes_received() == 0) return absl::InvalidArgumentError("input is empty (0 bytes)");
    const std::string logged = log_->TakeFirst();
    return absl::InvalidArgumentError(absl::StrCat("cannot open media: ", logged.empty() ? "" : logged + " (",
                                                   AvErrorString(ret), logged.empty() ? "" : ")"));
  }
  absl::Status status = FindStreamInfo(format_.get());
  if (!status.ok()) return status;
  status = ChooseStreams();
  if (!status.ok()) return status;
  return FillProbe();
}

absl::Status Demuxer::ChooseStreams() {
  AVFormatContext* f = format_.get();
  video_index_ = av_find_best_stream(f, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  if (video_index_ >= 0 && (f->streams[video_index_]->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
    video_index_ = -1;  // cover art of an audio file is not a video
  }
  audio_index_ = av_find_best_stream(f, AVMEDIA_TYPE_AUDIO, -1, -1, nullptr, 0);
  if (video_index_ < 0) video_index_ = -1;
  if (audio_index_ < 0) audio_index_ = -1;
  if (video_index_ < 0 && audio_index_ < 0) {
    return absl::InvalidArgumentError(absl::StrCat("media has no audio or video stream (", f->nb_streams,
                                                   " other streams)"));
  }
  for (int index : {video_index_, audio_index_}) {
    if (index < 0) continue;
    const AVCodecParameters* par = f->streams[index]->codecpar;
    const char* kind = par->codec_type == AVMEDIA_TYPE_VIDEO ? "video" : "audio";
    if (par->codec_id == AV_CODEC_ID_NONE || avcodec_find_decoder(par->codec_id) == nullptr) {
      return absl::UnimplementedError(absl::StrCat("unsupported ", kind, " codec '", CodecName(par->codec_id),
                                                   "' (no decoder available)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Demuxer::FillProbe() {
  AVFormatContext* f = format_.get();
  probe_.container = f->iformat != nullptr && f->iformat->name != nullptr ? f->iformat->name : "";
  probe_.start_us = f->start_time != AV_NOPTS_VALUE ? f->start_time : 0;
  probe_.duration_us = f->duration != AV_NOPTS_VALUE && f->duration > 0 ? f->duration : 0;
  if (probe_.duration_us > kMaxDurationUs) {
    return absl::InvalidArgumentError(absl::StrCat("media duration ", probe_.duration_us / 1e6,
                                                   " s exceeds the limit of ", kMaxDurationUs / 1e6, " s"));
  }
  if (video_index_ >= 0) {
    const AVStream* st = f->streams[video_index_];
    const AVCodecParameters* par = st->codecpar;
    if (par->width <= 0 || par->height <= 0) {
      return absl::InvalidArgumentError("video stream has no frame size");
    }
    if (par->width > kMaxFrameSide || par->height > kMaxFrameSide ||
        int64_t{par->width} * par->height > kMaxFramePixels) {
      return absl::InvalidArgumentError(absl::StrCat("video frame size ", par->width, "x", par->height,
                                                     " exceeds the limit (", kMaxFrameSide, " per side, ",
                                                     kMaxFramePixels, " pixels)"));
    }
    probe_.has_video = true;
    probe_.video_codec = CodecName(par->codec_id);
    probe_.rotation_deg = StreamRotationDegrees(st);
    const bool swap = probe_.rotation_deg == 90 || probe_.rotation_deg == 270;
    probe_.width = swap ? par->height : par->width;
    probe_.height = swap ? par->width : par->height;
    probe_.avg_frame_rate = st->avg_frame_rate.den > 0 ? av_q2d(st->avg_frame_rate) : 0.0;
  }
  if (audio_index_ >= 0) {
    const AVCodecParameters* par = f->streams[audio_index_]->codecpar;
    if (par->ch_layout.nb_channels > kMaxAudioChannels || par->sample_rate > kMaxAudioSampleRateHz ||
        par->sample_rate < 0) {
      return absl::InvalidArgumentError(absl::StrCat("audio format out of range: ", par->ch_layout.nb_channels,
                                                     " channels at ", par->sample_rate, " Hz"));
    }
    probe_.has_audio = true;
    probe_.audio_codec = CodecName(par->codec_id);
    probe_.audio_sample_rate_hz = par->sample_rate;
    probe_.audio_channels = par->ch_layout.nb_channels;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Demuxer::ReadPacket(AVPacket* packet) {
  const int ret = av_read_frame(format_.get(), packet);
  if (ret == AVERROR_EOF) return false;
  if (ret < 0) {
    if (io_ != nullptr && !io_->source_status().ok()) return io_->source_status();
    return absl::DataLossError(absl::StrCat("demuxing failed: ", AvErrorString(ret)));
  }
  return true;
}

}  // namespace avserve::ingest
