// CUDA ops that the Backend interface does not expose, against plain CPU loops: GPU sampling, the fused
// RMSNorm + RoPE + residual + layer-scale kernel, the skinny GEMM at decode shapes, split-KV attention against
// the single-split result, batched decode attention against one launch per sequence, the q/k/v norms and the
// post norm + next norm at prefill sizes, the decode gate|up product that writes the GeGLU against the two
// launches it replaces, the full layers' GEMM attention against the flash kernel, and the sliding layers'
// warpgroup prefill kernel against the mma.sync one.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/decode_mma.cuh"
#include "engine/backend/cuda/ops/elementwise.cuh"
#include "engine/backend/cuda/ops/gemm_attention.cuh"
#include "engine/backend/cuda/ops/gemv.cuh"
#include "engine/backend/cuda/ops/rms_norm.cuh"
#include "engine/backend/cuda/ops/sampling.cuh"
#include "engine/backend/cuda/ops/sliding_decode.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"

namespace avserve::engine::cuda {
namespace {

using testing::RandomBf16;
using testing::RelErr;

using testing::HaveDevice;

#define SKIP_WITHOUT_GPU() \
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device"

template <typename T>
DeviceBuffer<T> ToDevice(const std::vector<T>& host) {
  auto buf = DeviceBuffer<T>::Create(host.size());
  EXPECT_TRUE(buf.ok());
  EXPECT_EQ(cudaMemcpy(buf->get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return std::move(*buf);
}

template <typename T>
std::vector<T> ToHost(const DeviceBuffer<T>& buf) {
  std::vector<T> host(buf.size());
  EXPECT_EQ(cudaMemcpy(host.data(), buf.get(), buf.bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

// Sampling parameters over `rows` contiguous rows of `vocab` logits, one id out per row.
SampleParams RowsToSample(const float* logits, int32_t* out_ids, int rows, int vocab) {
  SampleParams p;
  p.logits = logits;
  p.row_stride = vocab;
  p.rows = rows;
  p.vocab = vocab;
  p.out_ids = out_ids;
  return p;
}

TEST(CudaSampleTest, GreedyIsFirstArgmaxAndSkipsSuppressedIds) {
  SKIP_WITHOUT_GPU();
  constexpr int kVocab = 262144, kRows = 3;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-20.f, 20.f);
  std::vector<float> logits(size_t{kVocab} * kRows);
  for (auto& v : logits) v = dist(rng);
  logits[5] = 50.f;                          // row 0: plain maximum
  logits[kVocab + 258882] = 90.f;            // row 1: suppressed maximum, real one below
  logits[kVocab + 100] = 60.f;
  logits[2 * kVocab + 10] = logits[2 * kVocab + 20] = 70.f;  // row 2: tie -> first index
  auto d_logits = ToDevice(logits);
  auto d_out = ToDevice(std::vector<int32_t>(kRows, -1));
  SampleParams p = RowsToSample(d_logits.get(), d_out.get(), kRows, kVocab);
  p.suppressed[0] = 258882;
  p.suppressed[1] = 258883;
  p.num_suppressed = 2;
  LaunchSample(p, nullptr);
  EXPECT_EQ(ToHost(d_out), (std::vector<int32_t>{5, 100, 10}));
}

TEST(CudaSampleTest, TopKSamplingFollowsTheSoftmaxOfTheTopK) {
  SKIP_WITHOUT_GPU();
  constexpr int kVocab = 4096, kRows = 4000;
  // Every row: token 3 has logit log(3), token 9 logit 0, a suppressed token 1 logit 100, the rest -30.
  std::vector<float> logits(size_t{kVocab} * kRows, -30.f);
  for (int r = 0; r < kRows; ++r) {
    logits[static_cast<size_t>(r) * kVocab + 3] = std::log(3.f);
    logits[static_cast<size_t>(r) * kVocab + 9] = 0.f;
    logits[static_cast<size_t>(r) * kVocab + 1] = 100.f;
  }
  auto d_logits = ToDevice(logits);
  auto d_out = ToDevice(std::vector<int32_t>(kRows, -1));
  SampleParams p = RowsToSample(d_logits.get(), d_out.get(), kRows, kVocab);
  p.temperature = 1.f;
  p.top_k = 2;
  p.seed = 42;
  p.suppressed[0] = 1;
  p.num_suppressed = 1;
  LaunchSample(p, nullptr);
  const auto ids = ToHost(d_out);
  const int threes = static_cast<int>(std::count(ids.begin(), ids.end(), 3));
  const int nines = static_cast<int>(std::count(ids.begin(), ids.end(), 9));
  EXPECT_EQ(threes + nines, kRows);                  // only the top 2 unsuppressed tokens
  EXPECT_NEAR(threes / double(kRows), 0.75, 0.03);  // softmax(log 3, 0) = (0.75, 0.25)
  // top_p 0.5 keeps only token 3.
  p.top_p = 0.5f;
  LaunchSample(p, nullptr);
  const auto nucleus = ToHost(d_out);
  EXPECT_EQ(std::count(nucleus.begin(), nucleus.end(), 3), kRows);
}

// Fused kernel vs a loop written from spec §5.2-5.4: norm (with weight), RoPE, + residual, × layer scalar.
TEST(CudaRmsNormTest, FusedNormRopeResidualScaleMatchesLoop) {
  SKIP_WITHOUT_GPU();
  constexpr int kTokens = 5, kHeads = 3, kDim = 512, kPairs = 64;
  constexpr float kTheta = 1e6f;
  std::mt19937 rng(3);
  const auto x = RandomBf16(kTokens * kHeads * kDim, rng, -3.f, 3.f);
  const auto w = RandomBf16(kDim, rng, 0.5f, 1.5f);
  const auto res = RandomBf16(kTokens * kHeads * kDim, rng);
  const std::vector<uint16_t> scale = {F32ToBf16(0.8125f)};
  const std::vector<int32_t> pos = {0, 3, 1000, 77777, 262000};
  auto d_x = ToDevice(x), d_w = ToDevice(w), d_res = ToDevice(res), d_scale = ToDevice(scale);
  auto d_pos = ToDevice(pos);
  auto d_y = ToDevice(std::vector<uint16_t>(x.size(), 0));
  RmsNormParams p;
  p.x = reinterpret_cast<const __nv_bfloat16*>(d_x.get());
  p.y = reinterpret_cast<__nv_bfloat16*>(d_y.get());
  p.weight = reinterpret_cast<const __nv_bfloat16*>(d_w.get());
  p.residual = reinterpret_cast<const __nv_bfloat16*>(d_res.get());
  p.out_scale = reinterpret_cast<const __nv_bfloat16*>(d_scale.get());
  p.token_stride = kHeads * kDim;
  p.head_stride = kDim;
  p.tokens = kTokens;
  p.heads = kHeads;
  p.dim = kDim;
  p.positions = d_pos.get();
  p.rope_theta = kTheta;
  p.rope_pairs = kPairs;
  LaunchRmsNorm(p, nullptr);
  const auto got_bits = ToHost(d_y);
  std::vector<float> want(x.size()), got(x.size());
  auto r = [](float v) { return Bf16ToF32(F32ToBf16(v)); };
  for (int row = 0; row < kTokens * kHeads; ++row) {
    const size_t off = static_cast<size_t>(row) * kDim;
    double ss = 0;
    for (int i = 0; i < kDim; ++i) ss += double(Bf16ToF32(x[off + i])) * Bf16ToF32(x[off + i]);
    const float inv = 1.f / std::sqrt(float(ss / kDim) + 1e-6f);
    std::vector<float> n(kDim);
    for (int i = 0; i < kDim; ++i) n[i] = r(Bf16ToF32(x[off + i]) * inv * Bf16ToF32(w[i]));
    const float t = float(pos[row / kHeads]);
    for (int i = 0; i < kDim; ++i) {
      const int j = i % (kDim / 2);
      float v = n[i];
      if (j < kPairs) {
        const float ang = t * (1.f / std::pow(kTheta, float(2 * j) / kDim));
        const float c = r(std::cos(ang)), s = r(std::sin(ang));
        v = i < kDim / 2 ? r(r(n[i] * c) + r(-n[i + kDim / 2] * s)) : r(r(n[i] * c) + r(n[i - kDim / 2] * s));
      }
      want[off + i] = r(r(v + Bf16ToF32(res[off + i])) * 0.8125f);
      got[off + i] = Bf16ToF32(got_bits[off + i]);
    }
  }
  EXPECT_LE(RelErr(got, want), 5e-3);
}

// Attention over dense device buffers: q and the output [tokens, heads, dim], k and v [slots, kv_heads, dim].
AttentionParams DenseAttention(const DeviceBuffer<uint16_t>& q, const DeviceBuffer<uint16_t>& k,
                               const DeviceBuffer<uint16_t>& v, int heads, int kv_heads, int dim) {
  AttentionParams p;
  p.q = reinterpret_cast<const __nv_bfloat16*>(q.get());
  p.k = reinterpret_cast<const __nv_bfloat16*>(k.get());
  p.v = reinterpret_cast<const __nv_bfloat16*>(v.get());
  p.q_token_stride = p.o_token_stride = int64_t{heads} * dim, p.q_head_stride = p.o_head_stride = dim;
  p.k_slot_stride = p.v_slot_stride = int64_t{kv_heads} * dim, p.k_head_stride = p.v_head_stride = dim;
  p.num_heads = heads, p.num_kv_heads = kv_heads, p.head_dim = dim;
  return p;
}

// A decode step split over many KV chunks equals the one-split result (same kernel, merged partials).
TEST(CudaAttentionSplitTest, SplitKvDecodeEqualsSingleSplit) {
  SKIP_WITHOUT_GPU();
  constexpr int kHeads = 16, kKvHeads = 1, kDim = 512, kCapacity = 9000, kPos = 8999;
  std::mt19937 rng(11);
  auto q = ToDevice(RandomBf16(kHeads * kDim, rng, -0.25f, 0.25f));
  auto k = ToDevice(RandomBf16(size_t{kCapacity} * kKvHeads * kDim, rng, -0.25f, 0.25f));
  auto v = ToDevice(RandomBf16(size_t{kCapacity} * kKvHeads * kDim, rng));
  auto o1 = ToDevice(std::vector<uint16_t>(kHeads * kDim, 0)), o2 = ToDevice(std::vector<uint16_t>(kHeads * kDim, 0));
  AttentionParams p = DenseAttention(q, k, v, kHeads, kKvHeads, kDim);
  p.q_len = 1, p.q_pos0 = kPos, p.kv_begin = 0, p.kv_end = kPos + 1, p.kv_capacity = kCapacity;
  p.o = reinterpret_cast<__nv_bfloat16*>(o1.get());
  LaunchAttention(p, nullptr);
  p.num_splits = 13;
  auto ws = DeviceBuffer<unsigned char>::Create(AttentionWorkspaceBytes(p));
  ASSERT_TRUE(ws.ok());
  p.workspace = ws->get();
  p.o = reinterpret_cast<__nv_bfloat16*>(o2.get());
  LaunchAttention(p, nullptr);
  const auto a = testing::Bf16ToFloat(ToHost(o1)), b = testing::Bf16ToFloat(ToHost(o2));
  EXPECT_LE(RelErr(b, a), 5e-3);
}

// The sliding layers' prefill on Hopper's warpgroup kernel against the mma.sync kernel it replaced (same masks
// and rounding points, Note [Prefill attention on warpgroups]): a 1500-query chunk over a ring of 2624 slots that
// wraps, with a vision block, at the 12B's shape (GQA 2, head_dim 256, window 1024).
TEST(CudaWarpgroupAttentionTest, SlidingChunkMatchesTheMmaKernel) {
  SKIP_WITHOUT_GPU();
  constexpr int kHeads = 16, kKvHeads = 8, kDim = 256, kQLen = 1500, kPos = 2600, kCapacity = 2624;
  std::mt19937 rng(12);
  auto q = ToDevice(RandomBf16(size_t{kQLen} * kHeads * kDim, rng, -0.25f, 0.25f));
  auto k = ToDevice(RandomBf16(size_t{kCapacity} * kKvHeads * kDim, rng, -0.25f, 0.25f));
  auto v = ToDevice(RandomBf16(size_t{kCapacity} * kKvHeads * kDim, rng));
  std::vector<int32_t> block_ids(kQLen, -1);
  for (int i = 300; i < 556; ++i) block_ids[i] = 0;  // one frame of 256 positions
  auto blocks = ToDevice(block_ids);
  auto o1 = ToDevice(std::vector<uint16_t>(size_t{kQLen} * kHeads * kDim, 0));
  auto o2 = ToDevice(std::vector<uint16_t>(size_t{kQLen} * kHeads * kDim, 0));
  AttentionParams p = DenseAttention(q, k, v, kHeads, kKvHeads, kDim);
  p.q_len = kQLen, p.q_pos0 = kPos, p.kv_end = kPos + kQLen, p.kv_begin = p.kv_end - kCapacity;
  p.kv_capacity = kCapacity, p.window = 1024;
  p.block_ids = blocks.get(), p.block_pos0 = kPos, p.block_len = kQLen;
  int device = 0, major = 0, minor = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), cudaSuccess);
  const char* env = std::getenv("AVSERVE_WGMMA_ATTENTION");
  if (major != 9 || minor != 0 || (env != nullptr && env[0] == '0')) {
    GTEST_SKIP() << "the warpgroup kernel runs on compute capability 9.0 only, and AVSERVE_WGMMA_ATTENTION=0 is off";
  }
  ASSERT_TRUE(AttentionOnWarpgroups(p)) << "a Hopper build must take the warpgroup kernel for this chunk";
  p.o = reinterpret_cast<__nv_bfloat16*>(o1.get());
  LaunchAttention(p, nullptr);
  p.allow_warpgroup = false;
  ASSERT_FALSE(AttentionOnWarpgroups(p));
  p.o = reinterpret_cast<__nv_bfloat16*>(o2.get());
  LaunchAttention(p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto a = testing::Bf16ToFloat(ToHost(o1)), b = testing::Bf16ToFloat(ToHost(o2));
  EXPECT_LE(RelErr(a, b), 5e-3);
}

struct GemvShape {
  int m, n, k;
  bool bias, f32;
};

void CheckGemv(const GemvShape& sh, GemvKernel kernel, std::mt19937& rng) {
  const auto a = RandomBf16(size_t{1} * sh.m * sh.k, rng), b = RandomBf16(size_t{1} * sh.n * sh.k, rng);
  const auto bias = RandomBf16(sh.n, rng);
  auto a_d = ToDevice(a), b_d = ToDevice(b), bias_d = ToDevice(bias);
  auto c_d = DeviceBuffer<float>::Create(size_t{1} * sh.m * sh.n);
  ASSERT_TRUE(c_d.ok());
  ASSERT_EQ(cudaMemset(c_d->get(), 0, c_d->bytes()), cudaSuccess);
  GemmParams p;
  p.a = reinterpret_cast<const __nv_bfloat16*>(a_d.get());
  p.b = reinterpret_cast<const __nv_bfloat16*>(b_d.get());
  p.bias = sh.bias ? reinterpret_cast<const __nv_bfloat16*>(bias_d.get()) : nullptr;
  p.c = c_d->get();
  p.c_fp32 = sh.f32;
  p.m = sh.m, p.n = sh.n, p.k = sh.k;
  ASSERT_TRUE(GemvApplies(p));
  LaunchGemv(p, nullptr, kernel);
  auto again_d = DeviceBuffer<float>::Create(size_t{1} * sh.m * sh.n);
  ASSERT_TRUE(again_d.ok());
  ASSERT_EQ(cudaMemset(again_d->get(), 0, again_d->bytes()), cudaSuccess);  // bf16 output fills half
  GemmParams again = p;
  again.c = again_d->get();
  LaunchGemv(again, nullptr, kernel);
  EXPECT_EQ(ToHost(*again_d), ToHost(*c_d)) << "two launches differ";
  std::vector<float> got(size_t{1} * sh.m * sh.n);
  if (sh.f32) {
    got = ToHost(*c_d);
  } else {
    std::vector<uint16_t> bits(got.size());
    ASSERT_EQ(cudaMemcpy(bits.data(), c_d->get(), bits.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    got = testing::Bf16ToFloat(bits);
  }
  const auto af = testing::Bf16ToFloat(a), bf = testing::Bf16ToFloat(b), biasf = testing::Bf16ToFloat(bias);
  std::vector<float> want(got.size());
  for (int r = 0; r < sh.m; ++r) {
    for (int c = 0; c < sh.n; ++c) {
      double acc = sh.bias ? biasf[c] : 0.0;
      for (int i = 0; i < sh.k; ++i) acc += double{af[size_t{1} * r * sh.k + i]} * bf[size_t{1} * c * sh.k + i];
      want[size_t{1} * r * sh.n + c] = static_cast<float>(acc);
    }
  }
  EXPECT_LE(RelErr(got, want), sh.f32 ? 1e-5 : 5e-3);
}

// The skinny GEMM (decode and batched questions) against a double-precision loop. Mma kernel (more than 4 tokens,
// or k not a multiple of 256): row counts on both sides of its 8-token tile, k with and without a partial
// 256-wide step, n not a multiple of its 16-row tile, and enough rows of w for each of its k splits (8 down to 1
// warp per tile on an H200's 132 SMs). Row-streaming kernel (1-4 tokens, k a multiple of 256; forced here, as
// the size rule would give the small shapes to the mma kernel): tiles shared by several warps (few rows, long k),
// one warp holding many tiles (30720 rows), an odd n, bias and fp32 output. The mma kernel stages the second round
// of 1-4 tokens' short products in shared memory (Note [Staged second round]): two rounds a warp (3841 and 3840 rows
// over k 4096, 100 rows over 3840) and a partial fourth (8192 rows over 3840, the sliding q|k|v shape). Every shape
// runs on both kernels, each twice, and must give the same bits twice (the row-streaming kernel's part slots are
// left empty by the launch that used them: a part left behind would be taken as the next launch's).
TEST(CudaSkinnyGemmTest, MatchesLoop) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  for (const GemvShape& sh : {GemvShape{1, 100, 3840, false, false}, GemvShape{8, 2048, 640, true, false},
                              GemvShape{9, 96, 384, false, true}, GemvShape{16, 40, 8192, true, true},
                              GemvShape{3, 4096, 256, false, false}, GemvShape{1, 30720, 3840, false, false},
                              GemvShape{3, 12800, 512, true, false}, GemvShape{8, 8192, 1024, false, false},
                              GemvShape{2, 3841, 4096, true, true}, GemvShape{4, 257, 15360, false, false},
                              GemvShape{1, 3840, 4096, true, false}, GemvShape{2, 10, 512, false, true},
                              GemvShape{1, 8192, 3840, false, false}}) {
    for (const GemvKernel kernel : {GemvKernel::kMma, GemvKernel::kRows}) {
      SCOPED_TRACE(::testing::Message() << "m=" << sh.m << " n=" << sh.n << " k=" << sh.k << " kernel "
                                        << static_cast<int>(kernel));
      CheckGemv(sh, kernel, rng);
    }
  }
}

// The decode gate|up product that writes the GeGLU itself (Note [GeGLU in the product] in gemv.cu) against the
// two launches it replaces, at the 12B's shape.
class CudaFusedDecodeProductTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  }
  static const __nv_bfloat16* Bf(const DeviceBuffer<uint16_t>& b) {
    return reinterpret_cast<const __nv_bfloat16*>(b.get());
  }
  static __nv_bfloat16* MutBf(DeviceBuffer<uint16_t>& b) { return reinterpret_cast<__nv_bfloat16*>(b.get()); }
  static DeviceBuffer<uint16_t> Zeros(size_t n) {
    auto b = DeviceBuffer<uint16_t>::Create(n);
    EXPECT_TRUE(b.ok());
    EXPECT_EQ(cudaMemset(b->get(), 0, b->bytes()), cudaSuccess);
    return std::move(*b);
  }
  std::mt19937 rng_{21};
};

// The MLP's gate|up product of 1, 2 and 4 tokens (F = 15,360: each warp's run of units starts and ends inside
// tiles, so shared tiles are summed through part slots), twice each (the slots are left empty). Where a run
// ends inside a tile, the fused product splits that row's sum at another k than the plain one, so a few values
// may round one bf16 step apart; anything more (a wrong row, a wrong pairing, a missed rounding) fails.
TEST_F(CudaFusedDecodeProductTest, GegluProductEqualsProductThenGeglu) {
  constexpr int kF = 15360, kK = 3840;
  const auto w = ToDevice(RandomBf16(size_t{2} * kF * kK, rng_, -0.05f, 0.05f));
  for (const int m : {1, 2, 4}) {
    SCOPED_TRACE(::testing::Message() << "tokens " << m);
    const auto x = ToDevice(RandomBf16(size_t{1} * m * kK, rng_, -2.f, 2.f));
    auto gate_up = Zeros(size_t{2} * m * kF), want = Zeros(size_t{1} * m * kF);
    GemmParams p;
    p.a = Bf(x), p.b = Bf(w), p.c = gate_up.get(), p.m = m, p.n = 2 * kF, p.k = kK;
    LaunchGemv(p, nullptr);
    GegluParams g;
    g.gate = Bf(gate_up), g.up = Bf(gate_up) + kF, g.out = MutBf(want);
    g.gate_stride = g.up_stride = 2 * kF, g.out_stride = kF, g.rows = m, g.cols = kF;
    LaunchGeglu(g, nullptr);
    for (int run = 0; run < 2; ++run) {
      auto got = Zeros(size_t{1} * m * kF);
      GemmParams f = p;
      f.c = got.get();
      ASSERT_TRUE(GemvGegluApplies(f));
      LaunchGemvGeglu(f, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto a = testing::Bf16ToFloat(ToHost(got)), b = testing::Bf16ToFloat(ToHost(want));
      float scale = 0.f;  // a near-zero gate sum may land far off relatively, but not against the row's values
      for (const float v : b) scale = std::max(scale, std::fabs(v));
      size_t differ = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        if (a[i] == b[i]) continue;
        ++differ;
        EXPECT_LE(std::fabs(a[i] - b[i]), std::fabs(b[i]) / 64 + scale * 1e-4f) << "value " << i << ", run " << run;
      }
      EXPECT_LE(differ, a.size() / 1000) << "run " << run;
      EXPECT_GT(std::count_if(a.begin(), a.end(), [](float v) { return v != 0.f; }), kF * m / 2);
    }
  }
}

// Three sequences (two full-layer caches of different lengths, one of them in a ring) decoded in one launch
// give, bit for bit, what each gives alone with the same key splits; a sliding-window batch likewise.
TEST(CudaDecodeMmaTest, BatchOfSequencesEqualsOneLaunchEach) {
  SKIP_WITHOUT_GPU();
  struct Layer {
    int heads, kv_heads, dim, window;
  };
  std::mt19937 rng(17);
  for (const Layer& ly : {Layer{16, 1, 512, 0}, Layer{16, 8, 256, 1024}}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << ly.dim);
    const int kCap = 5000;
    const int ends[3] = {4999, 1234, 3000};
    const int caps[3] = {kCap, kCap, 1100};  // the third: a ring shorter than its positions
    std::vector<DeviceBuffer<uint16_t>> ks, vs;
    for (int s = 0; s < 3; ++s) {
      ks.push_back(ToDevice(RandomBf16(size_t{1} * caps[s] * ly.kv_heads * ly.dim, rng, -0.25f, 0.25f)));
      vs.push_back(ToDevice(RandomBf16(size_t{1} * caps[s] * ly.kv_heads * ly.dim, rng)));
    }
    const size_t row = size_t{1} * ly.heads * ly.dim;
    auto q = ToDevice(RandomBf16(3 * row, rng, -0.25f, 0.25f));
    auto o_batch = ToDevice(std::vector<uint16_t>(3 * row, 0)), o_one = ToDevice(std::vector<uint16_t>(3 * row, 0));
    AttentionParams p;
    p.q_token_stride = p.o_token_stride = ly.heads * ly.dim, p.q_head_stride = p.o_head_stride = ly.dim;
    p.k_slot_stride = p.v_slot_stride = ly.kv_heads * ly.dim, p.k_head_stride = p.v_head_stride = ly.dim;
    p.num_heads = ly.heads, p.num_kv_heads = ly.kv_heads, p.head_dim = ly.dim, p.window = ly.window;
    p.num_splits = 7;
    DecodeSeqs all;
    all.count = 3, all.q_len = 1;
    for (int s = 0; s < 3; ++s) {
      const int begin = ly.window > 0 ? std::max(0, ends[s] - ly.window + 1) : std::max(0, ends[s] + 1 - caps[s]);
      all.seq[s] = DecodeSeq{reinterpret_cast<const __nv_bfloat16*>(ks[s].get()),
                             reinterpret_cast<const __nv_bfloat16*>(vs[s].get()), ends[s], begin, ends[s] + 1, caps[s]};
    }
    p.q_len = 3;
    auto ws = DeviceBuffer<unsigned char>::Create(AttentionWorkspaceBytes(p));
    ASSERT_TRUE(ws.ok());
    p.workspace = ws->get();
    p.q = reinterpret_cast<const __nv_bfloat16*>(q.get());
    p.o = reinterpret_cast<__nv_bfloat16*>(o_batch.get());
    LaunchDecodeMma(p, all, nullptr);
    for (int s = 0; s < 3; ++s) {
      DecodeSeqs one;
      one.count = 1, one.q_len = 1, one.seq[0] = all.seq[s];
      AttentionParams ps = p;
      ps.q_len = 1;
      ps.q = reinterpret_cast<const __nv_bfloat16*>(q.get()) + s * row;
      ps.o = reinterpret_cast<__nv_bfloat16*>(o_one.get()) + s * row;
      LaunchDecodeMma(ps, one, nullptr);
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto a = ToHost(o_batch), b = ToHost(o_one);
    EXPECT_EQ(a, b);
    // And the batch is attention at all: each sequence's rows differ from the others'.
    EXPECT_NE(std::vector<uint16_t>(a.begin(), a.begin() + row),
              std::vector<uint16_t>(a.begin() + row, a.begin() + 2 * row));
  }
}

// ---- The q/k/v norms (one warp per head, RoPE table per token) ----

// Elements of `got` that differ from want[off, off + got.size()) (or the sizes, when want is too short).
size_t Mismatches(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, size_t off = 0) {
  if (want.size() < off + got.size()) return std::max(got.size(), size_t{1});
  size_t n = 0;
  for (size_t i = 0; i < got.size(); ++i) n += got[i] != want[off + i];
  return n;
}

// RmsNormParams of heads [tokens, heads, dim] at `x` (row stride x_stride) normed into contiguous `y`.
RmsNormParams HeadParams(const uint16_t* x, int64_t x_stride, uint16_t* y, const uint16_t* w, int tokens, int heads,
                         int dim) {
  RmsNormParams p;
  p.x = reinterpret_cast<const __nv_bfloat16*>(x);
  p.y = reinterpret_cast<__nv_bfloat16*>(y);
  p.weight = reinterpret_cast<const __nv_bfloat16*>(w);
  p.token_stride = x_stride, p.head_stride = dim;
  p.y_token_stride = int64_t{heads} * dim, p.y_head_stride = dim;
  p.tokens = tokens, p.heads = heads, p.dim = dim;
  return p;
}

// y = RoPE(bf16(x · rms⁻¹ · w)) of one head row, from spec §5.2/§5.4 (pairs < 0: no RoPE, no weight).
std::vector<float> NormRopeRow(const uint16_t* x, const uint16_t* w, int dim, int pos, float theta, int pairs) {
  auto r = [](float v) { return Bf16ToF32(F32ToBf16(v)); };
  double ss = 0;
  for (int i = 0; i < dim; ++i) ss += double(Bf16ToF32(x[i])) * Bf16ToF32(x[i]);
  const float inv = 1.f / std::sqrt(float(ss / dim) + 1e-6f);
  std::vector<float> n(dim), out(dim);
  for (int i = 0; i < dim; ++i) n[i] = r(Bf16ToF32(x[i]) * inv * (w != nullptr ? Bf16ToF32(w[i]) : 1.f));
  for (int i = 0; i < dim; ++i) {
    const int j = i % (dim / 2);
    out[i] = n[i];
    if (j < pairs) {
      const float ang = float(pos) * (1.f / std::pow(theta, float(2 * j) / dim));
      const float c = r(std::cos(ang)), s = r(std::sin(ang));
      out[i] = i < dim / 2 ? r(r(n[i] * c) + r(-n[i + dim / 2] * s)) : r(r(n[i] * c) + r(n[i - dim / 2] * s));
    }
  }
  return out;
}

// The fused q/k/v launch over 1100 tokens (whole-token blocks) against a loop; then 16-token launches (8 rows per
// block: decode) over two slices, and each group alone (LaunchRmsNorm; a single KV head of 512 packs 8 tokens in
// a block) over all tokens and the slices: all bit-identical to it. Positions up to 262143; a sliding layer (256
// dims, 16/8/8 heads) and a full one (512, partial rotary, 16/1/1).
TEST(CudaQkvNormTest, TokenBlocksMatchLoopAndDecodeBlocks) {
  SKIP_WITHOUT_GPU();
  struct Layer {
    int dim, hq, hkv, pairs;
    float theta;
  };
  constexpr int kTokens = 1100;
  std::vector<int32_t> pos(kTokens);
  for (int t = 0; t < kTokens; ++t) pos[t] = t * 61 % 70000;
  pos[3] = 32768, pos[4] = 65535, pos[5] = 131071, pos[6] = 262143;
  auto d_pos = ToDevice(pos);
  std::mt19937 rng(23);
  for (const Layer& ly : {Layer{256, 16, 8, 128, 1e4f}, Layer{512, 16, 1, 64, 1e6f}}) {
    SCOPED_TRACE(::testing::Message() << "dim " << ly.dim);
    const int d = ly.dim, width = (ly.hq + 2 * ly.hkv) * d;  // fused projection row: q heads, k heads, v heads
    const auto x = RandomBf16(size_t{1} * kTokens * width, rng, -2.f, 2.f);
    const auto wq = RandomBf16(d, rng, 0.5f, 1.5f), wk = RandomBf16(d, rng, 0.5f, 1.5f);
    auto d_x = ToDevice(x), d_wq = ToDevice(wq), d_wk = ToDevice(wk);
    const auto out = [&](int heads, int tokens) {
      return ToDevice(std::vector<uint16_t>(size_t{1} * tokens * heads * d));
    };
    // Launches over tokens [t0, t0 + n) into fresh outputs; returns q, k, v.
    const auto run = [&](int t0, int n, bool alone) {
      std::vector<DeviceBuffer<uint16_t>> o;
      o.push_back(out(ly.hq, n)), o.push_back(out(ly.hkv, n)), o.push_back(out(ly.hkv, n));
      const uint16_t* row0 = d_x.get() + size_t{1} * t0 * width;
      RmsNormParams q = HeadParams(row0, width, o[0].get(), d_wq.get(), n, ly.hq, d);
      RmsNormParams k = HeadParams(row0 + ly.hq * d, width, o[1].get(), d_wk.get(), n, ly.hkv, d);
      RmsNormParams v = HeadParams(row0 + (ly.hq + ly.hkv) * d, width, o[2].get(), nullptr, n, ly.hkv, d);
      for (RmsNormParams* p : {&q, &k}) {
        p->positions = d_pos.get() + t0, p->rope_theta = ly.theta, p->rope_pairs = ly.pairs;
      }
      if (alone) {
        for (const RmsNormParams* p : {&q, &k, &v}) LaunchRmsNorm(*p, nullptr);
      } else {
        EXPECT_TRUE(QkvNormApplies(q, k, v));
        LaunchQkvNorm(q, k, v, nullptr);
      }
      std::vector<std::vector<uint16_t>> host;
      for (const auto& b : o) host.push_back(ToHost(b));
      return host;
    };
    const auto all = run(0, kTokens, false);
    std::vector<float> want, got;
    for (int t = 0; t < kTokens; ++t) {
      const uint16_t* xr = x.data() + size_t{1} * t * width;
      for (int h = 0; h < ly.hq + 2 * ly.hkv; ++h) {
        const int g = h < ly.hq ? 0 : h < ly.hq + ly.hkv ? 1 : 2;  // group (q, k, v) and head in it
        const int gh = g == 0 ? h : g == 1 ? h - ly.hq : h - ly.hq - ly.hkv;
        const uint16_t* w = g == 0 ? wq.data() : g == 1 ? wk.data() : nullptr;
        const auto row = NormRopeRow(xr + h * d, w, d, pos[t], ly.theta, g == 2 ? -1 : ly.pairs);
        want.insert(want.end(), row.begin(), row.end());
        const size_t off = (size_t{1} * t * (g == 0 ? ly.hq : ly.hkv) + gh) * d;
        for (int i = 0; i < d; ++i) got.push_back(Bf16ToF32(all[g][off + i]));
      }
    }
    EXPECT_LE(RelErr(got, want), 5e-3);
    for (const bool alone : {false, true}) {
      for (const int t0 : {0, 700}) {
        const int n = t0 == 0 && alone ? kTokens : 16;
        const auto part = run(t0, n, alone);
        for (int g = 0; g < 3; ++g) {
          EXPECT_EQ(Mismatches(part[g], all[g], part[g].size() / n * t0), 0u)
              << "group " << g << ", tokens " << t0 << "+" << n << (alone ? ", alone" : "");
        }
      }
    }
  }
}

// ---- A sliding layer's decode step in one launch (sliding_decode.cu) ----

// The fused launch against the launches it replaces (the q/k/v norms, then attention of one split), at positions
// with fewer keys than the window (most key slices empty), in the middle of the ring, and where the window wraps
// it: the new K/V rows land in the new position's slot with the same bits, every other slot keeps its bits, and
// the output matches within bf16 rounding.
TEST(CudaSlidingDecodeTest, MatchesNormsThenAttention) {
  SKIP_WITHOUT_GPU();
  constexpr int kHq = 16, kHkv = 8, kD = 256, kWindow = 1024, kCap = 1100, kWidth = (kHq + 2 * kHkv) * kD;
  std::mt19937 rng(29);
  const auto x = RandomBf16(kWidth, rng, -2.f, 2.f);  // one fused projection row: q heads, k heads, v heads
  const auto wq = RandomBf16(kD, rng, 0.5f, 1.5f), wk = RandomBf16(kD, rng, 0.5f, 1.5f);
  const auto ring_k = RandomBf16(size_t{kCap} * kHkv * kD, rng), ring_v = RandomBf16(size_t{kCap} * kHkv * kD, rng);
  auto d_x = ToDevice(x), d_wq = ToDevice(wq), d_wk = ToDevice(wk);
  const auto bf = [](const uint16_t* ptr) { return reinterpret_cast<const __nv_bfloat16*>(ptr); };
  const auto mut = [](uint16_t* ptr) { return reinterpret_cast<__nv_bfloat16*>(ptr); };
  for (const int pos : {0, 5, 700, 1099, 4321}) {
    SCOPED_TRACE(::testing::Message() << "position " << pos);
    auto d_pos = ToDevice(std::vector<int32_t>{pos});
    auto k1 = ToDevice(ring_k), v1 = ToDevice(ring_v), k2 = ToDevice(ring_k), v2 = ToDevice(ring_v);
    auto o1 = ToDevice(std::vector<uint16_t>(kHq * kD)), o2 = ToDevice(std::vector<uint16_t>(kHq * kD));
    auto q_normed = ToDevice(std::vector<uint16_t>(kHq * kD));
    SlidingDecodeParams sp;
    AttentionParams& p = sp.a;
    p.q = bf(d_x.get()), p.k = bf(k1.get()), p.v = bf(v1.get()), p.o = mut(o1.get());
    p.q_token_stride = kWidth, p.q_head_stride = kD, p.o_token_stride = kHq * kD, p.o_head_stride = kD;
    p.k_slot_stride = p.v_slot_stride = kHkv * kD, p.k_head_stride = p.v_head_stride = kD;
    p.q_len = 1, p.q_pos0 = pos, p.kv_begin = std::max(0, pos - kWindow + 1), p.kv_end = pos + 1;
    p.kv_capacity = kCap, p.num_heads = kHq, p.num_kv_heads = kHkv, p.head_dim = kD, p.window = kWindow;
    sp.k_raw = bf(d_x.get()) + kHq * kD, sp.v_raw = bf(d_x.get()) + (kHq + kHkv) * kD;
    sp.k_raw_head_stride = sp.v_raw_head_stride = kD;
    sp.q_weight = bf(d_wq.get()), sp.k_weight = bf(d_wk.get()), sp.eps = 1e-6f;
    sp.positions = d_pos.get(), sp.rope_theta = 1e4f, sp.rope_pairs = kD / 2;
    ASSERT_TRUE(SlidingDecodeApplies(sp));
    LaunchSlidingDecode(sp, nullptr);

    const int64_t slot = int64_t{pos % kCap} * kHkv * kD;
    RmsNormParams nq = HeadParams(d_x.get(), kWidth, q_normed.get(), d_wq.get(), 1, kHq, kD);
    RmsNormParams nk = HeadParams(d_x.get() + kHq * kD, kWidth, k2.get() + slot, d_wk.get(), 1, kHkv, kD);
    RmsNormParams nv = HeadParams(d_x.get() + (kHq + kHkv) * kD, kWidth, v2.get() + slot, nullptr, 1, kHkv, kD);
    for (RmsNormParams* n : {&nq, &nk}) n->positions = d_pos.get(), n->rope_theta = 1e4f, n->rope_pairs = kD / 2;
    ASSERT_TRUE(QkvNormApplies(nq, nk, nv));
    LaunchQkvNorm(nq, nk, nv, nullptr);
    AttentionParams plain = p;
    plain.q = bf(q_normed.get()), plain.q_token_stride = kHq * kD;
    plain.k = bf(k2.get()), plain.v = bf(v2.get()), plain.o = mut(o2.get());
    LaunchAttention(plain, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(Mismatches(ToHost(k1), ToHost(k2)), 0u);
    EXPECT_EQ(Mismatches(ToHost(v1), ToHost(v2)), 0u);
    EXPECT_NE(Mismatches(ToHost(k1), ring_k), 0u);  // the new row was written
    const auto got = testing::Bf16ToFloat(ToHost(o1)), want = testing::Bf16ToFloat(ToHost(o2));
    EXPECT_LE(RelErr(got, want), 5e-3);
  }
}

// ---- Post norm + residual + next norm: a block loops over rows ----

// 3000 rows (more than fit the GPU at once: the row loop) against a loop, and the same rows launched 16 at a
// time (one row per block), bit for bit; dims of 1, 3.75 and 8 vectors per thread, scaled and not.
TEST(CudaRmsNormAddToNormTest, RowLoopMatchesLoopAndOneRowPerBlock) {
  SKIP_WITHOUT_GPU();
  constexpr int kRows = 3000;
  std::mt19937 rng(29);
  for (const int dim : {1000, 3840, 8192}) {
    SCOPED_TRACE(::testing::Message() << "dim " << dim);
    const size_t n = size_t{1} * kRows * dim;
    const auto x = RandomBf16(n, rng, -3.f, 3.f), res = RandomBf16(n, rng, -8.f, 8.f);
    const auto w = RandomBf16(dim, rng), nw = RandomBf16(dim, rng, 0.f, 2.f);
    auto d_x = ToDevice(x), d_w = ToDevice(w), d_nw = ToDevice(nw);
    // Runs rows [r0, r0 + rows) on a fresh copy of the residual; returns (residual, y) of those rows.
    const auto run = [&](int r0, int rows, bool scaled) {
      auto d_res = ToDevice(
          std::vector<uint16_t>(res.begin() + size_t{1} * r0 * dim, res.begin() + size_t{1} * (r0 + rows) * dim));
      auto d_y = ToDevice(std::vector<uint16_t>(size_t{1} * rows * dim, 0));
      RmsNormAddToNormParams p;
      p.x = reinterpret_cast<const __nv_bfloat16*>(d_x.get() + size_t{1} * r0 * dim);
      p.weight = reinterpret_cast<const __nv_bfloat16*>(d_w.get());
      p.residual = reinterpret_cast<__nv_bfloat16*>(d_res.get());
      p.next_weight = reinterpret_cast<const __nv_bfloat16*>(d_nw.get());
      p.y = reinterpret_cast<__nv_bfloat16*>(d_y.get());
      p.x_stride = p.residual_stride = p.y_stride = dim;
      p.scaled = scaled, p.scale = 0.71875f;
      p.rows = rows, p.dim = dim;
      EXPECT_TRUE(RmsNormAddToNormApplies(p));
      LaunchRmsNormAddToNorm(p, nullptr);
      return std::pair{ToHost(d_res), ToHost(d_y)};
    };
    for (const bool scaled : {false, true}) {
      const auto [all_res, all_y] = run(0, kRows, scaled);
      auto r = [](float v) { return Bf16ToF32(F32ToBf16(v)); };
      std::vector<float> want_res(n), want_y(n);
      for (int row = 0; row < kRows; ++row) {
        const size_t off = size_t{1} * row * dim;
        float ss = 0, ss2 = 0;
        for (int i = 0; i < dim; ++i) ss += Bf16ToF32(x[off + i]) * Bf16ToF32(x[off + i]);
        const float inv = 1.f / std::sqrt(ss / dim + 1e-6f);
        for (int i = 0; i < dim; ++i) {
          float t = r(r(Bf16ToF32(x[off + i]) * inv * Bf16ToF32(w[i])) + Bf16ToF32(res[off + i]));
          want_res[off + i] = scaled ? r(t * 0.71875f) : t;
          ss2 += want_res[off + i] * want_res[off + i];
        }
        const float inv2 = 1.f / std::sqrt(ss2 / dim + 1e-6f);
        for (int i = 0; i < dim; ++i) want_y[off + i] = r(want_res[off + i] * inv2 * Bf16ToF32(nw[i]));
      }
      EXPECT_LE(RelErr(testing::Bf16ToFloat(all_res), want_res), 5e-3);
      EXPECT_LE(RelErr(testing::Bf16ToFloat(all_y), want_y), 5e-3);
      // 17 rows: one row per block, the row loop's sums.
      for (const int r0 : {0, 1500, kRows - 17}) {
        const auto [res17, y17] = run(r0, 17, scaled);
        EXPECT_EQ(Mismatches(res17, all_res, size_t{1} * r0 * dim), 0u) << "residual of rows from " << r0;
        EXPECT_EQ(Mismatches(y17, all_y, size_t{1} * r0 * dim), 0u) << "next norm of rows from " << r0;
      }
      // Up to 16 rows (decode): one vector a thread, its own order of sums; each row as it comes out alone.
      const int r0 = 1500;
      const auto [res16, y16] = run(r0, 16, scaled);
      const auto [res1, y1] = run(r0 + 5, 1, scaled);
      const auto slice = [&](const std::vector<float>& v) {
        return std::vector<float>(v.begin() + size_t{1} * r0 * dim, v.begin() + size_t{1} * (r0 + 16) * dim);
      };
      EXPECT_LE(RelErr(testing::Bf16ToFloat(res16), slice(want_res)), 5e-3);
      EXPECT_LE(RelErr(testing::Bf16ToFloat(y16), slice(want_y)), 5e-3);
      EXPECT_EQ(Mismatches(res1, res16, size_t{5} * dim), 0u) << "residual of one row against 16";
      EXPECT_EQ(Mismatches(y1, y16, size_t{5} * dim), 0u) << "next norm of one row against 16";
    }
  }
}

// ---- Full-layer prefill attention through cuBLASLt (gemm_attention.cu) ----

// Against the flash kernel (one KV head of 512, GQA 16; its scores stay fp32): short and long rows (odd lengths), a
// key range that starts past 0, query blocks that cross 65536 keys, and large scores. Near-uniform rows over
// thousands of keys make O small against the rounding of every score: bf16 scores missed 1e-2 here (1.1-1.3e-2).
TEST(CudaGemmAttentionTest, MatchesFlashKernel) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int q_len, q_pos0, kv_begin, positions_per_block;
    float q_range = 0.5f;  // q in [-q_range, q_range]; 4 gives scores of about ±15 (a peaked softmax)
  };
  constexpr int kHeads = 16, kDim = 512, kCapacity = 65800;
  std::mt19937 rng(31);
  auto k = ToDevice(RandomBf16(size_t{kCapacity} * kDim, rng, -0.5f, 0.5f));
  auto v = ToDevice(RandomBf16(size_t{kCapacity} * kDim, rng));
  auto cublas = CublasHandle::Create();
  ASSERT_TRUE(cublas.ok());
  for (const Case& c : {Case{70, 100, 0, 70}, Case{40, 12000, 0, 40}, Case{33, 30001, 0, 33}, Case{50, 9000, 5000, 16},
                        Case{200, 65400, 0, 64}, Case{64, 20000, 0, 64, 4.f}}) {
    SCOPED_TRACE(::testing::Message() << "q_len " << c.q_len << " q_pos0 " << c.q_pos0);
    const size_t elems = size_t{1} * c.q_len * kHeads * kDim;
    auto q = ToDevice(RandomBf16(elems, rng, -c.q_range, c.q_range));
    auto o_gemm = ToDevice(std::vector<uint16_t>(elems, 0)), o_flash = ToDevice(std::vector<uint16_t>(elems, 0));
    AttentionParams p = DenseAttention(q, k, v, kHeads, 1, kDim);
    p.q_len = c.q_len, p.q_pos0 = c.q_pos0, p.kv_begin = c.kv_begin, p.kv_end = c.q_pos0 + c.q_len;
    p.kv_capacity = kCapacity;
    ASSERT_TRUE(GemmAttentionApplies(p));
    const size_t ws_bytes = GemmAttentionWorkspaceBytes(p, c.positions_per_block);
    auto ws = DeviceBuffer<unsigned char>::Create(ws_bytes);
    ASSERT_TRUE(ws.ok());
    p.o = reinterpret_cast<__nv_bfloat16*>(o_gemm.get());
    ASSERT_TRUE(LaunchGemmAttention(*cublas, p, ws->get(), ws_bytes, nullptr).ok());
    p.o = reinterpret_cast<__nv_bfloat16*>(o_flash.get());
    LaunchAttention(p, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_LE(RelErr(testing::Bf16ToFloat(ToHost(o_gemm)), testing::Bf16ToFloat(ToHost(o_flash))), 1e-2);
  }
}

}  // namespace
}  // namespace avserve::engine::cuda
