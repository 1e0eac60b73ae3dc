// The CUDA implementation of engine::Backend (design.md §4). One stream, one cuBLASLt handle; ops are
// enqueued asynchronously and Download/Synchronize wait. Create through engine::CreateCudaBackend().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/block_cache.h"
#include "engine/backend/cuda/cuda_raii.h"

namespace avserve::engine::cuda {

struct AttentionParams;  // the kernels' parameters (ops/attention.cuh), not engine::AttentionParams

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device_index = 0);

  // Device memory that Allocate, AllocateShareable and ForkBuffer leave free (Note [Memory kept free]);
  // AVSERVE_CUDA_KEEP_FREE_MB sets another amount.
  static constexpr size_t kKeepFreeBytes = size_t{512} << 20;

  std::string Name() const override { return name_; }
  Device device() const override { return Device::kCuda; }
  bool SharesHostMemory() const override { return false; }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> AllocateShareable(size_t bytes) override;
  absl::StatusOr<std::unique_ptr<Buffer>> ForkBuffer(const Buffer& src, size_t prefix_bytes) override;
  absl::Status Upload(const void* host, size_t bytes, const Tensor& dst) override;
  absl::Status Download(const Tensor& src, void* host, size_t bytes) override;
  void Synchronize() override;

  void MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override;
  void RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) override;
  void LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, const Tensor& y) override;
  void RmsNormRope(const Tensor& x, const Tensor& weight, float eps, const Tensor& positions, const RopeParams& rope,
                   const Tensor& y) override;
  void RmsNormAddTo(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                    float scale) override;
  void RmsNormAddToNorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& residual, bool scaled,
                        float scale, const Tensor& next_weight, const Tensor& next_out) override;
  void Rope(const Tensor& x, const Tensor& positions, const RopeParams& params) override;
  void Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* q_block_ids,
                 const engine::AttentionParams& params, const Tensor& out) override;
  void GeluTanhMul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  void MatMulGeluTanhMul(const Tensor& x, const Tensor& w, const Tensor& gate_up, const Tensor& h) override;
  void Add(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void Scale(const Tensor& x, float s, const Tensor& out) override;
  void Embed(const Tensor& table, const Tensor& ids, float scale, const Tensor& out) override;
  void AddPosition2d(const Tensor& x, const Tensor& table, const Tensor& positions, const Tensor& out) override;
  void Softcap(const Tensor& x, float cap, const Tensor& out) override;
  void Convert(const Tensor& x, const Tensor& out) override;
  void QkvNorms(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight, const Tensor& k_weight,
                float eps, const Tensor& positions, const RopeParams& rope, const Tensor& q_out, const Tensor& k_out,
                const Tensor& v_out) override;
  void AttendDecodeRows(const Tensor& q, const Tensor& k_new, const Tensor& v_new, const std::vector<DecodeKv>& seqs,
                        const Tensor& out) override;
  void NormAppendAttend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_weight,
                        const Tensor& k_weight, float eps, const Tensor& positions, const RopeParams& rope,
                        const Tensor& q_normed, const Tensor& k_cache, const Tensor& v_cache,
                        const engine::AttentionParams& params, const Tensor& out) override;
  void ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) override;
  void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) override;
  void ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) override;
  void BeginGraph(int64_t key) override;
  absl::StatusOr<bool> EndGraph() override;
  void CancelGraph() override;

  // Decode graphs (Note [Decode graphs]): on unless AVSERVE_CUDA_GRAPHS=0; tests switch them per backend.
  void set_graphs(bool on) { graphs_on_ = on; }
  struct GraphStats {
    int64_t launches = 0;        // records run as a graph
    int64_t updates = 0;         // of those, run by updating the key's graph in place
    int64_t instantiations = 0;  // of those, run by a graph built afresh (a new key, or the ops' shape changed)
  };
  const GraphStats& graph_stats() const { return graph_stats_; }

  cudaStream_t stream() const { return stream_.get(); }
  const CublasHandle& cublas() const { return cublas_; }

 private:
  CudaBackend() = default;
  // Scratch for one attention call (split-KV partials or GEMM-path scores), from blocks_.
  std::unique_ptr<Buffer> AttentionWorkspace(size_t bytes, size_t min_bytes);
  // A block for an op's own workspace: it may use the memory that Allocate keeps free.
  absl::StatusOr<std::unique_ptr<Buffer>> AllocateForOp(size_t bytes);
  // The split-KV partials' workspace of p (none for one split); sets p.workspace.
  std::unique_ptr<Buffer> SplitWorkspace(AttentionParams& p);

  std::string name_;
  std::shared_ptr<BlockCache> blocks_;  // every Allocate (weights, KV caches, step temporaries)
  int num_sms_ = 0;
  int device_ = 0;
  size_t keep_free_ = kKeepFreeBytes;
  bool pages_ = false;  // KV storage in shareable pages (page_buffer.h; AVSERVE_KV_PAGES=0 turns them off)
  CudaStream stream_;
  CublasHandle cublas_;
  PinnedBuffer<unsigned char> staging_[2];  // double-buffered host staging for Upload
  CudaEvent staging_done_[2];
  int next_staging_ = 0;  // the staging slot the next upload chunk fills (they alternate across calls)
  bool async_upload_ = true;  // Note [Uploads in stream order]; AVSERVE_ASYNC_UPLOAD=0 waits for each copy
  bool graphs_on_ = true;
  bool capturing_ = false;
  int64_t capture_key_ = 0;
  std::unordered_map<int64_t, CudaGraphExec> graphs_;  // BeginGraph key -> the graph last run under it
  std::vector<CudaGraphExec> retired_graphs_;          // replaced, possibly still queued: freed at Synchronize
  GraphStats graph_stats_;
};

}  // namespace avserve::engine::cuda
