#include "engine/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>

#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/page_buffer.h"
#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/decode_mma.cuh"
#include "engine/backend/cuda/ops/elementwise.cuh"
#include "engine/backend/cuda/ops/gemm.cuh"
#include "engine/backend/cuda/ops/gemm_attention.cuh"
#include "engine/backend/cuda/ops/gemv.cuh"
#include "engine/backend/cuda/ops/host_utils.cuh"
#include "engine/backend/cuda/ops/layer_norm.cuh"
#include "engine/backend/cuda/ops/rms_norm.cuh"
#include "engine/backend/cuda/ops/sampling.cuh"
#include "engine/backend/cuda/ops/sliding_decode.cuh"
#include "engine/backend/cuda/ops/tensor_ops.cuh"
#include "engine/base/status_macros.h"

namespace avserve::engine {
namespace cuda {
namespace {

constexpr size_t kStagingBytes = size_t{64} << 20;

// A block of the backend's BlockCache; given back (not freed) on destruction.
class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(std::shared_ptr<BlockCache> cache, void* ptr, size_t bytes)
      : cache_(std::move(cache)), ptr_(ptr), bytes_(bytes) {}
  ~CudaBuffer() override { cache_->Give(ptr_, bytes_); }
  void* data() const override { return ptr_; }
  size_t bytes() const override { return bytes_; }
  Device device() const override { return Device::kCuda; }

 private:
  std::shared_ptr<BlockCache> cache_;
  void* ptr_;
  size_t bytes_;
};

const __nv_bfloat16* Bf16(const Tensor& t) {
  AVSERVE_CHECK(t.dtype == DType::kBF16 && t.device == Device::kCuda, "CUDA backend: expected a bf16 GPU tensor");
  return static_cast<const __nv_bfloat16*>(t.data);
}
__nv_bfloat16* MutBf16(const Tensor& t) { return const_cast<__nv_bfloat16*>(Bf16(t)); }

ElemType ToElemType(DType t) {
  AVSERVE_CHECK(t == DType::kF32 || t == DType::kBF16, "CUDA backend: only F32 and BF16 here");
  return t == DType::kF32 ? ElemType::kF32 : ElemType::kBF16;
}

// Leading dims of t as a row layout (last dim contiguous).
RowLayout Rows(const Tensor& t) {
  AVSERVE_CHECK(t.rank >= 1 && t.rank <= 4 && t.strides[t.rank - 1] == 1, "CUDA backend: last dim must be contiguous");
  RowLayout l;
  l.num_lead = std::max(1, t.rank - 1);
  if (t.rank == 1) {
    l.dims[0] = 1;
    l.strides[0] = 0;
    return l;
  }
  AVSERVE_CHECK(t.rank - 1 <= 3, "CUDA backend: at most 3 leading dims");
  for (int d = 0; d < t.rank - 1; ++d) {
    l.dims[d] = t.shape[d];
    l.strides[d] = t.strides[d];
  }
  return l;
}

// Row stride of a tensor viewed as [rows, last]: every leading dim must collapse into one stride.
int64_t RowStride(const Tensor& t) {
  if (t.rank <= 1) return t.rank == 1 ? t.shape[0] : 1;
  for (int d = 0; d < t.rank - 2; ++d) {
    AVSERVE_CHECK(t.shape[d + 1] == 1 || t.strides[d] == t.strides[d + 1] * t.shape[d + 1],
                  "CUDA backend: leading dims must collapse to one row stride");
  }
  return t.strides[t.rank - 2];
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device_index) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("no CUDA device: ", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices"));
  }
  if (device_index < 0 || device_index >= count) return absl::InvalidArgumentError("CUDA device index out of range");
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_index), "cudaSetDevice"));
  cudaDeviceProp prop{};
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, device_index), "cudaGetDeviceProperties"));
  if (prop.major < 9) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA backend is built for sm_90; device is sm_", prop.major, prop.minor));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->name_ = absl::StrCat("cuda:", prop.name);
  b->blocks_ = std::make_shared<BlockCache>();
  b->num_sms_ = prop.multiProcessorCount;
  b->device_ = device_index;
  b->pages_ = PageBuffer::Supported(device_index) && EnvSwitchOn("AVSERVE_KV_PAGES");
  b->graphs_on_ = EnvSwitchOn("AVSERVE_CUDA_GRAPHS");
  b->async_upload_ = EnvSwitchOn("AVSERVE_ASYNC_UPLOAD");
  b->keep_free_ = static_cast<size_t>(EnvCount("AVSERVE_CUDA_KEEP_FREE_MB", kKeepFreeBytes >> 20, 0)) << 20;
  ASSIGN_OR_RETURN(b->stream_, CudaStream::Create());
  ASSIGN_OR_RETURN(b->cublas_, CublasHandle::Create());
  for (int i = 0; i < 2; ++i) {
    ASSIGN_OR_RETURN(b->staging_[i], PinnedBuffer<unsigned char>::Create(kStagingBytes));
    ASSIGN_OR_RETURN(b->staging_done_[i], CudaEvent::Create());
  }
  return b;
}

// Note [Memory kept free]
// The ops return no status, so an op that cannot get its workspace (the attention's, ops/gemm_attention.cu; the
// split-KV partials) can only stop the process. And the service runs the device full on purpose: it forks up to 8
// questions, fewer when the engine says RESOURCE_EXHAUSTED (service/question_group.cc). So the model's allocations
// (weights, KV caches, a step's temporaries: Allocate, AllocateShareable, ForkBuffer) are refused while they would
// leave less than keep_free_ of device memory free, and only the ops' workspaces (AllocateForOp) may use that memory.
// 512 MiB holds the 12B's smallest full-layer attention workspace at a 262,144-token context (K in fp16, 268 MB, and
// one position's scores, 8.4 MB) and the runtime's lazy loads of kernels. Cached blocks are reused without the check; a
// new block asks cudaMemGetInfo first (a few microseconds, beside cudaMalloc's tens).
absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::Allocate(size_t bytes) {
  ASSIGN_OR_RETURN(void* ptr, blocks_->Take(bytes, keep_free_));
  return std::unique_ptr<Buffer>(new CudaBuffer(blocks_, ptr, bytes));
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::AllocateForOp(size_t bytes) {
  ASSIGN_OR_RETURN(void* ptr, blocks_->Take(bytes, 0));
  return std::unique_ptr<Buffer>(new CudaBuffer(blocks_, ptr, bytes));
}

namespace {
// A page allocation; when the device is full, the block cache's idle blocks are freed and it is tried once more.
template <typename Make>
absl::StatusOr<std::unique_ptr<Buffer>> WithTrimRetry(BlockCache& blocks, Make make) {
  absl::StatusOr<std::unique_ptr<PageBuffer>> b = make();
  if (!b.ok() && absl::IsResourceExhausted(b.status())) {
    blocks.Trim();
    b = make();
  }
  if (!b.ok()) return b.status();
  return std::unique_ptr<Buffer>(*std::move(b));
}
}  // namespace

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::AllocateShareable(size_t bytes) {
  if (!pages_) return Allocate(bytes);
  RETURN_IF_ERROR(blocks_->MakeRoom(bytes, keep_free_));
  return WithTrimRetry(*blocks_, [&] { return PageBuffer::Create(bytes, device_, stream()); });
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::ForkBuffer(const Buffer& src, size_t prefix_bytes) {
  AVSERVE_CHECK(prefix_bytes <= src.bytes() && prefix_bytes % 2 == 0, "ForkBuffer: bad prefix");
  if (const auto* pages = dynamic_cast<const PageBuffer*>(&src)) {
    RETURN_IF_ERROR(blocks_->MakeRoom(src.bytes() - prefix_bytes, keep_free_));  // at most this many new pages
    return WithTrimRetry(*blocks_, [&] { return PageBuffer::Fork(*pages, prefix_bytes); });
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> fork, Allocate(src.bytes()));
  RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(fork->data(), src.data(), prefix_bytes, cudaMemcpyDeviceToDevice, stream()), "ForkBuffer copy"));
  return fork;
}

// Pageable host memory (e.g. an mmapped checkpoint) goes through two pinned staging buffers, so the copy into
// staging of chunk i+1 overlaps the DMA of chunk i.
absl::Status CudaBackend::Upload(const void* host, size_t bytes, const Tensor& dst) {
  if (capturing_) return absl::FailedPreconditionError("Upload inside BeginGraph/EndGraph");
  if (dst.device != Device::kCuda || !dst.is_contiguous() || bytes > dst.bytes()) {
    return absl::InvalidArgumentError("Upload: destination must be a contiguous GPU tensor large enough");
  }
  const auto* src = static_cast<const unsigned char*>(host);
  auto* out = static_cast<unsigned char*>(dst.data);
  for (size_t off = 0; off < bytes; off += kStagingBytes) {
    const int slot = next_staging_;
    next_staging_ ^= 1;
    const size_t n = std::min(kStagingBytes, bytes - off);
    RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(staging_done_[slot].get()), "Upload: staging wait"));
    std::memcpy(staging_[slot].get(), src + off, n);
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(out + off, staging_[slot].get(), n, cudaMemcpyHostToDevice, stream()),
                               "Upload: cudaMemcpyAsync"));
    RETURN_IF_ERROR(CudaStatus(cudaEventRecord(staging_done_[slot].get(), stream()), "Upload: event"));
  }
  // Note [Uploads in stream order]
  // The host's bytes are in pinned staging before the copy is queued, so `host` may go away at once, and every
  // reader of dst is on this stream after the copy. So an upload need not wait for its copy: a decode step's ids
  // and positions no longer hold the GPU idle while the host waits twice for a copy of a few bytes, and a weight
  // upload fills one staging slot while the other's copy runs. A slot is refilled only after its last copy has
  // left it (the event above). AVSERVE_ASYNC_UPLOAD=0 waits for each upload's copy, as before.
  return async_upload_ ? absl::OkStatus() : CudaStatus(cudaStreamSynchronize(stream()), "Upload: synchronize");
}

absl::Status CudaBackend::Download(const Tensor& src, void* host, size_t bytes) {
  if (capturing_) return absl::FailedPreconditionError("Download inside BeginGraph/EndGraph");
  if (src.device != Device::kCuda || !src.is_contiguous() || bytes > src.bytes()) {
    return absl::InvalidArgumentError("Download: source must be a contiguous GPU tensor large enough");
  }
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(host, src.data, bytes, cudaMemcpyDeviceToHost, stream()), "Download"));
  return CudaStatus(cudaStreamSynchronize(stream()), "Download: synchronize");
}

void CudaBackend::Synchronize() {
  AVSERVE_CHECK(!capturing_, "Synchronize inside BeginGraph/EndGraph");
  AVSERVE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  retired_graphs_.clear();
}

// Note [Decode graphs]
// A decode step is ~350 kernels of a few microseconds each over one or a few rows; between two of them the GPU
// spends about a microsecond that a CUDA graph saves (bench/RESULTS.md, session 7's chain of products). The
// step's kernel parameters change every step (positions, cache slots, lengths, split counts), so the graph is not
// captured once and replayed: the model records each run of layers afresh (BeginGraph .. EndGraph) and the
// backend updates the executable graph it ran under the same key in place (cudaGraphExecUpdate, which takes new
// parameters and grid sizes but not a new shape), building a new one only when the shape changed (a split count
// that adds or drops a combine kernel, a new batch size). Recording costs the host about what launching did, so
// the model records a step in runs of layers that grow (engine/model/gemma4.cc, Layers): layer 0 launches
// plainly and the GPU works on it while the host records layers 1, 2-3, 4-7 and so on, each run launched as soon
// as it is recorded; the host stays ahead of the GPU as it did when it launched kernel by kernel.
// Capture is relaxed (the block cache may cudaMalloc a new block meanwhile); ops that launch early (ops/pdl.cuh)
// keep their programmatic edges inside a graph. A graph whose key is rebuilt may still be queued: it is kept until
// the next Synchronize. When recording fails, EndGraph turns graphs off for this backend and reports that nothing
// ran, and the model runs the layers plainly. AVSERVE_CUDA_GRAPHS=0 turns them off from the start.
void CudaBackend::BeginGraph(int64_t key) {
  AVSERVE_CHECK(!capturing_, "BeginGraph: a record is already open");
  if (!graphs_on_) return;
  if (cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed) != cudaSuccess) {
    cudaGetLastError();
    return;  // the ops run plainly
  }
  capturing_ = true;
  capture_key_ = key;
}

namespace {
struct GraphDeleter {
  void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};
using GraphPtr = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDeleter>;
}  // namespace

absl::StatusOr<bool> CudaBackend::EndGraph() {
  if (!capturing_) return true;  // ran plainly
  capturing_ = false;
  const auto give_up = [&](cudaError_t err, const char* what) {
    cudaGetLastError();
    std::fprintf(stderr, "avserve cuda: decode graphs off after %s failed: %s\n", what, cudaGetErrorString(err));
    graphs_on_ = false;
    return false;
  };
  cudaGraph_t raw = nullptr;
  cudaError_t err = cudaStreamEndCapture(stream(), &raw);
  GraphPtr graph(raw);
  if (err != cudaSuccess || raw == nullptr) return give_up(err, "cudaStreamEndCapture");
  CudaGraphExec& exec = graphs_[capture_key_];
  bool updated = false;
  if (exec.get() != nullptr) {
    cudaGraphExecUpdateResultInfo info{};
    updated = cudaGraphExecUpdate(exec.get(), graph.get(), &info) == cudaSuccess;
    if (!updated) cudaGetLastError();  // a new shape: build the graph afresh
  }
  if (!updated) {
    cudaGraphExec_t fresh = nullptr;
    err = cudaGraphInstantiateWithFlags(&fresh, graph.get(), 0);
    if (err != cudaSuccess) return give_up(err, "cudaGraphInstantiate");
    if (exec.get() != nullptr) retired_graphs_.push_back(std::move(exec));  // may still be queued
    exec = CudaGraphExec(fresh);
    ++graph_stats_.instantiations;
  } else {
    ++graph_stats_.updates;
  }
  err = cudaGraphLaunch(exec.get(), stream());
  if (err != cudaSuccess) return give_up(err, "cudaGraphLaunch");
  ++graph_stats_.launches;
  return true;
}

void CudaBackend::CancelGraph() {
  if (!capturing_) return;
  capturing_ = false;
  cudaGraph_t raw = nullptr;
  if (cudaStreamEndCapture(stream(), &raw) != cudaSuccess) cudaGetLastError();
  GraphPtr graph(raw);
}

namespace {
// y = x · wᵀ (+ bias) as the kernels' parameters; y has `y_cols` columns (w's rows unless a fused form says).
GemmParams ProductParams(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y, int64_t y_cols) {
  GemmParams p;
  p.a = Bf16(x);
  p.b = Bf16(w);
  AVSERVE_CHECK(y.dtype == DType::kBF16 || y.dtype == DType::kF32, "MatMul: y must be bf16 or f32");
  p.c = y.data;
  p.c_fp32 = y.dtype == DType::kF32;
  p.bias = bias != nullptr ? Bf16(*bias) : nullptr;
  p.m = x.rows();
  p.k = x.dim(-1);
  p.n = w.dim(0);
  AVSERVE_CHECK(w.rank == 2 && w.dim(1) == p.k && y.dim(-1) == y_cols && y.rows() == p.m, "MatMul: shape mismatch");
  p.lda = RowStride(x);
  p.ldb = RowStride(w);
  p.ldc = RowStride(y);
  return p;
}
}  // namespace

void CudaBackend::MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const absl::Status st = LaunchGemm(cublas_, ProductParams(x, w, bias, y, w.dim(0)), stream());
  AVSERVE_CHECK(st.ok(), "MatMul: cuBLASLt has no algorithm for this shape");
}

// Decode rows take the gate|up product that writes the GeGLU itself (Note [GeGLU in the product] in gemv.cu);
// AVSERVE_FUSED_GEGLU=0 keeps the two launches (to measure).
void CudaBackend::MatMulGeluTanhMul(const Tensor& x, const Tensor& w, const Tensor& gate_up, const Tensor& h) {
  static const bool fused = EnvSwitchOn("AVSERVE_FUSED_GEGLU");
  if (fused && h.dtype == DType::kBF16 && w.dim(0) % 2 == 0) {
    const GemmParams p = ProductParams(x, w, nullptr, h, w.dim(0) / 2);
    if (GemvGegluApplies(p)) {
      LaunchGemvGeglu(p, stream());
      return;
    }
  }
  Backend::MatMulGeluTanhMul(x, w, gate_up, h);
}

namespace {
// The norm of x's rows, or of its heads when x is [tokens, heads, dim]; y (and a residual) in y's layout.
RmsNormParams NormParams(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) {
  RmsNormParams p;
  p.x = Bf16(x);
  p.y = MutBf16(y);
  p.weight = weight != nullptr ? Bf16(*weight) : nullptr;
  p.dim = static_cast<int>(x.dim(-1));
  p.eps = eps;
  if (x.rank == 3) {  // [tokens, heads, dim], e.g. heads of a fused projection
    AVSERVE_CHECK(y.rank == 3, "RmsNorm: y must be [tokens, heads, dim] like x");
    p.tokens = static_cast<int>(x.dim(0));
    p.heads = static_cast<int>(x.dim(1));
    p.token_stride = x.strides[0];
    p.head_stride = x.strides[1];
    p.y_token_stride = y.strides[0];
    p.y_head_stride = y.strides[1];
  } else {
    p.tokens = static_cast<int>(x.rows());
    p.token_stride = RowStride(x);
    p.y_token_stride = RowStride(y);
  }
  return p;
}

// RoPE after the norm of p (positions [tokens] int32).
void SetRope(const Tensor& positions, const RopeParams& rope, RmsNormParams& p) {
  p.positions = positions.ptr<const int32_t>();
  p.rope_theta = rope.theta;
  p.rope_pairs = rope.rotated_pairs;
}
}  // namespace

// x and y may have different row (and head) strides, e.g. heads of a fused projection normed into a KV cache.
void CudaBackend::RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) {
  if (x.rank == 3) {
    AVSERVE_CHECK(y.rank == 3 && y.dim(0) == x.dim(0) && y.dim(1) == x.dim(1) && y.dim(2) == x.dim(2) &&
                      x.strides[2] == 1 && y.strides[2] == 1,
                  "RmsNorm: x and y must both be [tokens, heads, dim]");
  } else {
    AVSERVE_CHECK(y.rows() == x.rows() && y.dim(-1) == x.dim(-1), "RmsNorm: x and y shapes differ");
  }
  LaunchRmsNorm(NormParams(x, weight, eps, y), stream());
}

// One kernel: the norm, then RoPE of each head (rms_norm.cu: one warp per head of 256 or 512 dims).
void CudaBackend::RmsNormRope(const Tensor& x, const Tensor& weight, float eps, const Tensor& positions,
                              const RopeParams& rope, const Tensor& y) {
  AVSERVE_CHECK(x.rank == 3 && y.rank == 3 && y.dim(0) == x.dim(0) && y.dim(1) == x.dim(1) && y.dim(2) == x.dim(2) &&
                    x.strides[2] == 1 && y.strides[2] == 1 && positions.dtype == DType::kI32 &&
                    rope.head_dim == x.dim(2),
                "RmsNormRope: x, y [n, heads, d] (strides may differ), int32 positions");
  RmsNormParams p = NormParams(x, &weight, eps, y);
  SetRope(positions, rope, p);
  LaunchRmsNorm(p, stream());
}

namespace {
// Bytes [first, last] spanned by t's elements.
std::pair<uintptr_t, uintptr_t> Extent(const Tensor& t) {
  int64_t last = 0;
  for (int i = 0; i < t.rank; ++i) last += (t.shape[i] - 1) * t.strides[i];
  const uintptr_t first = reinterpret_cast<uintptr_t>(t.data);
  return {first, first + static_cast<uintptr_t>(last + 1) * DTypeSize(t.dtype) - 1};
}
bool Overlap(const Tensor& a, const Tensor& b) {
  const auto [a0, a1] = Extent(a);
  const auto [b0, b1] = Extent(b);
  return a0 <= b1 && b0 <= a1;
}
}  // namespace

// One launch for the three norms unless an output overlaps another group's input (then the default order).
void CudaBackend::QkvNorms(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight,
                           const Tensor& k_weight, float eps, const Tensor& positions, const RopeParams& rope,
                           const Tensor& q_out, const Tensor& k_out, const Tensor& v_out) {
  const auto heads = [](const Tensor& x, const Tensor& y) {
    return x.rank == 3 && y.rank == 3 && x.shape == y.shape && x.strides[2] == 1 && y.strides[2] == 1;
  };
  const bool separate = !Overlap(q_out, k) && !Overlap(q_out, v) && !Overlap(k_out, q) && !Overlap(k_out, v) &&
                        !Overlap(v_out, q) && !Overlap(v_out, k);
  if (separate && heads(q, q_out) && heads(k, k_out) && heads(v, v_out) && positions.dtype == DType::kI32 &&
      rope.head_dim == q.dim(2) && k.dim(2) == q.dim(2) && v.dim(2) == q.dim(2)) {
    RmsNormParams pq = NormParams(q, &q_weight, eps, q_out), pk = NormParams(k, &k_weight, eps, k_out);
    const RmsNormParams pv = NormParams(v, nullptr, eps, v_out);
    SetRope(positions, rope, pq);
    SetRope(positions, rope, pk);
    if (QkvNormApplies(pq, pk, pv)) {
      LaunchQkvNorm(pq, pk, pv, stream());
      return;
    }
  }
  Backend::QkvNorms(q, k, v, q_weight, k_weight, eps, positions, rope, q_out, k_out, v_out);
}

// One kernel: residual = bf16(residual + bf16(norm(x) · w)) (· scale), without writing the norm back to x.
void CudaBackend::RmsNormAddTo(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                               float scale) {
  AVSERVE_CHECK(x.rows() == residual.rows() && x.dim(-1) == residual.dim(-1), "RmsNormAddTo: shapes differ");
  RmsNormParams p = NormParams(x, &weight, eps, residual);
  p.residual = Bf16(residual);
  p.host_scaled = scaled;
  p.host_scale = scale;
  LaunchRmsNorm(p, stream());
}

// One kernel where the row fits (rms_norm.cu): the residual row is read and written once and normed again from the
// updated values; otherwise the two launches of the plain sequence.
void CudaBackend::RmsNormAddToNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual,
                                   bool scaled, float scale, const Tensor& next_weight, const Tensor& next_out) {
  const int64_t dim = x.dim(-1);
  AVSERVE_CHECK(residual.rows() == x.rows() && next_out.rows() == x.rows() && residual.dim(-1) == dim &&
                    next_out.dim(-1) == dim && weight.numel() == dim && next_weight.numel() == dim,
                "RmsNormAddToNorm: shapes differ");
  RmsNormAddToNormParams p;
  p.x = Bf16(x);
  p.weight = Bf16(weight);
  p.residual = MutBf16(residual);
  p.next_weight = Bf16(next_weight);
  p.y = MutBf16(next_out);
  p.x_stride = RowStride(x);
  p.residual_stride = RowStride(residual);
  p.y_stride = RowStride(next_out);
  p.scaled = scaled;
  p.scale = scale;
  p.rows = static_cast<int>(x.rows());
  p.dim = static_cast<int>(dim);
  p.eps = eps;
  if (!RmsNormAddToNormApplies(p)) {
    Backend::RmsNormAddToNorm(x, weight, eps, residual, scaled, scale, next_weight, next_out);
    return;
  }
  LaunchRmsNormAddToNorm(p, stream());
}

void CudaBackend::LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, const Tensor& y) {
  AVSERVE_CHECK(x.is_contiguous() && y.is_contiguous(), "LayerNorm: contiguous tensors only");
  LayerNormParams p;
  p.x = Bf16(x);
  p.y = MutBf16(y);
  p.weight = Bf16(weight);
  p.bias = Bf16(bias);
  p.rows = static_cast<int>(x.rows());
  p.dim = static_cast<int>(x.dim(-1));
  p.eps = eps;
  LaunchLayerNorm(p, stream());
}

void CudaBackend::Rope(const Tensor& x, const Tensor& positions, const RopeParams& params) {
  AVSERVE_CHECK(x.rank == 3 && x.strides[2] == 1 && positions.dtype == DType::kI32, "Rope: x[n, heads, d], int32 pos");
  RopeOpParams p;
  p.x = MutBf16(x);
  p.token_stride = x.strides[0];
  p.head_stride = x.strides[1];
  p.positions = positions.ptr<const int32_t>();
  p.tokens = static_cast<int>(x.dim(0));
  p.heads = static_cast<int>(x.dim(1));
  p.head_dim = static_cast<int>(x.dim(2));
  AVSERVE_CHECK(params.head_dim == p.head_dim, "Rope: head_dim mismatch");
  p.theta = params.theta;
  p.rotated_pairs = params.rotated_pairs;
  LaunchRope(p, stream());
}

// Workspace for one attention call, from the block cache (given back when the op returns: later work on the
// stream is ordered after this call's kernels). Tries smaller sizes down to `min_bytes` when memory is short.
std::unique_ptr<Buffer> CudaBackend::AttentionWorkspace(size_t bytes, size_t min_bytes) {
  for (size_t want = bytes;; want = std::max(min_bytes, want / 2)) {
    auto ws = AllocateForOp(want);
    if (ws.ok()) return *std::move(ws);
    AVSERVE_CHECK(want > min_bytes, "Attention: no device memory for the attention workspace");
  }
}

std::unique_ptr<Buffer> CudaBackend::SplitWorkspace(cuda::AttentionParams& p) {
  if (p.num_splits <= 1) return nullptr;
  std::unique_ptr<Buffer> ws = AttentionWorkspace(AttentionWorkspaceBytes(p), AttentionWorkspaceBytes(p));
  p.workspace = ws->data();
  return ws;
}

namespace {
// The kernels' parameters for q [n, Hq, D] over the cache k, v [capacity, Hkv, D] (no vision blocks yet).
cuda::AttentionParams AttentionFor(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const engine::AttentionParams& params, const Tensor& out) {
  AVSERVE_CHECK(q.rank == 3 && k.rank == 3 && v.rank == 3 && out.rank == 3, "Attention: rank-3 tensors expected");
  cuda::AttentionParams p;
  p.q = Bf16(q);
  p.k = Bf16(k);
  p.v = Bf16(v);
  p.o = MutBf16(out);
  p.q_token_stride = q.strides[0], p.q_head_stride = q.strides[1];
  p.k_slot_stride = k.strides[0], p.k_head_stride = k.strides[1];
  p.v_slot_stride = v.strides[0], p.v_head_stride = v.strides[1];
  p.o_token_stride = out.strides[0], p.o_head_stride = out.strides[1];
  p.q_len = static_cast<int>(q.dim(0));
  p.num_heads = static_cast<int>(q.dim(1));
  p.head_dim = static_cast<int>(q.dim(2));
  p.num_kv_heads = static_cast<int>(k.dim(1));
  AVSERVE_CHECK(k.dim(2) == p.head_dim && v.dim(2) == p.head_dim && out.dim(2) == p.head_dim, "Attention: dims");
  p.q_pos0 = static_cast<int>(params.q_pos_start);
  p.kv_begin = static_cast<int>(params.kv_pos_begin);
  p.kv_end = static_cast<int>(params.kv_pos_end);
  p.kv_capacity = static_cast<int>(params.kv_capacity);
  AVSERVE_CHECK(p.kv_capacity <= k.dim(0) && p.kv_capacity <= v.dim(0), "Attention: capacity exceeds the views");
  p.window = params.sliding_window;
  p.block_overrides_window = params.block_or_windowed_causal;
  p.scale = params.scale;
  return p;
}
}  // namespace

void CudaBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* q_block_ids,
                            const engine::AttentionParams& params, const Tensor& out) {
  cuda::AttentionParams p = AttentionFor(q, k, v, params, out);
  if (q_block_ids != nullptr) {
    AVSERVE_CHECK(q_block_ids->dtype == DType::kI32 && q_block_ids->numel() == p.q_len, "Attention: block ids");
    p.block_ids = q_block_ids->ptr<const int32_t>();
    p.block_pos0 = p.q_pos0;
    p.block_len = p.q_len;
  }
  // Prefill of a full layer (one KV head): two cuBLASLt GEMMs around a masked softmax (gemm_attention.cuh).
  if (GemmAttentionApplies(p) && int64_t{p.q_len} * p.num_heads >= 1024) {
    auto ws = AttentionWorkspace(GemmAttentionWorkspaceBytes(p, std::min(p.q_len, kGemmAttentionPositions)),
                                 GemmAttentionWorkspaceBytes(p, 1));
    const absl::Status st = LaunchGemmAttention(cublas_, p, ws->data(), ws->bytes(), stream());
    AVSERVE_CHECK(st.ok(), "Attention: GEMM path failed");
    return;
  }
  p.num_splits = ChooseAttentionSplits(p, num_sms_);
  const std::unique_ptr<Buffer> ws = SplitWorkspace(p);
  LaunchAttention(p, stream());
}

// A sliding layer's step of one row in one launch (sliding_decode.cu, Note [Sliding decode in one launch]); any
// other layer, or AVSERVE_FUSED_SLIDING=0, the plain sequence.
void CudaBackend::NormAppendAttend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight,
                                   const Tensor& k_weight, float eps, const Tensor& positions, const RopeParams& rope,
                                   const Tensor& q_normed, const Tensor& k_cache, const Tensor& v_cache,
                                   const engine::AttentionParams& params, const Tensor& out) {
  static const bool fused = EnvSwitchOn("AVSERVE_FUSED_SLIDING");
  const bool shapes = q.rank == 3 && k.rank == 3 && v.rank == 3 && q.dim(0) == 1 && k.dim(0) == 1 &&
                      v.dim(0) == 1 && k.dim(1) == k_cache.dim(1) && v.dim(1) == k_cache.dim(1) &&
                      k.dim(2) == q.dim(2) && v.dim(2) == q.dim(2) && q.strides[2] == 1 && k.strides[2] == 1 &&
                      v.strides[2] == 1 && positions.dtype == DType::kI32 && positions.numel() == 1 &&
                      rope.head_dim == q.dim(2) && q_weight.numel() == q.dim(2) && k_weight.numel() == q.dim(2);
  if (fused && shapes && params.sliding_window > 0) {
    SlidingDecodeParams sp;
    sp.a = AttentionFor(q, k_cache, v_cache, params, out);
    sp.k_raw = Bf16(k);
    sp.v_raw = Bf16(v);
    sp.k_raw_head_stride = k.strides[1];
    sp.v_raw_head_stride = v.strides[1];
    sp.q_weight = Bf16(q_weight);
    sp.k_weight = Bf16(k_weight);
    sp.eps = eps;
    sp.positions = positions.ptr<const int32_t>();
    sp.rope_theta = rope.theta;
    sp.rope_pairs = rope.rotated_pairs;
    if (SlidingDecodeApplies(sp)) {
      LaunchSlidingDecode(sp, stream());
      return;
    }
  }
  Backend::NormAppendAttend(q, k, v, q_weight, k_weight, eps, positions, rope, q_normed, k_cache, v_cache, params,
                            out);
}

// Every sequence's K/V append and attention in one launch (decode_mma.cuh); the plain per-sequence sequence where
// the kernel does not apply.
void CudaBackend::AttendDecodeRows(const Tensor& q, const Tensor& k_new, const Tensor& v_new,
                                   const std::vector<DecodeKv>& seqs, const Tensor& out) {
  const int count = static_cast<int>(seqs.size());
  if (count == 0) return;
  cuda::AttentionParams p = AttentionFor(q.Slice(0, 1), seqs[0].k, seqs[0].v, seqs[0].params, out.Slice(0, 1));
  p.q_len = count;
  const int64_t row_elems = k_new.rank == 3 ? k_new.dim(1) * k_new.dim(2) : 0;
  bool fits = count <= kDecodeMmaMaxSeqs && q.dim(0) == count && k_new.dim(0) == count && v_new.dim(0) == count &&
              DecodeMmaApplies(p, 1) && k_new.strides[1] == k_new.dim(2) && v_new.strides[1] == v_new.dim(2) &&
              v_new.dim(1) * v_new.dim(2) == row_elems && row_elems % 8 == 0;
  DecodeSeqs ds;
  ds.count = count;
  ds.q_len = 1;
  // AVSERVE_SHARED_PREFIX=0: every sequence reads its own rows (to measure).
  static const bool share = EnvSwitchOn("AVSERVE_SHARED_PREFIX");
  for (int b = 0; b < count && fits; ++b) {
    const DecodeKv& s = seqs[b];
    const engine::AttentionParams& a = s.params;
    fits = s.k.strides == seqs[0].k.strides && s.v.strides == seqs[0].v.strides && s.k.strides[1] == s.k.dim(2) &&
           s.v.strides[1] == s.v.dim(2) && a.kv_pos_end == a.q_pos_start + 1 && a.kv_capacity <= s.k.dim(0) &&
           a.kv_capacity <= s.v.dim(0) && a.sliding_window == seqs[0].params.sliding_window &&
           a.scale == seqs[0].params.scale;
    ds.seq[b] = DecodeSeq{Bf16(s.k), Bf16(s.v), static_cast<int>(a.q_pos_start), static_cast<int>(a.kv_pos_begin),
                          static_cast<int>(a.kv_pos_end), static_cast<int>(a.kv_capacity)};
    // A ring (sliding layer) of the first sequence must still hold this one's oldest visible position.
    const engine::AttentionParams& a0 = seqs[0].params;
    if (share && b > 0 && s.shared_prefix > 0 && s.k.dim(0) == seqs[0].k.dim(0) && s.v.dim(0) == seqs[0].v.dim(0) &&
        a.kv_capacity == a0.kv_capacity && a.kv_pos_begin >= a0.kv_pos_end - a0.kv_capacity) {
      ds.seq[b].k_shared = Bf16(seqs[0].k);  // one copy of the prefix for the whole batch
      ds.seq[b].v_shared = Bf16(seqs[0].v);
      ds.seq[b].shared_end = static_cast<int>(std::min(s.shared_prefix, a.q_pos_start));  // never the new row
    }
  }
  if (!fits) {
    Backend::AttendDecodeRows(q, k_new, v_new, seqs, out);
    return;
  }
  // The attention launch appends the new rows itself (one kernel fewer in the chain); AVSERVE_DECODE_APPEND=0
  // appends them in a kernel of their own first (to measure).
  static const bool fold_append = EnvSwitchOn("AVSERVE_DECODE_APPEND");
  if (fold_append) {
    ds.k_new = Bf16(k_new);
    ds.v_new = Bf16(v_new);
    ds.k_new_stride = k_new.strides[0];
    ds.v_new_stride = v_new.strides[0];
  } else {
    AppendKvParams ap;
    ap.k_new = Bf16(k_new);
    ap.v_new = Bf16(v_new);
    ap.k_new_stride = k_new.strides[0];
    ap.v_new_stride = v_new.strides[0];
    ap.row_elems = row_elems;
    ap.k_slot_stride = seqs[0].k.strides[0];
    ap.v_slot_stride = seqs[0].v.strides[0];
    LaunchAppendKv(ap, ds, stream());
  }
  p.num_splits = PlanDecodeMma(p, &ds, num_sms_);
  const std::unique_ptr<Buffer> ws = SplitWorkspace(p);
  LaunchDecodeMma(p, ds, stream());
}

void CudaBackend::GeluTanhMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  GegluParams p;
  p.gate = Bf16(gate);
  p.up = Bf16(up);
  p.out = MutBf16(out);
  p.gate_stride = RowStride(gate);
  p.up_stride = RowStride(up);
  p.out_stride = RowStride(out);
  p.rows = static_cast<int>(gate.rows());
  p.cols = static_cast<int>(gate.dim(-1));
  AVSERVE_CHECK(up.rows() == p.rows && out.rows() == p.rows && up.dim(-1) == p.cols, "GeluTanhMul: shapes");
  LaunchGeglu(p, stream());
}

namespace {
ElementwiseParams Unary(ElementwiseParams::Op op, const Tensor& a, const Tensor& out) {
  AVSERVE_CHECK(a.numel() == out.numel() && a.dim(-1) == out.dim(-1), "elementwise: shape mismatch");
  ElementwiseParams p;
  p.op = op;
  p.a = a.data;
  p.out = out.data;
  p.a_type = ToElemType(a.dtype);
  p.out_type = ToElemType(out.dtype);
  p.a_rows = Rows(a);
  p.out_rows = Rows(out);
  p.rows = a.rows();
  p.cols = a.dim(-1);
  return p;
}
}  // namespace

void CudaBackend::Add(const Tensor& a, const Tensor& b, const Tensor& out) {
  ElementwiseParams p = Unary(ElementwiseParams::Op::kAdd, a, out);
  AVSERVE_CHECK(b.numel() == a.numel() && b.dim(-1) == a.dim(-1), "Add: shape mismatch");
  p.b = b.data;
  p.b_type = ToElemType(b.dtype);
  p.b_rows = Rows(b);
  LaunchElementwise(p, stream());
}

void CudaBackend::Scale(const Tensor& x, float s, const Tensor& out) {
  ElementwiseParams p = Unary(ElementwiseParams::Op::kScale, x, out);
  p.scalar = s;
  LaunchElementwise(p, stream());
}

void CudaBackend::Softcap(const Tensor& x, float cap, const Tensor& out) {
  ElementwiseParams p = Unary(ElementwiseParams::Op::kSoftcap, x, out);
  p.scalar = cap;
  LaunchElementwise(p, stream());
}

void CudaBackend::Convert(const Tensor& x, const Tensor& out) {
  LaunchElementwise(Unary(ElementwiseParams::Op::kConvert, x, out), stream());
}

void CudaBackend::Embed(const Tensor& table, const Tensor& ids, float scale, const Tensor& out) {
  AVSERVE_CHECK(ids.dtype == DType::kI32 && out.is_contiguous() && table.rank == 2, "Embed: bad tensors");
  EmbedParams p;
  p.ids = ids.ptr<const int32_t>();
  p.table = Bf16(table);
  p.out = MutBf16(out);
  p.rows = static_cast<int>(ids.numel());
  p.dim = static_cast<int>(table.dim(1));
  p.vocab = static_cast<int>(table.dim(0));
  p.scale = scale;
  LaunchEmbed(p, stream());
}

void CudaBackend::AddPosition2d(const Tensor& x, const Tensor& table, const Tensor& positions, const Tensor& out) {
  AVSERVE_CHECK(table.rank == 3 && table.dim(1) == 2 && positions.dtype == DType::kI32, "AddPosition2d: tensors");
  AddPosition2dParams p;
  p.x = Bf16(x);
  p.table = Bf16(table);
  p.positions = positions.ptr<const int32_t>();
  p.out = MutBf16(out);
  p.x_stride = RowStride(x);
  p.out_stride = RowStride(out);
  p.n = static_cast<int>(x.rows());
  p.dim = static_cast<int>(x.dim(-1));
  p.table_rows = static_cast<int>(table.dim(0));
  LaunchAddPosition2d(p, stream());
}

void CudaBackend::CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) {
  AVSERVE_CHECK(src.dtype == dst.dtype && src.numel() / src.dim(0) == dst.numel() / dst.dim(0), "CopyRowsToRing");
  CopyRowsParams p;
  p.src = src.data;
  p.dst = dst.data;
  p.src_stride_bytes = src.strides[0] * static_cast<int64_t>(DTypeSize(src.dtype));
  p.dst_stride_bytes = dst.strides[0] * static_cast<int64_t>(DTypeSize(dst.dtype));
  p.rows = src.dim(0);
  p.row_bytes = src.numel() / src.dim(0) * static_cast<int64_t>(DTypeSize(src.dtype));
  p.capacity = dst.dim(0);
  p.first_pos = first_pos;
  LaunchCopyRowsToRing(p, stream());
}

void CudaBackend::ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) {
  AVSERVE_CHECK(indices.dtype == DType::kI32 && indices.numel() == src.rows() && src.dim(-1) == dst.dim(-1),
                "ScatterRows: shapes");
  ScatterRowsParams p;
  p.src = src.data;
  p.dst = dst.data;
  p.src_type = ToElemType(src.dtype);
  p.dst_type = ToElemType(dst.dtype);
  p.src_stride = RowStride(src);
  p.dst_stride = RowStride(dst);
  p.indices = indices.ptr<const int32_t>();
  p.rows = src.rows();
  p.cols = src.dim(-1);
  p.dst_rows = dst.rows();
  LaunchScatterRows(p, stream());
}

void CudaBackend::ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) {
  AVSERVE_CHECK(logits.dtype == DType::kF32 && logits.device == Device::kCuda && logits.strides[logits.rank - 1] == 1 &&
                    out.dtype == DType::kI32 && out.is_contiguous() && out.numel() == logits.rows(),
                "ArgmaxRows: f32 logits [rows, V] and int32 ids [rows] on the GPU");
  ArgmaxParams p;
  p.logits = logits.ptr<const float>();
  p.row_stride = RowStride(logits);
  p.rows = static_cast<int>(logits.rows());
  p.vocab = static_cast<int>(logits.dim(-1));
  if (suppressed.data != nullptr) {
    AVSERVE_CHECK(suppressed.dtype == DType::kI32 && suppressed.device == Device::kCuda && suppressed.is_contiguous(),
                  "ArgmaxRows: int32 suppressed ids on the GPU");
    p.suppressed = suppressed.ptr<const int32_t>();
    p.num_suppressed = static_cast<int>(suppressed.numel());
  }
  p.out_ids = out.ptr<int32_t>();
  LaunchArgmaxRows(p, stream());
}

}  // namespace cuda

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend() {
  ASSIGN_OR_RETURN(auto backend, cuda::CudaBackend::Create(0));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace avserve::engine
