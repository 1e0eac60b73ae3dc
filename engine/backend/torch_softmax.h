// Which softmax numerators PyTorch's CPU flash-attention kernel (behind transformers' sdpa on CPU,
// where the goldens come from) takes from its fast vector exp. Shared by the CPU reference backend
// and the CUDA fallback attention kernel, which reproduce it; no dependencies, host and device.
#pragma once

#if defined(__CUDACC__)
#define AVSERVE_HOST_DEVICE __host__ __device__
#else
#define AVSERVE_HOST_DEVICE
#endif

namespace avserve::engine {

// Keys are processed in blocks of kTorchKeyBlock positions counted from position 0; within a block
// of `len` keys the first kTorchVecWidth·floor(len/kTorchVecWidth) (whole AVX-512 vectors of fp32)
// get the fast exp, the rest std::exp.
constexpr int kTorchKeyBlock = 512;
constexpr int kTorchVecWidth = 16;

// Whether key `kpos` gets the fast exp when keys [0, num_keys) take part in the forward pass.
AVSERVE_HOST_DEVICE constexpr bool TorchFastExpKey(long long kpos, long long num_keys) {
  const long long start = kpos / kTorchKeyBlock * kTorchKeyBlock;
  const long long len = num_keys - start < kTorchKeyBlock ? num_keys - start : kTorchKeyBlock;
  return kpos - start < len / kTorchVecWidth * kTorchVecWidth;
}

}  // namespace avserve::engine

#undef AVSERVE_HOST_DEVICE
