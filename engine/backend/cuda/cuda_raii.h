// Move-only owners of CUDA resources (style.md §5). Creation returns StatusOr; destructors log and never throw.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/backend/cuda/check.h"

namespace avserve::engine::cuda {

namespace internal {
inline void LogIfError(cudaError_t err, const char* what) {
  if (err != cudaSuccess) std::fprintf(stderr, "avserve cuda: %s failed: %s\n", what, cudaGetErrorString(err));
}
}  // namespace internal

// Device memory for `size` elements of T.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Create(size_t size) {
    DeviceBuffer buf;
    if (size == 0) return buf;
    void* ptr = nullptr;
    const cudaError_t err = cudaMalloc(&ptr, size * sizeof(T));
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      return CudaStatus(err, "cudaMalloc");
    }
    buf.ptr_ = static_cast<T*>(ptr);
    buf.size_ = size;
    return buf;
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  T* get() const { return ptr_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  void Reset() {
    if (ptr_ != nullptr) internal::LogIfError(cudaFree(ptr_), "cudaFree");
    ptr_ = nullptr;
    size_ = 0;
  }
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Page-locked host memory (staging for uploads and downloads).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  static absl::StatusOr<PinnedBuffer> Create(size_t size) {
    PinnedBuffer buf;
    if (size == 0) return buf;
    void* ptr = nullptr;
    const cudaError_t err = cudaMallocHost(&ptr, size * sizeof(T));
    if (err != cudaSuccess) {
      cudaGetLastError();
      return CudaStatus(err, "cudaMallocHost");
    }
    buf.ptr_ = static_cast<T*>(ptr);
    buf.size_ = size;
    return buf;
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { Reset(); }

  T* get() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  void Reset() {
    if (ptr_ != nullptr) internal::LogIfError(cudaFreeHost(ptr_), "cudaFreeHost");
    ptr_ = nullptr;
    size_ = 0;
  }
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Generic move-only handle with a creation function and a destroy function.
template <typename Handle, cudaError_t (*Destroy)(Handle)>
class CudaHandle {
 public:
  CudaHandle() = default;
  explicit CudaHandle(Handle h) : h_(h) {}
  CudaHandle(CudaHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  CudaHandle& operator=(CudaHandle&& o) noexcept {
    if (this != &o) {
      Reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  CudaHandle(const CudaHandle&) = delete;
  CudaHandle& operator=(const CudaHandle&) = delete;
  ~CudaHandle() { Reset(); }
  Handle get() const { return h_; }

 private:
  void Reset() {
    if (h_ != nullptr) internal::LogIfError(Destroy(h_), "destroy handle");
    h_ = nullptr;
  }
  Handle h_ = nullptr;
};

class CudaStream : public CudaHandle<cudaStream_t, cudaStreamDestroy> {
 public:
  using CudaHandle::CudaHandle;
  static absl::StatusOr<CudaStream> Create() {
    cudaStream_t s = nullptr;
    const cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (err != cudaSuccess) return CudaStatus(err, "cudaStreamCreate");
    return CudaStream(s);
  }
};

class CudaEvent : public CudaHandle<cudaEvent_t, cudaEventDestroy> {
 public:
  using CudaHandle::CudaHandle;
  static absl::StatusOr<CudaEvent> Create() {
    cudaEvent_t e = nullptr;
    const cudaError_t err = cudaEventCreate(&e);
    if (err != cudaSuccess) return CudaStatus(err, "cudaEventCreate");
    return CudaEvent(e);
  }
};

class CudaGraphExec : public CudaHandle<cudaGraphExec_t, cudaGraphExecDestroy> {
 public:
  using CudaHandle::CudaHandle;
};

// cuBLASLt handle plus the workspace its matmuls may use.
class CublasHandle {
 public:
  CublasHandle() = default;
  static absl::StatusOr<CublasHandle> Create(size_t workspace_bytes = size_t{32} << 20) {
    CublasHandle h;
    cublasLtHandle_t lt = nullptr;
    const cublasStatus_t st = cublasLtCreate(&lt);
    if (st != CUBLAS_STATUS_SUCCESS) return CublasStatus(st, "cublasLtCreate");
    h.lt_ = lt;
    auto ws = DeviceBuffer<unsigned char>::Create(workspace_bytes);
    if (!ws.ok()) return ws.status();
    h.workspace_ = std::move(*ws);
    return h;
  }
  CublasHandle(CublasHandle&& o) noexcept
      : lt_(std::exchange(o.lt_, nullptr)), workspace_(std::move(o.workspace_)) {}
  CublasHandle& operator=(CublasHandle&& o) noexcept {
    if (this != &o) {
      Reset();
      lt_ = std::exchange(o.lt_, nullptr);
      workspace_ = std::move(o.workspace_);
    }
    return *this;
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() { Reset(); }

  cublasLtHandle_t get() const { return lt_; }
  void* workspace() const { return workspace_.get(); }
  size_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  void Reset() {
    if (lt_ != nullptr) cublasLtDestroy(lt_);
    lt_ = nullptr;
  }
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
};

}  // namespace avserve::engine::cuda
