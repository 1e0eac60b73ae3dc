#include "engine/backend/cuda/ops/gemm.cuh"

#include <memory>

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
  UniqueLayout layout_w = p.b_kn ? MakeLayout(p.n, p.k, ldb) : MakeLayout(p.k, p.n, ldb);
  UniqueLayout layout_x = MakeLayout(p.k, p.m, lda);  // aᵀ, column-major k x m
  UniqueLayout layout_c = MakeLayout(p.n, p.m, ldc, p.c_fp32 ? CUDA_R_32F : CUDA_R_16BF);  // cᵀ, n x m
  cublasLtMatmulPreference_t pref_raw = nullptr;
  AVSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_raw));
  UniquePreference pref(pref_raw);
  const uint64_t ws = handle.workspace_bytes();
  AVSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                            sizeof(ws)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle.get(), desc.get(), layout_w.get(), layout_x.get(),
                                                           layout_c.get(), layout_c.get(), pref.get(), 1,
                                                           &heuristic, &found);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  const float alpha = 1.f, beta = 0.f;
  AVSERVE_CUBLAS_CHECK(cublasLtMatmul(handle.get(), desc.get(), &alpha, p.b, layout_w.get(), p.a, layout_x.get(),
                                      &beta, p.c, layout_c.get(), p.c, layout_c.get(), &heuristic.algo,
                                      handle.workspace(), ws, stream));
  return true;
}

// c[r, :] += bias (fallback when cuBLASLt has no bias epilogue for the types).
__global__ void AddBiasKernel(GemmParams p, int64_t ldc) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < p.m * p.n; i += int64_t{gridDim.x} * blockDim.x) {
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
  if (GemvApplies(p)) {  // decode: a few rows, weight-streaming bound
    LaunchGemv(p, stream);
    return absl::OkStatus();
  }
  if (TryGemm(handle, p, stream)) return absl::OkStatus();
  if (p.bias != nullptr) {
    GemmParams plain = p;
    plain.bias = nullptr;
    if (TryGemm(handle, plain, stream)) {
      AddBiasKernel<<<1024, 256, 0, stream>>>(p, p.ldc != 0 ? p.ldc : p.n);
      AVSERVE_CUDA_CHECK_LAUNCH();
      return absl::OkStatus();
    }
  }
  return absl::InternalError("cuBLASLt found no bf16 matmul algorithm for this shape");
}

}  // namespace avserve::engine::cuda
