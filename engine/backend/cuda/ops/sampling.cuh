// Token choice on the GPU from fp32 logits (design.md §4): greedy (argmax, first index on ties) or
// temperature + top-k + top-p with a counter-based random number (seed, step, row), suppressed ids excluded.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace avserve::engine::cuda {

inline constexpr int kMaxTopK = 256;
inline constexpr int kMaxSuppressed = 8;

struct SampleParams {
  const float* logits = nullptr;  // [rows, vocab], row stride row_stride
  int64_t row_stride = 0;
  int rows = 0;
  int vocab = 0;
  int32_t* out_ids = nullptr;     // [rows]
  float temperature = 0.f;        // <= 0: greedy
  int top_k = 1;                  // 1..kMaxTopK (1 = greedy)
  float top_p = 1.f;              // (0, 1]
  uint64_t seed = 0;
  uint64_t step = 0;              // decode step; (seed, step, row) picks the random number
  int32_t suppressed[kMaxSuppressed] = {};
  int num_suppressed = 0;
};

void LaunchSample(const SampleParams& p, cudaStream_t stream);

// Greedy choice per row (engine::Backend::ArgmaxRows): the largest non-NaN, unsuppressed value, the lowest id on
// ties, -1 where none is left. The suppressed ids live on the device, so their number is not bounded.
struct ArgmaxParams {
  const float* logits = nullptr;       // [rows, vocab], row stride row_stride
  int64_t row_stride = 0;
  int rows = 0;
  int vocab = 0;
  const int32_t* suppressed = nullptr;  // [num_suppressed] ascending, each in [0, vocab)
  int num_suppressed = 0;
  int32_t* out_ids = nullptr;           // [rows]
};

// Up to kMaxArgmaxSplitRows rows of at least 2 * kMinArgmaxSlice ids run on many blocks per row (about
// kArgmaxBlocksPerSm blocks per SM in all, each reducing a slice of its row to one candidate, the row's last block
// merging them); more rows, or shorter ones, on one block per row. Same answer either way.
void LaunchArgmaxRows(const ArgmaxParams& p, cudaStream_t stream);

inline constexpr int kMaxArgmaxSplitRows = 64;
inline constexpr int kMaxArgmaxBlocksPerRow = 128;
inline constexpr int kMinArgmaxSlice = 2048;
inline constexpr int kArgmaxBlocksPerSm = 4;

// How a row is cut: blocks_per_row blocks of `slice` ids (a multiple of 4), the last one taking the rest.
struct ArgmaxSplit {
  int blocks_per_row = 1;
  int slice = 0;
};

// About `want` (clamped to [1, kMaxArgmaxBlocksPerRow]) equal slices of `vocab` ids: slice = ceil(vocab / want)
// rounded up to a multiple of 4, blocks_per_row = ceil(vocab / slice) <= want.
ArgmaxSplit SplitArgmaxRow(int vocab, int want);

// The split LaunchArgmaxRows uses for `rows` rows on a GPU with num_sms SMs; blocks_per_row == 1 means the
// one-block-per-row kernel.
ArgmaxSplit ChooseArgmaxSplit(int rows, int vocab, int num_sms);

// The many-blocks kernel with a given split (LaunchArgmaxRows picks one; tests choose their own). rows <=
// kMaxArgmaxSplitRows; the split must tile the row (SplitArgmaxRow's do). Launches on one stream share one
// scratch, kept from the first launch.
void LaunchArgmaxRowsSplit(const ArgmaxParams& p, const ArgmaxSplit& split, cudaStream_t stream);

// The uniform number in [0, 1) that LaunchSample draws for (seed, step, row); host and device agree.
__host__ __device__ inline float SampleUniform(uint64_t seed, uint64_t step, int row) {
  uint64_t z = seed ^ (step * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(row) * 0xD1B54A32D192ED03ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;  // splitmix64 finaliser
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace avserve::engine::cuda
