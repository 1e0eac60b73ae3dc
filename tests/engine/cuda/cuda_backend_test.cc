// Every Backend op of the CUDA backend against the CPU reference backend on random inputs
// (relative error <= 1e-2 in bf16, style.md §7). Skips where no CUDA device exists.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"
#include "tests/engine/greedy_cases.h"

namespace avserve::engine::cuda {
namespace {

using testing::Mirror;
using testing::Mirrored;
using testing::RandomBf16;
using testing::ReadBoth;
using testing::RelErr;

constexpr double kTol = 1e-2;

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = CreateCudaBackend();
    if (!backend.ok()) GTEST_SKIP() << "no CUDA device: " << backend.status();
    gpu_ = std::move(*backend);
    cpu_ = CreateCpuBackend(0);
  }

  Mirrored Bf16(std::initializer_list<int64_t> shape, float lo = -1.f, float hi = 1.f) {
    Tensor layout = Tensor::Contiguous(nullptr, DType::kBF16, Device::kCpu, shape);
    const auto host = RandomBf16(layout.numel(), rng_, lo, hi);
    return Mirror(*cpu_, *gpu_, layout, host.data(), host.size() * 2);
  }
  Mirrored F32(std::initializer_list<int64_t> shape, float lo = -1.f, float hi = 1.f) {
    Tensor layout = Tensor::Contiguous(nullptr, DType::kF32, Device::kCpu, shape);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> host(layout.numel());
    for (auto& v : host) v = dist(rng_);
    return Mirror(*cpu_, *gpu_, layout, host.data(), host.size() * 4);
  }
  Mirrored I32(const std::vector<int32_t>& values) {
    Tensor layout = Tensor::Contiguous(nullptr, DType::kI32, Device::kCpu, {static_cast<int64_t>(values.size())});
    return Mirror(*cpu_, *gpu_, layout, values.data(), values.size() * 4);
  }
  // Compares the whole storage of `m` on both backends.
  void ExpectClose(const Mirrored& m, DType dtype, size_t count, double tol = kTol) {
    std::vector<float> want, got;
    ReadBoth(*gpu_, m, dtype, count, &want, &got);
    EXPECT_LE(RelErr(got, want), tol);
  }
  void Sync() {
    gpu_->Synchronize();
    cpu_->Synchronize();
  }

  std::mt19937 rng_{1234};
  std::unique_ptr<Backend> gpu_, cpu_;
};

class CudaMatMulTest : public CudaBackendTest {
 protected:
  void Check(bool with_bias, DType out_type, int64_t m = 37) {
    Mirrored x = Bf16({m, 384}), w = Bf16({96, 384}), bias = Bf16({96});
    Mirrored y = out_type == DType::kBF16 ? Bf16({m, 96}) : F32({m, 96});
    cpu_->MatMul(x.cpu, w.cpu, with_bias ? &bias.cpu : nullptr, y.cpu);
    gpu_->MatMul(x.gpu, w.gpu, with_bias ? &bias.gpu : nullptr, y.gpu);
    Sync();
    ExpectClose(y, out_type, m * 96);
  }
};

// Decode-sized products (1..8 rows) take the GEMV kernel.
TEST_F(CudaMatMulTest, DecodeRowsMatchCpu) {
  for (int64_t m : {1, 3, 8}) Check(true, DType::kBF16, m);
}

TEST_F(CudaMatMulTest, Bf16MatchesCpu) { Check(false, DType::kBF16); }
TEST_F(CudaMatMulTest, Bf16WithBiasMatchesCpu) { Check(true, DType::kBF16); }
TEST_F(CudaMatMulTest, F32OutputMatchesCpu) { Check(false, DType::kF32); }
TEST_F(CudaMatMulTest, F32OutputWithBiasMatchesCpu) { Check(true, DType::kF32); }

TEST_F(CudaBackendTest, RmsNormMatchesCpuOnRowsAndStridedHeads) {
  Mirrored x = Bf16({5, 3840}, -3.f, 3.f), w = Bf16({3840}), y = Bf16({5, 3840});
  cpu_->RmsNorm(x.cpu, &w.cpu, 1e-6f, y.cpu);
  gpu_->RmsNorm(x.gpu, &w.gpu, 1e-6f, y.gpu);
  Sync();
  ExpectClose(y, DType::kBF16, 5 * 3840, 5e-3);
  // In place, no weight, on heads of a fused projection: [7 tokens, 2 heads, 256] inside rows of 1024.
  Mirrored fused = Bf16({7, 1024}, -2.f, 2.f);
  auto heads = [](Tensor t) {
    t.rank = 3;
    t.shape = {7, 2, 256, 0};
    t.strides = {1024, 256, 1, 0};
    return t;
  };
  cpu_->RmsNorm(heads(fused.cpu), nullptr, 1e-6f, heads(fused.cpu));
  gpu_->RmsNorm(heads(fused.gpu), nullptr, 1e-6f, heads(fused.gpu));
  Sync();
  ExpectClose(fused, DType::kBF16, 7 * 1024, 5e-3);
}

TEST_F(CudaBackendTest, LayerNormMatchesCpu) {
  Mirrored x = Bf16({3, 6912}, 0.f, 1.f), w = Bf16({6912}), b = Bf16({6912}), y = Bf16({3, 6912});
  cpu_->LayerNorm(x.cpu, w.cpu, b.cpu, 1e-5f, y.cpu);
  gpu_->LayerNorm(x.gpu, w.gpu, b.gpu, 1e-5f, y.gpu);
  Sync();
  ExpectClose(y, DType::kBF16, 3 * 6912, 5e-3);
}

TEST_F(CudaBackendTest, RopeDefaultAndProportionalMatchCpu) {
  struct Case {
    int heads, head_dim, pairs;
    float theta;
  };
  for (const Case c : {Case{4, 256, 128, 1e4f}, Case{2, 512, 64, 1e6f}}) {
    std::vector<int32_t> pos = {0, 1, 7, 1023, 1024, 4097, 65536, 200001, 262143};
    Mirrored positions = I32(pos);
    Mirrored x = Bf16({9, c.heads, c.head_dim}, -2.f, 2.f);
    const RopeParams params{c.theta, c.head_dim, c.pairs};
    cpu_->Rope(x.cpu, positions.cpu, params);
    gpu_->Rope(x.gpu, positions.gpu, params);
    Sync();
    ExpectClose(x, DType::kBF16, 9 * c.heads * c.head_dim, 5e-3);
  }
}

// The fused sequences of the decoder layer against the CPU backend's plain ops (its defaults).
TEST_F(CudaBackendTest, FusedNormRopeAndNormAddMatchCpu) {
  std::vector<int32_t> pos = {0, 5, 1023, 4097, 65536, 262143};
  Mirrored positions = I32(pos);
  for (const RopeParams rope : {RopeParams{1e4f, 256, 128}, RopeParams{1e6f, 512, 64}}) {
    Mirrored x = Bf16({6, 4, rope.head_dim}, -2.f, 2.f), w = Bf16({rope.head_dim});
    cpu_->RmsNormRope(x.cpu, w.cpu, 1e-6f, positions.cpu, rope, x.cpu);
    gpu_->RmsNormRope(x.gpu, w.gpu, 1e-6f, positions.gpu, rope, x.gpu);
    Sync();
    ExpectClose(x, DType::kBF16, 6 * 4 * rope.head_dim, 5e-3);
  }
  for (const bool scaled : {false, true}) {
    Mirrored o = Bf16({6, 3840}, -3.f, 3.f), w = Bf16({3840}), x = Bf16({6, 3840}, -8.f, 8.f);
    cpu_->RmsNormAddTo(o.cpu, w.cpu, 1e-6f, x.cpu, scaled, 0.71875f);
    gpu_->RmsNormAddTo(o.gpu, w.gpu, 1e-6f, x.gpu, scaled, 0.71875f);
    Sync();
    ExpectClose(x, DType::kBF16, 6 * 3840, 5e-3);
  }
}

// The post norm + residual add + next norm of the decoder layer (one kernel) against the CPU backend's plain
// sequence (RmsNormAddTo, then RmsNorm of the updated residual): the 12B's rows, the tiny model's, and a row too
// long for the fused kernel (the plain launches). Both outputs agree bit for bit in nearly every element.
TEST_F(CudaBackendTest, RmsNormAddToNormMatchesCpuSequence) {
  for (const int64_t dim : {3840, 64, 8200}) {
    for (const bool scaled : {false, true}) {
      Mirrored o = Bf16({6, dim}, -3.f, 3.f), w = Bf16({dim}), next_w = Bf16({dim}, 0.f, 2.f);
      Mirrored x = Bf16({6, dim}, -8.f, 8.f), y = Bf16({6, dim});
      cpu_->RmsNormAddToNorm(o.cpu, w.cpu, 1e-6f, x.cpu, scaled, 0.71875f, next_w.cpu, y.cpu);
      gpu_->RmsNormAddToNorm(o.gpu, w.gpu, 1e-6f, x.gpu, scaled, 0.71875f, next_w.gpu, y.gpu);
      Sync();
      for (const Mirrored* m : {&x, &y}) {
        std::vector<float> want, got;
        ReadBoth(*gpu_, *m, DType::kBF16, 6 * dim, &want, &got);
        EXPECT_LE(RelErr(got, want), kTol) << dim;
        size_t equal = 0;
        for (size_t i = 0; i < got.size(); ++i) equal += got[i] == want[i];
        EXPECT_GE(equal, got.size() * 99 / 100) << "dim " << dim << (m == &x ? " residual" : " next norm");
      }
    }
  }
}

namespace {
// Heads [n, heads, d] of columns [col0, col0 + heads·d) of t [n, width], as the model views a fused projection.
Tensor HeadsOf(Tensor t, int64_t col0, int64_t heads, int64_t d) {
  t.data = static_cast<char*>(t.data) + col0 * 2;
  t.rank = 3;
  t.shape = {t.shape[0], heads, d, 0};
  t.strides = {t.strides[0], d, 1, 0};
  return t;
}
}  // namespace

// The model's fused-weight path: q/k/v heads read as strided views of one [n, (4 + 2 + 2)·D] product, q normed
// into a contiguous tensor, k and v normed into rows of a KV cache; GeGLU over the two halves of [n, 2F].
TEST_F(CudaBackendTest, NormsAndGegluReadStridedViewsOfFusedProducts) {
  std::vector<int32_t> pos = {3, 4, 5, 6, 7};
  Mirrored positions = I32(pos);
  for (const RopeParams rope : {RopeParams{1e4f, 256, 128}, RopeParams{1e6f, 512, 64}, RopeParams{1e4f, 32, 16}}) {
    const int64_t d = rope.head_dim;
    Mirrored qkv = Bf16({5, 8 * d}, -2.f, 2.f), wq = Bf16({d}), wk = Bf16({d});
    Mirrored q = Bf16({5, 4, d}), k_cache = Bf16({9, 2, d}), v_cache = Bf16({9, 2, d});
    for (auto [be, m] : {std::pair{cpu_.get(), &Mirrored::cpu}, std::pair{gpu_.get(), &Mirrored::gpu}}) {
      be->RmsNormRope(HeadsOf(qkv.*m, 0, 4, d), wq.*m, 1e-6f, positions.*m, rope, q.*m);
      be->RmsNorm(HeadsOf(qkv.*m, 6 * d, 2, d), nullptr, 1e-6f, (v_cache.*m).Slice(3, 8));
      be->RmsNormRope(HeadsOf(qkv.*m, 4 * d, 2, d), wk.*m, 1e-6f, positions.*m, rope, (k_cache.*m).Slice(3, 8));
    }
    Sync();
    ExpectClose(q, DType::kBF16, 5 * 4 * d, 5e-3);
    ExpectClose(k_cache, DType::kBF16, 9 * 2 * d, 5e-3);
    ExpectClose(v_cache, DType::kBF16, 9 * 2 * d, 5e-3);
    ExpectClose(qkv, DType::kBF16, 5 * 8 * d, 0.0);  // the product is only read
  }
  Mirrored gate_up = Bf16({3, 2 * 1536}, -5.f, 5.f), out = Bf16({3, 1536});
  for (auto [be, m] : {std::pair{cpu_.get(), &Mirrored::cpu}, std::pair{gpu_.get(), &Mirrored::gpu}}) {
    Tensor gate = gate_up.*m, up = gate_up.*m;
    gate.shape[1] = up.shape[1] = 1536;
    up.data = static_cast<char*>(up.data) + 1536 * 2;
    be->GeluTanhMul(gate, up, out.*m);
  }
  Sync();
  ExpectClose(out, DType::kBF16, 3 * 1536, 5e-3);
}

// The q/k/v norms of a step in one call (one launch on CUDA): heads of one fused product normed into q and into
// KV-cache rows, against the CPU backend's three plain ops; and a k_eq_v layer whose K is normed in place over
// the raw projection V is read from (the CUDA backend must keep the order there).
TEST_F(CudaBackendTest, QkvNormsMatchCpuSequence) {
  Mirrored positions = I32({3, 4, 5, 4096, 262143});
  for (const RopeParams rope : {RopeParams{1e4f, 256, 128}, RopeParams{1e6f, 512, 64}}) {
    const int64_t d = rope.head_dim;
    Mirrored qkv = Bf16({5, 8 * d}, -2.f, 2.f), wq = Bf16({d}), wk = Bf16({d});
    Mirrored q = Bf16({5, 4, d}), k_cache = Bf16({9, 2, d}), v_cache = Bf16({9, 2, d});
    Mirrored qk = Bf16({5, 6 * d}, -2.f, 2.f), q2 = Bf16({5, 4, d}), v2 = Bf16({5, 2, d});
    for (auto [be, m] : {std::pair{cpu_.get(), &Mirrored::cpu}, std::pair{gpu_.get(), &Mirrored::gpu}}) {
      be->QkvNorms(HeadsOf(qkv.*m, 0, 4, d), HeadsOf(qkv.*m, 4 * d, 2, d), HeadsOf(qkv.*m, 6 * d, 2, d), wq.*m, wk.*m,
                   1e-6f, positions.*m, rope, q.*m, (k_cache.*m).Slice(3, 8), (v_cache.*m).Slice(3, 8));
      const Tensor raw_k = HeadsOf(qk.*m, 4 * d, 2, d);  // K normed in place; V from the same raw rows
      be->QkvNorms(HeadsOf(qk.*m, 0, 4, d), raw_k, raw_k, wq.*m, wk.*m, 1e-6f, positions.*m, rope, q2.*m, raw_k,
                   v2.*m);
    }
    Sync();
    ExpectClose(q, DType::kBF16, 5 * 4 * d, 5e-3);
    ExpectClose(k_cache, DType::kBF16, 9 * 2 * d, 5e-3);
    ExpectClose(v_cache, DType::kBF16, 9 * 2 * d, 5e-3);
    ExpectClose(q2, DType::kBF16, 5 * 4 * d, 5e-3);
    ExpectClose(v2, DType::kBF16, 5 * 2 * d, 5e-3);
    ExpectClose(qk, DType::kBF16, 5 * 6 * d, 5e-3);
  }
}

TEST_F(CudaBackendTest, GeluTanhMulMatchesCpu) {
  Mirrored gate = Bf16({6, 1536}, -5.f, 5.f), up = Bf16({6, 1536}, -2.f, 2.f), out = Bf16({6, 1536});
  cpu_->GeluTanhMul(gate.cpu, up.cpu, out.cpu);
  gpu_->GeluTanhMul(gate.gpu, up.gpu, out.gpu);
  Sync();
  ExpectClose(out, DType::kBF16, 6 * 1536, 5e-3);
}

TEST_F(CudaBackendTest, AddScaleSoftcapConvertMatchCpu) {
  Mirrored a = Bf16({4, 256}, -40.f, 40.f), b = Bf16({4, 256}), sum = Bf16({4, 256});
  cpu_->Add(a.cpu, b.cpu, sum.cpu);
  gpu_->Add(a.gpu, b.gpu, sum.gpu);
  Mirrored scaled = Bf16({4, 256});
  cpu_->Scale(a.cpu, 0.37f, scaled.cpu);
  gpu_->Scale(a.gpu, 0.37f, scaled.gpu);
  Mirrored capped = Bf16({4, 256}), capped32 = F32({4, 256});
  cpu_->Softcap(a.cpu, 30.f, capped.cpu);
  gpu_->Softcap(a.gpu, 30.f, capped.gpu);
  cpu_->Convert(capped.cpu, capped32.cpu);
  gpu_->Convert(capped.gpu, capped32.gpu);
  Sync();
  ExpectClose(sum, DType::kBF16, 1024, 1e-3);
  ExpectClose(scaled, DType::kBF16, 1024, 1e-3);
  ExpectClose(capped, DType::kBF16, 1024, 1e-3);
  ExpectClose(capped32, DType::kF32, 1024, 1e-3);
}

TEST_F(CudaBackendTest, EmbedAndAddPosition2dMatchCpu) {
  Mirrored table = Bf16({1000, 384}), out = Bf16({6, 384});
  Mirrored ids = I32({0, 999, 17, 17, 512, 3});
  cpu_->Embed(table.cpu, ids.cpu, 62.f, out.cpu);
  gpu_->Embed(table.gpu, ids.gpu, 62.f, out.gpu);
  Mirrored pos_table = Bf16({50, 2, 384}), x = Bf16({3, 384}), y = Bf16({3, 384});
  Mirrored positions = I32({0, 0, 49, 3, 7, 49});
  cpu_->AddPosition2d(x.cpu, pos_table.cpu, positions.cpu, y.cpu);
  gpu_->AddPosition2d(x.gpu, pos_table.gpu, positions.gpu, y.gpu);
  Sync();
  ExpectClose(out, DType::kBF16, 6 * 384, 1e-3);
  ExpectClose(y, DType::kBF16, 3 * 384, 1e-3);
}

TEST_F(CudaBackendTest, CopyRowsToRingAndScatterRowsMatchCpu) {
  Mirrored ring = Bf16({8, 2, 64}), src = Bf16({5, 2, 64});
  cpu_->CopyRowsToRing(src.cpu, ring.cpu, 6);  // wraps: rows 6, 7, 0, 1, 2
  gpu_->CopyRowsToRing(src.gpu, ring.gpu, 6);
  Mirrored dst = Bf16({10, 64}), rows = F32({3, 64});
  Mirrored idx = I32({9, 0, 4});
  cpu_->ScatterRows(rows.cpu, idx.cpu, dst.cpu);
  gpu_->ScatterRows(rows.gpu, idx.gpu, dst.gpu);
  Sync();
  ExpectClose(ring, DType::kBF16, 8 * 2 * 64, 0.0);
  ExpectClose(dst, DType::kBF16, 10 * 64, 0.0);
}

// ---- Attention over the shapes of the 12B: prefill chunks (ring and linear caches, vision blocks, both
// mask variants) and split-KV decode. ----
struct AttentionCase {
  const char* name;
  int heads, kv_heads, head_dim, q_len, q_pos, kv_begin, capacity, window;
  bool blocks, block_overrides;
};

class CudaAttentionTest : public CudaBackendTest, public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(CudaAttentionTest, MatchesCpu) {
  const AttentionCase c = GetParam();
  const int kv_end = c.q_pos + c.q_len;
  // Normalised-looking q/k (entries ~1, as after q_norm/k_norm) keep the softmax realistic.
  Mirrored q = Bf16({c.q_len, c.heads, c.head_dim}, -0.25f, 0.25f);
  Mirrored k = Bf16({c.capacity, c.kv_heads, c.head_dim}, -0.25f, 0.25f);
  Mirrored v = Bf16({c.capacity, c.kv_heads, c.head_dim}, -1.f, 1.f);
  Mirrored out = Bf16({c.q_len, c.heads, c.head_dim});
  std::vector<int32_t> block_ids(c.q_len, -1);
  if (c.blocks) {  // two frames: [q_len/8, q_len/2) and [q_len/2 + 3, q_len - 2)
    for (int i = c.q_len / 8; i < c.q_len / 2; ++i) block_ids[i] = 0;
    for (int i = c.q_len / 2 + 3; i < c.q_len - 2; ++i) block_ids[i] = 1;
  }
  Mirrored blocks = I32(block_ids);
  AttentionParams p;
  p.q_pos_start = c.q_pos;
  p.kv_pos_begin = c.kv_begin;
  p.kv_pos_end = kv_end;
  p.kv_capacity = c.capacity;
  p.sliding_window = c.window;
  p.block_or_windowed_causal = c.block_overrides;
  cpu_->Attention(q.cpu, k.cpu, v.cpu, c.blocks ? &blocks.cpu : nullptr, p, out.cpu);
  gpu_->Attention(q.gpu, k.gpu, v.gpu, c.blocks ? &blocks.gpu : nullptr, p, out.gpu);
  Sync();
  ExpectClose(out, DType::kBF16, static_cast<size_t>(c.q_len) * c.heads * c.head_dim);
}

INSTANTIATE_TEST_SUITE_P(
    Gemma4Shapes, CudaAttentionTest,
    ::testing::Values(
        // Sliding layer, ring of 1280 slots that wraps, window 1024.
        AttentionCase{"SlidingRing", 16, 8, 256, 200, 1500, 1700 - 1280, 1280, 1024, false, false},
        AttentionCase{"SlidingBlocks", 16, 8, 256, 200, 1500, 1700 - 1280, 1280, 1024, true, false},
        AttentionCase{"SlidingBlocksOverride", 16, 8, 256, 200, 1500, 1700 - 1280, 1280, 1024, true, true},
        AttentionCase{"SlidingFirstChunk", 16, 8, 256, 130, 0, 0, 1280, 1024, true, false},
        // Chunks long enough to fill the GPU without splitting the keys (the warpgroup kernel on Hopper, Note
        // [Prefill attention on warpgroups]): a ring of 2176 slots that wraps, with and without vision blocks.
        AttentionCase{"SlidingLongChunk", 16, 8, 256, 1100, 3000, 4100 - 2176, 2176, 1024, false, false},
        AttentionCase{"SlidingLongChunkBlocks", 16, 8, 256, 1100, 3000, 4100 - 2176, 2176, 1024, true, false},
        AttentionCase{"SlidingLongChunkBlocksOverride", 16, 8, 256, 1100, 3000, 4100 - 2176, 2176, 1024, true, true},
        AttentionCase{"SlidingLongFirstChunk", 16, 8, 256, 1100, 0, 0, 2176, 1024, true, false},
        // Full layer: 1 KV head (GQA 16), head_dim 512, linear cache.
        AttentionCase{"FullCausal", 16, 1, 512, 150, 300, 0, 512, 0, false, false},
        AttentionCase{"FullBlocksOverride", 16, 1, 512, 150, 300, 0, 512, 0, true, true},
        // Decode steps (split-KV).
        AttentionCase{"FullDecodeLong", 16, 1, 512, 1, 6000, 0, 6016, 0, false, false},
        AttentionCase{"SlidingDecodeRing", 16, 8, 256, 1, 3000, 3001 - 1088, 1088, 1024, false, false},
        AttentionCase{"FewQueries", 16, 8, 256, 3, 70, 0, 128, 1024, false, false},
        // Decode steps of the full layers over a 33K-token cache (tensor-core split-KV path), the sliding layers'
        // decode kernel (decode_attention.cu) on a ring that wraps mid-slice and on a block of two positions,
        // and a step with more queries than that kernel takes.
        AttentionCase{"FullDecode33K", 16, 1, 512, 1, 33000, 0, 33024, 0, false, false},
        AttentionCase{"SlidingDecodeWrapsMidSlice", 16, 8, 256, 1, 5000, 5001 - 1030, 1030, 1024, false, false},
        AttentionCase{"DecodeInsideBlock", 16, 8, 256, 4, 400, 0, 512, 1024, true, false},
        AttentionCase{"FullFiveQueries", 16, 1, 512, 5, 2000, 0, 2048, 0, false, false}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return std::string(info.param.name); });

// A decode step of three sequences (batched questions) in one call: each appends its K/V row to its own cache
// (one of them a ring that wraps) and attends over it; the CUDA launch for all of them against the CPU backend's
// per-sequence sequence, for a full layer (GQA 16, head_dim 512) and a sliding one (GQA 2, 256, window 1024).
TEST_F(CudaBackendTest, AttendDecodeRowsMatchesCpuPerSequence) {
  struct Layer {
    int heads, kv_heads, dim, window;
  };
  for (const Layer& ly : {Layer{16, 1, 512, 0}, Layer{16, 8, 256, 1024}}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << ly.dim);
    const int64_t pos[3] = {4000, 777, 2600};
    const int64_t caps[3] = {4096, 4096, ly.window > 0 ? 1100 : 4096};
    std::vector<Mirrored> ks, vs;
    for (int b = 0; b < 3; ++b) {
      ks.push_back(Bf16({caps[b], ly.kv_heads, ly.dim}, -0.25f, 0.25f));
      vs.push_back(Bf16({caps[b], ly.kv_heads, ly.dim}));
    }
    Mirrored q = Bf16({3, ly.heads, ly.dim}, -0.25f, 0.25f);
    Mirrored k_new = Bf16({3, ly.kv_heads, ly.dim}, -0.25f, 0.25f), v_new = Bf16({3, ly.kv_heads, ly.dim});
    Mirrored out = Bf16({3, ly.heads, ly.dim});
    std::vector<Backend::DecodeKv> on_cpu, on_gpu;
    for (int b = 0; b < 3; ++b) {
      AttentionParams p;
      p.q_pos_start = pos[b];
      p.kv_pos_end = pos[b] + 1;
      p.kv_capacity = caps[b];
      p.sliding_window = ly.window;
      p.kv_pos_begin = ly.window > 0 ? std::max<int64_t>(0, pos[b] - (ly.window - 1)) : 0;
      on_cpu.push_back({ks[b].cpu, vs[b].cpu, p});
      on_gpu.push_back({ks[b].gpu, vs[b].gpu, p});
    }
    cpu_->AttendDecodeRows(q.cpu, k_new.cpu, v_new.cpu, on_cpu, out.cpu);
    gpu_->AttendDecodeRows(q.gpu, k_new.gpu, v_new.gpu, on_gpu, out.gpu);
    Sync();
    ExpectClose(out, DType::kBF16, size_t{3} * ly.heads * ly.dim);
    for (int b = 0; b < 3; ++b) {  // the appended rows landed in the right slots (exact copies)
      ExpectClose(ks[b], DType::kBF16, static_cast<size_t>(caps[b]) * ly.kv_heads * ly.dim, 0.0);
      ExpectClose(vs[b], DType::kBF16, static_cast<size_t>(caps[b]) * ly.kv_heads * ly.dim, 0.0);
    }
  }
}

// One row's norms, K/V append and attention (a decode step of one sequence): a sliding layer (one launch on the
// GPU, sliding_decode.cu) and a full layer (the plain sequence), against the CPU's QkvNorms and Attention, at a
// position whose window wraps the sliding ring.
TEST_F(CudaBackendTest, NormAppendAttendMatchesCpuSequence) {
  struct Layer {
    int heads, kv_heads, dim, window, pairs;
    float theta;
  };
  for (const Layer& ly : {Layer{16, 8, 256, 1024, 128, 1e4f}, Layer{16, 1, 512, 0, 64, 1e6f}}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << ly.dim);
    const int64_t d = ly.dim, pos = 3000, cap = ly.window > 0 ? 1100 : 4096;
    Mirrored positions = I32({static_cast<int32_t>(pos)});
    Mirrored qkv = Bf16({1, (ly.heads + 2 * ly.kv_heads) * d}, -2.f, 2.f), wq = Bf16({d}, 0.5f, 1.5f);
    Mirrored wk = Bf16({d}, 0.5f, 1.5f), q_normed = Bf16({1, ly.heads, d}), out = Bf16({1, ly.heads, d});
    Mirrored k_cache = Bf16({cap, ly.kv_heads, d}), v_cache = Bf16({cap, ly.kv_heads, d});
    AttentionParams p;
    p.q_pos_start = pos;
    p.kv_pos_end = pos + 1;
    p.kv_capacity = cap;
    p.sliding_window = ly.window;
    p.kv_pos_begin = ly.window > 0 ? pos - (ly.window - 1) : 0;
    const RopeParams rope{ly.theta, ly.dim, ly.pairs};
    for (auto [be, m] : {std::pair{cpu_.get(), &Mirrored::cpu}, std::pair{gpu_.get(), &Mirrored::gpu}}) {
      be->NormAppendAttend(HeadsOf(qkv.*m, 0, ly.heads, d), HeadsOf(qkv.*m, ly.heads * d, ly.kv_heads, d),
                           HeadsOf(qkv.*m, (ly.heads + ly.kv_heads) * d, ly.kv_heads, d), wq.*m, wk.*m, 1e-6f,
                           positions.*m, rope, q_normed.*m, k_cache.*m, v_cache.*m, p, out.*m);
    }
    Sync();
    ExpectClose(out, DType::kBF16, size_t{1} * ly.heads * d);
    ExpectClose(k_cache, DType::kBF16, static_cast<size_t>(cap) * ly.kv_heads * d, 5e-3);
    ExpectClose(v_cache, DType::kBF16, static_cast<size_t>(cap) * ly.kv_heads * d, 5e-3);
  }
}

// Forks of one video (Backend::DecodeKv::shared_prefix): sequences 1-8 read positions [0, kShared) from
// sequence 0's cache; on the sliding layer, 8 sequences to a CTA (decode_mma.cu, Note [Forks in one tile]; 9
// sequences leave the last group short). On the GPU their own caches hold junk wherever sequence 0's
// rows are to be read, so the output matches the CPU backend (which reads each sequence's own, true copy) only if
// those rows come from sequence 0; from kShared on each reads its own. The sliding layer's rings wrap.
TEST_F(CudaBackendTest, AttendDecodeRowsReadsASharedPrefixFromTheFirstSequence) {
  struct Layer {
    int heads, kv_heads, dim, window;
    int64_t cap;
  };
  constexpr int kSeqs = 9;
  constexpr int64_t kShared = 2950;
  for (const Layer& ly : {Layer{16, 1, 512, 0, 4096}, Layer{16, 8, 256, 1024, 1024 - 1 + 64}}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << ly.dim);
    const size_t row = size_t{1} * ly.kv_heads * ly.dim, elems = ly.cap * row;
    int64_t pos[kSeqs];
    for (int b = 0; b < kSeqs; ++b) pos[b] = 3000 + (b % 5) * 7 - 10 * (b % 2);
    const auto first_k = RandomBf16(elems, rng_, -0.25f, 0.25f), first_v = RandomBf16(elems, rng_);
    std::vector<Mirrored> ks, vs;
    for (int b = 0; b < kSeqs; ++b) {
      auto k = first_k, v = first_v;  // sequence 0's rows, but its own at its own positions [kShared, pos[b])
      std::vector<uint16_t> junk_k(elems, 0x4700), junk_v(elems, 0x4700);  // bf16 32768
      const auto own_k = RandomBf16(elems, rng_, -0.25f, 0.25f), own_v = RandomBf16(elems, rng_);
      for (int64_t p = kShared; p < pos[b] && b > 0; ++p) {
        const size_t at = static_cast<size_t>(p % ly.cap) * row;
        std::copy(own_k.begin() + at, own_k.begin() + at + row, k.begin() + at);
        std::copy(own_v.begin() + at, own_v.begin() + at + row, v.begin() + at);
        std::copy(own_k.begin() + at, own_k.begin() + at + row, junk_k.begin() + at);
        std::copy(own_v.begin() + at, own_v.begin() + at + row, junk_v.begin() + at);
      }
      const Tensor layout = Tensor::Contiguous(nullptr, DType::kBF16, Device::kCpu, {ly.cap, ly.kv_heads, ly.dim});
      ks.push_back(Mirror(*cpu_, *gpu_, layout, k.data(), elems * 2));
      vs.push_back(Mirror(*cpu_, *gpu_, layout, v.data(), elems * 2));
      if (b > 0) {  // on the GPU only, sequence b's copy of the prefix is junk
        ASSERT_TRUE(gpu_->Upload(junk_k.data(), elems * 2, ks[b].gpu).ok());
        ASSERT_TRUE(gpu_->Upload(junk_v.data(), elems * 2, vs[b].gpu).ok());
      }
    }
    Mirrored q = Bf16({kSeqs, ly.heads, ly.dim}, -0.25f, 0.25f);
    Mirrored k_new = Bf16({kSeqs, ly.kv_heads, ly.dim}, -0.25f, 0.25f), v_new = Bf16({kSeqs, ly.kv_heads, ly.dim});
    Mirrored out = Bf16({kSeqs, ly.heads, ly.dim});
    std::vector<Backend::DecodeKv> on_cpu, on_gpu;
    for (int b = 0; b < kSeqs; ++b) {
      AttentionParams p;
      p.q_pos_start = pos[b];
      p.kv_pos_end = pos[b] + 1;
      p.kv_capacity = ly.cap;
      p.sliding_window = ly.window;
      p.kv_pos_begin = ly.window > 0 ? pos[b] - (ly.window - 1) : 0;
      on_cpu.push_back({ks[b].cpu, vs[b].cpu, p});
      on_gpu.push_back({ks[b].gpu, vs[b].gpu, p, b > 0 ? kShared : 0});
    }
    cpu_->AttendDecodeRows(q.cpu, k_new.cpu, v_new.cpu, on_cpu, out.cpu);
    gpu_->AttendDecodeRows(q.gpu, k_new.gpu, v_new.gpu, on_gpu, out.gpu);
    Sync();
    ExpectClose(out, DType::kBF16, size_t{kSeqs} * ly.heads * ly.dim);
  }
}

// ArgmaxRows gives the CPU backend's ids (Sampler's greedy choice) on rows with planted ties, suppressed maxima,
// NaN, -inf, -0 against +0 and +inf: at the real vocabulary (16-byte loads), at an odd width and at a stride that
// leaves rows unaligned (a few single loads, then 16-byte ones), with 40 suppressed ids (more than LaunchSample's
// fixed list holds).
TEST_F(CudaBackendTest, ArgmaxRowsMatchesCpu) {
  struct Case {
    int64_t vocab, stride;
  };
  for (const Case c : {Case{262144, 262144}, Case{1003, 1003}, Case{4096, 4097}}) {
    const int64_t vocab = c.vocab, rows = 24;
    std::vector<int32_t> sup;  // ascending, none below 3 or near the last ids
    for (int64_t i = 0; i < 40; ++i) sup.push_back(static_cast<int32_t>(3 + i * (vocab - 10) / 40));
    std::vector<float> host(static_cast<size_t>(rows * c.stride));
    const std::vector<int32_t> planted =
        avserve::engine::testing::PlantGreedyCases(host.data(), rows, vocab, c.stride, sup, rng_);
    Tensor layout = Tensor::Contiguous(nullptr, DType::kF32, Device::kCpu, {rows, c.stride});
    layout.shape[1] = vocab;
    Mirrored logits = Mirror(*cpu_, *gpu_, layout, host.data(), host.size() * 4);
    Mirrored suppressed = I32(sup);
    for (const bool with_suppressed : {true, false}) {
      Mirrored ids = I32(std::vector<int32_t>(rows, -7));
      cpu_->ArgmaxRows(logits.cpu, with_suppressed ? suppressed.cpu : Tensor(), ids.cpu);
      gpu_->ArgmaxRows(logits.gpu, with_suppressed ? suppressed.gpu : Tensor(), ids.gpu);
      Sync();
      std::vector<int32_t> got(rows);
      ASSERT_TRUE(gpu_->Download(ids.gpu, got.data(), got.size() * 4).ok());
      const auto* want = static_cast<const int32_t*>(ids.cpu_buf->data());
      EXPECT_EQ(got, std::vector<int32_t>(want, want + rows)) << "vocab " << vocab << " suppressed " << with_suppressed;
      if (with_suppressed) {
        EXPECT_EQ(std::vector<int32_t>(got.begin() + 1, got.begin() + 12), planted) << "vocab " << vocab;
      }
    }
  }
}

}  // namespace
}  // namespace avserve::engine::cuda
