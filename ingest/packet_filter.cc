#include "ingest/packet_filter.h"

#include <limits>

namespace avserve::ingest {
namespace {

// Calls fn(first_byte, second_byte) for every NAL unit of an H.264/HEVC packet, in either the
// length-prefixed (avcC/hvcC) or the Annex B (start code) layout. Returns false on malformed data.
template <typename Fn>
bool ForEachNal(const uint8_t* data, int size, int length_size, Fn fn) {
  if (length_size > 0) {
    int pos = 0;
    while (pos + length_size <= size) {
      uint32_t len = 0;
      for (int i = 0; i < length_size; ++i) len = (len << 8) | data[pos + i];
      pos += length_size;
      if (len < 2 || len > static_cast<uint32_t>(size - pos)) return false;
      fn(data[pos], data[pos + 1]);
      pos += static_cast<int>(len);
    }
    return pos == size;
  }
  bool found = false;
  for (int i = 0; i + 4 < size; ++i) {
    if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
      fn(data[i + 3], data[i + 4]);
      found = true;
      i += 2;
    }
  }
  return found;
}

// NAL length size from avcC (byte 4) or hvcC (byte 21); 0 for Annex B extradata or none.
int NalLengthSize(const AVCodecParameters* par) {
  if (par->extradata == nullptr || par->extradata_size < 7 || par->extradata[0] != 1) return 0;
  if (par->codec_id == AV_CODEC_ID_H264) return (par->extradata[4] & 3) + 1;
  if (par->extradata_size < 23) return 0;
  return (par->extradata[21] & 3) + 1;
}

}  // namespace

bool IsDisposablePacket(const AVPacket* packet, const AVCodecParameters* par) {
  if (packet->flags & AV_PKT_FLAG_DISPOSABLE) return true;
  if (par->codec_id != AV_CODEC_ID_H264 && par->codec_id != AV_CODEC_ID_HEVC) return false;
  const bool h264 = par->codec_id == AV_CODEC_ID_H264;
  int vcl = 0, referenced = 0;
  const bool ok = ForEachNal(packet->data, packet->size, NalLengthSize(par), [&](uint8_t b0, uint8_t b1) {
    if (h264) {
      const int type = b0 & 0x1f;
      if (type < 1 || type > 5) return;  // not a coded slice
      ++vcl;
      if ((b0 >> 5) & 3) ++referenced;
    } else {
      const int type = (b0 >> 1) & 0x3f;
      if (type > 31) return;  // not a VCL NAL unit
      ++vcl;
      // Sub-layer non-reference types are the even ones below 16; only the top sub-layer is safe,
      // so require temporal id 0 with no higher layers announced (the common single-layer case).
      const int temporal_id = (b1 & 7) - 1;
      if (!(type < 16 && type % 2 == 0 && temporal_id == 0)) ++referenced;
    }
  });
  return ok && vcl > 0 && referenced == 0;
}

PacketFilter::PacketFilter(SamplingMode mode, const AVStream* stream, const SampleClock& clock, int64_t origin,
                           bool skip_disposable)
    : mode_(mode), skip_disposable_(skip_disposable), stream_(stream), clock_(clock), origin_(origin) {}

void PacketFilter::Push(AVPacket* packet) {
  UniqueAVPacket held = MakePacket();
  av_packet_move_ref(held.get(), packet);
  ahead_.push_back(std::move(held));
}

bool PacketFilter::CanSkip(const AVPacket* packet) const {
  if (mode_ == SamplingMode::kKeyframe) return (packet->flags & AV_PKT_FLAG_KEY) == 0;
  if (!skip_disposable_ || packet->pts == AV_NOPTS_VALUE || !IsDisposablePacket(packet, stream_->codecpar)) {
    return false;
  }
  // The next presentation time after this picture, from the windows behind and ahead.
  int64_t next = std::numeric_limits<int64_t>::max();
  for (int64_t pts : behind_pts_) {
    if (pts > packet->pts && pts < next) next = pts;
  }
  for (size_t i = 1; i < ahead_.size(); ++i) {
    const int64_t pts = ahead_[i]->pts;
    if (pts == AV_NOPTS_VALUE) return false;
    if (pts > packet->pts && pts < next) next = pts;
  }
  if (next == std::numeric_limits<int64_t>::max()) return false;  // the last picture: keep it
  return !IsOnScreenAtSample(clock_, stream_->time_base, packet->pts - origin_, next - origin_, first_sample_);
}

UniqueAVPacket PacketFilter::Pop() {
  while (!ahead_.empty() && (finished_ || ahead_.size() > kWindow)) {
    UniqueAVPacket front = std::move(ahead_.front());
    const bool key = (front->flags & AV_PKT_FLAG_KEY) != 0;
    // Pictures before the first keyframe cannot be decoded cleanly (a stream cut mid-GOP).
    const bool skip = (!seen_keyframe_ && !key) || (seen_keyframe_ && CanSkip(front.get()));
    seen_keyframe_ = seen_keyframe_ || key;
    if (front->pts != AV_NOPTS_VALUE) {
      behind_pts_.push_back(front->pts);
      if (behind_pts_.size() > kWindow) behind_pts_.pop_front();
    }
    ahead_.pop_front();
    if (!skip) return front;
    ++skipped_;
  }
  return nullptr;
}

}  // namespace avserve::ingest

