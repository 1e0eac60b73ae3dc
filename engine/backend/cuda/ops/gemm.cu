#include "engine/backend/cuda/ops/gemm.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/gemv.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"

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
  bool b_kn, c_fp32, bias, timed;
  bool operator==(const AlgoKey& o) const {
    return handle == o.handle && m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           b_kn == o.b_kn && c_fp32 == o.c_fp32 && bias == o.bias && timed == o.timed;
  }
};
struct AlgoKeyHash {
  size_t operator()(const AlgoKey& key) const {
    size_t h = std::hash<const void*>()(key.handle);
    for (int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc}) h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h * 31u + (key.b_kn ? 1u : 0u) + (key.c_fp32 ? 2u : 0u) + (key.bias ? 4u : 0u) + (key.timed ? 8u : 0u);
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

// Note [Timed algorithms]
// cuBLASLt's heuristic ranks its kernels with a model of the GPU, and its first choice is not always the fastest
// on the card. A prefill step's weight products recur with one shape per layer kind and step size, dozens of
// times a prefill, so for those (GemmParams::tune, with m a multiple of 256 and at least 1,024) the backend times
// the heuristic's first kTuneCandidates candidates once, on the call's own operands (beta is 0, so running a
// product again only rewrites c), and keeps the fastest for the shape. The other shapes (attention's GEMM path,
// whose key count changes every block, and the odd step sizes of a prompt's last chunk) keep the first choice, as
// does a stream being captured into a graph. AVSERVE_GEMM_TUNE=0 turns timing off; =log prints each shape's times.
constexpr int kTuneCandidates = 16;
constexpr int kTuneReps = 3;

int TuneMode() {  // 0 off, 1 on, 2 on and logged
  static const int mode = [] {
    const char* v = std::getenv("AVSERVE_GEMM_TUNE");
    if (v == nullptr) return 1;
    if (std::strcmp(v, "log") == 0) return 2;
    return v[0] == '0' ? 0 : 1;
  }();
  return mode;
}

bool ShouldTune(const GemmParams& p, cudaStream_t stream) {
  if (!p.tune || TuneMode() == 0 || p.m < 1024 || p.m % 256 != 0) return false;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone;
}

// The operands of one call, as cuBLASLt sees them.
struct LtCall {
  const CublasHandle* handle;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t w, x, c;
  const GemmParams* p;
  uint64_t workspace_bytes;
  cudaStream_t stream;

  cublasStatus_t Run(const cublasLtMatmulAlgo_t& algo) const {
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(handle->get(), desc, &alpha, p->b, w, p->a, x, &beta, p->c, c, p->c, c, &algo,
                          handle->workspace(), workspace_bytes, stream);
  }
};

// Mean milliseconds of kTuneReps runs of `algo` after one untimed run; a negative value when it cannot run.
float TimeAlgo(const LtCall& call, const cublasLtMatmulAlgo_t& algo, cudaEvent_t start, cudaEvent_t stop) {
  if (call.Run(algo) != CUBLAS_STATUS_SUCCESS) return -1.f;
  AVSERVE_CUDA_CHECK(cudaEventRecord(start, call.stream));
  for (int r = 0; r < kTuneReps; ++r) {
    if (call.Run(algo) != CUBLAS_STATUS_SUCCESS) return -1.f;
  }
  AVSERVE_CUDA_CHECK(cudaEventRecord(stop, call.stream));
  AVSERVE_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  AVSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  return ms / kTuneReps;
}

// The fastest of the heuristic's `count` candidates (Note [Timed algorithms]); the first when none times.
cublasLtMatmulAlgo_t FastestAlgo(const LtCall& call, const cublasLtMatmulHeuristicResult_t* candidates, int count) {
  cudaEvent_t start = nullptr, stop = nullptr;
  AVSERVE_CUDA_CHECK(cudaEventCreate(&start));
  AVSERVE_CUDA_CHECK(cudaEventCreate(&stop));
  int best = 0;
  float best_ms = -1.f, first_ms = -1.f;
  for (int i = 0; i < count; ++i) {
    if (candidates[i].state != CUBLAS_STATUS_SUCCESS) continue;
    const float ms = TimeAlgo(call, candidates[i].algo, start, stop);
    if (i == 0) first_ms = ms;
    if (ms > 0.f && (best_ms < 0.f || ms < best_ms)) best = i, best_ms = ms;
  }
  AVSERVE_CUDA_CHECK(cudaEventDestroy(start));
  AVSERVE_CUDA_CHECK(cudaEventDestroy(stop));
  if (TuneMode() == 2) {
    const GemmParams& p = *call.p;
    std::fprintf(stderr, "gemm tune m=%lld n=%lld k=%lld%s: first %.3f ms, candidate %d of %d %.3f ms\n",
                 static_cast<long long>(p.m), static_cast<long long>(p.n), static_cast<long long>(p.k),
                 p.bias != nullptr ? " +bias" : "", first_ms, best, count, best_ms);
  }
  return candidates[best].algo;
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
  const uint64_t ws = handle.workspace_bytes();
  const LtCall call{&handle, desc.get(), layout_w.get(), layout_x.get(), layout_c.get(), &p, ws, stream};
  const bool tune = ShouldTune(p, stream);
  const AlgoKey key{handle.get(), p.m, p.n, p.k, lda, ldb, ldc, p.b_kn, p.c_fp32, p.bias != nullptr, tune};
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
      cublasLtMatmulHeuristicResult_t candidates[kTuneCandidates] = {};
      int found = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle.get(), desc.get(), layout_w.get(),
                                                               layout_x.get(), layout_c.get(), layout_c.get(),
                                                               pref.get(), tune ? kTuneCandidates : 1, candidates,
                                                               &found);
      chosen.found = st == CUBLAS_STATUS_SUCCESS && found > 0;
      if (chosen.found) chosen.algo = tune && found > 1 ? FastestAlgo(call, candidates, found) : candidates[0].algo;
      AlgoCache().emplace(key, chosen);
    }
  }
  if (!chosen.found) return false;
  AVSERVE_CUBLAS_CHECK(call.Run(chosen.algo));
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
