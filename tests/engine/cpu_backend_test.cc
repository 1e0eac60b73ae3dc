// CPU backend ops against plain references: the attention masks over a ring-buffered KV cache (both
// vision-block variants), the bf16 rounding points, MatMul with bias, ArgmaxRows against Sampler's greedy
// choice. Also the model over the CPU backend posing as a device backend: fused projection weights and strided
// views give the plain layout's logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <utility>

#include "engine/backend/backend.h"
#include "engine/backend/numeric.h"
#include "engine/base/status_macros.h"
#include "engine/model/gemma4.h"
#include "engine/model/sampler.h"
#include "engine/model/weights.h"
#include "tests/engine/forwarding_backend.h"
#include "tests/engine/golden.h"
#include "tests/engine/greedy_cases.h"

namespace avserve::engine {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Tensor F32(std::vector<float>& v, std::initializer_list<int64_t> shape) {
  return Tensor::Contiguous(v.data(), DType::kF32, Device::kCpu, shape);
}

// Reference attention over absolute positions 0..total-1 (all keys kept, no ring).
std::vector<float> ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k_all,
                                      const std::vector<float>& v_all, const std::vector<int32_t>& blocks,
                                      int64_t q0, int64_t n, int hq, int hkv, int d, int window, bool variant_b) {
  std::vector<float> out(n * hq * d, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int h = 0; h < hq; ++h) {
      const int kvh = h / (hq / hkv);
      const int64_t qpos = q0 + i;
      std::vector<double> w(qpos + n, 0.0);
      double mx = -1e300, sum = 0.0;
      for (int64_t kp = 0; kp < q0 + n; ++kp) {
        const bool causal = kp <= qpos, win = window == 0 || kp > qpos - window;
        const bool blk = kp >= q0 && blocks[i] >= 0 && blocks[kp - q0] == blocks[i];
        if (!(variant_b ? ((win && causal) || blk) : (win && (causal || blk)))) continue;
        double s = 0.0;
        for (int e = 0; e < d; ++e) s += q[(i * hq + h) * d + e] * k_all[(kp * hkv + kvh) * d + e];
        w[kp] = s;
        mx = std::max(mx, s);
      }
      for (int64_t kp = 0; kp < q0 + n; ++kp) {
        const bool causal = kp <= qpos, win = window == 0 || kp > qpos - window;
        const bool blk = kp >= q0 && blocks[i] >= 0 && blocks[kp - q0] == blocks[i];
        if (!(variant_b ? ((win && causal) || blk) : (win && (causal || blk)))) continue;
        const double e = std::exp(w[kp] - mx);
        sum += e;
        for (int c = 0; c < d; ++c) out[(i * hq + h) * d + c] += e * v_all[(kp * hkv + kvh) * d + c];
      }
      for (int c = 0; c < d; ++c) out[(i * hq + h) * d + c] /= sum;
    }
  }
  return out;
}

class AttentionMaskTest : public ::testing::TestWithParam<bool> {};

TEST_P(AttentionMaskTest, RingCacheMatchesFullReference) {
  const bool variant_b = GetParam();
  auto be = CreateCpuBackend(2);
  const int hq = 4, hkv = 2, d = 8, window = 4;
  const int64_t q0 = 13, n = 7, cap = window - 1 + n;  // ring just large enough
  // Positions 0..19; the chunk [13, 20) holds a 5-token vision block at 14..18 (longer than window).
  std::vector<float> k_all = Random((q0 + n) * hkv * d, 1), v_all = Random((q0 + n) * hkv * d, 2);
  std::vector<float> q = Random(n * hq * d, 3);
  std::vector<int32_t> blocks = {-1, 0, 0, 0, 0, 0, -1};
  std::vector<float> ring(cap * hkv * d, NAN), vring(cap * hkv * d, NAN);
  for (int64_t p = q0 - (window - 1); p < q0 + n; ++p) {  // what a sequence would hold
    std::copy_n(k_all.begin() + p * hkv * d, hkv * d, ring.begin() + (p % cap) * hkv * d);
    std::copy_n(v_all.begin() + p * hkv * d, hkv * d, vring.begin() + (p % cap) * hkv * d);
  }
  std::vector<float> out(n * hq * d);
  AttentionParams ap{q0, q0 - (window - 1), q0 + n, cap, window, variant_b, 1.0f};
  Tensor block_t = Tensor::Contiguous(blocks.data(), DType::kI32, Device::kCpu, {n});
  be->Attention(F32(q, {n, hq, d}), F32(ring, {cap, hkv, d}), F32(vring, {cap, hkv, d}), &block_t, ap,
                F32(out, {n, hq, d}));
  const std::vector<float> want = ReferenceAttention(q, k_all, v_all, blocks, q0, n, hq, hkv, d, window, variant_b);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-5) << i;
}

INSTANTIATE_TEST_SUITE_P(Variants, AttentionMaskTest, ::testing::Bool());

// Full causal attention over 700 keys: the online softmax crosses the 512-key block boundary, and
// query tiles of 32 rows span it; fp32 must still equal plain softmax.
TEST(CpuBackendTest, AttentionAcrossKeyBlocksMatchesReference) {
  auto be = CreateCpuBackend(2);
  const int hq = 2, hkv = 1, d = 16;
  const int64_t q0 = 650, n = 50, total = q0 + n;
  std::vector<float> k_all = Random(total * hkv * d, 11), v_all = Random(total * hkv * d, 12);
  std::vector<float> q = Random(n * hq * d, 13);
  for (float& x : q) x *= 0.5f;  // scores O(1): the max moves between blocks
  std::vector<int32_t> blocks(n, -1);
  std::vector<float> out(n * hq * d);
  AttentionParams ap{q0, 0, total, total, 0, false, 1.0f};
  be->Attention(F32(q, {n, hq, d}), F32(k_all, {total, hkv, d}), F32(v_all, {total, hkv, d}), nullptr, ap,
                F32(out, {n, hq, d}));
  const std::vector<float> want = ReferenceAttention(q, k_all, v_all, blocks, q0, n, hq, hkv, d, 0, false);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-5) << i;
}

// The fast exp of PyTorch's CPU vector code (at::vec fexp_u20), which its flash attention uses for
// bf16 probabilities. Bit patterns from an independent emulation that reproduced transformers'
// bf16 sdpa outputs bit for bit (tests/data/engine/dump_hf_activations.py and its analysis).
TEST(CpuBackendTest, TorchFastExpMatchesPyTorchsApproximation) {
  const std::pair<float, uint32_t> known[] = {{0.0f, 0x3f7ffc80u},   {-0.5f, 0x3f1b46c0u}, {-1.0f, 0x3ebc5780u},
                                              {-3.25f, 0x3d1ed1c0u}, {-10.0f, 0x383e68c0u}, {-80.0f, 0x05bfe9c0u}};
  for (const auto& [x, bits] : known) {
    const float got = TorchFastExp(x);
    uint32_t got_bits;
    std::memcpy(&got_bits, &got, 4);
    EXPECT_EQ(got_bits, bits) << x;
  }
  for (float x = -20.0f; x <= 0.0f; x += 0.01f) {
    ASSERT_NEAR(TorchFastExp(x) / std::exp(static_cast<double>(x)), 1.0, 1.2e-4) << x;
  }
  EXPECT_EQ(TorchFastExp(-100.0f), 0.0f);  // below ln(FLT_MIN)
}

TEST(CpuBackendTest, MatMulAddsBiasAndRoundsOnceToBf16) {
  auto be = CreateCpuBackend(1);
  std::vector<float> x = Random(3 * 70, 4), w = Random(130 * 70, 5), b = Random(130, 6);
  std::vector<uint16_t> y(3 * 130);
  Tensor yt = Tensor::Contiguous(y.data(), DType::kBF16, Device::kCpu, {3, 130});
  Tensor bt = F32(b, {130});
  be->MatMul(F32(x, {3, 70}), F32(w, {130, 70}), &bt, yt);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 130; ++j) {
      double s = b[j];
      for (int k = 0; k < 70; ++k) s += static_cast<double>(x[i * 70 + k]) * w[j * 70 + k];
      EXPECT_NEAR(Bf16ToF32(y[i * 130 + j]), s, std::abs(s) / 128 + 1e-5);
    }
  }
}

// The default ForkBuffer: new memory of the source's size holding the source's prefix (odd row lengths included).
TEST(CpuBackendTest, ForkBufferCopiesThePrefixIntoNewMemory) {
  auto be = CreateCpuBackend(1);
  for (size_t prefix : {size_t{0}, size_t{2}, size_t{6150}, size_t{8192}}) {
    auto src = be->AllocateShareable(8192);
    ASSERT_TRUE(src.ok()) << src.status();
    auto* bytes = static_cast<unsigned char*>((*src)->data());
    for (size_t i = 0; i < 8192; ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 3);
    auto fork = be->ForkBuffer(**src, prefix);
    ASSERT_TRUE(fork.ok()) << fork.status();
    ASSERT_EQ((*fork)->bytes(), 8192u);
    EXPECT_NE((*fork)->data(), (*src)->data());
    EXPECT_EQ(std::memcmp((*fork)->data(), bytes, prefix), 0) << prefix;
  }
}

TEST(CpuBackendTest, SoftcapAndConversionsRoundLikeTorch) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(F32ToBf16(61.9677f)), 62.0f);  // sqrt(3840) in bf16 (spec §5.1)
  EXPECT_EQ(F32ToBf16(1.00390625f), 0x3f80);         // tie to even
  EXPECT_EQ(F16ToF32(F32ToF16(0.1f)), 0.0999755859375f);
  EXPECT_EQ(F16ToF32(F32ToF16(1e-7f)), std::ldexp(2.0f, -24));  // subnormal
  auto be = CreateCpuBackend(1);
  std::vector<float> x = {0.0f, 15.0f, -100.0f};
  std::vector<float> y(3);
  be->Softcap(F32(x, {1, 3}), 30.0f, F32(y, {1, 3}));
  EXPECT_FLOAT_EQ(y[1], 30.0f * std::tanh(0.5f));
  EXPECT_NEAR(y[2], -30.0f * std::tanh(100.0f / 30.0f), 1e-5);
}

TEST(CpuBackendTest, RopeIsIdentityAtZeroAndRotatesOnlyTheFirstPairs) {
  auto be = CreateCpuBackend(1);
  std::vector<float> x = Random(2 * 1 * 16, 7), orig = x;
  std::vector<int32_t> pos = {0, 5};
  RopeParams rp{1e6f, 16, 2};  // proportional: only pairs 0 and 1 rotate
  be->Rope(F32(x, {2, 1, 16}), Tensor::Contiguous(pos.data(), DType::kI32, Device::kCpu, {2}), rp);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(x[j], orig[j]);
  for (int j : {2, 3, 4, 5, 6, 7}) {
    EXPECT_EQ(x[16 + j], orig[16 + j]);
    EXPECT_EQ(x[16 + j + 8], orig[16 + j + 8]);
  }
  EXPECT_NEAR(x[16], orig[16] * std::cos(5.0f) - orig[24] * std::sin(5.0f), 1e-5);
}

TEST(CpuBackendTest, ArgmaxRowsIsTheSamplersGreedyChoice) {
  auto be = CreateCpuBackend(2);
  for (const int64_t vocab : {int64_t{1003}, int64_t{4096}}) {
    std::vector<int32_t> suppressed = {5, 17, static_cast<int32_t>(vocab - 3)};
    constexpr int64_t rows = 36;
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    std::mt19937 rng(11);
    const std::vector<int32_t> planted =
        avserve::engine::testing::PlantGreedyCases(logits.data(), rows, vocab, vocab, suppressed, rng);
    // Rows strided inside a wider buffer, as a view of a step's logits may be.
    std::vector<float> wide(static_cast<size_t>(rows * (vocab + 5)), 99.f);
    for (int64_t r = 0; r < rows; ++r) std::copy_n(logits.data() + r * vocab, vocab, wide.data() + r * (vocab + 5));
    Tensor strided = Tensor::Contiguous(wide.data(), DType::kF32, Device::kCpu, {rows, vocab + 5});
    strided.shape[1] = vocab;
    std::vector<int32_t> got(rows, -7), got_strided(rows, -7), got_free(rows, -7);
    const auto ids = [&](std::vector<int32_t>& out) {
      return Tensor::Contiguous(out.data(), DType::kI32, Device::kCpu, {rows});
    };
    const Tensor sup = Tensor::Contiguous(suppressed.data(), DType::kI32, Device::kCpu, {3});
    be->ArgmaxRows(F32(logits, {rows, vocab}), sup, ids(got));
    be->ArgmaxRows(strided, sup, ids(got_strided));
    be->ArgmaxRows(F32(logits, {rows, vocab}), Tensor(), ids(got_free));
    Sampler greedy(SamplingOptions{}, suppressed);
    Sampler greedy_free(SamplingOptions{}, {});
    for (int64_t r = 0; r < rows; ++r) {
      const std::span<const float> row(logits.data() + r * vocab, static_cast<size_t>(vocab));
      EXPECT_EQ(got[r], greedy.Sample(row)) << "vocab " << vocab << " row " << r;
      EXPECT_EQ(got_free[r], greedy_free.Sample(row)) << "vocab " << vocab << " row " << r;
    }
    EXPECT_EQ(got_strided, got);
    EXPECT_EQ(std::vector<int32_t>(got.begin() + 1, got.begin() + 12), planted) << "vocab " << vocab;
    EXPECT_EQ(got_free[2], 17);  // nothing suppressed: the planted maximum itself
    EXPECT_EQ(got_free[9], 5);
  }
}

// The CPU backend posing as a device backend (SharesHostMemory() false): LoadWeights copies the weights and
// stores the projections fused, and the model takes the paths it takes on the CUDA backend.
class DeviceLayoutCpu final : public testing::ForwardingBackend {
 public:
  std::string Name() const override { return "cpu-device-layout"; }
  bool SharesHostMemory() const override { return false; }
  void Synchronize() override {}
};

TEST(DeviceLayoutTest, ProjectionsAreRowRangesOfOneTensor) {
  DeviceLayoutCpu device;
  auto cpu = CreateCpuBackend(1);
  const std::string dir = testing::TinyBf16();
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto fused = LoadWeights(dir, *config, device);
  auto plain = LoadWeights(dir, *config, *cpu);
  ASSERT_TRUE(fused.ok() && plain.ok());
  const int64_t h = config->hidden_size, f = config->intermediate_size;
  for (size_t l = 0; l < config->layers.size(); ++l) {
    const LayerWeights& w = fused->layers[l];
    EXPECT_EQ(plain->layers[l].qkv_proj.data, nullptr);
    EXPECT_EQ(plain->layers[l].gate_up_proj.data, nullptr);
    const int64_t q_rows = w.q_proj.dim(0), kv_rows = w.k_proj.dim(0);
    const int64_t rows = q_rows + kv_rows * (config->layers[l].k_eq_v ? 1 : 2);
    ASSERT_EQ(w.qkv_proj.rank, 2);
    EXPECT_EQ(w.qkv_proj.dim(0), rows);
    EXPECT_EQ(w.qkv_proj.dim(1), h);
    EXPECT_EQ(w.q_proj.data, w.qkv_proj.data);
    EXPECT_EQ(w.k_proj.data, static_cast<char*>(w.qkv_proj.data) + q_rows * h * 2);
    if (!config->layers[l].k_eq_v) {
      EXPECT_EQ(w.v_proj.data, static_cast<char*>(w.k_proj.data) + kv_rows * h * 2);
    }
    EXPECT_EQ(w.gate_up_proj.dim(0), 2 * f);
    EXPECT_EQ(w.gate_proj.data, w.gate_up_proj.data);
    EXPECT_EQ(w.up_proj.data, static_cast<char*>(w.gate_up_proj.data) + f * h * 2);
    // The uploaded rows hold the checkpoint's values.
    EXPECT_EQ(std::memcmp(w.k_proj.data, plain->layers[l].k_proj.data, w.k_proj.bytes()), 0);
    EXPECT_EQ(std::memcmp(w.up_proj.data, plain->layers[l].up_proj.data, w.up_proj.bytes()), 0);
  }
}

// Logits of a prefill in chunks (one wrapping the sliding layers' ring), single-sequence decode steps and a
// two-sequence decode step, one after another.
absl::StatusOr<std::vector<float>> TinyLogits(Backend& backend) {
  const std::string dir = testing::TinyBf16();
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(dir, config, backend));
  Gemma4Model model(backend, config, std::move(weights), /*vision_blocks_all_layers=*/false);
  // Sliding rings of window - 1 + 16 = 23 rows.
  ASSIGN_OR_RETURN(KvCache a, KvCache::Create(backend, model.config(), model.act_dtype(), 64, 16));
  ASSIGN_OR_RETURN(KvCache b, KvCache::Create(backend, model.config(), model.act_dtype(), 64, 16));
  std::mt19937 rng(7);
  std::vector<int32_t> ids(32);
  for (int32_t& id : ids) id = 3 + static_cast<int32_t>(rng() % 400);
  const std::vector<TokenType> types(ids.size(), TokenType::kText);
  std::vector<float> all, logits;
  const auto forward = [&](KvCache& cache, int64_t pos0, int64_t n) -> absl::Status {
    ForwardInput in;
    in.ids = ids.data() + pos0;
    in.types = types.data();
    in.n = n;
    in.pos0 = pos0;
    in.all_logits = true;
    RETURN_IF_ERROR(model.Forward(in, cache, logits));
    all.insert(all.end(), logits.begin(), logits.end());
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(forward(a, 0, 13));
  RETURN_IF_ERROR(forward(a, 13, 12));  // ring rows 13..22, then 0, 1
  RETURN_IF_ERROR(forward(b, 0, 16));
  for (int64_t pos = 25; pos < 28; ++pos) {
    RETURN_IF_ERROR(model.DecodeBatch({ids[pos]}, {pos}, {&a}, logits));
    all.insert(all.end(), logits.begin(), logits.end());
  }
  RETURN_IF_ERROR(model.DecodeBatch({ids[28], ids[16]}, {28, 16}, {&a, &b}, logits));
  all.insert(all.end(), logits.begin(), logits.end());
  return all;
}

TEST(DeviceLayoutTest, FusedProjectionsGiveThePlainLayoutsLogits) {
  DeviceLayoutCpu device;
  auto cpu = CreateCpuBackend(2);
  auto want = TinyLogits(*cpu);
  auto got = TinyLogits(device);
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << " " << got.status();
  ASSERT_EQ(got->size(), want->size());
  size_t differ = 0;
  double max_diff = 0.0;
  for (size_t i = 0; i < got->size(); ++i) {
    differ += (*got)[i] != (*want)[i];
    max_diff = std::max(max_diff, std::abs(static_cast<double>((*got)[i]) - (*want)[i]));
  }
  EXPECT_EQ(differ, 0u) << "max difference " << max_diff;
}

}  // namespace
}  // namespace avserve::engine
