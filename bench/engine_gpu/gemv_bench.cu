// The decode step's weight stream alone: every skinny product of the 12B shape (48 layers' q|k|v, o, gate|up,
// down and the tied head, m = 1) through LaunchGemv's two kernels and its size rule, against the card's read
// ceiling (a plain 16-byte streaming read of the same bytes) in the same run. Session 7 (bench/RESULTS.md).
//   gemv_bench [--reps N] [--m TOKENS]     (--m 8: the 8-question step's products; rows apply up to 4)
// AVSERVE_GEMV_ACCS=1 runs the mma kernel with one accumulator set instead of two.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/cuda/ops/gemv.cuh"

namespace {

using avserve::engine::cuda::GemmParams;
using avserve::engine::cuda::GemvKernel;
using avserve::engine::cuda::LaunchGemv;
using bf16 = __nv_bfloat16;

#define CHECK_CUDA(x)                                                                        \
  do {                                                                                       \
    const cudaError_t e = (x);                                                               \
    if (e != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e));        \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

struct Product {
  const char* name;
  int n, k;
};

// Uniform values in [-0.05, 0.05) from a hash of the index.
__global__ void FillRandom(bf16* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 29;
    p[i] = __float2bfloat16(0.05f * (static_cast<float>(z >> 40) * (2.f / 16777216.f) - 1.f));
  }
}

// The ceiling: every byte read once with 16-byte loads that skip L1, eight in flight per thread.
__global__ void ReadAll(const uint4* p, size_t n16, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (; i + 7 * stride < n16; i += 8 * stride) {
    uint4 v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(v[j].x), "=r"(v[j].y), "=r"(v[j].z), "=r"(v[j].w)
                   : "l"(p + i + j * stride));
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) acc ^= v[j].x ^ v[j].w;
  }
  for (; i < n16; i += stride) acc ^= p[i].x;
  if (acc == 0x9e3779b9u) *sink = acc;  // keeps the loads
}

float Elapsed(cudaEvent_t a, cudaEvent_t b) {
  CHECK_CUDA(cudaEventSynchronize(b));
  float ms = 0.f;
  CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5, m = 1;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--m") == 0) m = std::atoi(argv[i + 1]);
  }
  if (reps < 1 || m < 1 || m > 16) {
    std::fprintf(stderr, "--reps must be positive and --m in 1..16\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  // One step's products, each over its own weights (no product finds another's bytes in L2).
  const Product qkv_s{"q|k|v sliding", 8192, 3840}, qkv_f{"q|k|v full", 8704, 3840}, o_s{"o sliding", 3840, 4096},
      o_f{"o full", 3840, 8192}, gate_up{"gate|up", 30720, 3840}, down{"down", 3840, 15360},
      head{"head", 262144, 3840};
  std::vector<std::pair<size_t, Product>> step;
  size_t elems = 0;
  for (int l = 0; l < 48; ++l) {
    const bool full = l % 6 == 5;
    for (const Product& p : {full ? qkv_f : qkv_s, full ? o_f : o_s, gate_up, down}) {
      step.push_back({elems, p});
      elems += size_t{1} * p.n * p.k;
    }
  }
  step.push_back({elems, head});
  elems += size_t{1} * head.n * head.k;
  const double bytes = 2.0 * elems;
  bf16 *w = nullptr, *x = nullptr, *y = nullptr;
  unsigned* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&w, elems * sizeof(bf16)));
  CHECK_CUDA(cudaMalloc(&x, size_t{16384} * m * sizeof(bf16)));
  CHECK_CUDA(cudaMalloc(&y, size_t{262144} * m * sizeof(bf16)));
  CHECK_CUDA(cudaMalloc(&sink, sizeof(unsigned)));
  FillRandom<<<4096, 256>>>(w, elems, 1);
  FillRandom<<<64, 256>>>(x, size_t{16384} * m, 7);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::printf("card %s, %d SMs; one decode step's products: %.2f GB, %d token(s), reps %d\n", prop.name,
              prop.multiProcessorCount, bytes / 1e9, m, reps);
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));

  const unsigned read_blocks = prop.multiProcessorCount * 8;
  ReadAll<<<read_blocks, 256>>>(reinterpret_cast<const uint4*>(w), elems / 8, sink);
  CHECK_CUDA(cudaEventRecord(e0));
  for (int r = 0; r < reps; ++r) ReadAll<<<read_blocks, 256>>>(reinterpret_cast<const uint4*>(w), elems / 8, sink);
  CHECK_CUDA(cudaEventRecord(e1));
  const double ceiling_ms = Elapsed(e0, e1) / reps;
  std::printf("read ceiling: %.3f ms (%.3f TB/s)\n", ceiling_ms, bytes / ceiling_ms / 1e9);

  auto product = [&](size_t offset, const Product& p, GemvKernel kernel) {
    GemmParams g;
    g.a = x;
    g.b = w + offset;
    g.c = y;
    g.m = m, g.n = p.n, g.k = p.k;
    LaunchGemv(g, nullptr, kernel);
  };
  const std::pair<const char*, GemvKernel> kernels[] = {
      {"auto", GemvKernel::kAuto}, {"rows", GemvKernel::kRows}, {"mma", GemvKernel::kMma}};
  for (const auto& [name, kernel] : kernels) {
    for (const auto& [offset, p] : step) product(offset, p, kernel);  // warm-up
    CHECK_CUDA(cudaEventRecord(e0));
    for (int r = 0; r < reps; ++r) {
      for (const auto& [offset, p] : step) product(offset, p, kernel);
    }
    CHECK_CUDA(cudaEventRecord(e1));
    const double ms = Elapsed(e0, e1) / reps;
    std::printf("step's products, %-4s: %.3f ms (%.3f TB/s, %.2fx the read ceiling)\n", name, ms, bytes / ms / 1e9,
                ms / ceiling_ms);
  }
  // Per product shape, each kernel, back to back over the step's distinct copies of that shape.
  std::printf("%-14s %9s %9s   (TB/s)\n", "product", "rows", "mma");
  for (const Product& p : {qkv_s, o_s, o_f, gate_up, down, head}) {
    std::printf("%-14s", p.name);
    for (const GemvKernel kernel : {GemvKernel::kRows, GemvKernel::kMma}) {
      std::vector<size_t> offsets;
      for (const auto& [offset, q] : step) {
        if (q.n == p.n && q.k == p.k) offsets.push_back(offset);
      }
      product(offsets[0], p, kernel);
      CHECK_CUDA(cudaEventRecord(e0));
      for (int r = 0; r < reps; ++r) {
        for (size_t offset : offsets) product(offset, p, kernel);
      }
      CHECK_CUDA(cudaEventRecord(e1));
      const double ms = Elapsed(e0, e1);
      std::printf(" %9.3f", 2.0 * p.n * p.k * offsets.size() * reps / ms / 1e9);
    }
    std::printf("\n");
  }
  CHECK_CUDA(cudaGetLastError());
  return 0;
}
