#include "engine/backend/cuda/ops/elementwise.cuh"

#include <algorithm>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/device_utils.cuh"
#include "engine/backend/cuda/ops/pdl.cuh"

namespace avserve::engine::cuda {
namespace {

constexpr int kThreads = 256;

int GridFor(int64_t vectors) {
  return static_cast<int>(std::min<int64_t>((vectors + kThreads - 1) / kThreads, 65535 * 8));
}

__global__ void GegluKernel(GegluParams p) {
  PdlWait();
  PdlLaunchDependents();
  const int64_t vec_per_row = p.cols / 8;
  const int64_t total = vec_per_row * p.rows;
  for (int64_t v = blockIdx.x * int64_t{kThreads} + threadIdx.x; v < total; v += int64_t{gridDim.x} * kThreads) {
    const int64_t r = v / vec_per_row;
    const int64_t c = (v % vec_per_row) * 8;
    float g[8], u[8];
    LoadBf16x8(p.gate + r * p.gate_stride + c, g);
    LoadBf16x8(p.up + r * p.up_stride + c, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) g[k] = GegluProduct(g[k], u[k]);
    StoreBf16x8(p.out + r * p.out_stride + c, g);
  }
}

__global__ void AddScaleKernel(AddScaleParams p) {
  const float scale = p.scale != nullptr ? __bfloat162float(p.scale[0]) : 1.f;
  for (int64_t v = (blockIdx.x * int64_t{kThreads} + threadIdx.x) * 8; v < p.n;
       v += int64_t{gridDim.x} * kThreads * 8) {
    float a[8], b[8];
    LoadBf16x8(p.a + v, a);
    if (p.b != nullptr) LoadBf16x8(p.b + v, b);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (p.b != nullptr) a[k] = Bf16Round(a[k] + b[k]);
      if (p.scale != nullptr) a[k] *= scale;
    }
    StoreBf16x8(p.out + v, a);
  }
}

__global__ void EmbedKernel(EmbedParams p) {
  const int row = blockIdx.x;
  const int id = p.ids[row];
  const bool valid = id >= 0 && id < p.vocab;
  const bf16* src = p.table + static_cast<int64_t>(valid ? id : 0) * p.dim;
  bf16* dst = p.out + static_cast<int64_t>(row) * p.dim;
  for (int i = threadIdx.x * 8; i < p.dim; i += kThreads * 8) {
    float v[8];
    LoadBf16x8(src + i, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = valid ? v[k] * p.scale : 0.f;
    StoreBf16x8(dst + i, v);
  }
}

__global__ void SoftcapKernel(SoftcapParams p) {
  for (int64_t v = (blockIdx.x * int64_t{kThreads} + threadIdx.x) * 8; v < p.n;
       v += int64_t{gridDim.x} * kThreads * 8) {
    float x[8];
    LoadBf16x8(p.x + v, x);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (p.cap > 0.f) x[k] = Bf16Round(Bf16Round(tanhf(Bf16Round(x[k] / p.cap))) * p.cap);
    }
    float4* out = reinterpret_cast<float4*>(p.out + v);
    out[0] = make_float4(x[0], x[1], x[2], x[3]);
    out[1] = make_float4(x[4], x[5], x[6], x[7]);
  }
}

}  // namespace

void LaunchGeglu(const GegluParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.cols % 8 == 0, "Geglu: cols must be a multiple of 8");
  if (p.rows == 0 || p.cols == 0) return;
  LaunchPdl(GegluKernel, dim3(GridFor(int64_t{p.rows} * p.cols / 8)), dim3(kThreads), 0, stream, p);
}

void LaunchAddScale(const AddScaleParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.n % 8 == 0, "AddScale: n must be a multiple of 8");
  if (p.n == 0) return;
  AddScaleKernel<<<GridFor(p.n / 8), kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchEmbed(const EmbedParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.dim % 8 == 0 && p.vocab > 0, "Embed: dim must be a multiple of 8");
  if (p.rows == 0) return;
  EmbedKernel<<<p.rows, kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

void LaunchSoftcap(const SoftcapParams& p, cudaStream_t stream) {
  AVSERVE_CHECK(p.n % 8 == 0, "Softcap: n must be a multiple of 8");
  if (p.n == 0) return;
  SoftcapKernel<<<GridFor(p.n / 8), kThreads, 0, stream>>>(p);
  AVSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace avserve::engine::cuda
