// The GeGLU folded into the row-streaming down product (LaunchGeluTanhMulGemv) against the plain pair
// LaunchGeglu + LaunchGemv: the same bits wherever it launches, and no launch where it does not apply.
#include <cuda_runtime.h>

#include <cstdint>
#include <random>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/elementwise.cuh"
#include "engine/backend/cuda/ops/gemv.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"

namespace avserve::engine::cuda {
namespace {

using testing::HaveDevice;
using testing::RandomBf16;

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

const __nv_bfloat16* Bf(const DeviceBuffer<uint16_t>& b, size_t off = 0) {
  return reinterpret_cast<const __nv_bfloat16*>(b.get()) + off;
}

struct Case {
  int m, k, n;
  bool f32;
};

// Runs the pair and the fused product on gate/up = the two halves of one [m, 2k + pad] buffer (column views, as
// the MLP's gate|up product leaves them). Returns whether the fused product launched; where it did, the outputs
// must have the same bits.
bool CheckFused(const Case& c, GemvKernel kernel, std::mt19937& rng) {
  const int64_t ld = 2 * int64_t{c.k} + 16;  // row stride of the gate|up buffer
  const auto gu = RandomBf16(size_t{1} * c.m * ld, rng, -3.f, 3.f), w = RandomBf16(size_t{1} * c.n * c.k, rng);
  auto gu_d = ToDevice(gu), w_d = ToDevice(w);
  auto h_d = ToDevice(std::vector<uint16_t>(size_t{1} * c.m * c.k, 0));
  const size_t out_elems = size_t{1} * c.m * c.n;
  auto plain_d = ToDevice(std::vector<float>(out_elems, 0.f)), fused_d = ToDevice(std::vector<float>(out_elems, 0.f));
  GegluParams g;
  g.gate = Bf(gu_d);
  g.up = Bf(gu_d, c.k);
  g.out = reinterpret_cast<__nv_bfloat16*>(h_d.get());
  g.gate_stride = g.up_stride = ld;
  g.out_stride = c.k;
  g.rows = c.m;
  g.cols = c.k;
  LaunchGeglu(g, nullptr);
  GemmParams p;
  p.a = Bf(h_d);
  p.b = Bf(w_d);
  p.c = plain_d.get();
  p.c_fp32 = c.f32;
  p.m = c.m, p.n = c.n, p.k = c.k;
  EXPECT_TRUE(GemvApplies(p));
  LaunchGemv(p, nullptr, kernel);
  GemmParams f = p;
  f.a = nullptr;
  f.c = fused_d.get();
  const GegluInput in{Bf(gu_d), Bf(gu_d, c.k), ld, ld};
  const bool fused = LaunchGeluTanhMulGemv(f, in, nullptr, kernel);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (fused) {
    EXPECT_EQ(ToHost(fused_d), ToHost(plain_d)) << "fused GeGLU product differs from GeluTanhMul + product";
    // A second launch (the tile counters were reset by the first) gives the same bits again.
    auto again_d = ToDevice(std::vector<float>(out_elems, 0.f));
    f.c = again_d.get();
    EXPECT_TRUE(LaunchGeluTanhMulGemv(f, in, nullptr, kernel));
    EXPECT_EQ(ToHost(again_d), ToHost(plain_d)) << "second fused launch differs";
  } else {
    EXPECT_EQ(ToHost(fused_d), std::vector<float>(out_elems, 0.f)) << "wrote output without launching";
  }
  return fused;
}

// The real down product (k = 15360 -> n = 3840) and small odd shapes (n not even, tiles shared by several
// warps), m = 1..8, on each kernel. The fused product runs only on the row-streaming kernel, with h in shared
// memory beside its CTAs: at k = 15360, one or two rows; at the small k, up to four.
TEST(CudaGegluGemvTest, FusedEqualsGegluThenProduct) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(11);
  for (const Case& c : {Case{0, 15360, 3840, false}, Case{0, 512, 37, false}, Case{0, 2048, 301, true},
                        Case{0, 256, 64, false}}) {
    for (int m = 1; m <= 8; ++m) {
      for (const GemvKernel kernel : {GemvKernel::kRows, GemvKernel::kMma}) {
        SCOPED_TRACE(::testing::Message() << "m=" << m << " k=" << c.k << " n=" << c.n << " kernel "
                                          << static_cast<int>(kernel));
        const Case mc{m, c.k, c.n, c.f32};
        const bool fused = CheckFused(mc, kernel, rng);
        // The row-streaming kernel's CTAs an SM (4 at one row, 3 at 2-4) must fit with h (228 KB an SM, 1 KB
        // reserved per CTA).
        const bool smem_fits = (228 * 1024) / (int64_t{m} * c.k * 2 + 1024) >= (m == 1 ? 4 : 3);
        EXPECT_EQ(fused, kernel == GemvKernel::kRows && m <= 4 && smem_fits);
      }
    }
  }
}

// The engine's size rule (kAuto) puts the real decode shape on the row-streaming kernel, so one token is fused;
// more than 8 rows (prefill) never are.
TEST(CudaGegluGemvTest, AutoFusesDecodeAndNotMoreRows) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(12);
  EXPECT_TRUE(CheckFused(Case{1, 15360, 3840, false}, GemvKernel::kAuto, rng));
  for (const int m : {9, 16}) {
    SCOPED_TRACE(::testing::Message() << "m=" << m);
    EXPECT_FALSE(CheckFused(Case{m, 15360, 3840, false}, GemvKernel::kAuto, rng));
    EXPECT_FALSE(CheckFused(Case{m, 512, 64, false}, GemvKernel::kRows, rng));
  }
}

// The backend's GeluTanhMulMatMul (fused where it applies, the plain pair elsewhere) against GeluTanhMul then
// MatMul on the same backend: gate and up as the two column halves of one [m, 2F] buffer, m from decode's one
// row to a prefill-sized 12, the 12B shape and a small one.
TEST(CudaGegluGemvTest, BackendFusedCallEqualsPlainPair) {
  auto created = CreateCudaBackend();
  if (!created.ok()) GTEST_SKIP() << "no CUDA device: " << created.status();
  Backend& gpu = **created;
  std::mt19937 rng(13);
  struct Shape {
    int64_t f, h;
  };
  for (const Shape& sh : {Shape{15360, 3840}, Shape{512, 96}}) {
    for (const int64_t m : {1, 2, 3, 8, 12}) {
      SCOPED_TRACE(::testing::Message() << "m=" << m << " F=" << sh.f << " H=" << sh.h);
      const auto gu_host = RandomBf16(size_t(m * 2 * sh.f), rng, -3.f, 3.f);
      const auto w_host = RandomBf16(size_t(sh.h * sh.f), rng);
      auto gu_buf = gpu.Allocate(gu_host.size() * 2), w_buf = gpu.Allocate(w_host.size() * 2);
      auto h_buf = gpu.Allocate(size_t(m * sh.f) * 2);
      auto fused_buf = gpu.Allocate(size_t(m * sh.h) * 2), plain_buf = gpu.Allocate(size_t(m * sh.h) * 2);
      ASSERT_TRUE(gu_buf.ok() && w_buf.ok() && h_buf.ok() && fused_buf.ok() && plain_buf.ok());
      const Tensor gu = (*gu_buf)->View(DType::kBF16, {m, 2 * sh.f}), w = (*w_buf)->View(DType::kBF16, {sh.h, sh.f});
      ASSERT_TRUE(gpu.Upload(gu_host.data(), gu_host.size() * 2, gu).ok());
      ASSERT_TRUE(gpu.Upload(w_host.data(), w_host.size() * 2, w).ok());
      Tensor gate = gu, up = gu;  // [m, F] column views, row stride 2F
      gate.shape[1] = up.shape[1] = sh.f;
      up.data = static_cast<uint16_t*>(gu.data) + sh.f;
      const Tensor h = (*h_buf)->View(DType::kBF16, {m, sh.f});
      const Tensor fused = (*fused_buf)->View(DType::kBF16, {m, sh.h});
      const Tensor plain = (*plain_buf)->View(DType::kBF16, {m, sh.h});
      gpu.GeluTanhMulMatMul(gate, up, w, h, fused);
      gpu.GeluTanhMul(gate, up, h);
      gpu.MatMul(h, w, nullptr, plain);
      std::vector<uint16_t> got(size_t(m * sh.h)), want(got.size());
      ASSERT_TRUE(gpu.Download(fused, got.data(), got.size() * 2).ok());
      ASSERT_TRUE(gpu.Download(plain, want.data(), want.size() * 2).ok());
      EXPECT_EQ(got, want);
    }
  }
}

}  // namespace
}  // namespace avserve::engine::cuda
