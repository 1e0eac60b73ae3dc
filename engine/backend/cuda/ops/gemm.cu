#include "engine/backend/cuda/ops/gemm.cuh"

#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/gemv.cuh"

namespace avserve::engine::cuda {
namespace {

// Owners for the cuBLASLt descriptor objects of one call.
struct LtDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* d) const { cublasLtMatmulDescDestroy(d); }
  void operator()(cublasLtMatrixLayoutOpaque_t* l) const { cublasLtMatrixLayoutDestroy(l); }
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using UniqueMatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, LtDeleter>;
using UniqueLayout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LtDeleter>;
using UniquePreference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, LtDeleter>;

UniqueLayout MakeLayout(uint64_t rows, uint64_t cols, int64_t ld, cudaDataType_t type = CUDA_R_16BF) {
  cublasLtMatrixLayout_t layout = nullptr;
  AVSERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld));
  return UniqueLayout(layout);
}

// The heuristic's choice per call shape. Asking cuBLASLt costs tens of microseconds of host time, which a decode
// step of a few hundred products cannot afford; the answer depends only on the descriptors, so it is asked once.
struct AlgoKey {
  const void* handle;
  int64_t m, n, k, lda, ldb, ldc;
  bool b_kn, c_fp32, bias, fp16;
  bool operator==(const AlgoKey& o) const {
    return handle == o.handle && m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           b_kn == o.b_kn && c_fp32 == o.c_fp32 && bias == o.bias && fp16 == o.fp16;
  }
};
struct AlgoKeyHash {
  size_t operator()(const AlgoKey& key) const {
    size_t h = std::hash<const void*>()(key.handle);
    for (int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc}) h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h * 31u + (key.b_kn ? 1u : 0u) + (key.c_fp32 ? 2u : 0u) + (key.bias ? 4u : 0u) + (key.fp16 ? 8u : 0u);
  }
};
struct CachedAlgo {
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
};
std::mutex algo_mutex;
std::unordered_map<AlgoKey, CachedAlgo, AlgoKeyHash>& AlgoCache() {
  static auto* cache = new std::unordered_map<AlgoKey, CachedAlgo, AlgoKeyHash>();
  return *cache;
}

// cuBLASLt is column-major. Row-major c[m, n] is column-major cᵀ[n, m] = b[n, k] · aᵀ[k, m]; row-major b[n, k]
// read column-major is bᵀ (k x n), so the product is op_T(bᵀ) · a(col-major k x m).
bool TryGemm(const CublasHandle& handle, const GemmParams& p, cudaStream_t stream) {
  const int64_t lda = p.lda != 0 ? p.lda : p.k;
  const int64_t ldb = p.ldb != 0 ? p.ldb : (p.b_kn ? p.n : p.k);
  const int64_t ldc = p.ldc != 0 ? p.ldc : p.n;
  cublasLtMatmulDesc_t desc_raw = nullptr;
  AVSERVE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_raw, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  UniqueMatmulDesc desc(desc_raw);
  // b[k, n] row-major read column-major is already the (n x k) operand: no transpose then.
  const cublasOperation_t trans = p.b_kn ? CUBLAS_OP_N : CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  AVSERVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans)));
  AVSERVE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof(no_trans)));
  if (p.bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    AVSERVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    const cudaDataType_t bias_type = CUDA_R_16BF;
    AVSERVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                        sizeof(bias_type)));
    AVSERVE_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)));
  }
  const cudaDataType_t in = p.fp16 ? CUDA_R_16F : CUDA_R_16BF;
  UniqueLayout layout_w = p.b_kn ? MakeLayout(p.n, p.k, ldb, in) : MakeLayout(p.k, p.n, ldb, in);
  UniqueLayout layout_x = MakeLayout(p.k, p.m, lda, in);  // aᵀ, column-major k x m
  UniqueLayout layout_c = MakeLayout(p.n, p.m, ldc, p.c_fp32 ? CUDA_R_32F : in);  // cᵀ, n x m
  const uint64_t ws = handle.workspace_bytes();
  const AlgoKey key{handle.get(), p.m, p.n, p.k, lda, ldb, ldc, p.b_kn, p.c_fp32, p.bias != nullptr, p.fp16};
  CachedAlgo chosen;
  {
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = AlgoCache().find(key);
    if (it != AlgoCache().end()) {
      chosen = it->second;
    } else {
      cublasLtMatmulPreference_t pref_raw = nullptr;
      AVSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_raw));
      UniquePreference pref(pref_raw);
      AVSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                &ws, sizeof(ws)));
      cublasLtMatmulHeuristicResult_t heuristic{};
      int found = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle.get(), desc.get(), layout_w.get(),
                                                               layout_x.get(), layout_c.get(), layout_c.get(),
                                                               pref.get(), 1, &heuristic, &found);
      chosen.found = st == CUBLAS_STATUS_SUCCESS && found > 0;
      if (chosen.found) chosen.algo = heuristic.algo;
      AlgoCache().emplace(key, chosen);
    }
  }
  if (!chosen.found) return false;
  const float alpha = 1.f, beta = 0.f;
  AVSERVE_CUBLAS_CHECK(cublasLtMatmul(handle.get(), desc.get(), &alpha, p.b, layout_w.get(), p.a, layout_x.get(),
                                      &beta, p.c, layout_c.get(), p.c, layout_c.get(), &chosen.algo,
                                      handle.workspace(), ws, stream));
  return true;
}

// c[r, :] += bias (fallback when cuBLASLt has no bias epilogue for the types).
__global__ void AddBiasKernel(GemmParams p, int64_t ldc) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < p.m * p.n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / p.n, c = i % p.n;
    const float b = __bfloat162float(p.bias[c]);
    if (p.c_fp32) {
      static_cast<float*>(p.c)[r * ldc + c] += b;
    } else {
      __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.c) + r * ldc + c;
      *out = __float2bfloat16(__bfloat162float(*out) + b);
    }
  }
}

}  // namespace

absl::Status LaunchGemm(const CublasHandle& handle, const GemmParams& p, cudaStream_t stream) {
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (!p.fp16 && GemvApplies(p)) {  // decode: a few rows, weight-streaming bound
    LaunchGemv(p, stream);
    return absl::OkStatus();
  }
  if (TryGemm(handle, p, stream)) return absl::OkStatus();
  if (p.bias != nullptr && !p.fp16) {
    GemmParams plain = p;
    plain.bias = nullptr;
    if (TryGemm(handle, plain, stream)) {
      AddBiasKernel<<<1024, 256, 0, stream>>>(p, p.ldc != 0 ? p.ldc : p.n);
      AVSERVE_CUDA_CHECK_LAUNCH();
      return absl::OkStatus();
    }
  }
  return absl::InternalError(p.fp16 ? "cuBLASLt found no fp16 matmul algorithm for this shape"
                                    : "cuBLASLt found no bf16 matmul algorithm for this shape");
}

}  // namespace avserve::engine::cuda
