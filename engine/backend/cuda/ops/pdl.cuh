// Programmatic dependent launch (sm_90): a kernel launched with LaunchPdl may start while the kernel before it on
// the stream is still running, so its launch latency and any prologue that reads no earlier output (weights)
// overlap the previous kernel's tail. Included by .cu files only.
//
// Note [Dependent launch]
// Every kernel launched through LaunchPdl calls PdlWait() before its first access to memory that an earlier kernel
// writes or reads (activations, caches, workspaces: reads AND writes, since the block cache hands a freed buffer to the
// next op at once); only constant data (weights) may be touched before it, and data that kernels before the launching
// kernel wrote, where nothing between writes it (Note [Early ring copies]). PdlWait returns once every earlier kernel
// on the stream has completed and its writes are visible, so the chain stays ordered even across kernels that do not
// use PDL. Kernels call PdlLaunchDependents() right after PdlWait(), which lets the next kernel start its prologue
// while this one works. Not before: then each waiting kernel would launch the next one too, and a chain of waiting
// kernels would fill the SMs (measured on the H200: decode 13.0 ms against 10.6 ms without PDL). Even so, 12B decode at
// 32K measured 11.0 ms with every kernel launched early and 10.3 ms without (session 5); what pays is launching early
// only the kernels that have weights to read before the wait.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "engine/backend/cuda/check.h"

namespace avserve::engine::cuda {

__device__ __forceinline__ void PdlWait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void PdlLaunchDependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }

// By default the kernels that read weights launch early: the skinny products (ops/gemv.cu), which read or prefetch
// their first weights before they wait, so the weight stream starts during the kernel before, and the decode rows'
// post-norms (ops/rms_norm.cu), which read both of their weight vectors first. On the H200 (session 8, two rounds
// alternated in one run): products early, decode at 32K 8.19 / 8.26 ms against 8.40 / 8.41 with plain launches and
// the 8-question step 10.06 / 10.18 against 10.41 / 10.43; the norms early as well, 8.05 / 8.03 against 8.12 / 8.20
// and 9.77 / 9.76 against 9.91 / 9.84. Every kernel early (AVSERVE_PDL=1) was slower: 8.67 / 8.70 and
// 11.87 / 11.85. Since session 17 the sliding layers' one-row attention launches early too, to copy the ring rows of
// earlier steps before it waits (Note [Early ring copies] in sliding_decode.cu). AVSERVE_PDL=0 launches everything
// plainly, AVSERVE_PDL=products only the products early.
inline const char* PdlSetting() {
  static const char* setting = [] {
    const char* env = std::getenv("AVSERVE_PDL");
    return env != nullptr ? env : "";
  }();
  return setting;
}
inline bool PdlEnabled() { return PdlSetting()[0] == '1'; }
inline bool ProductPdlEnabled() { return PdlSetting()[0] != '0'; }
inline bool NormPdlEnabled() { return PdlSetting()[0] != '0' && std::strcmp(PdlSetting(), "products") != 0; }

template <typename... KernelArgs, typename... Args>
void LaunchPdlWhen(bool pdl, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl ? 1 : 0;
  AVSERVE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

template <typename... KernelArgs, typename... Args>
void LaunchPdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
               Args&&... args) {
  LaunchPdlWhen(PdlEnabled(), kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace avserve::engine::cuda
