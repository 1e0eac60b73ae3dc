#include "engine/backend/cuda/block_cache.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/check.h"
#include "engine/base/status_macros.h"

namespace avserve::engine::cuda {

size_t BlockCache::RoundUp(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{2} << 20, kSmallLimit = size_t{1} << 20;
  if (bytes == 0) bytes = 1;
  const size_t step = bytes <= kSmallLimit ? kSmall : kLarge;
  return (bytes + step - 1) / step * step;
}

absl::StatusOr<void*> BlockCache::Take(size_t bytes, size_t keep_free) {
  const size_t size = RoundUp(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = idle_.find(size);
    if (it != idle_.end() && !it->second.empty()) {
      void* ptr = it->second.back();
      it->second.pop_back();
      idle_bytes_ -= size;
      return ptr;
    }
  }
  if (keep_free > 0) RETURN_IF_ERROR(MakeRoom(size, keep_free));
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    Trim();
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the allocation error so later calls are not poisoned
    return CudaStatus(err, "cudaMalloc");
  }
  return ptr;
}

absl::Status BlockCache::MakeRoom(size_t bytes, size_t keep_free) {
  size_t free = 0, total = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free, &total), "cudaMemGetInfo"));
    if (free >= keep_free && free - keep_free >= bytes) return absl::OkStatus();
    if (attempt == 0) Trim();  // idle blocks count as free once given back
  }
  return absl::ResourceExhaustedError(absl::StrCat("device memory: ", bytes, " bytes more would leave less than the ",
                                                   keep_free, " kept free for the kernels' workspaces (", free,
                                                   " of ", total, " free)"));
}

void BlockCache::Give(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  const size_t size = RoundUp(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  idle_[size].push_back(ptr);
  idle_bytes_ += size;
}

void BlockCache::Trim() {
  std::map<size_t, std::vector<void*>> idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle.swap(idle_);
    idle_bytes_ = 0;
  }
  for (auto& [size, blocks] : idle) {
    for (void* ptr : blocks) {
      const cudaError_t err = cudaFree(ptr);
      if (err != cudaSuccess) cudaGetLastError();
    }
  }
}

size_t BlockCache::idle_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_bytes_;
}

}  // namespace avserve::engine::cuda
