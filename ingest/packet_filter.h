// Decides, packet by packet, which video packets must be decoded (design.md §3 "exact skipping").
//
// Exact mode: a packet can be skipped when its picture is disposable (no other picture refers to
// it: H.264 nal_ref_idc == 0, HEVC sub-layer non-reference, or the demuxer's DISPOSABLE flag) and
// it is not on screen at any sample time. "On screen" needs the next presentation time, which in
// decode order may come later (B-frames): a window of packets ahead and behind gives it, since
// reordering never spans more than a decoded picture buffer (16 pictures).
// Keyframe mode (approximate): only keyframes are decoded.
#pragma once

#include <cstdint>
#include <deque>

#include "ingest/ffmpeg_raii.h"
#include "ingest/frame_sampler.h"
#include "ingest/media_types.h"

namespace avserve::ingest {

// True when the packet's picture is not used as a reference by any other picture.
bool IsDisposablePacket(const AVPacket* packet, const AVCodecParameters* par);

class PacketFilter {
 public:
  // origin: media time 0 in the stream's time base.
  PacketFilter(SamplingMode mode, const AVStream* stream, const SampleClock& clock, int64_t origin,
               bool skip_disposable = true);

  // Takes the packet's reference (the caller's packet is left blank).
  void Push(AVPacket* packet);
  // No more packets will come: everything still held becomes poppable.
  void Finish() { finished_ = true; }
  // The next packet to decode in decode order, or nullptr when none is ready yet.
  UniqueAVPacket Pop();
  int64_t skipped() const { return skipped_; }
  // Exact mode: only samples k >= first_sample matter (a window); disposable pictures on screen
  // at earlier samples only are skipped too.
  void set_first_sample(int64_t first_sample) { first_sample_ = first_sample; }

 private:
  static constexpr size_t kWindow = 20;  // > the 16-picture reorder limit
  bool CanSkip(const AVPacket* packet) const;

  SamplingMode mode_;
  bool skip_disposable_;
  const AVStream* stream_;
  SampleClock clock_;
  int64_t origin_;
  int64_t first_sample_ = 0;
  bool seen_keyframe_ = false;
  bool finished_ = false;
  int64_t skipped_ = 0;
  std::deque<UniqueAVPacket> ahead_;  // pushed, not yet decided (decode order)
  std::deque<int64_t> behind_pts_;    // pts of the last kWindow decided packets
};

}  // namespace avserve::ingest
