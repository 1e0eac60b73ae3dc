#include "ingest/byte_source_io.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace avserve::ingest {
namespace {

constexpr int kAvioBufferBytes = 64 * 1024;
constexpr size_t kReadChunkBytes = 256 * 1024;

// A ByteSource over bytes already in memory, read in pieces of at most max_chunk bytes.
class MemoryByteSource : public ByteSource {
 public:
  MemoryByteSource(std::vector<uint8_t> bytes, size_t max_chunk)
      : bytes_(std::move(bytes)), max_chunk_(max_chunk) {}
  absl::StatusOr<size_t> Read(uint8_t* dst, size_t n) override {
    size_t take = std::min(n, bytes_.size() - pos_);
    if (max_chunk_ > 0) take = std::min(take, max_chunk_);
    if (take > 0) std::memcpy(dst, bytes_.data() + pos_, take);
    pos_ += take;
    return take;
  }
  int64_t size_hint() const override { return static_cast<int64_t>(bytes_.size()); }

 private:
  std::vector<uint8_t> bytes_;
  size_t pos_ = 0;
  size_t max_chunk_;
};

}  // namespace

std::unique_ptr<ByteSource> MakeMemoryByteSource(std::vector<uint8_t> bytes, size_t max_chunk) {
  return std::make_unique<MemoryByteSource>(std::move(bytes), max_chunk);
}

absl::StatusOr<std::unique_ptr<ByteSourceIo>> ByteSourceIo::Create(std::unique_ptr<ByteSource> source) {
  if (source == nullptr) return absl::InvalidArgumentError("null byte source");
  std::unique_ptr<ByteSourceIo> io(new ByteSourceIo(std::move(source)));
  UniqueAvBuffer buffer(static_cast<uint8_t*>(av_malloc(kAvioBufferBytes)));
  if (buffer == nullptr) return absl::ResourceExhaustedError("cannot allocate the AVIO buffer");
  AVIOContext* avio = avio_alloc_context(buffer.get(), kAvioBufferBytes, /*write_flag=*/0, io.get(),
                                         &ByteSourceIo::ReadPacket, nullptr, &ByteSourceIo::Seek);
  if (avio == nullptr) return absl::ResourceExhaustedError("cannot allocate the AVIOContext");
  buffer.release();  // now owned by the AVIOContext (freed through FreeAvioContext)
  io->avio_.reset(avio);
  return io;
}

void ByteSourceIo::FillTo(int64_t want) {
  want = std::min(want, kMaxUploadBytes + 1);
  while (!source_done_ && static_cast<int64_t>(data_.size()) < want) {
    const size_t old_size = data_.size();
    data_.resize(old_size + kReadChunkBytes);
    absl::StatusOr<size_t> got = source_->Read(data_.data() + old_size, kReadChunkBytes);
    if (!got.ok()) {
      source_status_ = got.status();
      source_done_ = true;
      data_.resize(old_size);
      break;
    }
    data_.resize(old_size + std::min(*got, kReadChunkBytes));
    if (*got == 0) source_done_ = true;
  }
  if (static_cast<int64_t>(data_.size()) > kMaxUploadBytes && source_status_.ok()) {
    source_status_ = absl::ResourceExhaustedError(absl::StrCat("upload exceeds ", kMaxUploadBytes, " bytes"));
    source_done_ = true;
  }
}

int ByteSourceIo::ReadPacket(void* opaque, uint8_t* buf, int buf_size) {
  auto* self = static_cast<ByteSourceIo*>(opaque);
  if (!self->source_status_.ok()) return AVERROR(EIO);
  self->FillTo(self->pos_ + buf_size);
  const int64_t available = static_cast<int64_t>(self->data_.size()) - self->pos_;
  if (available <= 0) return self->source_status_.ok() ? AVERROR_EOF : AVERROR(EIO);
  const int n = static_cast<int>(std::min<int64_t>(available, buf_size));
  std::memcpy(buf, self->data_.data() + self->pos_, n);
  self->pos_ += n;
  return n;
}

int64_t ByteSourceIo::Seek(void* opaque, int64_t offset, int whence) {
  auto* self = static_cast<ByteSourceIo*>(opaque);
  whence &= ~AVSEEK_FORCE;
  if (whence == AVSEEK_SIZE) {
    const int64_t hint = self->source_->size_hint();
    return hint >= 0 ? hint : -1;  // unknown size: FFmpeg copes
  }
  int64_t target = offset;
  if (whence == SEEK_CUR) {
    target = self->pos_ + offset;
  } else if (whence == SEEK_END) {
    self->FillAll();
    target = static_cast<int64_t>(self->data_.size()) + offset;
  } else if (whence != SEEK_SET) {
    return AVERROR(EINVAL);
  }
  if (target < 0) return AVERROR(EINVAL);
  self->FillTo(target);
  if (target > static_cast<int64_t>(self->data_.size())) return AVERROR(EIO);
  self->pos_ = target;
  return target;
}

}  // namespace avserve::ingest
