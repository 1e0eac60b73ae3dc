// Device memory in physical pages that several buffers can map: how forks of one sequence hold one copy of the
// KV rows they share.
//
// Note [Forked KV pages]
// A question about a video forks the video's prefilled sequence. On a full layer, row p of the KV cache holds
// position p for the sequence's whole life, so the rows below the fork's length never change again in the parent
// or in the fork: the fork needs their values, not a copy of them. A PageBuffer is a reserved range of device
// addresses backed by physical pages (CUDA virtual memory management, driver entry points fetched through the
// runtime so nothing links libcuda). Fork maps every page that lies wholly below the shared prefix to the same
// physical page as the source, and backs the rest with new pages, after copying the prefix's bytes that share a
// page with the tail. A physical page is freed when its last mapping goes, so a fork outlives its parent safely.
// Eight questions about a 256K-token video then hold the full layers' 4 GiB once instead of nine times.
// Pages are large (a buffer has at most kMaxPages of them) so that creating a cache costs few driver calls; the
// copied page of a fork is then at most bytes / kMaxPages.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"

namespace avserve::engine::cuda {

class PageBuffer final : public Buffer {
 public:
  static constexpr int kMaxPages = 64;

  // Whether the device maps pages (CUDA VMM); when it does not, callers fall back to plain allocations.
  static bool Supported(int device);
  // `bytes` of fresh pages (contents uninitialised) on `device`; work that uses the buffer is queued on `stream`.
  // Out of device memory is RESOURCE_EXHAUSTED.
  static absl::StatusOr<std::unique_ptr<PageBuffer>> Create(size_t bytes, int device, cudaStream_t stream);
  // A buffer of src's size whose first `prefix_bytes` hold src's values (the rest uninitialised), sharing the
  // pages wholly inside the prefix with src. Neither buffer may write below prefix_bytes afterwards.
  static absl::StatusOr<std::unique_ptr<PageBuffer>> Fork(const PageBuffer& src, size_t prefix_bytes);

  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  // Waits for the stream (queued kernels may still read the pages), then unmaps.
  ~PageBuffer() override;

  void* data() const override { return reinterpret_cast<void*>(base_); }
  size_t bytes() const override { return bytes_; }
  Device device() const override { return Device::kCuda; }
  size_t page_bytes() const { return page_; }
  // Pages of this buffer that are also mapped by the buffer it was forked from (0 for Create).
  int shared_pages() const { return shared_pages_; }

 private:
  PageBuffer(size_t bytes, size_t page, int device, cudaStream_t stream)
      : bytes_(bytes), page_(page), device_(device), stream_(stream) {}
  size_t reserved() const { return num_pages() * page_; }
  size_t num_pages() const { return (bytes_ + page_ - 1) / page_; }
  // Reserves the address range; maps new pages over [first_page, num_pages()); grants access to all of it.
  absl::Status Reserve();
  absl::Status MapNewPages(size_t first_page);
  absl::Status GrantAccess();

  uint64_t base_ = 0;  // CUdeviceptr
  size_t bytes_ = 0, page_ = 0;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  size_t mapped_pages_ = 0;  // pages [0, mapped_pages_) are mapped (unmapped in the destructor)
  int shared_pages_ = 0;
};

}  // namespace avserve::engine::cuda
