// MediaReader: demux -> (packet filter -> video decoder -> frame sampler -> RGB -> resize ->
// patchify) + (audio decoder -> 16 kHz mono -> framer) -> time-ordered segments.
// Note [Readiness]: segment k is handed out once its frame is known (a later frame was decoded,
// or the video ended) and its audio frames are complete (the timeline reaches the first audio
// frame of segment k+1, or the audio ended). Only the chosen frames are converted, and only a few
// segments are ever buffered, so memory does not grow with the media's length.
// Note [Conversion worker]: converting a chosen frame (RGB, resize, patchify) runs on a
// SerialWorker, in order, while the main thread goes on demuxing and decoding; a segment waits
// for its frame's conversion before it is handed out. At most kMaxQueuedConversions frames are in
// flight. The output is the same with and without the worker (IngestOptions::convert_on_worker).
#include "ingest/media_reader.h"

#include <algorithm>
#include <deque>
#include <future>
#include <limits>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "ingest/audio_decoder.h"
#include "ingest/audio_framer.h"
#include "ingest/demuxer.h"
#include "ingest/frame_sampler.h"
#include "ingest/packet_filter.h"
#include "ingest/patchify.h"
#include "ingest/resize.h"
#include "ingest/serial_worker.h"
#include "ingest/video_decoder.h"

namespace avserve::ingest {

namespace {
constexpr double kMaxFps = 120.0;
constexpr int64_t kUs = 1000000;
constexpr size_t kMaxQueuedConversions = 2;
// How far before the window's first sample time each seek attempt aims (Note [Window]).
constexpr int64_t kSeekMarginsUs[] = {500000, 4000000, 30000000};

using Patches = std::shared_ptr<const std::vector<float>>;  // [rows*cols, kPatchDim]

// A chosen frame, the segments [first, last) it was chosen for, and its conversion (which may
// still be running on the worker).
struct ChosenFrame {
  int64_t first = 0, last = 0;
  int64_t pts_us = 0;
  std::shared_future<absl::StatusOr<Patches>> patches;
};
}  // namespace

class MediaReaderImpl {
 public:
  // seek_path: the opened file, when a window may be read by seeking (Note [Window]); else "".
  MediaReaderImpl(std::unique_ptr<Demuxer> demuxer, const IngestOptions& options, std::string seek_path)
      // An out-of-range fps is rejected by Init(); the clock only needs a valid placeholder.
      : options_(options), demuxer_(std::move(demuxer)),
        clock_(options.fps > 0.0 && options.fps <= kMaxFps ? options.fps : 1.0), seek_path_(std::move(seek_path)) {}
  // The conversions still queued (a reader dropped mid-stream: a cancelled request) use video_, hook_ and the
  // grid, so they finish before any member goes.
  ~MediaReaderImpl() { converter_.reset(); }
  absl::Status Init();
  absl::StatusOr<std::optional<Segment>> Next();
  // A failure now may be the seek's: reading from the start instead can still give the window.
  bool restartable() const { return seeking_ && emitted_ == 0; }

  IngestOptions options_;
  std::unique_ptr<Demuxer> demuxer_;
  SampleClock clock_;
  int grid_rows_ = 0, grid_cols_ = 0;
  MediaReader::NativeFrameHook hook_;
  MediaReader::Stats stats_;
  std::unique_ptr<SerialWorker> converter_;  // reset first by the destructor

 private:
  absl::Status InitWindow();
  absl::Status Seek();
  absl::StatusOr<bool> AcceptSeekPoint(const AVPacket* packet);
  absl::Status Pump();
  absl::Status HandleAudioPacket(AVPacket* packet);
  absl::Status HandleVideoPacket(AVPacket* packet);
  absl::Status DrainVideo();
  absl::Status OnVideoFrame(AVFrame* frame);
  absl::Status Choose(int64_t first, int64_t last);
  absl::StatusOr<Patches> Convert(const AVFrame* frame, int64_t first);
  absl::Status AwaitFrame(int64_t k);
  absl::Status Stop(const absl::Status& status);
  absl::Status Finish();
  absl::Status FinishVideo();
  absl::Status FinishAudio();
  absl::Status Finalize();
  absl::Status CheckTime(int64_t media_us, const char* what) const;
  bool Ready(int64_t k) const;
  Segment Build(int64_t k);
  int64_t ExpectedEndUs(int index) const;
  absl::Status CheckComplete(int index, int64_t end_us, const char* what) const;
  absl::Status Annotate(const absl::Status& status) const;

  bool use_video_ = false, use_audio_ = false;
  int video_index_ = -1, audio_index_ = -1;
  AVRational video_tb_{1, 1};
  int64_t video_origin_ = 0;  // media time 0 in video ticks
  std::unique_ptr<VideoDecoder> video_;
  std::unique_ptr<PacketFilter> filter_;
  std::unique_ptr<FrameSampler> sampler_;
  UniqueAVFrame decoded_ = MakeFrame();
  UniqueAVFrame candidate_ = MakeFrame();  // the frame on screen after the last assigned sample
  int64_t candidate_pts_ = 0;        // ticks relative to the origin
  int64_t candidate_end_ticks_ = 0;
  int64_t packets_end_ticks_ = 0;     // the furthest pts + duration among video packets
  std::deque<ChosenFrame> chosen_;
  std::unique_ptr<AudioDecoder> audio_;
  AudioFramer framer_;
  UniqueAVPacket packet_ = MakePacket();

  bool eof_ = false;
  int64_t total_segments_ = -1;  // known at the end of the input
  int64_t end_us_ = 0;           // media end, known at the end of the input
  int64_t next_segment_ = 0;
  int64_t reached_us_ = 0;       // the furthest media time decoded
  absl::Status error_;           // sticky: the first error ends the stream

  // Window (Note [Window]).
  std::string seek_path_;
  int64_t first_segment_ = 0;    // the first segment overlapping the window
  int64_t end_segment_ = std::numeric_limits<int64_t>::max();  // the first one starting at/after its end
  bool seeking_ = false;         // the video is read from a seek point
  bool seek_accepted_ = false;   // the first keyframe after the seek was early enough
  int seek_attempt_ = 0;
  int64_t keyframe_pts_ = 0;     // ticks (relative): frames presented before it are dropped
  std::unique_ptr<Demuxer> audio_demuxer_;  // seeking with audio: the audio, read from the start
  bool video_done_ = false, audio_done_ = false;
  int64_t video_end_us_ = 0, audio_end_us_ = 0;
  int64_t emitted_ = 0;          // segments handed out
};

absl::Status MediaReaderImpl::Init() {
  if (!(options_.fps > 0.0) || options_.fps > kMaxFps) {
    return absl::InvalidArgumentError(absl::StrCat("fps must be in (0, ", kMaxFps, "], got ", options_.fps));
  }
  if (!IsValidBudget(options_.frame_budget)) {
    return absl::InvalidArgumentError(absl::StrCat("frame budget ", options_.frame_budget,
                                                   " is not one of 70, 140, 280, 560, 1120"));
  }
  if (options_.decode_threads < 0 || options_.decode_threads > 64) {
    return absl::InvalidArgumentError("decode_threads must be in [0, 64]");
  }
  const MediaProbe& probe = demuxer_->probe();
  use_video_ = options_.use_video && probe.has_video;
  use_audio_ = options_.use_audio && probe.has_audio;
  if (!use_video_ && !use_audio_) return absl::InvalidArgumentError("nothing to ingest: no selected stream in media");
  if (use_video_) {
    video_index_ = demuxer_->video_index();
    const AVStream* st = demuxer_->stream(video_index_);
    ASSIGN_OR_RETURN(auto size, TargetSize(probe.height, probe.width, options_.frame_budget));
    grid_rows_ = size.first / kPatchSide;
    grid_cols_ = size.second / kPatchSide;
    video_tb_ = st->time_base;
    video_origin_ = av_rescale_q(probe.start_us, AV_TIME_BASE_Q, video_tb_);
    ASSIGN_OR_RETURN(video_, VideoDecoder::Open(st, options_.decode_threads, probe.rotation_deg,
                                                        demuxer_->error_log()));
    filter_ = std::make_unique<PacketFilter>(options_.mode, st, clock_, video_origin_, options_.skip_disposable);
    sampler_ = std::make_unique<FrameSampler>(clock_, video_tb_);
    converter_ = std::make_unique<SerialWorker>(options_.convert_on_worker, kMaxQueuedConversions);
  }
  if (use_audio_) audio_index_ = demuxer_->audio_index();
  if (decoded_ == nullptr || candidate_ == nullptr || packet_ == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate frames");
  }
  RETURN_IF_ERROR(InitWindow());
  if (use_audio_) {
    const Demuxer& source = audio_demuxer_ != nullptr ? *audio_demuxer_ : *demuxer_;
    ASSIGN_OR_RETURN(audio_, AudioDecoder::Open(source.stream(audio_index_), probe.start_us, source.error_log()));
  }
  return seeking_ ? Seek() : absl::OkStatus();
}

// The window's segments; with a file and video, the seek plan and the audio-only demuxer.
absl::Status MediaReaderImpl::InitWindow() {
  const int64_t start = options_.window_start_us, end = options_.window_end_us;
  if (start < 0 || end < 0) return absl::InvalidArgumentError("window times must be >= 0");
  if (start > kMaxDurationUs || end > kMaxDurationUs) return absl::InvalidArgumentError("window is out of range");
  // The first k whose span [t_k, t_k+1) ends after the start, and the first k with t_k >= end.
  int64_t k = std::max<int64_t>(clock_.CeilIndex(start, AVRational{1, kUs}) - 2, 0);
  while (clock_.SegmentStartUs(k + 1) <= start) ++k;
  first_segment_ = k;
  if (end > 0) end_segment_ = std::max(clock_.CeilIndex(end, AVRational{1, kUs}), int64_t{0});
  next_segment_ = first_segment_;
  if (use_video_) filter_->set_first_sample(first_segment_);
  const int64_t first_sample_us = clock_.SegmentStartUs(first_segment_);
  // Seeking pays only past the first margin; a window that ends before it starts reads nothing.
  seeking_ = use_video_ && !seek_path_.empty() && first_sample_us > kSeekMarginsUs[0] &&
             first_segment_ < end_segment_;
  stats_.window_from_start = start > 0 && !seeking_;
  if (!seeking_ || !use_audio_) return absl::OkStatus();
  ASSIGN_OR_RETURN(audio_demuxer_, Demuxer::OpenFile(seek_path_));
  if (audio_demuxer_->audio_index() != audio_index_) return absl::InternalError("the file changed while reading");
  audio_demuxer_->stream(audio_index_)->discard = AVDISCARD_DEFAULT;
  if (const int video = audio_demuxer_->video_index(); video >= 0) {
    audio_demuxer_->stream(video)->discard = AVDISCARD_ALL;
  }
  demuxer_->stream(audio_index_)->discard = AVDISCARD_ALL;
  return absl::OkStatus();
}

// Seeks the video to a keyframe at or before the window's first sample time minus this attempt's
// margin. Nothing has been decoded yet, so the decoder needs no flush.
absl::Status MediaReaderImpl::Seek() {
  if (seek_attempt_ >= static_cast<int>(std::size(kSeekMarginsUs))) {
    return absl::FailedPreconditionError("no keyframe found before the window start");
  }
  const int64_t target_us = clock_.SegmentStartUs(first_segment_) - kSeekMarginsUs[seek_attempt_++];
  if (target_us <= 0) return absl::FailedPreconditionError("the window starts near the beginning");
  const int64_t ts = av_rescale_q(target_us, AVRational{1, kUs}, video_tb_) + video_origin_;
  ++stats_.window_seeks;
  const int ret = av_seek_frame(demuxer_->format(), video_index_, ts, AVSEEK_FLAG_BACKWARD);
  if (ret < 0) return absl::DataLossError(absl::StrCat("seek failed: ", AvErrorString(ret)));
  return absl::OkStatus();
}

// The first keyframe after a seek: accepted when it is presented at or before the window's first
// sample time (every frame on screen in the window follows it), else seeks further back.
absl::StatusOr<bool> MediaReaderImpl::AcceptSeekPoint(const AVPacket* packet) {
  if (packet->pts != AV_NOPTS_VALUE && clock_.CeilIndex(packet->pts - video_origin_, video_tb_) <= first_segment_) {
    seek_accepted_ = true;
    keyframe_pts_ = packet->pts - video_origin_;
    return true;
  }
  RETURN_IF_ERROR(Seek());
  return false;
}

absl::Status MediaReaderImpl::Annotate(const absl::Status& status) const {
  return absl::Status(status.code(),
                      absl::StrFormat("%s (after %d segments, %.2f s of media decoded)", status.message(),
                                      next_segment_, reached_us_ / 1e6));
}

absl::Status MediaReaderImpl::CheckTime(int64_t media_us, const char* what) const {
  const int64_t duration = demuxer_->probe().duration_us;
  const int64_t limit = duration > 0 ? std::min(kMaxDurationUs, 2 * duration + 60 * kUs) : kMaxDurationUs;
  if (media_us > limit) {
    return absl::DataLossError(absl::StrFormat("%s timestamp %.2f s is far beyond the media duration %.2f s",
                                               what, media_us / 1e6, duration / 1e6));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Segment>> MediaReaderImpl::Next() {
  if (!error_.ok()) return error_;
  ScopedThreadErrorLog scoped_log(demuxer_->error_log());
  while (true) {
    if (next_segment_ >= end_segment_) {  // past the window
      RETURN_IF_ERROR(Stop(absl::OkStatus()));
      return std::optional<Segment>();
    }
    while (!Ready(next_segment_)) {
      if (eof_) {  // every segment delivered
        RETURN_IF_ERROR(Stop(absl::OkStatus()));
        return std::optional<Segment>();
      }
      absl::Status status = Pump();
      // FFmpeg conceals much damage and only logs it: a logged error means corrupt input.
      std::string logged = demuxer_->error_log()->TakeFirst();
      if (audio_demuxer_ != nullptr && logged.empty()) logged = audio_demuxer_->error_log()->TakeFirst();
      if (status.ok() && !logged.empty()) status = absl::DataLossError(absl::StrCat("corrupt media data: ", logged));
      if (!status.ok()) return Stop(status);
    }
    if (absl::Status status = AwaitFrame(next_segment_); !status.ok()) return Stop(status);
    Segment segment = Build(next_segment_++);
    // A last segment cut short by the media's end can end before the window starts.
    if (segment.end_us <= options_.window_start_us) continue;
    ++emitted_;
    return std::optional<Segment>(std::move(segment));
  }
}

// Ends the stream: no conversion runs (and no hook is called) after Next() returns an error or
// the end. A non-OK `status` becomes the sticky error.
absl::Status MediaReaderImpl::Stop(const absl::Status& status) {
  if (converter_ != nullptr) converter_->WaitIdle();
  if (!status.ok()) error_ = Annotate(status);
  return error_;
}

// Waits for the conversion of segment k's frame (Ready(k) holds) and returns its status.
absl::Status MediaReaderImpl::AwaitFrame(int64_t k) {
  if (!use_video_) return absl::OkStatus();
  while (chosen_.size() > 1 && chosen_.front().last <= k) chosen_.pop_front();
  return chosen_.front().patches.get().status();
}

bool MediaReaderImpl::Ready(int64_t k) const {
  if (eof_) return k < total_segments_;
  if (use_video_ && (chosen_.empty() || chosen_.back().last <= k)) return false;
  if (use_audio_ && framer_.end_sample() < clock_.FirstAudioFrame(k + 1) * kAudioFrameSamples) return false;
  return true;
}

Segment MediaReaderImpl::Build(int64_t k) {
  Segment seg;
  seg.index = k;
  seg.start_us = clock_.SegmentStartUs(k);
  seg.end_us = clock_.SegmentStartUs(k + 1);
  if (eof_ && k + 1 == total_segments_) seg.end_us = std::max(seg.start_us + 1, std::min(seg.end_us, end_us_));
  if (use_video_) {
    while (chosen_.size() > 1 && chosen_.front().last <= k) chosen_.pop_front();
    const ChosenFrame& c = chosen_.front();  // the last one covers every later segment
    VideoFrame frame;
    frame.sample_us = seg.start_us;
    frame.pts_us = c.pts_us;
    frame.grid_rows = grid_rows_;
    frame.grid_cols = grid_cols_;
    frame.patches = **c.patches.get();  // AwaitFrame(k) checked it
    seg.frame = std::move(frame);
  }
  if (use_audio_) {
    int64_t first = clock_.FirstAudioFrame(k), last = clock_.FirstAudioFrame(k + 1);
    if (framer_.finished()) {
      first = std::min(first, framer_.total_frames());
      last = std::min(last, framer_.total_frames());
    }
    seg.audio = framer_.Take(first, last);
  }
  return seg;
}

// Reads one packet. With an audio-only demuxer (Note [Window]) it reads the audio while the audio
// is behind the next segment (or the video is done), else the video.
absl::Status MediaReaderImpl::Pump() {
  const int64_t audio_wanted = clock_.FirstAudioFrame(next_segment_ + 1) * kAudioFrameSamples;
  const bool audio_turn =
      audio_demuxer_ != nullptr && !audio_done_ && (video_done_ || framer_.end_sample() < audio_wanted);
  PacketRef ref(packet_.get());
  ASSIGN_OR_RETURN(const bool got, (audio_turn ? audio_demuxer_ : demuxer_)->ReadPacket(packet_.get()));
  if (!got) return audio_turn ? FinishAudio() : Finish();
  if (packet_->stream_index == video_index_ && use_video_ && !audio_turn) return HandleVideoPacket(packet_.get());
  if (packet_->stream_index == audio_index_ && use_audio_) return HandleAudioPacket(packet_.get());
  return absl::OkStatus();
}

absl::Status MediaReaderImpl::HandleAudioPacket(AVPacket* packet) {
  RETURN_IF_ERROR(audio_->Decode(packet, &framer_));
  const int64_t audio_us = framer_.end_sample() * kUs / kAudioSampleRateHz;
  reached_us_ = std::max(reached_us_, audio_us);
  // Audio before the window is never taken: free it as it comes.
  if (first_segment_ > 0) framer_.DropBefore(clock_.FirstAudioFrame(first_segment_) * kAudioFrameSamples);
  return CheckTime(audio_us, "audio");
}

absl::Status MediaReaderImpl::HandleVideoPacket(AVPacket* packet) {
  if (seeking_ && !seek_accepted_) {
    // Pictures before the first keyframe cannot be decoded; the keyframe decides the seek.
    if ((packet->flags & AV_PKT_FLAG_KEY) == 0) return absl::OkStatus();
    ASSIGN_OR_RETURN(const bool accepted, AcceptSeekPoint(packet));
    if (!accepted) return absl::OkStatus();
  }
  ++stats_.video_packets;
  // The video's end comes from the packets: skipped ones (keyframe mode) count too.
  if (packet->pts != AV_NOPTS_VALUE) {
    packets_end_ticks_ =
        std::max(packets_end_ticks_, packet->pts - video_origin_ + std::max<int64_t>(packet->duration, 0));
  }
  filter_->Push(packet);
  while (UniqueAVPacket next = filter_->Pop()) {
    RETURN_IF_ERROR(video_->Send(next.get()));
    RETURN_IF_ERROR(DrainVideo());
  }
  stats_.video_packets_skipped = filter_->skipped();
  return absl::OkStatus();
}

absl::Status MediaReaderImpl::DrainVideo() {
  while (true) {
    ASSIGN_OR_RETURN(const bool got, video_->Receive(decoded_.get()));
    if (!got) return absl::OkStatus();
    absl::Status status = OnVideoFrame(decoded_.get());
    av_frame_unref(decoded_.get());
    RETURN_IF_ERROR(status);
  }
}

absl::Status MediaReaderImpl::OnVideoFrame(AVFrame* frame) {
  ++stats_.video_frames_decoded;
  int64_t pts = frame->best_effort_timestamp;
  if (pts == AV_NOPTS_VALUE && seeking_) return absl::DataLossError("a video frame without a timestamp after a seek");
  if (pts == AV_NOPTS_VALUE) pts = sampler_->has_candidate() ? candidate_end_ticks_ + video_origin_ : video_origin_;
  pts -= video_origin_;
  if (seeking_ && pts < keyframe_pts_) return absl::OkStatus();  // a leading picture of the seek point
  const int64_t pts_us = av_rescale_q(pts, video_tb_, AVRational{1, kUs});
  RETURN_IF_ERROR(CheckTime(pts_us, "video"));
  reached_us_ = std::max(reached_us_, pts_us);
  const auto [first, last] = sampler_->Push(pts);
  if (first < last) RETURN_IF_ERROR(Choose(first, last));
  av_frame_unref(candidate_.get());
  av_frame_move_ref(candidate_.get(), frame);
  candidate_pts_ = pts;
  // Where the candidate stops being on screen if nothing follows it (its duration).
  int64_t duration = candidate_->pkt_duration;
  if (duration <= 0) {
    const AVRational rate = demuxer_->stream(video_index_)->avg_frame_rate;
    duration = rate.num > 0 ? std::max<int64_t>(av_rescale_q(1, av_inv_q(rate), video_tb_), 1) : 1;
  }
  candidate_end_ticks_ = pts + duration;
  return absl::OkStatus();
}

// Queues the conversion of the candidate (the frame on screen for segments [first, last)), once.
absl::Status MediaReaderImpl::Choose(int64_t first, int64_t last) {
  if (last <= first_segment_) return absl::OkStatus();  // on screen before the window only
  first = std::max(first, first_segment_);
  // A new reference to the decoded picture: the decoder and candidate_ move on meanwhile.
  std::shared_ptr<AVFrame> frame(av_frame_clone(candidate_.get()), [](AVFrame* f) { av_frame_free(&f); });
  if (frame == nullptr) return absl::ResourceExhaustedError("cannot reference a decoded frame");
  ++stats_.video_frames_converted;
  auto promise = std::make_shared<std::promise<absl::StatusOr<Patches>>>();
  chosen_.push_back(ChosenFrame{first, last, av_rescale_q(candidate_pts_, video_tb_, AVRational{1, kUs}),
                                promise->get_future().share()});
  converter_->Submit([this, frame, first, promise] {
    ScopedThreadErrorLog scoped_log(demuxer_->error_log());
    promise->set_value(Convert(frame.get(), first));
  });
  return absl::OkStatus();
}

// RGB at the displayed size, the hook, resize to the grid, patches. Runs on the converter.
absl::StatusOr<Patches> MediaReaderImpl::Convert(const AVFrame* frame, int64_t first) {
  ASSIGN_OR_RETURN(RgbImage native, video_->ToRgb(frame));
  if (hook_) hook_(first, native);
  const RgbImage resized = ResizeBicubicAntialias(native, grid_rows_ * kPatchSide, grid_cols_ * kPatchSide);
  ASSIGN_OR_RETURN(std::vector<float> patches, Patchify(resized));
  return std::make_shared<const std::vector<float>>(std::move(patches));
}

// Where a stream should end (media time), from its container duration; 0 when unknown.
int64_t MediaReaderImpl::ExpectedEndUs(int index) const {
  if (demuxer_->format()->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE) return 0;
  const AVStream* st = demuxer_->stream(index);
  if (st->duration == AV_NOPTS_VALUE || st->duration <= 0) return 0;
  const int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
  return av_rescale_q(start + st->duration, st->time_base, AV_TIME_BASE_Q) - demuxer_->probe().start_us;
}

// A stream whose data stops well before its declared end was truncated or lost data.
absl::Status MediaReaderImpl::CheckComplete(int index, int64_t end_us, const char* what) const {
  const int64_t expected = ExpectedEndUs(index);
  if (expected > 0 && end_us < expected - std::max<int64_t>(kUs, expected / 50)) {
    return absl::DataLossError(absl::StrFormat("%s data ends at %.2f s but the stream should last until %.2f s "
                                               "(truncated or corrupt input)", what, end_us / 1e6, expected / 1e6));
  }
  return absl::OkStatus();
}

// The end of the input of demuxer_.
absl::Status MediaReaderImpl::Finish() {
  if (use_video_) RETURN_IF_ERROR(FinishVideo());
  if (use_audio_ && audio_demuxer_ == nullptr) RETURN_IF_ERROR(FinishAudio());
  return absl::OkStatus();
}

absl::Status MediaReaderImpl::FinishVideo() {
  filter_->Finish();
  while (UniqueAVPacket next = filter_->Pop()) {
    RETURN_IF_ERROR(video_->Send(next.get()));
    RETURN_IF_ERROR(DrainVideo());
  }
  stats_.video_packets_skipped = filter_->skipped();
  RETURN_IF_ERROR(video_->Send(nullptr));
  RETURN_IF_ERROR(DrainVideo());
  if (!sampler_->has_candidate()) return absl::DataLossError("no decodable video frame in the media");
  video_end_us_ = av_rescale_q(std::max(candidate_end_ticks_, packets_end_ticks_), video_tb_, AVRational{1, kUs});
  RETURN_IF_ERROR(CheckComplete(video_index_, video_end_us_, "video"));
  // The last frame stays on screen for every later segment (Build reuses the last chosen).
  RETURN_IF_ERROR(Choose(sampler_->next_segment(), std::numeric_limits<int64_t>::max()));
  video_done_ = true;
  return Finalize();
}

absl::Status MediaReaderImpl::FinishAudio() {
  RETURN_IF_ERROR(audio_->Decode(nullptr, &framer_));
  framer_.Finish();
  stats_.audio_samples_16k = audio_->samples_out();
  audio_end_us_ = av_rescale_rnd(framer_.end_sample(), kUs, kAudioSampleRateHz, AV_ROUND_UP);
  RETURN_IF_ERROR(CheckComplete(audio_index_, audio_end_us_, "audio"));
  audio_done_ = true;
  return Finalize();
}

// Once every used stream is done: the media's end and the number of segments.
absl::Status MediaReaderImpl::Finalize() {
  if ((use_video_ && !video_done_) || (use_audio_ && !audio_done_)) return absl::OkStatus();
  const int64_t end_us = std::max(video_end_us_, audio_end_us_);
  reached_us_ = std::max(reached_us_, end_us);
  // Trust the container's duration when the decoded end agrees with it (encoder padding at the
  // end of AAC, a last frame's rounding), so that num_segments() is exact for intact files.
  const int64_t probed_us = demuxer_->probe().duration_us;
  const bool agrees = probed_us > 0 && end_us <= probed_us + kUs / 10 &&
                      end_us >= probed_us - std::max<int64_t>(kUs, probed_us / 50);
  end_us_ = agrees ? probed_us : end_us;
  total_segments_ = clock_.SegmentCount(end_us_);
  eof_ = true;
  return absl::OkStatus();
}

// --- MediaReader -------------------------------------------------------------------------------

MediaReader::MediaReader(std::unique_ptr<MediaReaderImpl> impl, std::string path)
    : impl_(std::move(impl)), path_(std::move(path)) {}
MediaReader::~MediaReader() = default;

namespace {
absl::StatusOr<std::unique_ptr<MediaReaderImpl>> OpenFileImpl(const std::string& path, const IngestOptions& options,
                                                              bool may_seek) {
  ASSIGN_OR_RETURN(auto demuxer, Demuxer::OpenFile(path));
  auto impl = std::make_unique<MediaReaderImpl>(std::move(demuxer), options, may_seek ? path : "");
  absl::Status status = impl->Init();
  if (!status.ok() && impl->restartable()) return OpenFileImpl(path, options, /*may_seek=*/false);
  RETURN_IF_ERROR(status);
  return impl;
}
}  // namespace

absl::StatusOr<std::unique_ptr<MediaReader>> MediaReader::OpenFile(const std::string& path,
                                                                   const IngestOptions& options) {
  ASSIGN_OR_RETURN(auto impl, OpenFileImpl(path, options, /*may_seek=*/true));
  return std::unique_ptr<MediaReader>(new MediaReader(std::move(impl), path));
}

absl::StatusOr<std::unique_ptr<MediaReader>> MediaReader::OpenBytes(std::unique_ptr<ByteSource> source,
                                                                    const IngestOptions& options) {
  ASSIGN_OR_RETURN(auto demuxer, Demuxer::OpenSource(std::move(source)));
  auto impl = std::make_unique<MediaReaderImpl>(std::move(demuxer), options, "");
  RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<MediaReader>(new MediaReader(std::move(impl), ""));
}

absl::Status MediaReader::RestartWithoutSeek() {
  ASSIGN_OR_RETURN(auto fresh, OpenFileImpl(path_, impl_->options_, /*may_seek=*/false));
  fresh->hook_ = std::move(impl_->hook_);
  fresh->stats_.window_seeks = impl_->stats_.window_seeks;
  impl_ = std::move(fresh);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Segment>> MediaReader::Next() {
  absl::StatusOr<std::optional<Segment>> next = impl_->Next();
  if (next.ok() || !impl_->restartable()) return next;
  // Nothing was handed out yet: decoding from the start gives the window or the real error.
  RETURN_IF_ERROR(RestartWithoutSeek());
  return impl_->Next();
}

const MediaProbe& MediaReader::probe() const { return impl_->demuxer_->probe(); }
const IngestOptions& MediaReader::options() const { return impl_->options_; }
int MediaReader::grid_rows() const { return impl_->grid_rows_; }
int MediaReader::grid_cols() const { return impl_->grid_cols_; }
int64_t MediaReader::num_segments() const { return impl_->clock_.SegmentCount(probe().duration_us); }
void MediaReader::set_native_frame_hook(NativeFrameHook hook) { impl_->hook_ = std::move(hook); }
const MediaReader::Stats& MediaReader::stats() const { return impl_->stats_; }

absl::StatusOr<MediaProbe> ProbeFile(const std::string& path) {
  ASSIGN_OR_RETURN(auto demuxer, Demuxer::OpenFile(path));
  return demuxer->probe();
}

}  // namespace avserve::ingest
