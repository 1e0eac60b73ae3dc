// The L2 read ceiling that a flash-attention kernel over a full layer would stream its K/V tiles against (one KV
// head: every CTA reads the same rows).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace avserve::bench {

// TB/s that `ctas_per_sm` CTAs a SM of 512 threads read from a `bytes` buffer that stays in L2, each CTA walking
// the whole buffer `passes` times with 16-byte loads (.cg: L2, not L1). same_order: every CTA starts at the
// buffer's first byte (the K/V pattern of one KV head); otherwise CTA b starts at its own offset.
double L2ReadTbps(cudaStream_t stream, size_t bytes, int ctas_per_sm, int passes, bool same_order);

}  // namespace avserve::bench
