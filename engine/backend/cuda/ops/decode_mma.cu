// Note [Decode on tensor cores]
// A decode step has few query rows per KV head (GQA 16 x 1 position on the full layers, 2 x 1 on the sliding
// ones) and many keys, so the work is reading K and V once at full bandwidth. A CTA owns one KV head of one
// sequence and one slice of its keys; its rows (position, head) form one m16 tile (unused rows are zero).
//   * Warps split the head dimension: warp w owns dims [128w, 128w + 128). For Q·Kᵀ each warp multiplies its
//     dims only and the partial scores meet in shared memory (summed in warp order, so every warp holds the
//     same fp32 scores); for P·V each warp produces its own output dims. Nothing is computed twice.
//   * K and V tiles of kDecodeKeys keys stream through a 2- or 3-stage ring (TwoStages), so the next tile is in
//     flight while one is multiplied. Each row of a tile is one Hopper bulk copy (512 or 1024 bytes, issued by
//     one thread, the 32 copies spread over the warps; the bytes complete the stage's mbarrier). With 16-byte
//     cp.async (4,096 requests per 64 KB tile, each with its address math) the full layer at 32K took 42 us
//     instead of 33, the 8-question one 337 us instead of 220.
//   * Online softmax as in attention.cu: fp32 scores and statistics, P rounded to bf16 against the running
//     max before P·V, the denominator summing the unrounded values; slices write fp32 partials that
//     attention.cu's combine kernel merges, a single slice writes bf16 output.
// Several sequences (batched questions, each with its own cache) run in one launch: grid x picks the sequence
// and the key slice (DecodeWork), and the cache pointers and positions come from DecodeSeqs. Forks of one video
// read the positions they share from one cache (DecodeSeq::k_shared): the batch's CTAs of one key slice run in the
// same wave, so the first to ask brings the rows into L2 for the others. Measured with ncu (8 questions at 32K,
// full layer): 83% of reads hit L2 and DRAM reads drop to 0.46 TB/s, but the kernel takes as long either way; it
// is bound by the latency of its tiles (12% occupancy, barrier stalls first), not by memory.
//
// Note [Forks in one tile]
// A sliding layer has 2 query rows per KV head, so a CTA of one sequence leaves 14 of its 16 rows empty. When
// forks share a prefix (PlanDecodeMma), up to 8 of them fill one m16 tile instead: the first CTAs of the launch
// read the common keys [group_lo, group_end) once, from seq[0]'s cache, for all their sequences (each row masked
// by its own sequence's range), and the CTAs after them read each sequence's own keys from group_end on. Both
// write partials of one split layout that the combine kernel merges. The grouped CTAs read only rows written
// before this step, so they load their first tiles before waiting on the kernels before them.
//   * H200, 8 questions at 32K (ncu): a sliding layer's attention went from 24.7 + 5.9 us (combine) to 4.6 + 8.1
//     + 5.8 us with the tails as a second launch; the step from 9.72-9.80 to 9.25-9.41 ms.
//   * The same for the full layers (16 rows each: 2 or 4 sequences a CTA in 2 or 4 row tiles, up to 6 stages)
//     was slower, 117.8 us against 108.7 for one sequence a CTA. Those kernels are bound by each tile's chain of
//     waits and barriers, which more warps per CTA lengthen, not by the bytes they read. So full layers are not
//     grouped.
#include "engine/backend/cuda/ops/decode_mma.cuh"

#include <algorithm>
#include <cfloat>
#include <cstdlib>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/mma.cuh"
#include "engine/backend/cuda/ops/online_softmax.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// Keys per K/V tile. 16 rather than 32 halves the shared memory per CTA (then 104 KB for a full layer with three
// stages, so two CTAs shared an SM; four of the sliding ones): on the H200 the full layer at 32K took 26.6 us
// against 32.9, the 8-question step's full layer 157 against 218 us, its sliding layer 24.3 against 28.8 us.
constexpr int kDecodeKeys = 16;

template <int kD, int kStages_>
struct DecodeMmaTraits {
  static constexpr int kWarps = kD / 128;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kKeys = kDecodeKeys;
  static constexpr int kStages = kStages_;
  static constexpr int kStride = kD + 8;  // +16 B per row: ldmatrix rows hit distinct banks
  static constexpr size_t kTileElems = size_t{kKeys} * kStride;
  static constexpr size_t kSmemBytes =
      sizeof(bf16) * kStages * 2 * kTileElems + sizeof(float) * kWarps * 16 * kKeys;
};

// The CTAs of one launch (grid x; y is the KV head). The first group_ctas CTAs are grouped (Note [Forks in one
// tile]): CTA x takes keys [key_lo, key_end) of sequences [(x / group_splits) * seqs_per_cta, ...), read from
// seq[0]'s cache, as split x % group_splits. Each later CTA takes one sequence's keys from key_end on (all of
// them when nothing is grouped, key_end 0) as split group_splits + (its index among them) % tail_splits.
struct DecodeWork {
  int seqs_per_cta = 1;
  int group_ctas = 0, group_splits = 0;
  int key_lo = 0, key_end = 0;
  int tail_splits = 1;
  int spread = 0;  // the tiles' row copies issued by every warp, not by warp 0 alone
};

// Tiles of kDecodeKeys keys that cover keys [kv_begin, kv_end), counted from the tile holding kv_begin.
__host__ __device__ __forceinline__ int FirstTileKey(int kv_begin) { return (kv_begin / kDecodeKeys) * kDecodeKeys; }
__host__ __device__ __forceinline__ int NumTiles(int kv_begin, int kv_end) {
  const int tile0 = FirstTileKey(kv_begin);
  return kv_end > tile0 ? (kv_end - tile0 + kDecodeKeys - 1) / kDecodeKeys : 0;
}
__host__ __device__ __forceinline__ int NumTiles(const DecodeSeq& s) { return NumTiles(s.kv_begin, s.kv_end); }

// Visible: in the row's key range [lo, hi), causal, inside the window.
__device__ __forceinline__ bool Visible(const AttentionParams& p, int lo, int hi, int qpos, int kpos) {
  return kpos >= lo && kpos < hi && kpos <= qpos && (p.window <= 0 || kpos > qpos - p.window);
}

template <int kD, int kS>
__global__ void __launch_bounds__(DecodeMmaTraits<kD, kS>::kThreads)
    DecodeMmaKernel(AttentionParams p, DecodeSeqs seqs, DecodeWork work) {
  using Tr = DecodeMmaTraits<kD, kS>;
  static_assert(Tr::kThreads >= 2 * Tr::kKeys, "bulk loads: one thread per K row and per V row");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[Tr::kStages];  // stage s: its tile's bytes have landed
  bf16* kv_s = reinterpret_cast<bf16*>(smem_raw);                                   // [stage][K|V][kKeys][kStride]
  float* s_part = reinterpret_cast<float*>(kv_s + Tr::kStages * 2 * Tr::kTileElems);  // [warp][16][kKeys]
  const int kv_head = blockIdx.y;
  const bool grouped = static_cast<int>(blockIdx.x) < work.group_ctas;
  const int tail = blockIdx.x - work.group_ctas;
  const int split = grouped ? blockIdx.x % work.group_splits : tail % work.tail_splits;
  const int splits = grouped ? work.group_splits : work.tail_splits;
  const int first = grouped ? (blockIdx.x / work.group_splits) * work.seqs_per_cta : tail / work.tail_splits;
  const int nseq = grouped ? min(work.seqs_per_cta, seqs.count - first) : 1;
  const DecodeSeq& src = seqs.seq[grouped ? 0 : first];  // whose cache the tiles come from
  const int lo = grouped ? work.key_lo : max(src.kv_begin, work.key_end);
  const int hi = grouped ? work.key_end : src.kv_end;
  const int group = p.num_heads / p.num_kv_heads;
  const int rows = seqs.q_len * group;  // query rows per sequence
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int d0 = warp * 128;

  const int tile0 = FirstTileKey(lo), num_tiles = NumTiles(lo, hi);
  const int per = (num_tiles + splits - 1) / splits;
  const int t_begin = split * per, t_end = min(num_tiles, t_begin + per);
  // The CTA whose keys hold the sequence's new position appends its K/V row (this head's part) to the cache.
  const int new_tile = (src.q_pos0 - tile0) / Tr::kKeys;
  const bool appends = !grouped && seqs.k_new != nullptr && new_tile >= t_begin && new_tile < t_end;

  auto load_tile = [&](int tile, int stage) {
    const int key0 = tile0 + tile * Tr::kKeys;
    bf16* ks = kv_s + stage * 2 * Tr::kTileElems;
    bf16* vs = ks + Tr::kTileElems;
    // Copy r < kKeys is K row r, copy kKeys + r V row r; rows outside [lo, hi) are zeroed (their scores are
    // masked, and P = 0 must not meet garbage in V). Thread 0 announces the valid rows' bytes.
    if (threadIdx.x == 0) {
      const int valid = max(0, min(key0 + Tr::kKeys, hi) - max(key0, lo));
      MbarArriveExpectTx(&full_bar[stage], static_cast<uint32_t>(valid) * 2 * kD * sizeof(bf16));
    }
    // Copy c (K rows, then V rows) from thread c, or from lane c % per_warp of warp c / per_warp (spread).
    constexpr int kPerWarp = 2 * Tr::kKeys / Tr::kWarps;
    const int c = work.spread ? (lane < kPerWarp ? warp * kPerWarp + lane : -1)
                              : (threadIdx.x < 2 * Tr::kKeys ? static_cast<int>(threadIdx.x) : -1);
    if (c >= 0) {
      const bool is_v = c >= Tr::kKeys;
      const int r = c % Tr::kKeys, pos = key0 + r;
      bf16* dst = (is_v ? vs : ks) + r * Tr::kStride;
      if (pos >= lo && pos < hi) {
        const int64_t slot = pos % src.kv_capacity;
        // A shared prefix is read from the one copy every sequence of the batch reads (hits in L2); the step's own
        // row from the new rows, which this launch is writing to the cache (below).
        const bool shared = pos < src.shared_end;
        const bf16* from = is_v ? (shared ? src.v_shared : src.v) + slot * p.v_slot_stride + kv_head * p.v_head_stride
                                : (shared ? src.k_shared : src.k) + slot * p.k_slot_stride + kv_head * p.k_head_stride;
        if (appends && pos == src.q_pos0) {
          from = (is_v ? seqs.v_new + first * seqs.v_new_stride : seqs.k_new + first * seqs.k_new_stride) +
                 kv_head * kD;
        }
        FenceProxyAsync();  // this row's earlier reads and zero stores come before the copy
        BulkCopyG2S(dst, from, kD * sizeof(bf16), &full_bar[stage]);
      } else {
        for (int c = 0; c < kD / 8; ++c) reinterpret_cast<int4*>(dst)[c] = make_int4(0, 0, 0, 0);
      }
    }
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < Tr::kStages; ++s) MbarInit(&full_bar[s], 1);
    FenceMbarInit();
  }
  __syncthreads();
  // A grouped launch reads only rows written before this step, so its first tiles may be in flight before the
  // kernels it follows are done; a per-sequence one reads the step's new row (Note [Dependent launch]).
  if (!grouped) PdlWait();
  if (appends) {  // one 16-byte piece of the K or V row a thread (kThreads = kD / 4 pieces in all)
    const bool is_v = threadIdx.x >= kD / 8;
    const int c = threadIdx.x % (kD / 8);
    const int64_t slot = src.q_pos0 % src.kv_capacity;
    const bf16* from = (is_v ? seqs.v_new + first * seqs.v_new_stride : seqs.k_new + first * seqs.k_new_stride) +
                       kv_head * kD;
    bf16* to = const_cast<bf16*>(is_v ? src.v + slot * p.v_slot_stride + kv_head * p.v_head_stride
                                      : src.k + slot * p.k_slot_stride + kv_head * p.k_head_stride);
    reinterpret_cast<int4*>(to)[c] = reinterpret_cast<const int4*>(from)[c];
  }
#pragma unroll
  for (int s = 0; s < Tr::kStages - 1; ++s) {
    if (t_begin + s < t_end) load_tile(t_begin + s, s);
  }
  if (grouped) PdlWait();  // q comes from the kernels before
  PdlLaunchDependents();

  // Q as A fragments of this warp's 128 dims (rows g and g + 8); row r belongs to sequence first + r / rows, and
  // sees its keys in [lo, hi). Rows past the CTA's sequences are zero and see no key.
  int qpos[2], key_lo[2], key_hi[2];
  uint32_t qf[8][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = g + 8 * i, j = r / rows, lr = r % rows, b = first + j;
    const bool valid = j < nseq;
    const DecodeSeq& sq = seqs.seq[valid ? b : first];
    qpos[i] = sq.q_pos0 + lr / group;
    key_lo[i] = valid ? max(sq.kv_begin, lo) : 0;
    key_hi[i] = valid ? min(sq.kv_end, hi) : 0;
    const bf16* qrow = valid ? p.q + (int64_t{b} * seqs.q_len + lr / group) * p.q_token_stride +
                                   (kv_head * group + lr % group) * p.q_head_stride + d0 + 2 * t
                             : nullptr;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      qf[kk][i] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16) : 0u;
      qf[kk][2 + i] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + kk * 16 + 8) : 0u;
    }
  }

  float o[16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float row_max[2] = {-FLT_MAX, -FLT_MAX}, row_sum[2] = {0.f, 0.f};
  const float scale_log2 = p.scale * kLog2e;
  const int mi = lane / 8;

  for (int tile = t_begin; tile < t_end; ++tile) {
    const int it = tile - t_begin;
    MbarWait(&full_bar[it % Tr::kStages], (it / Tr::kStages) & 1);  // this tile has landed
    __syncthreads();  // ... for every thread; and every warp is done with the stage reused next
    if (tile + Tr::kStages - 1 < t_end) load_tile(tile + Tr::kStages - 1, (it + Tr::kStages - 1) % Tr::kStages);
    const bf16* ks = kv_s + (it % Tr::kStages) * 2 * Tr::kTileElems;
    const bf16* vs = ks + Tr::kTileElems;

    // Partial scores over this warp's dims: [16 rows, kKeys keys] as kKeys / 8 n8 tiles.
    float s[Tr::kKeys / 8][4];
#pragma unroll
    for (int j = 0; j < Tr::kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
#pragma unroll
      for (int np = 0; np < Tr::kKeys / 16; ++np) {
        uint32_t bfr[4];
        Ldmatrix4(bfr, ks + (np * 16 + (mi / 2) * 8 + lane % 8) * Tr::kStride + d0 + kk * 16 + (mi % 2) * 8);
        Mma16816(s[2 * np], qf[kk], bfr[0], bfr[1]);
        Mma16816(s[2 * np + 1], qf[kk], bfr[2], bfr[3]);
      }
    }
    if constexpr (Tr::kWarps > 1) {
      float* mine = s_part + warp * 16 * Tr::kKeys;
#pragma unroll
      for (int j = 0; j < Tr::kKeys / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) mine[(g + 8 * (e / 2)) * Tr::kKeys + j * 8 + 2 * t + e % 2] = s[j][e];
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < Tr::kKeys / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int idx = (g + 8 * (e / 2)) * Tr::kKeys + j * 8 + 2 * t + e % 2;
          float sum = s_part[idx];
#pragma unroll
          for (int w = 1; w < Tr::kWarps; ++w) sum += s_part[w * 16 * Tr::kKeys + idx];
          s[j][e] = sum;
        }
      }
    }

    // Mask and online softmax.
    const int key0 = tile0 + tile * Tr::kKeys;
#pragma unroll
    for (int j = 0; j < Tr::kKeys / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e / 2;
        if (!Visible(p, key_lo[i], key_hi[i], qpos[i], key0 + j * 8 + 2 * t + e % 2)) s[j][e] = -INFINITY;
      }
    }
    float corr[2];
    uint32_t pfrag[Tr::kKeys / 16][4];
    OnlineSoftmaxTile<Tr::kKeys / 8>(s, row_max, row_sum, scale_log2, corr, pfrag);
    RescaleRows<16>(o, corr);
#pragma unroll
    for (int kc = 0; kc < Tr::kKeys / 16; ++kc) {
#pragma unroll
      for (int dp = 0; dp < 8; ++dp) {
        uint32_t bfr[4];
        Ldmatrix4Trans(bfr, vs + (kc * 16 + (mi % 2) * 8 + lane % 8) * Tr::kStride + d0 + dp * 16 + (mi / 2) * 8);
        Mma16816(o[2 * dp], pfrag[kc], bfr[0], bfr[1]);
        Mma16816(o[2 * dp + 1], pfrag[kc], bfr[2], bfr[3]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
  const int64_t rows_all = static_cast<int64_t>(p.q_len) * p.num_heads;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = g + 8 * i, sj = r / rows, lr = r % rows;
    if (sj >= nseq) continue;
    const int64_t token = int64_t{first + sj} * seqs.q_len + lr / group;
    const int head = kv_head * group + lr % group;
    if (p.num_splits == 1) {
      const float inv = row_sum[i] > 0.f ? 1.f / row_sum[i] : 0.f;
      bf16* out = p.o + token * p.o_token_stride + head * p.o_head_stride + d0 + 2 * t;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        *reinterpret_cast<__nv_bfloat162*>(out + j * 8) =
            __floats2bfloat162_rn(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
      }
    } else {
      const int64_t flat = token * p.num_heads + head;
      const int64_t slice = grouped ? split : work.group_splits + split;
      float* part_o = static_cast<float*>(p.workspace) + (slice * rows_all + flat) * p.head_dim + d0 + 2 * t;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        *reinterpret_cast<float2*>(part_o + j * 8) = make_float2(o[j][2 * i], o[j][2 * i + 1]);
      }
      if (warp == 0 && t == 0) {
        float* part_ml = static_cast<float*>(p.workspace) + p.num_splits * rows_all * p.head_dim;
        part_ml[2 * (slice * rows_all + flat)] = row_max[i];
        part_ml[2 * (slice * rows_all + flat) + 1] = row_sum[i];
      }
    }
  }
}

// Whether a launch of `count` sequences takes two K/V stages (else three). Batches take two: 70 KB instead of
// 104 KB of shared memory per full-layer CTA, so three CTAs share an SM instead of two (six of the sliding ones
// instead of four). The kernel is bound by the latency of its tiles (ncu: 12% occupancy, barrier stalls first), so
// more CTAs pay more than a deeper ring: on the H200, alternated in one run, the 8-question step 9.875 / 9.787 ms
// against 10.097 / 10.017 with three before decode graphs, and 8.68 / 8.60 against 9.20 / 9.27 with them
// (session 10), where grouped forks (Note [Forks in one tile]) need two anyway. A single sequence takes three: with
// decode graphs, decode at 32K 7.799 / 7.722 ms against 7.870 / 7.783 with two in one run, 7.862 / 7.783 against
// 7.912 / 7.798 in another (session 10; before graphs three lost, 8.19 / 8.15 against 8.16 / 8.12).
// AVSERVE_DECODE_STAGES=2 or =3 sets every launch's (to measure).
bool TwoStages(int count) {
  static const char forced = [] {
    const char* env = std::getenv("AVSERVE_DECODE_STAGES");
    return env != nullptr && (env[0] == '2' || env[0] == '3') ? env[0] : '\0';
  }();
  return forced != '\0' ? forced == '2' : count != 1;
}

// Sets the kernel's shared memory once; returns its CTAs per SM (shared memory, threads and registers).
template <int kD, int kS>
int Prepare() {
  static const int per_sm = [] {
    const auto kernel = DecodeMmaKernel<kD, kS>;
    const int smem = static_cast<int>(DecodeMmaTraits<kD, kS>::kSmemBytes);
    AVSERVE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int n = 0;
    AVSERVE_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, DecodeMmaTraits<kD, kS>::kThreads, smem));
    return std::max(1, n);
  }();
  return per_sm;
}

template <int kD, int kS>
void Launch(const AttentionParams& p, const DecodeSeqs& seqs, const DecodeWork& work, cudaStream_t stream) {
  using Tr = DecodeMmaTraits<kD, kS>;
  Prepare<kD, kS>();
  const dim3 grid(work.group_ctas + work.tail_splits * seqs.count, p.num_kv_heads);
  LaunchPdl(DecodeMmaKernel<kD, kS>, grid, dim3(Tr::kThreads), Tr::kSmemBytes, stream, p, seqs, work);
}

// Splits of `ctas` CTAs per split over keys of up to max_tiles tiles, min_tiles or more each: one wave (a second,
// part-filled one would double the time).
int FillSplits(int per_sm, int num_sms, int ctas, int max_tiles, int min_tiles) {
  const int fill = std::max(1, per_sm * num_sms / std::max(1, ctas));
  return std::max(1, std::min(fill, std::max(1, max_tiles / min_tiles)));
}

// Fewest tiles per split of a grouped launch (AVSERVE_DECODE_GROUP_TILES, to measure).
int GroupMinTiles() {
  static const int tiles = EnvCount("AVSERVE_DECODE_GROUP_TILES", 2, 1);
  return tiles;
}

// Block (i, b): token i of sequence b; 16-byte copies of its K and V rows.
__global__ void AppendKvKernel(AppendKvParams p, DecodeSeqs seqs) {
  PdlWait();
  PdlLaunchDependents();
  const int i = blockIdx.x, b = blockIdx.y;
  const DecodeSeq& s = seqs.seq[b];
  const int64_t token = int64_t{b} * seqs.q_len + i;
  const int64_t slot = (s.q_pos0 + i) % s.kv_capacity;
  const int4* k_src = reinterpret_cast<const int4*>(p.k_new + token * p.k_new_stride);
  const int4* v_src = reinterpret_cast<const int4*>(p.v_new + token * p.v_new_stride);
  int4* k_dst = reinterpret_cast<int4*>(const_cast<bf16*>(s.k) + slot * p.k_slot_stride);
  int4* v_dst = reinterpret_cast<int4*>(const_cast<bf16*>(s.v) + slot * p.v_slot_stride);
  for (int64_t c = threadIdx.x; c < p.row_elems / 8; c += blockDim.x) {
    k_dst[c] = k_src[c];
    v_dst[c] = v_src[c];
  }
}

}  // namespace

void LaunchAppendKv(const AppendKvParams& p, const DecodeSeqs& seqs, cudaStream_t stream) {
  AVSERVE_CHECK(p.row_elems % 8 == 0 && p.k_new_stride % 8 == 0 && p.v_new_stride % 8 == 0 &&
                    p.k_slot_stride % 8 == 0 && p.v_slot_stride % 8 == 0,
                "AppendKv: rows must be 16-byte multiples");
  if (seqs.count == 0 || seqs.q_len == 0) return;
  LaunchPdl(AppendKvKernel, dim3(seqs.q_len, seqs.count), dim3(128), 0, stream, p, seqs);
}

bool DecodeMmaApplies(const AttentionParams& p, int q_len_per_seq) {
  if (p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 || q_len_per_seq < 1) return false;
  const int group = p.num_heads / p.num_kv_heads;
  return (p.head_dim == 256 || p.head_dim == 512) && p.block_ids == nullptr &&
         group * q_len_per_seq <= kDecodeMmaMaxRows && p.q_token_stride % 2 == 0 && p.q_head_stride % 2 == 0 &&
         p.k_slot_stride % 8 == 0 && p.k_head_stride % 8 == 0 && p.v_slot_stride % 8 == 0 &&
         p.v_head_stride % 8 == 0 && p.o_token_stride % 2 == 0 && p.o_head_stride % 2 == 0;
}

int ChooseDecodeMmaSplits(const AttentionParams& p, const DecodeSeqs& seqs, int num_sms) {
  int max_tiles = 1;
  for (int i = 0; i < seqs.count; ++i) max_tiles = std::max(max_tiles, NumTiles(seqs.seq[i]));
  // CTAs per SM by shared memory (two stages: 70 KB or 36 KB per CTA; three: 104 KB or 53 KB).
  const bool two = TwoStages(seqs.count);
  const size_t smem_512 = two ? DecodeMmaTraits<512, 2>::kSmemBytes : DecodeMmaTraits<512, 3>::kSmemBytes;
  const size_t smem_256 = two ? DecodeMmaTraits<256, 2>::kSmemBytes : DecodeMmaTraits<256, 3>::kSmemBytes;
  const size_t smem = p.head_dim == 512 ? smem_512 : smem_256;
  const int per_sm = std::max<int>(1, (size_t{227} << 10) / smem);
  // Full layers: at least two tiles per slice. Sliding layers (a 1024-key window, 53 KB of shared memory per
  // CTA): one tile per slice, which doubles the warps at work (the kernel is bound by instruction latency there).
  const int min_tiles = p.head_dim == 512 ? 2 : 1;
  return FillSplits(per_sm, num_sms, p.num_kv_heads * seqs.count, max_tiles, min_tiles);
}

namespace {
// Sequences per grouped CTA for `seqs` (1: no grouping): forks of seq[0] with the same capacity, a prefix of at
// least 4 tiles in common, and rows of several sequences that fit one m16 tile (the sliding layers' 2 rows
// each; a full layer's 16 fill it alone). Sets [lo, end): the keys they read together.
int GroupSize(const AttentionParams& p, const DecodeSeqs& seqs, int* lo, int* end) {
  const int rows = seqs.q_len * (p.num_heads / p.num_kv_heads);
  if (!TwoStages(seqs.count) || seqs.count < 2 || rows > 8) return 1;
  const DecodeSeq& s0 = seqs.seq[0];
  *lo = s0.kv_begin;
  *end = s0.q_pos0;  // the step's new rows are never read together (and the tails append them)
  for (int b = 1; b < seqs.count; ++b) {
    const DecodeSeq& s = seqs.seq[b];
    if (s.k_shared != s0.k || s.v_shared != s0.v || s.kv_capacity != s0.kv_capacity || s.shared_end <= s.kv_begin) {
      return 1;
    }
    *lo = std::min(*lo, s.kv_begin);
    *end = std::min({*end, s.shared_end, s.q_pos0});
  }
  return NumTiles(*lo, *end) >= 4 ? std::min(seqs.count, 16 / rows) : 1;
}

// Each sequence's keys past the grouped prefix, as a plain batch (to size their splits).
DecodeSeqs Tails(const DecodeSeqs& seqs) {
  DecodeSeqs tails = seqs;
  for (int b = 0; b < seqs.count; ++b) {
    DecodeSeq& s = tails.seq[b];
    s.kv_begin = std::min(s.kv_end, std::max(s.kv_begin, seqs.group_end));
  }
  return tails;
}
}  // namespace

int PlanDecodeMma(const AttentionParams& p, DecodeSeqs* seqs, int num_sms) {
  int lo = 0, end = 0;
  const int g = GroupSize(p, *seqs, &lo, &end);
  seqs->group_seqs = g;
  seqs->group_lo = seqs->group_end = seqs->group_splits = 0;
  if (g == 1) return ChooseDecodeMmaSplits(p, *seqs, num_sms);
  seqs->group_lo = lo;
  seqs->group_end = end;
  const int per_sm = p.head_dim == 256 ? Prepare<256, 2>() : Prepare<512, 2>();
  const int groups = (seqs->count + g - 1) / g;
  seqs->group_splits = FillSplits(per_sm, num_sms, p.num_kv_heads * groups, NumTiles(lo, end), GroupMinTiles());
  return seqs->group_splits + ChooseDecodeMmaSplits(p, Tails(*seqs), num_sms);
}

void LaunchDecodeMma(const AttentionParams& p, const DecodeSeqs& seqs, cudaStream_t stream) {
  AVSERVE_CHECK(seqs.count >= 1 && seqs.count <= kDecodeMmaMaxSeqs, "DecodeMma: 1 to 16 sequences");
  AVSERVE_CHECK(p.q_len == seqs.count * seqs.q_len, "DecodeMma: q rows differ from the sequences' queries");
  AVSERVE_CHECK(DecodeMmaApplies(p, seqs.q_len), "DecodeMma: unsupported shape");
  AVSERVE_CHECK(p.num_splits == 1 || p.workspace != nullptr, "DecodeMma: no workspace");
  AVSERVE_CHECK(seqs.k_new == nullptr ||
                    (seqs.v_new != nullptr && seqs.q_len == 1 && seqs.k_new_stride % 8 == 0 &&
                     seqs.v_new_stride % 8 == 0 && p.k_head_stride % 8 == 0 && p.v_head_stride % 8 == 0 &&
                     reinterpret_cast<uintptr_t>(seqs.k_new) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(seqs.v_new) % 16 == 0),
                "DecodeMma: new rows must be one 16-byte aligned row per sequence");
  for (int i = 0; i < seqs.count; ++i) {
    const DecodeSeq& s = seqs.seq[i];
    AVSERVE_CHECK(s.k != nullptr && s.v != nullptr && s.kv_begin >= 0 && s.kv_capacity > 0 &&
                      s.kv_end - s.kv_begin <= s.kv_capacity,
                  "DecodeMma: bad sequence cache");
    AVSERVE_CHECK(reinterpret_cast<uintptr_t>(s.k) % 16 == 0 && reinterpret_cast<uintptr_t>(s.v) % 16 == 0,
                  "DecodeMma: K/V must be 16-byte aligned");
    AVSERVE_CHECK(s.shared_end <= s.kv_begin ||
                      (s.k_shared != nullptr && s.v_shared != nullptr &&
                       reinterpret_cast<uintptr_t>(s.k_shared) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(s.v_shared) % 16 == 0),
                  "DecodeMma: a shared prefix needs 16-byte aligned shared K/V");
  }
  // The tiles' row copies from every warp: on the H200, alternated in one run, the 8-question step took 8.966 /
  // 8.869 ms against 9.090 / 9.004 with warp 0 issuing all of them (which the other warps then wait for at the
  // next barrier), decode 8.188 / 8.157 against 8.184 / 8.090 ms, with the same tokens.
  // AVSERVE_DECODE_SPREAD_LOADS=0 goes back to warp 0.
  static const int spread = EnvSwitchOn("AVSERVE_DECODE_SPREAD_LOADS") ? 1 : 0;
  DecodeWork work;
  work.tail_splits = p.num_splits;
  work.spread = spread;
  const int g = seqs.group_seqs;
  if (g > 1) {
    AVSERVE_CHECK(TwoStages(seqs.count) && g * seqs.q_len * (p.num_heads / p.num_kv_heads) <= 16 &&
                      seqs.group_splits >= 1 && p.num_splits > seqs.group_splits && seqs.group_end > seqs.group_lo,
                  "DecodeMma: bad grouping");
    work.seqs_per_cta = g;
    work.group_splits = seqs.group_splits;
    work.group_ctas = seqs.group_splits * ((seqs.count + g - 1) / g);
    work.key_lo = seqs.group_lo;
    work.key_end = seqs.group_end;
    work.tail_splits = p.num_splits - seqs.group_splits;
  }
  if (p.head_dim == 256) {
    TwoStages(seqs.count) ? Launch<256, 2>(p, seqs, work, stream) : Launch<256, 3>(p, seqs, work, stream);
  } else {
    TwoStages(seqs.count) ? Launch<512, 2>(p, seqs, work, stream) : Launch<512, 3>(p, seqs, work, stream);
  }
  if (p.num_splits > 1) LaunchCombineSplits(p, stream);
}

}  // namespace avserve::engine::cuda
