// Shared helpers of the CUDA tests: device detection, random bf16 data, tensors mirrored on CPU and GPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "engine/backend/backend.h"
#include "engine/backend/numeric.h"
#include "gtest/gtest.h"

namespace avserve::engine::cuda::testing {

// True when a CUDA device can be used (clears the error a machine without a GPU leaves behind).
inline bool HaveDevice() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

// ||got - want|| / ||want|| over two float vectors (NaN anywhere fails).
inline double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

inline std::vector<uint16_t> RandomBf16(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<uint16_t> out(n);
  for (auto& v : out) v = F32ToBf16(dist(rng));
  return out;
}

inline std::vector<float> Bf16ToFloat(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToF32(v[i]);
  return out;
}

// One tensor allocated on both backends with the same contents and layout.
struct Mirrored {
  std::unique_ptr<Buffer> cpu_buf, gpu_buf;
  Tensor cpu, gpu;
};

inline Tensor WithData(Tensor t, void* data, Device dev) {
  t.data = data;
  t.device = dev;
  return t;
}

// `layout` gives dtype, shape and strides (data ignored); `host` fills the whole storage of `bytes`.
inline Mirrored Mirror(Backend& cpu, Backend& gpu, const Tensor& layout, const void* host, size_t bytes) {
  Mirrored m;
  m.cpu_buf = *cpu.Allocate(bytes);
  m.gpu_buf = *gpu.Allocate(bytes);
  std::memcpy(m.cpu_buf->data(), host, bytes);
  Tensor flat_gpu = m.gpu_buf->View(DType::kI32, {static_cast<int64_t>(bytes / 4)});
  EXPECT_TRUE(gpu.Upload(host, bytes, flat_gpu).ok());
  m.cpu = WithData(layout, m.cpu_buf->data(), Device::kCpu);
  m.gpu = WithData(layout, m.gpu_buf->data(), Device::kCuda);
  return m;
}

// Storage of `m` read back from both sides as floats (bf16 or f32 storage of `count` elements).
inline void ReadBoth(Backend& gpu, const Mirrored& m, DType dtype, size_t count, std::vector<float>* cpu_out,
                     std::vector<float>* gpu_out) {
  const size_t bytes = count * DTypeSize(dtype);
  std::vector<unsigned char> host(bytes);
  Tensor flat = m.gpu_buf->View(DType::kI32, {static_cast<int64_t>(bytes / 4)});
  ASSERT_TRUE(gpu.Download(flat, host.data(), bytes).ok());
  cpu_out->resize(count);
  gpu_out->resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == DType::kBF16) {
      (*cpu_out)[i] = Bf16ToF32(static_cast<const uint16_t*>(m.cpu_buf->data())[i]);
      (*gpu_out)[i] = Bf16ToF32(reinterpret_cast<const uint16_t*>(host.data())[i]);
    } else {
      (*cpu_out)[i] = static_cast<const float*>(m.cpu_buf->data())[i];
      (*gpu_out)[i] = reinterpret_cast<const float*>(host.data())[i];
    }
  }
}

}  // namespace avserve::engine::cuda::testing
