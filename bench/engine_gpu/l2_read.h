// A kernel that reads a buffer held in L2: the ceiling that a flash-attention kernel over a full layer would stream
// its K/V tiles against (one KV head: every CTA reads the same rows). engine_gpu_bench times it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace avserve::bench {

// One launch of `ctas` CTAs of 512 threads, each walking the first `bytes` of `buf` (rounded down to the kernel's
// step of 64 KB) `passes` times with 16-byte loads (.cg: L2, not L1). same_order: every CTA starts at the first
// byte (the K/V pattern of one KV head); otherwise CTA b starts at its own offset. `sink` (16 bytes) is written
// only to keep the loads. Returns the bytes the launch reads.
int64_t LaunchL2Read(cudaStream_t stream, const void* buf, size_t bytes, int ctas, int passes, bool same_order,
                     void* sink);

}  // namespace avserve::bench
