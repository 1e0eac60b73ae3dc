// An AVIOContext over a ByteSource: bytes that arrive in pieces (an upload) are read into a
// growing in-memory buffer, so the demuxer can seek backwards (MP4 with its index at the end) and
// forwards (by reading ahead) without a temporary file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/ffmpeg_raii.h"
#include "ingest/media_reader.h"

namespace avserve::ingest {

inline constexpr int64_t kMaxUploadBytes = int64_t{8} << 30;  // refuse uploads above 8 GiB

class ByteSourceIo {
 public:
  // The returned object must outlive the AVIOContext from context().
  static absl::StatusOr<std::unique_ptr<ByteSourceIo>> Create(std::unique_ptr<ByteSource> source);
  AVIOContext* context() const { return avio_.get(); }
  // The first error the source reported (FFmpeg only sees a generic I/O error).
  const absl::Status& source_status() const { return source_status_; }
  int64_t bytes_received() const { return static_cast<int64_t>(data_.size()); }

 private:
  explicit ByteSourceIo(std::unique_ptr<ByteSource> source) : source_(std::move(source)) {}
  static int ReadPacket(void* opaque, uint8_t* buf, int buf_size);
  static int64_t Seek(void* opaque, int64_t offset, int whence);
  // Pulls more bytes from the source until data_ holds `want` bytes or the source ends.
  void FillTo(int64_t want);
  void FillAll() { FillTo(kMaxUploadBytes + 1); }

  std::unique_ptr<ByteSource> source_;
  std::vector<uint8_t> data_;  // every byte received so far
  int64_t pos_ = 0;            // FFmpeg's read position in data_
  bool source_done_ = false;
  absl::Status source_status_;
  UniqueAVIOContext avio_;
};

}  // namespace avserve::ingest
