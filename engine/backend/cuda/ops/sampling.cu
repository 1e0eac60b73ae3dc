#include "engine/backend/cuda/ops/sampling.cuh"

#include <cfloat>

#include "engine/backend/cuda/check.h"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ bool IsSuppressed(const SampleParams& p, int id) {
  for (int i = 0; i < p.num_suppressed; ++i) {
    if (p.suppressed[i] == id) return true;
  }
  return false;
}

// Order-preserving map of a float to an unsigned key (larger float -> larger key); suppressed -> 0.
__device__ __forceinline__ uint32_t SortKey(const SampleParams& p, const float* row, int id) {
  if (IsSuppressed(p, id)) return 0u;
  const uint32_t bits = __float_as_uint(row[id]);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float KeyValue(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__device__ void Argmax(const SampleParams& p, const float* row, int32_t* out) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  float v = -INFINITY;
  int idx = p.vocab;
  for (int i = threadIdx.x; i < p.vocab; i += kThreads) {
    if (!IsSuppressed(p, i) && (row[i] > v || idx == p.vocab)) {
      v = row[i];
      idx = i;
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, off);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, off);
    if (ov > v || (ov == v && oi < idx)) {
      v = ov;
      idx = oi;
    }
  }
  if (threadIdx.x % 32 == 0) {
    best_v[threadIdx.x / 32] = v;
    best_i[threadIdx.x / 32] = idx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (best_v[w] > v || (best_v[w] == v && best_i[w] < idx)) {
        v = best_v[w];
        idx = best_i[w];
      }
    }
    *out = idx < p.vocab ? idx : 0;
  }
}

// Radix select: the key of the k-th largest element (4 passes of 8 bits).
__device__ uint32_t KthLargestKey(const SampleParams& p, const float* row, int k, int* remaining_out) {
  __shared__ int hist[256];
  __shared__ uint32_t prefix_s;
  __shared__ int remaining_s;
  uint32_t prefix = 0, mask = 0;
  int remaining = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kThreads) hist[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < p.vocab; i += kThreads) {
      const uint32_t key = SortKey(p, row, i);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0, b = 255;
      for (; b > 0 && above + hist[b] < remaining; --b) above += hist[b];
      prefix_s = prefix | (static_cast<uint32_t>(b) << shift);
      remaining_s = remaining - above;
    }
    __syncthreads();
    prefix = prefix_s;
    remaining = remaining_s;
    mask |= 255u << shift;
    __syncthreads();
  }
  *remaining_out = remaining;  // how many elements equal to the k-th key belong to the top k
  return prefix;
}

__device__ void TopKSample(const SampleParams& p, const float* row, int row_index, int32_t* out) {
  __shared__ float cand_v[kMaxTopK];
  __shared__ int cand_i[kMaxTopK];
  __shared__ int count, ties;
  const int k = min(p.top_k, p.vocab);
  int tie_quota = 0;
  const uint32_t kth = KthLargestKey(p, row, k, &tie_quota);
  if (threadIdx.x == 0) count = ties = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < p.vocab; i += kThreads) {
    const uint32_t key = SortKey(p, row, i);
    bool take = key > kth;
    if (key == kth) take = atomicAdd(&ties, 1) < tie_quota;
    if (take) {
      const int slot = atomicAdd(&count, 1);
      if (slot < kMaxTopK) {
        cand_v[slot] = KeyValue(key);
        cand_i[slot] = i;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  const int n = min(count, kMaxTopK);
  // Insertion sort, descending by value then ascending by id (deterministic order for top-p).
  for (int a = 1; a < n; ++a) {
    const float v = cand_v[a];
    const int id = cand_i[a];
    int b = a - 1;
    while (b >= 0 && (cand_v[b] < v || (cand_v[b] == v && cand_i[b] > id))) {
      cand_v[b + 1] = cand_v[b];
      cand_i[b + 1] = cand_i[b];
      --b;
    }
    cand_v[b + 1] = v;
    cand_i[b + 1] = id;
  }
  float total = 0.f;
  for (int a = 0; a < n; ++a) total += expf((cand_v[a] - cand_v[0]) / p.temperature);
  // Top-p: keep the smallest prefix whose mass reaches top_p (at least one token).
  float kept = 0.f;
  int n_kept = 0;
  while (n_kept < n) {
    kept += expf((cand_v[n_kept] - cand_v[0]) / p.temperature);
    ++n_kept;
    if (kept >= p.top_p * total) break;
  }
  const float target = SampleUniform(p.seed, p.step, row_index) * kept;
  float acc = 0.f;
  int chosen = cand_i[n_kept - 1];
  for (int a = 0; a < n_kept; ++a) {
    acc += expf((cand_v[a] - cand_v[0]) / p.temperature);
    if (target < acc) {
      chosen = cand_i[a];
      break;
    }
  }
  *out = chosen;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p) {
  const float* row = p.logits + blockIdx.x * p.row_stride;
  if (p.temperature <= 0.f || p.top_k <= 1) {
    Argmax(p, row, p.out_ids + blockIdx.x);
  } else {
    TopKSample(p, row, blockIdx.x, p.out_ids + blockIdx.x);
  }
}

}  // namespace

void LaunchSample(const SampleParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.vocab > 0 && p.top_k <= kMaxTopK && p.num_suppressed <= kMaxSuppressed, "Sample: bad params");
  AVSERVE_CHECK(p.top_p > 0.f && p.top_p <= 1.f, "Sample: top_p must be in (0, 1]");
  if (p.rows == 0) return;
  SampleKernel<<<p.rows, kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
