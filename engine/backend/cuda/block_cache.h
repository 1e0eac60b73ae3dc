// Device memory recycled on the backend's one stream.
//
// cudaMalloc and cudaFree cost tens of microseconds each and cudaFree waits for the whole device, so a forward
// step that allocates its temporaries (engine/model/gemma4.cc, one Scratch per layer) would stall on every
// layer. The cache keeps freed blocks by size class and hands them out again without any CUDA call. Reuse is
// safe without events because all of the backend's work runs on one stream: a kernel that uses a recycled
// block is queued after every kernel that used it before. When cudaMalloc fails, the idle blocks are freed
// and the allocation is tried once more, so cached memory never turns into an out-of-memory error.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"

namespace avserve::engine::cuda {

class BlockCache {
 public:
  BlockCache() = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache() { Trim(); }

  // Size class of a request: 512 B steps up to 1 MiB, then 2 MiB steps.
  static size_t RoundUp(size_t bytes);
  // A block of RoundUp(bytes) bytes; RESOURCE_EXHAUSTED when the device has no room even after a Trim. A new
  // block is also refused when it would leave less than `keep_free` bytes of device memory free (MakeRoom).
  absl::StatusOr<void*> Take(size_t bytes, size_t keep_free = 0);
  // OK when `bytes` more of device memory would leave at least `keep_free` free, after a Trim if need be;
  // RESOURCE_EXHAUSTED, saying how much is free, when not.
  absl::Status MakeRoom(size_t bytes, size_t keep_free);
  // Returns a block from Take (same `bytes`). No synchronisation (see the file comment).
  void Give(void* ptr, size_t bytes);
  // Frees every idle block (cudaFree synchronises the device).
  void Trim();
  size_t idle_bytes() const;

 private:
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> idle_;  // size class -> idle blocks
  size_t idle_bytes_ = 0;
};

}  // namespace avserve::engine::cuda
