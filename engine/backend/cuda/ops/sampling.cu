#include "engine/backend/cuda/ops/sampling.cuh"

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/host_utils.cuh"

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
template <int kBlock = kThreads>
__device__ Best BlockBest(Best b) {
  __shared__ Best warp_best[kBlock / 32];
  __shared__ Best result;
  for (int off = 16; off > 0; off >>= 1) {
    const Best o{__shfl_xor_sync(0xffffffffu, b.v, off), __shfl_xor_sync(0xffffffffu, b.i, off)};
    b = Better(b, o);
  }
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = b;
  __syncthreads();
  if (threadIdx.x == 0) {
    Best r = warp_best[0];
    for (int w = 1; w < kBlock / 32; ++w) r = Better(r, warp_best[w]);
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

// The first position in the ascending list ids[n] whose id is >= id (n when none is).
__device__ __forceinline__ int LowerBound(const int32_t* ids, int n, int id) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (ids[mid] < id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Binary search in the ascending list ids[n].
__device__ __forceinline__ bool Contains(const int32_t* ids, int n, int id) {
  const int at = LowerBound(ids, n, id);
  return at < n && ids[at] == id;
}

__global__ void __launch_bounds__(kThreads) ArgmaxKernel(ArgmaxParams p) {
  const float* row = p.logits + static_cast<int64_t>(blockIdx.x) * p.row_stride;
  GreedyRow(row, p.vocab, [&p](int id) { return Contains(p.suppressed, p.num_suppressed, id); },
            p.out_ids + blockIdx.x);
}

// ---- Greedy over many blocks per row: block (part, row) takes ids [part * slice, min(vocab, (part + 1) *
// slice)), writes its best (value, id) to the scratch, and the block that arrives last at the row's counter
// merges the row's partials (Better is a total order, so the merge order cannot change the answer) and resets
// the counter for the next launch. ----

constexpr int kSplitThreads = 256;
static_assert(kMaxArgmaxBlocksPerRow <= kSplitThreads, "the merge loads one partial per thread");

struct SplitArgs {
  int slice = 0;              // ids per block, a multiple of 4
  int2* parts = nullptr;      // [kMaxArgmaxSplitRows, kMaxArgmaxBlocksPerRow] (value bits, id)
  unsigned* counters = nullptr;  // [kMaxArgmaxSplitRows] blocks of the row done; 0 between launches
};

// The best candidate among ids [begin, end) of the row for which allowed(id), handed to every thread. Each
// thread visits its ids in ascending order (what Take needs): one id of the unaligned head (up to 3 ids), then
// 16-byte loads (four in flight), then one id of the tail (up to 3 ids).
template <typename Allowed>
__device__ Best SliceBest(const float* row, int begin, int end, Allowed allowed) {
  Best b{-INFINITY, kNoId};
  const auto take = [&](float x, int id) {
    if (allowed(id)) Take(b, x, id);
  };
  const int misaligned = static_cast<int>((reinterpret_cast<uintptr_t>(row + begin) >> 2) & 3u);
  const int head = min((4 - misaligned) & 3, end - begin);
  if (static_cast<int>(threadIdx.x) < head) take(row[begin + threadIdx.x], begin + threadIdx.x);
  const int body = begin + head;
  const int n4 = (end - body) / 4;
  const float4* row4 = reinterpret_cast<const float4*>(row + body);  // 16-byte aligned
  for (int j = threadIdx.x; j < n4; j += 4 * kSplitThreads) {
    float4 x[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      x[u] = j + u * kSplitThreads < n4 ? __ldg(row4 + j + u * kSplitThreads) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (j + u * kSplitThreads < n4) {
        const int id = body + 4 * (j + u * kSplitThreads);
        take(x[u].x, id);
        take(x[u].y, id + 1);
        take(x[u].z, id + 2);
        take(x[u].w, id + 3);
      }
    }
  }
  const int tail = body + 4 * n4 + static_cast<int>(threadIdx.x);
  if (static_cast<int>(threadIdx.x) < 3 && tail < end) take(row[tail], tail);
  return BlockBest<kSplitThreads>(b);
}

// The best allowed candidate of ids [begin, end): the plain best, and only when that one is suppressed a second
// pass that skips the slice's suppressed ids (a binary search in just their part of the list).
__device__ Best SliceBestAllowed(const ArgmaxParams& p, const float* row, int begin, int end) {
  Best b = SliceBest(row, begin, end, [](int) { return true; });
  if (b.i != kNoId && Contains(p.suppressed, p.num_suppressed, b.i)) {  // b is the same in every thread
    const int lo = LowerBound(p.suppressed, p.num_suppressed, begin);
    const int n = LowerBound(p.suppressed, p.num_suppressed, end) - lo;
    const int32_t* sup = p.suppressed + lo;
    b = SliceBest(row, begin, end, [sup, n](int id) { return !Contains(sup, n, id); });
  }
  return b;
}

// grid (blocks per row, rows).
__global__ void __launch_bounds__(kSplitThreads) ArgmaxSplitKernel(ArgmaxParams p, SplitArgs s) {
  const int r = blockIdx.y, part = blockIdx.x;
  const float* row = p.logits + static_cast<int64_t>(r) * p.row_stride;
  const int begin = part * s.slice;  // < vocab
  const int end = static_cast<int>(min(static_cast<int64_t>(p.vocab), static_cast<int64_t>(begin) + s.slice));
  const Best b = SliceBestAllowed(p, row, begin, end);
  int2* parts = s.parts + r * kMaxArgmaxBlocksPerRow;
  __shared__ bool last;
  if (threadIdx.x == 0) {
    parts[part] = make_int2(__float_as_int(b.v), b.i);
    __threadfence();  // the partial is visible before the count says so
    last = atomicAdd(s.counters + r, 1u) == gridDim.x - 1;
    if (last) {
      s.counters[r] = 0;  // every block of the row has counted: ready for the next launch
      __threadfence();    // and the other blocks' partials are read after their counts
    }
  }
  __syncthreads();
  if (!last) return;
  Best m{-INFINITY, kNoId};
  if (threadIdx.x < gridDim.x) {
    const int2 q = __ldcg(parts + threadIdx.x);  // from L2, where the other blocks wrote
    m = {__int_as_float(q.x), q.y};
  }
  m = BlockBest<kSplitThreads>(m);
  if (threadIdx.x == 0) p.out_ids[r] = m.i == kNoId ? -1 : m.i;
}

struct SplitScratch {
  int2* parts = nullptr;
  unsigned* counters = nullptr;
};

// One scratch per stream, allocated on first use and kept (launches on one stream never overlap).
SplitScratch ScratchFor(cudaStream_t stream) {
  return PerStreamScratch<SplitScratch>(stream, [](cudaStream_t st) {
    SplitScratch s;
    constexpr size_t kParts = size_t{kMaxArgmaxSplitRows} * kMaxArgmaxBlocksPerRow;
    AVSERVE_CUDA_CHECK(cudaMalloc(&s.parts, kParts * sizeof(int2)));
    AVSERVE_CUDA_CHECK(cudaMalloc(&s.counters, kMaxArgmaxSplitRows * sizeof(unsigned)));
    AVSERVE_CUDA_CHECK(cudaMemsetAsync(s.counters, 0, kMaxArgmaxSplitRows * sizeof(unsigned), st));
    return s;
  });
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

ArgmaxSplit SplitArgmaxRow(int vocab, int want) {
  AVSERVE_CHECK(vocab > 0, "SplitArgmaxRow: empty row");
  const int64_t blocks = std::clamp(want, 1, kMaxArgmaxBlocksPerRow);
  const int64_t slice = (vocab + blocks - 1) / blocks;
  ArgmaxSplit s;
  s.slice = static_cast<int>((slice + 3) / 4 * 4);
  s.blocks_per_row = static_cast<int>((vocab + int64_t{s.slice} - 1) / s.slice);
  return s;
}

ArgmaxSplit ChooseArgmaxSplit(int rows, int vocab, int num_sms) {
  if (rows > kMaxArgmaxSplitRows) return {1, vocab};
  const int per_row = (kArgmaxBlocksPerSm * std::max(num_sms, 1) + rows - 1) / rows;
  const int want = std::min(per_row, vocab / kMinArgmaxSlice);
  if (want <= 1) return {1, vocab};
  return SplitArgmaxRow(vocab, want);
}

void LaunchArgmaxRowsSplit(const ArgmaxParams& p, const ArgmaxSplit& split, cudaStream_t stream) {
  AVSERVE_CHECK(p.vocab > 0 && p.num_suppressed >= 0 && (p.num_suppressed == 0 || p.suppressed != nullptr),
                "ArgmaxRows: bad params");
  AVSERVE_CHECK(p.rows >= 0 && p.rows <= kMaxArgmaxSplitRows && split.blocks_per_row >= 1 &&
                    split.blocks_per_row <= kMaxArgmaxBlocksPerRow && split.slice > 0 && split.slice % 4 == 0 &&
                    int64_t{split.slice} * (split.blocks_per_row - 1) < p.vocab &&
                    int64_t{split.slice} * split.blocks_per_row >= p.vocab,
                "ArgmaxRows: the split does not tile the row");
  if (p.rows == 0) return;
  const SplitScratch scratch = ScratchFor(stream);
  SplitArgs s;
  s.slice = split.slice;
  s.parts = scratch.parts;
  s.counters = scratch.counters;
  const dim3 grid(static_cast<unsigned>(split.blocks_per_row), static_cast<unsigned>(p.rows));
  ArgmaxSplitKernel<<<grid, kSplitThreads, 0, stream>>>(p, s);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchArgmaxRows(const ArgmaxParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.vocab > 0 && p.num_suppressed >= 0 && (p.num_suppressed == 0 || p.suppressed != nullptr),
                "ArgmaxRows: bad params");
  if (p.rows == 0) return;
  const ArgmaxSplit split = ChooseArgmaxSplit(p.rows, p.vocab, NumSms());
  if (split.blocks_per_row > 1) {
    LaunchArgmaxRowsSplit(p, split, stream);
    return;
  }
  ArgmaxKernel<<<p.rows, kThreads, 0, stream>>>(p);  // many rows or short ones: one block per row
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
