// Error handling for CUDA calls (style.md §4): a failed launch or kernel aborts, because the CUDA context is
// no longer usable; allocation and initialisation failures become absl::Status (out of memory ->
// RESOURCE_EXHAUSTED) so a request that cannot fit fails cleanly.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/check.h"

namespace avserve::engine::cuda {

[[noreturn]] inline void CudaCheckFailed(const char* file, int line, const char* expr, const char* what) {
  std::fprintf(stderr, "%s:%d: CUDA call failed: %s: %s\n", file, line, expr, what);
  std::fflush(stderr);
  std::abort();
}

// Maps a CUDA runtime error to a Status; `what` says which operation failed.
inline absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

inline absl::Status CublasStatus(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": cuBLAS status ", static_cast<int>(st));
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace avserve::engine::cuda

#define AVSERVE_CUDA_CHECK(expr)                                                                   \
  do {                                                                                             \
    const cudaError_t avserve_cuda_err_ = (expr);                                                  \
    if (avserve_cuda_err_ != cudaSuccess)                                                          \
      ::avserve::engine::cuda::CudaCheckFailed(__FILE__, __LINE__, #expr,                          \
                                               cudaGetErrorString(avserve_cuda_err_));             \
  } while (0)

// After a kernel launch: catches bad launch configurations immediately.
#define AVSERVE_CUDA_CHECK_LAUNCH() AVSERVE_CUDA_CHECK(cudaGetLastError())

#define AVSERVE_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                             \
    const cublasStatus_t avserve_cublas_st_ = (expr);                                              \
    if (avserve_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::avserve::engine::cuda::CudaCheckFailed(__FILE__, __LINE__, #expr,                          \
                                               cublasLtGetStatusString(avserve_cublas_st_));       \
  } while (0)
