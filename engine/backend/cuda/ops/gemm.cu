#include "engine/backend/cuda/ops/gemm.cuh"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

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

// Note [GEMM tuning]
// cuBLASLt's first heuristic is not always its fastest: on the H200 the 12B's sliding-layer q projection
// ([8192, 3840] x [4096, 3840]ᵀ) ran at ~410 TFLOP/s next to ~740 for the MLP. For weight products of prefill
// size (>= 1024 rows, bf16 out) the first call of each shape times the top candidates on the stream (events,
// after one warm-up run each) and later calls of that shape reuse the winner. Products with fp32 output or b as
// [k, n] (attention's Q·Kᵀ and P·V, whose key count changes every chunk) keep the first heuristic.
constexpr int kTuneCandidates = 6;

bool Tunable(const GemmParams& p) { return p.m >= 1024 && !p.c_fp32 && !p.b_kn; }

struct ShapeKey {
  int64_t m, n, k, lda, ldb, ldc;
  bool bias;
  bool operator<(const ShapeKey& o) const {
    return std::tie(m, n, k, lda, ldb, ldc, bias) < std::tie(o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.bias);
  }
};

// Index of the fastest of `count` candidates for p's shape (measured once per shape and process).
template <typename Run>
int TunedChoice(const GemmParams& p, int count, cudaStream_t stream, Run&& run) {
  static std::mutex mu;
  static std::map<ShapeKey, int> chosen;
  const ShapeKey key{p.m, p.n, p.k, p.lda, p.ldb, p.ldc, p.bias != nullptr};
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = chosen.find(key); it != chosen.end() && it->second < count) return it->second;
  }
  CudaEvent start, stop;
  if (auto a = CudaEvent::Create(), b = CudaEvent::Create(); a.ok() && b.ok()) {
    start = std::move(*a);
    stop = std::move(*b);
  } else {
    return 0;
  }
  int best = 0;
  float best_ms = INFINITY;
  for (int i = 0; i < count; ++i) {
    if (run(i) != CUBLAS_STATUS_SUCCESS) continue;  // warm-up; an algorithm that fails is skipped
    cudaEventRecord(start.get(), stream);
    for (int r = 0; r < 2; ++r) run(i);
    cudaEventRecord(stop.get(), stream);
    float ms = 0.f;
    if (cudaEventSynchronize(stop.get()) != cudaSuccess || cudaEventElapsedTime(&ms, start.get(), stop.get()) !=
                                                               cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (ms < best_ms) best = i, best_ms = ms;
  }
  std::lock_guard<std::mutex> lock(mu);
  chosen[key] = best;
  return best;
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
  // No split-K: every algorithm then sums each output over k in one order, so tuning cannot change results
  // beyond the tile shapes' own rounding (all fp32 accumulate).
  const uint32_t no_split = CUBLASLT_REDUCTION_SCHEME_NONE;
  AVSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                            &no_split, sizeof(no_split)));
  cublasLtMatmulHeuristicResult_t heuristics[kTuneCandidates] = {};
  int found = 0;
  const bool tune = Tunable(p);
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle.get(), desc.get(), layout_w.get(), layout_x.get(),
                                                           layout_c.get(), layout_c.get(), pref.get(),
                                                           tune ? kTuneCandidates : 1, heuristics, &found);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  const float alpha = 1.f, beta = 0.f;
  auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle.get(), desc.get(), &alpha, p.b, layout_w.get(), p.a, layout_x.get(), &beta, p.c,
                          layout_c.get(), p.c, layout_c.get(), &algo, handle.workspace(), ws, stream);
  };
  const int pick = tune ? TunedChoice(p, found, stream, [&](int i) { return run(heuristics[i].algo); }) : 0;
  AVSERVE_CUBLAS_CHECK(run(heuristics[pick].algo));
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
