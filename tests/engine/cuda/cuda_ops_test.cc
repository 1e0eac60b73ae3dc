// CUDA ops that the Backend interface does not expose, against plain CPU loops: GPU sampling, the fused
// RMSNorm + RoPE + residual + layer-scale kernel, and split-KV attention against the single-split result.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/attention.cuh"
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

}  // namespace
}  // namespace avserve::engine::cuda
