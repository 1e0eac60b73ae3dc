#include "engine/backend/cuda/ops/sampling.cuh"

#include <cfloat>
#include <climits>
#include <cstdint>

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

// ---- Greedy: the largest non-NaN value among the allowed ids, the lowest id on ties (Sampler's greedy choice). ----

constexpr int kNoId = INT_MAX;

struct Best {
  float v;
  int i;  // kNoId: no candidate
};

// The larger value, the lower id on equal values (-0 equals +0): a total order on candidates, so any reduction
// order gives the same answer.
__device__ __forceinline__ Best Better(Best a, Best b) {
  if (b.i == kNoId) return a;
  if (a.i == kNoId) return b;
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

// A thread visits its ids in ascending order, so an equal value never replaces the earlier id.
__device__ __forceinline__ void Take(Best& b, float x, int i) {
  if (!isnan(x) && (b.i == kNoId || x > b.v)) b = {x, i};
}

// The best candidate of the block, handed to every thread.
__device__ Best BlockBest(Best b) {
  __shared__ Best warp_best[kThreads / 32];
  __shared__ Best result;
  for (int off = 16; off > 0; off >>= 1) {
    const Best o{__shfl_xor_sync(0xffffffffu, b.v, off), __shfl_xor_sync(0xffffffffu, b.i, off)};
    b = Better(b, o);
  }
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = b;
  __syncthreads();
  if (threadIdx.x == 0) {
    Best r = warp_best[0];
    for (int w = 1; w < kThreads / 32; ++w) r = Better(r, warp_best[w]);
    result = r;
  }
  __syncthreads();
  const Best r = result;
  __syncthreads();  // the shared slots may be reused by the next call
  return r;
}

// Every id of the row, suppression aside; four 16-byte loads in flight per thread where the row is aligned.
__device__ Best BestOfRow(const float* row, int vocab) {
  Best b{-INFINITY, kNoId};
  if (vocab % 4 == 0 && (reinterpret_cast<uintptr_t>(row) & 15u) == 0) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const int n4 = vocab / 4;
    const auto take4 = [&b](const float4& x, int j) {
      Take(b, x.x, 4 * j);
      Take(b, x.y, 4 * j + 1);
      Take(b, x.z, 4 * j + 2);
      Take(b, x.w, 4 * j + 3);
    };
    int j = threadIdx.x;
    for (; j + 3 * kThreads < n4; j += 4 * kThreads) {
      float4 x[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) x[u] = row4[j + u * kThreads];
#pragma unroll
      for (int u = 0; u < 4; ++u) take4(x[u], j + u * kThreads);
    }
    for (; j < n4; j += kThreads) take4(row4[j], j);
  } else {
    for (int i = threadIdx.x; i < vocab; i += kThreads) Take(b, row[i], i);
  }
  return BlockBest(b);
}

// The ids for which suppressed(id) is false (the slow scan, when the plain maximum is suppressed).
template <typename Suppressed>
__device__ Best BestAllowed(const float* row, int vocab, Suppressed suppressed) {
  Best b{-INFINITY, kNoId};
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (!suppressed(i)) Take(b, row[i], i);
  }
  return BlockBest(b);
}

// The greedy id of one row by the whole block (written by thread 0): the plain argmax, and only when that is a
// suppressed id a second scan that skips them all.
template <typename Suppressed>
__device__ void GreedyRow(const float* row, int vocab, Suppressed suppressed, int32_t* out) {
  Best b = BestOfRow(row, vocab);
  if (b.i != kNoId && suppressed(b.i)) b = BestAllowed(row, vocab, suppressed);  // b is the same in every thread
  if (threadIdx.x == 0) *out = b.i == kNoId ? -1 : b.i;
}

__device__ void Argmax(const SampleParams& p, const float* row, int32_t* out) {
  GreedyRow(row, p.vocab, [&p](int id) { return IsSuppressed(p, id); }, out);
}

// Binary search in the ascending list ids[n].
__device__ __forceinline__ bool Contains(const int32_t* ids, int n, int id) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (ids[mid] < id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < n && ids[lo] == id;
}

__global__ void __launch_bounds__(kThreads) ArgmaxKernel(ArgmaxParams p) {
  const float* row = p.logits + static_cast<int64_t>(blockIdx.x) * p.row_stride;
  GreedyRow(row, p.vocab, [&p](int id) { return Contains(p.suppressed, p.num_suppressed, id); },
            p.out_ids + blockIdx.x);
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
  const float* row = p.logits + static_cast<int64_t>(blockIdx.x) * p.row_stride;
  if (p.temperature <= 0.f || p.top_k <= 1) {
    Argmax(p, row, p.out_ids + blockIdx.x);
  } else {
    TopKSample(p, row, blockIdx.x, p.out_ids + blockIdx.x);
  }
}

}  // namespace

void LaunchArgmaxRows(const ArgmaxParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.vocab > 0 && p.num_suppressed >= 0 && (p.num_suppressed == 0 || p.suppressed != nullptr),
                "ArgmaxRows: bad params");
  if (p.rows == 0) return;
  ArgmaxKernel<<<p.rows, kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchSample(const SampleParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.vocab > 0 && p.top_k <= kMaxTopK && p.num_suppressed <= kMaxSuppressed, "Sample: bad params");
  AVSERVE_CHECK(p.top_p > 0.f && p.top_p <= 1.f, "Sample: top_p must be in (0, 1]");
  if (p.rows == 0) return;
  SampleKernel<<<p.rows, kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
