#include "engine/backend/cuda/page_buffer.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/backend/cuda/check.h"
#include "engine/base/status_macros.h"

namespace avserve::engine::cuda {
namespace {

// The driver's virtual memory calls, fetched once through the runtime.
struct Driver {
  PFN_cuDeviceGet_v2000 device_get = nullptr;
  PFN_cuDeviceGetAttribute_v2000 attribute = nullptr;
  PFN_cuMemGetAllocationGranularity_v10020 granularity = nullptr;
  PFN_cuMemAddressReserve_v10020 reserve = nullptr;
  PFN_cuMemAddressFree_v10020 address_free = nullptr;
  PFN_cuMemCreate_v10020 create = nullptr;
  PFN_cuMemRelease_v10020 release = nullptr;
  PFN_cuMemMap_v10020 map = nullptr;
  PFN_cuMemUnmap_v10020 unmap = nullptr;
  PFN_cuMemSetAccess_v10020 set_access = nullptr;
  PFN_cuMemRetainAllocationHandle_v11000 retain = nullptr;
  bool loaded = false;
};

template <typename Fn>
bool Fetch(const char* symbol, Fn* fn) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  if (cudaGetDriverEntryPointByVersion(symbol, &p, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return false;
  }
  *fn = reinterpret_cast<Fn>(p);
  return true;
}

const Driver& Drv() {
  static const Driver d = [] {
    Driver r;
    r.loaded = Fetch("cuDeviceGet", &r.device_get) && Fetch("cuDeviceGetAttribute", &r.attribute) &&
               Fetch("cuMemGetAllocationGranularity", &r.granularity) && Fetch("cuMemAddressReserve", &r.reserve) &&
               Fetch("cuMemAddressFree", &r.address_free) && Fetch("cuMemCreate", &r.create) &&
               Fetch("cuMemRelease", &r.release) && Fetch("cuMemMap", &r.map) && Fetch("cuMemUnmap", &r.unmap) &&
               Fetch("cuMemSetAccess", &r.set_access) && Fetch("cuMemRetainAllocationHandle", &r.retain);
    return r;
  }();
  return d;
}

absl::Status DriverStatus(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": CUDA driver error ", static_cast<int>(r));
  if (r == CUDA_ERROR_OUT_OF_MEMORY) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

CUmemAllocationProp PageProp(int device) {
  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

// Page size for a buffer of `bytes`: a multiple of the driver's granularity, at most kMaxPages pages.
absl::StatusOr<size_t> PageSize(size_t bytes, int device) {
  const CUmemAllocationProp prop = PageProp(device);
  size_t gran = 0;
  RETURN_IF_ERROR(DriverStatus(Drv().granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
                               "cuMemGetAllocationGranularity"));
  const size_t want = (bytes + PageBuffer::kMaxPages - 1) / PageBuffer::kMaxPages;
  return std::max<size_t>(1, (want + gran - 1) / gran) * gran;
}

}  // namespace

bool PageBuffer::Supported(int device) {
  const Driver& d = Drv();
  if (!d.loaded) return false;
  CUdevice dev = 0;
  int vmm = 0;
  return d.device_get(&dev, device) == CUDA_SUCCESS &&
         d.attribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev) == CUDA_SUCCESS && vmm != 0;
}

absl::Status PageBuffer::Reserve() {
  CUdeviceptr base = 0;
  RETURN_IF_ERROR(DriverStatus(Drv().reserve(&base, reserved(), 0, 0, 0), "cuMemAddressReserve"));
  base_ = base;
  return absl::OkStatus();
}

absl::Status PageBuffer::MapNewPages(size_t first_page) {
  const CUmemAllocationProp prop = PageProp(device_);
  for (size_t i = first_page; i < num_pages(); ++i) {
    CUmemGenericAllocationHandle h = 0;
    RETURN_IF_ERROR(DriverStatus(Drv().create(&h, page_, &prop, 0), "cuMemCreate"));
    const CUresult r = Drv().map(base_ + i * page_, page_, 0, h, 0);
    Drv().release(h);  // the mapping keeps the page alive
    RETURN_IF_ERROR(DriverStatus(r, "cuMemMap"));
    mapped_pages_ = i + 1;
  }
  return absl::OkStatus();
}

absl::Status PageBuffer::GrantAccess() {  // page by page: a call never spans two mappings
  CUmemAccessDesc access = {};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device_;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  for (size_t i = 0; i < num_pages(); ++i) {
    RETURN_IF_ERROR(DriverStatus(Drv().set_access(base_ + i * page_, page_, &access, 1), "cuMemSetAccess"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PageBuffer>> PageBuffer::Create(size_t bytes, int device, cudaStream_t stream) {
  if (!Supported(device)) return absl::UnimplementedError("PageBuffer: the device cannot map pages");
  ASSIGN_OR_RETURN(const size_t page, PageSize(std::max<size_t>(bytes, 1), device));
  std::unique_ptr<PageBuffer> b(new PageBuffer(std::max<size_t>(bytes, 1), page, device, stream));
  RETURN_IF_ERROR(b->Reserve());
  RETURN_IF_ERROR(b->MapNewPages(0));
  RETURN_IF_ERROR(b->GrantAccess());
  return b;
}

absl::StatusOr<std::unique_ptr<PageBuffer>> PageBuffer::Fork(const PageBuffer& src, size_t prefix_bytes) {
  prefix_bytes = std::min(prefix_bytes, src.bytes_);
  std::unique_ptr<PageBuffer> b(new PageBuffer(src.bytes_, src.page_, src.device_, src.stream_));
  RETURN_IF_ERROR(b->Reserve());
  const size_t shared = prefix_bytes / b->page_;  // pages wholly inside the prefix
  for (size_t i = 0; i < shared; ++i) {
    CUmemGenericAllocationHandle h = 0;
    RETURN_IF_ERROR(DriverStatus(Drv().retain(&h, reinterpret_cast<void*>(src.base_ + i * src.page_)),
                                 "cuMemRetainAllocationHandle"));
    const CUresult r = Drv().map(b->base_ + i * b->page_, b->page_, 0, h, 0);
    Drv().release(h);
    RETURN_IF_ERROR(DriverStatus(r, "cuMemMap"));
    b->mapped_pages_ = i + 1;
  }
  b->shared_pages_ = static_cast<int>(shared);
  RETURN_IF_ERROR(b->MapNewPages(shared));
  RETURN_IF_ERROR(b->GrantAccess());
  const size_t copied = prefix_bytes - shared * b->page_;  // the prefix's end inside a page of the tail
  if (copied > 0) {
    const size_t at = shared * b->page_;
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(reinterpret_cast<void*>(b->base_ + at),
                                               reinterpret_cast<const void*>(src.base_ + at), copied,
                                               cudaMemcpyDeviceToDevice, b->stream_),
                               "PageBuffer::Fork copy"));
  }
  return b;
}

PageBuffer::~PageBuffer() {
  if (base_ == 0) return;
  // Kernels queued before this point may still use the pages; errors are ignored (nothing to report to).
  if (cudaStreamSynchronize(stream_) != cudaSuccess) cudaGetLastError();
  for (size_t i = 0; i < mapped_pages_; ++i) Drv().unmap(base_ + i * page_, page_);
  Drv().address_free(base_, reserved());
}

}  // namespace avserve::engine::cuda
