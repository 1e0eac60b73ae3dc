// CUDA ops that the Backend interface does not expose, against plain CPU loops: GPU sampling, the fused
// RMSNorm + RoPE + residual + layer-scale kernel, the skinny GEMM at decode shapes, split-KV attention against
// the single-split result, and batched decode attention against one launch per sequence.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/decode_mma.cuh"
#include "engine/backend/cuda/ops/gemv.cuh"
#include "engine/backend/cuda/ops/rms_norm.cuh"
#include "engine/backend/cuda/ops/sampling.cuh"
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

// A decode step split over many KV chunks equals the one-split result (same kernel, merged partials).
TEST(CudaAttentionSplitTest, SplitKvDecodeEqualsSingleSplit) {
  SKIP_WITHOUT_GPU();
  constexpr int kHeads = 16, kKvHeads = 1, kDim = 512, kCapacity = 9000, kPos = 8999;
  std::mt19937 rng(11);
  auto q = ToDevice(RandomBf16(kHeads * kDim, rng, -0.25f, 0.25f));
  auto k = ToDevice(RandomBf16(size_t{kCapacity} * kKvHeads * kDim, rng, -0.25f, 0.25f));
  auto v = ToDevice(RandomBf16(size_t{kCapacity} * kKvHeads * kDim, rng));
  auto o1 = ToDevice(std::vector<uint16_t>(kHeads * kDim, 0)), o2 = ToDevice(std::vector<uint16_t>(kHeads * kDim, 0));
  AttentionParams p;
  p.q = reinterpret_cast<const __nv_bfloat16*>(q.get());
  p.k = reinterpret_cast<const __nv_bfloat16*>(k.get());
  p.v = reinterpret_cast<const __nv_bfloat16*>(v.get());
  p.q_token_stride = kHeads * kDim, p.q_head_stride = kDim;
  p.k_slot_stride = p.v_slot_stride = kKvHeads * kDim, p.k_head_stride = p.v_head_stride = kDim;
  p.o_token_stride = kHeads * kDim, p.o_head_stride = kDim;
  p.q_len = 1, p.q_pos0 = kPos, p.kv_begin = 0, p.kv_end = kPos + 1, p.kv_capacity = kCapacity;
  p.num_heads = kHeads, p.num_kv_heads = kKvHeads, p.head_dim = kDim;
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

// The skinny GEMM (decode and batched questions) against a double-precision loop: row counts on both sides of
// its 8-token tile, k with and without a partial 256-wide step, n not a multiple of its 16-row tile, bias, fp32
// output, and enough rows of w for each of its k splits (8 down to 1 warp per tile on an H200's 132 SMs).
TEST(CudaSkinnyGemmTest, MatchesLoop) {
  SKIP_WITHOUT_GPU();
  struct Shape {
    int m, n, k;
    bool bias, f32;
  };
  std::mt19937 rng(5);
  for (const Shape& sh : {Shape{1, 100, 3840, false, false}, Shape{8, 2048, 640, true, false},
                          Shape{9, 96, 384, false, true}, Shape{16, 40, 8192, true, true},
                          Shape{3, 4096, 256, false, false}, Shape{1, 30720, 3840, false, false},
                          Shape{3, 12800, 512, true, false}, Shape{8, 8192, 1024, false, false}}) {
    SCOPED_TRACE(::testing::Message() << "m=" << sh.m << " n=" << sh.n << " k=" << sh.k);
    const auto a = RandomBf16(size_t{1} * sh.m * sh.k, rng), b = RandomBf16(size_t{1} * sh.n * sh.k, rng);
    const auto bias = RandomBf16(sh.n, rng);
    auto a_d = ToDevice(a), b_d = ToDevice(b), bias_d = ToDevice(bias);
    auto c_d = DeviceBuffer<float>::Create(size_t{1} * sh.m * sh.n);
    ASSERT_TRUE(c_d.ok());
    GemmParams p;
    p.a = reinterpret_cast<const __nv_bfloat16*>(a_d.get());
    p.b = reinterpret_cast<const __nv_bfloat16*>(b_d.get());
    p.bias = sh.bias ? reinterpret_cast<const __nv_bfloat16*>(bias_d.get()) : nullptr;
    p.c = c_d->get();
    p.c_fp32 = sh.f32;
    p.m = sh.m, p.n = sh.n, p.k = sh.k;
    ASSERT_TRUE(GemvApplies(p));
    LaunchGemv(p, nullptr);
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

}  // namespace
}  // namespace avserve::engine::cuda
