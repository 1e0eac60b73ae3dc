// Tensor view helpers shared by every backend.
#include "engine/backend/backend.h"

#include "engine/base/check.h"

namespace avserve::engine {

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kI32: return "I32";
    default: return "?";
  }
}

Tensor Tensor::Contiguous(void* data, DType dtype, Device device,
                          std::initializer_list<int64_t> shape) {
  AVSERVE_CHECK(shape.size() <= static_cast<size_t>(kMaxRank), "rank > 4");
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) t.shape[i++] = d;
  int64_t stride = 1;
  for (int j = t.rank - 1; j >= 0; --j) {
    t.strides[j] = stride;
    stride *= t.shape[j];
  }
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t stride = 1;
  for (int j = rank - 1; j >= 0; --j) {
    if (shape[j] != 1 && strides[j] != stride) return false;
    stride *= shape[j];
  }
  return true;
}

Tensor Tensor::Reshape(std::initializer_list<int64_t> new_shape) const {
  AVSERVE_CHECK(is_contiguous(), "Reshape needs a contiguous tensor");
  Tensor t = Contiguous(data, dtype, device, new_shape);
  AVSERVE_CHECK(t.numel() == numel(), "Reshape changes the element count");
  return t;
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  AVSERVE_CHECK(rank >= 1 && 0 <= begin && begin <= end && end <= shape[0], "bad slice");
  Tensor t = *this;
  t.shape[0] = end - begin;
  t.data = static_cast<char*>(data) + begin * strides[0] * static_cast<int64_t>(DTypeSize(dtype));
  return t;
}

Tensor Tensor::Columns(int64_t begin, int64_t end) const {
  AVSERVE_CHECK(rank >= 1 && strides[rank - 1] == 1 && 0 <= begin && begin <= end && end <= shape[rank - 1],
                "bad column range");
  Tensor t = *this;
  t.shape[rank - 1] = end - begin;
  t.data = static_cast<char*>(data) + begin * static_cast<int64_t>(DTypeSize(dtype));
  return t;
}

Tensor Buffer::View(DType dtype, std::initializer_list<int64_t> shape) const {
  Tensor t = Tensor::Contiguous(data(), dtype, device(), shape);
  AVSERVE_CHECK(t.bytes() <= bytes(), "view larger than its buffer");
  return t;
}

absl::StatusOr<std::unique_ptr<Buffer>> Backend::ForkBuffer(const Buffer& src, size_t prefix_bytes) {
  AVSERVE_CHECK(prefix_bytes <= src.bytes() && prefix_bytes % 2 == 0, "ForkBuffer: bad prefix");
  absl::StatusOr<std::unique_ptr<Buffer>> fork = Allocate(src.bytes());
  if (!fork.ok() || prefix_bytes == 0) return fork;
  // The prefix as rows of up to 512 16-bit values, copied by Convert (same dtype).
  const int64_t elems = static_cast<int64_t>(prefix_bytes / 2);
  int64_t cols = 512;
  while (elems % cols != 0) cols /= 2;
  Convert(src.View(DType::kBF16, {elems / cols, cols}), (*fork)->View(DType::kBF16, {elems / cols, cols}));
  return fork;
}

}  // namespace avserve::engine
