// Times the CUDA backend at the real Gemma 4 12B shape (random weights) on one GPU and prints a table, then
// the issue's summary line. Usage:
//   engine_gpu_bench [--prefill=32768,65536] [--decode_ctx=32768,262144] [--peer=FILE] [--chunk=8192]
// FILE (from peer_transformers.py) holds "prefill32k_s=.. prefill64k_s=.. decode_ms=.." for the same card.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/engine_gpu/gemma4_shape.h"
#include "bench/engine_gpu/l2_read.h"
#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/gemm.cuh"
#include "engine/backend/cuda/ops/gemm_attention.cuh"

namespace avserve::bench {
namespace {

using engine::cuda::CudaEvent;
using engine::cuda::CudaStream;

std::vector<int> ParseList(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(std::stoi(item));
  }
  return out;
}

// Median milliseconds of `reps` runs of `fn` on `stream` (after one warm-up).
template <typename Fn>
double TimeMs(cudaStream_t stream, int reps, Fn fn) {
  CudaEvent start = *CudaEvent::Create(), stop = *CudaEvent::Create();
  fn();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    AVSERVE_CUDA_CHECK(cudaEventRecord(start.get(), stream));
    fn();
    AVSERVE_CUDA_CHECK(cudaEventRecord(stop.get(), stream));
    AVSERVE_CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float t = 0;
    AVSERVE_CUDA_CHECK(cudaEventElapsedTime(&t, start.get(), stop.get()));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Row {
  std::string what;
  double value;
  std::string unit, note;
};
std::vector<Row> g_rows;
void Report(const std::string& what, double value, const std::string& unit, const std::string& note = "") {
  g_rows.push_back({what, value, unit, note});
  std::printf("%-44s %12.3f %-8s %s\n", what.c_str(), value, unit.c_str(), note.c_str());
  std::fflush(stdout);
}

// Random data in [-1, 1): matrix products draw more power, and so run slower, on random data than on constant or
// zero data (METHOD.md; about 790 against 880 TFLOP/s on an H200), and the engine's data is not constant.
void FillRandom(DeviceBuffer<bf16>& buf, uint64_t seed) {
  FillRandomBf16(buf.get(), buf.size(), 1.f, seed);
  AVSERVE_CUDA_CHECK(cudaDeviceSynchronize());
}

double GemmTflops(const CublasHandle& cublas, cudaStream_t stream, int64_t m, int64_t n, int64_t k) {
  auto a = *DeviceBuffer<bf16>::Create(m * k), b = *DeviceBuffer<bf16>::Create(n * k), c = *DeviceBuffer<bf16>::Create(m * n);
  FillRandom(a, 1), FillRandom(b, 2);
  engine::cuda::GemmParams p;
  p.a = a.get(), p.b = b.get(), p.c = c.get(), p.m = m, p.n = n, p.k = k;
  const double ms = TimeMs(stream, 10, [&] { AVSERVE_CHECK(engine::cuda::LaunchGemm(cublas, p, stream).ok()); });
  return 2.0 * m * n * k / (ms * 1e-3) / 1e12;
}

// TB/s that `ctas` CTAs read from a 16 MB buffer held in L2, 4 passes each (LaunchL2Read; TimeMs's untimed first
// launch fills L2).
double L2ReadTbps(cudaStream_t stream, int ctas, bool same_order) {
  auto buf = *DeviceBuffer<unsigned char>::Create(size_t{16} << 20), sink = *DeviceBuffer<unsigned char>::Create(16);
  AVSERVE_CUDA_CHECK(cudaMemset(buf.get(), 0x11, buf.bytes()));
  int64_t bytes_read = 0;
  const double ms = TimeMs(stream, 3, [&] {
    bytes_read = LaunchL2Read(stream, buf.get(), buf.bytes(), ctas, 4, same_order, sink.get());
  });
  return bytes_read / (ms * 1e-3) / 1e12;
}

// The layer shapes the attention rows time: a full layer (head_dim 512, 1 KV head, causal), the same at half its
// head_dim (256: what each CTA of a pair that split head_dim 512 between them would do, on the warpgroup kernel),
// and a sliding layer (256, 8 KV heads, window 1024).
enum class AttentionShape { kFull, kFullHalfDim, kSliding };

// Attention kernel alone: `q_len` queries ending at `kv_end` over a layer of `shape`. Returns useful TFLOP/s
// (visible query-key pairs only).
double AttentionTflops(cudaStream_t stream, const CublasHandle& cublas, AttentionShape shape, int q_len, int kv_end,
                       bool gemm_path = false) {
  const bool full = shape != AttentionShape::kSliding;
  const int d = shape == AttentionShape::kFull ? 512 : 256, kvh = full ? 1 : 8, heads = 16, window = full ? 0 : 1024;
  const int capacity = full ? kv_end : (q_len + 1024 + 63) / 64 * 64;
  auto q = *DeviceBuffer<bf16>::Create(static_cast<size_t>(q_len) * heads * d);
  auto k = *DeviceBuffer<bf16>::Create(static_cast<size_t>(capacity) * kvh * d), v = *DeviceBuffer<bf16>::Create(static_cast<size_t>(capacity) * kvh * d);
  auto o = *DeviceBuffer<bf16>::Create(static_cast<size_t>(q_len) * heads * d);
  FillRandom(q, 3), FillRandom(k, 4), FillRandom(v, 5);
  engine::cuda::AttentionParams p;
  p.q = q.get(), p.k = k.get(), p.v = v.get(), p.o = o.get();
  p.q_token_stride = heads * d, p.q_head_stride = d, p.k_slot_stride = p.v_slot_stride = kvh * d;
  p.k_head_stride = p.v_head_stride = d, p.o_token_stride = heads * d, p.o_head_stride = d;
  p.q_len = q_len, p.q_pos0 = kv_end - q_len, p.kv_end = kv_end, p.kv_begin = std::max(0, kv_end - capacity);
  p.kv_capacity = capacity, p.num_heads = heads, p.num_kv_heads = kvh, p.head_dim = d, p.window = window;
  // The GEMM path's workspace as the backend sizes it.
  const int positions = std::min(q_len, engine::cuda::kGemmAttentionPositions);
  auto ws = *DeviceBuffer<unsigned char>::Create(engine::cuda::GemmAttentionWorkspaceBytes(p, positions));
  const double ms = TimeMs(stream, 5, [&] {
    if (gemm_path) {
      AVSERVE_CHECK(engine::cuda::LaunchGemmAttention(cublas, p, ws.get(), ws.bytes(), stream).ok());
    } else {
      engine::cuda::LaunchAttention(p, stream);
    }
  });
  double pairs = 0;
  for (int i = 0; i < q_len; ++i) {
    const int qpos = p.q_pos0 + i;
    pairs += window > 0 ? std::min(qpos + 1, window) : qpos + 1;
  }
  return 4.0 * heads * d * pairs / (ms * 1e-3) / 1e12;
}

std::map<std::string, double> ReadPeer(const std::string& path) {
  std::map<std::string, double> out;
  std::ifstream in(path);
  for (std::string tok; in >> tok;) {
    const auto eq = tok.find('=');
    if (eq != std::string::npos) out[tok.substr(0, eq)] = std::atof(tok.c_str() + eq + 1);
  }
  return out;
}

int Main(int argc, char** argv) {
  std::vector<int> prefill = {32768, 65536}, decode_ctx = {32768, 262144};
  std::string peer_path;
  int chunk = 8192;
  bool kernels_only = false;  // --kernels_only: the ceilings and kernel rows, no model
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--prefill=", 0) == 0) prefill = ParseList(a.substr(10));
    if (a.rfind("--decode_ctx=", 0) == 0) decode_ctx = ParseList(a.substr(13));
    if (a.rfind("--peer=", 0) == 0) peer_path = a.substr(7);
    if (a.rfind("--chunk=", 0) == 0) chunk = std::stoi(a.substr(8));
    if (a == "--kernels_only") kernels_only = true;
  }
  cudaDeviceProp prop{};
  AVSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::string card = prop.name;
  std::replace(card.begin(), card.end(), ' ', '_');
  std::printf("card %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0);
  CudaStream stream = *CudaStream::Create();
  cudaStream_t s = stream.get();

  // Ceilings on this card.
  {
    auto cublas = *CublasHandle::Create();
    Report("ceiling: bf16 GEMM 8192^3", GemmTflops(cublas, s, 8192, 8192, 8192), "TFLOP/s", "random data");
    auto src = *DeviceBuffer<unsigned char>::Create(size_t{2} << 30), dst = *DeviceBuffer<unsigned char>::Create(size_t{2} << 30);
    AVSERVE_CUDA_CHECK(cudaMemset(src.get(), 1, src.bytes()));
    const double ms = TimeMs(s, 10, [&] { AVSERVE_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), src.bytes(), cudaMemcpyDeviceToDevice, s)); });
    Report("ceiling: device copy (read+write)", 2.0 * src.bytes() / (ms * 1e-3) / 1e12, "TB/s");
    {
      const double tflops = GemmTflops(cublas, s, 1, 30720, 3840);
      Report("decode product 1x3840 . [30720x3840]^T", tflops, "TB/s",
             "weight bytes read per second (GEMV kernel)");
    }
    Report("gemm qkv  [8192x3840]x[8192]", GemmTflops(cublas, s, 8192, 8192, 3840), "TFLOP/s");
    Report("gemm gate|up [8192x3840]x[30720]", GemmTflops(cublas, s, 8192, 30720, 3840), "TFLOP/s");
    Report("gemm down [8192x15360]x[3840]", GemmTflops(cublas, s, 8192, 3840, 15360), "TFLOP/s");
    const auto attention = [&](AttentionShape shape, bool gemm_path = false) {
      return AttentionTflops(s, cublas, shape, 8192, 32768, gemm_path);
    };
    Report("attention full d512 g16, 8K q @32K, flash", attention(AttentionShape::kFull), "TFLOP/s",
           "useful FLOPs (kernel recomputes QK per 256-d V half)");
    Report("attention full d512 g16, 8K q @32K, GEMM", attention(AttentionShape::kFull, true), "TFLOP/s",
           "useful FLOPs; used for full-layer prefill");
    // A prefill's first and second chunks of a full layer (the op profile times the first as long as the second).
    for (int kv_end : {8192, 16384}) {
      Report("attention full d512 g16, 8K q @" + std::to_string(kv_end / 1024) + "K, GEMM",
             AttentionTflops(s, cublas, AttentionShape::kFull, 8192, kv_end, true), "TFLOP/s", "useful FLOPs");
    }
    Report("attention sliding d256 g2 w1024, 8K q", attention(AttentionShape::kSliding), "TFLOP/s");
    Report("attention causal d256 g16, 8K q @32K", attention(AttentionShape::kFullHalfDim), "TFLOP/s",
           "a full layer's shape at half its head_dim (warpgroup kernel)");
    // What a full layer's flash kernel would stream K/V against: 16 MB (256 key tiles of 64 KB) read from L2.
    for (int per_sm : {1, 2}) {
      const int ctas = prop.multiProcessorCount * per_sm;
      Report("ceiling: L2 read, 16 MB, same order, " + std::to_string(per_sm) + " CTA/SM",
             L2ReadTbps(s, ctas, true), "TB/s", "every CTA reads the same rows (one KV head)");
      Report("ceiling: L2 read, 16 MB, own offsets, " + std::to_string(per_sm) + " CTA/SM", L2ReadTbps(s, ctas, false),
             "TB/s");
    }
  }
  if (kernels_only) return 0;

  const int max_ctx = std::max(*std::max_element(prefill.begin(), prefill.end()),
                               *std::max_element(decode_ctx.begin(), decode_ctx.end())) + 64;
  auto model_or = Gemma4Shape::Create(ModelShape{}, max_ctx, chunk, 8);
  if (!model_or.ok()) {
    std::fprintf(stderr, "model: %s\n", std::string(model_or.status().message()).c_str());
    return 1;
  }
  Gemma4Shape& model = *model_or;
  std::printf("weights %.2f GB, chunk %d, max context %d\n", model.weight_bytes() / 1e9, chunk, max_ctx);
  std::map<int, double> prefill_s;
  model.Prefill(chunk, s);  // warm-up (module load, cuBLASLt heuristics)
  for (int len : prefill) {
    const double ms = TimeMs(s, 1, [&] { model.Prefill(len, s); });
    prefill_s[len] = ms / 1e3;
    Report("prefill " + std::to_string(len) + " tokens (48 layers)", ms / 1e3, "s");
  }
  std::map<int, double> decode_ms;
  for (int ctx : decode_ctx) {
    for (int batch : {1, 8}) {
      if (batch == 8 && ctx != decode_ctx.front()) continue;
      AVSERVE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      model.Forward(ctx - batch, batch, s);
      cudaGraph_t graph;
      AVSERVE_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
      cudaGraphExec_t exec;
      AVSERVE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      const double ms = TimeMs(s, 20, [&] { AVSERVE_CUDA_CHECK(cudaGraphLaunch(exec, s)); });
      AVSERVE_CUDA_CHECK(cudaGraphExecDestroy(exec));
      AVSERVE_CUDA_CHECK(cudaGraphDestroy(graph));
      if (batch == 1) decode_ms[ctx] = ms;
      Report("decode step, " + std::to_string(batch) + " row(s) @ctx " + std::to_string(ctx) + " (graph)", ms, "ms",
             batch == 8 ? "8 rows of one sequence: timing proxy for 8 questions on one prefix" : "");
    }
  }
  {
    const int ctx = decode_ctx.front();
    const double ms = TimeMs(s, 5, [&] { model.Forward(ctx - 1, 1, s); });
    Report("decode step, 1 row @ctx " + std::to_string(ctx) + " (no graph)", ms, "ms");
  }
  AVSERVE_CUDA_CHECK(cudaStreamSynchronize(s));

  const auto peer = ReadPeer(peer_path);
  auto get = [&](const std::map<int, double>& m, int k) { return m.count(k) ? m.at(k) : -1.0; };
  auto ratio = [&](const char* key, double ours) {
    return peer.count(key) && ours > 0 ? peer.at(key) / ours : -1.0;
  };
  const double p32 = get(prefill_s, 32768), p64 = get(prefill_s, 65536), d32 = get(decode_ms, 32768);
  std::printf("engine prefill32k_s=%.3f prefill64k_s=%.3f decode_ms=%.3f speedup_prefill32k=%.2f speedup_decode=%.2f card=%s\n",
              p32, p64, d32, ratio("prefill32k_s", p32), ratio("decode_ms", d32), card.c_str());
  return 0;
}

}  // namespace
}  // namespace avserve::bench

int main(int argc, char** argv) { return avserve::bench::Main(argc, argv); }
