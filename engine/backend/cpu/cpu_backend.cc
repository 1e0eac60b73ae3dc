// The CPU reference backend: readable loops, fp32 accumulation, oneTBB over rows, OpenBLAS sgemm for
// the matrix products (weights converted to fp32 one row-block at a time).
//
// Determinism: every output element is computed by exactly one task, with a fixed reduction order,
// and the row-block partition does not depend on the thread count, so results are bit-stable.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/numeric.h"
#include "engine/base/check.h"
#include "tbb/blocked_range.h"
#include "tbb/global_control.h"
#include "tbb/parallel_for.h"
#include "tbb/task_arena.h"

namespace avserve::engine {
namespace {

// ---- Row access: a tensor viewed as [rows, last_dim] ------------------------------------------

char* RowPtr(const Tensor& t, int64_t row) {
  int64_t offset = 0;
  for (int d = t.rank - 2; d >= 0; --d) {
    const int64_t idx = row % t.shape[d];
    row /= t.shape[d];
    offset += idx * t.strides[d];
  }
  return static_cast<char*>(t.data) + offset * static_cast<int64_t>(DTypeSize(t.dtype));
}

void LoadRow(const Tensor& t, int64_t row, float* out) {
  const int64_t n = t.dim(-1);
  const char* p = RowPtr(t, row);
  switch (t.dtype) {
    case DType::kF32: std::memcpy(out, p, n * 4); break;
    case DType::kBF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToF32(h[i]);
      break;
    }
    case DType::kF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = F16ToF32(h[i]);
      break;
    }
    default: AVSERVE_CHECK(false, "LoadRow: not a float tensor");
  }
}

void StoreRow(const Tensor& t, int64_t row, const float* in) {
  const int64_t n = t.dim(-1);
  char* p = RowPtr(t, row);
  switch (t.dtype) {
    case DType::kF32: std::memmove(p, in, n * 4); break;
    case DType::kBF16: {
      auto* h = reinterpret_cast<uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) h[i] = F32ToBf16(in[i]);
      break;
    }
    case DType::kF16: {
      auto* h = reinterpret_cast<uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) h[i] = F32ToF16(in[i]);
      break;
    }
    default: AVSERVE_CHECK(false, "StoreRow: not a float tensor");
  }
}

const int32_t* I32(const Tensor& t) {
  AVSERVE_CHECK(t.dtype == DType::kI32 && t.is_contiguous(), "expected contiguous int32");
  return static_cast<const int32_t*>(t.data);
}

// Runs fn(row, scratch_a, scratch_b) for every row in parallel; scratch rows hold `width` floats.
template <typename Fn>
void ForEachRow(int64_t rows, int64_t width, Fn fn) {
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows, 16), [&](const tbb::blocked_range<int64_t>& r) {
    std::vector<float> a(width), b(width);
    for (int64_t i = r.begin(); i < r.end(); ++i) fn(i, a.data(), b.data());
  });
}

class CpuBuffer final : public Buffer {
 public:
  explicit CpuBuffer(size_t bytes) : storage_(bytes / 8 + 1), bytes_(bytes) {}
  void* data() const override { return const_cast<uint64_t*>(storage_.data()); }
  size_t bytes() const override { return bytes_; }
  Device device() const override { return Device::kCpu; }

 private:
  std::vector<uint64_t> storage_;  // 8-byte aligned
  size_t bytes_;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads)
      : arena_(num_threads > 0 ? num_threads : tbb::task_arena::automatic) {
    openblas_set_num_threads(1);  // parallelism comes from TBB, one sgemm per task
  }

  std::string Name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  bool SharesHostMemory() const override { return true; }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override {
    if (bytes > (size_t{1} << 40)) return absl::ResourceExhaustedError("CPU allocation over 1 TiB");
    return std::unique_ptr<Buffer>(new CpuBuffer(bytes));
  }
  absl::Status Upload(const void* host, size_t bytes, const Tensor& dst) override {
    if (bytes > dst.bytes()) return absl::InvalidArgumentError("Upload larger than the tensor");
    std::memcpy(dst.data, host, bytes);
    return absl::OkStatus();
  }
  absl::Status Download(const Tensor& src, void* host, size_t bytes) override {
    if (bytes > src.bytes()) return absl::InvalidArgumentError("Download larger than the tensor");
    std::memcpy(host, src.data, bytes);
    return absl::OkStatus();
  }
  void Synchronize() override {}

  void MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override;
  void RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) override;
  void LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                 const Tensor& y) override;
  void Rope(const Tensor& x, const Tensor& positions, const RopeParams& params) override;
  void Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* q_block_ids,
                 const AttentionParams& params, const Tensor& out) override;
  void GeluTanhMul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  void Add(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void Scale(const Tensor& x, float s, const Tensor& out) override;
  void Embed(const Tensor& table, const Tensor& ids, float scale, const Tensor& out) override;
  void AddPosition2d(const Tensor& x, const Tensor& table, const Tensor& positions,
                     const Tensor& out) override;
  void Softcap(const Tensor& x, float cap, const Tensor& out) override;
  void Convert(const Tensor& x, const Tensor& out) override;
  void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) override;
  void ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) override;

 private:
  void AttendOneRow(const Tensor& q, const Tensor& k, const Tensor& v, const int32_t* blocks,
                    const AttentionParams& p, int64_t n, int64_t r, int64_t kvh, std::vector<float>& qf,
                    std::vector<float>& kf, std::vector<float>& acc, std::vector<float>& scores);
  template <typename Fn>
  void Run(Fn fn) {
    arena_.execute(fn);
  }
  tbb::task_arena arena_;
};

// ---- MatMul ----------------------------------------------------------------------------------
// y[n, m] = x[n, k] · w[m, k]ᵀ: x is widened to fp32 once; each task widens a block of kBlock
// weight rows and calls sgemm for that column block of y.
void CpuBackend::MatMul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) {
  const int64_t n = x.rows(), k = x.dim(-1), m = w.dim(0);
  AVSERVE_CHECK(w.rank == 2 && w.dim(1) == k && y.rows() == n && y.dim(-1) == m, "MatMul shapes");
  AVSERVE_CHECK(bias == nullptr || bias->numel() == m, "MatMul bias shape");
  constexpr int64_t kBlock = 64;
  Run([&] {
    std::vector<float> xf(n * k);
    tbb::parallel_for(int64_t{0}, n, [&](int64_t i) { LoadRow(x, i, xf.data() + i * k); });
    std::vector<float> bf(m, 0.0f);
    if (bias) LoadRow(bias->Reshape({m}), 0, bf.data());
    std::vector<float> yf(n * m);
    tbb::parallel_for(int64_t{0}, (m + kBlock - 1) / kBlock, [&](int64_t blk) {
      const int64_t j0 = blk * kBlock, mb = std::min(kBlock, m - j0);
      std::vector<float> wf(mb * k);
      for (int64_t j = 0; j < mb; ++j) LoadRow(w, j0 + j, wf.data() + j * k);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(mb),
                  static_cast<int>(k), 1.0f, xf.data(), static_cast<int>(k), wf.data(),
                  static_cast<int>(k), 0.0f, yf.data() + j0, static_cast<int>(m));
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = j0; j < j0 + mb; ++j) yf[i * m + j] += bf[j];
    });
    tbb::parallel_for(int64_t{0}, n, [&](int64_t i) { StoreRow(y, i, yf.data() + i * m); });
  });
}

// ---- Norms -----------------------------------------------------------------------------------
void CpuBackend::RmsNorm(const Tensor& x, const Tensor* weight, float eps, const Tensor& y) {
  const int64_t d = x.dim(-1);
  AVSERVE_CHECK(y.rows() == x.rows() && y.dim(-1) == d, "RmsNorm shapes");
  std::vector<float> wf(d, 1.0f);
  if (weight) {
    AVSERVE_CHECK(weight->numel() == d, "RmsNorm weight shape");
    LoadRow(weight->Reshape({d}), 0, wf.data());
  }
  Run([&] {
    ForEachRow(x.rows(), d, [&](int64_t r, float* a, float*) {
      LoadRow(x, r, a);
      double ss = 0.0;  // fixed-order sum; double keeps the tiny-model reference close to torch
      for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(a[i]) * a[i];
      const float ms = static_cast<float>(ss / d) + eps;
      const float inv = std::pow(ms, -0.5f);
      for (int64_t i = 0; i < d; ++i) a[i] = a[i] * inv * (weight ? wf[i] : 1.0f);
      StoreRow(y, r, a);
    });
  });
}

void CpuBackend::LayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                           const Tensor& y) {
  const int64_t d = x.dim(-1);
  AVSERVE_CHECK(y.rows() == x.rows() && y.dim(-1) == d && weight.numel() == d && bias.numel() == d,
                "LayerNorm shapes");
  std::vector<float> wf(d), bf(d);
  LoadRow(weight.Reshape({d}), 0, wf.data());
  LoadRow(bias.Reshape({d}), 0, bf.data());
  Run([&] {
    ForEachRow(x.rows(), d, [&](int64_t r, float* a, float*) {
      LoadRow(x, r, a);
      double sum = 0.0;
      for (int64_t i = 0; i < d; ++i) sum += a[i];
      const double mean = sum / d;
      double var = 0.0;
      for (int64_t i = 0; i < d; ++i) var += (a[i] - mean) * (a[i] - mean);
      const float inv = static_cast<float>(1.0 / std::sqrt(var / d + eps));
      for (int64_t i = 0; i < d; ++i) a[i] = static_cast<float>(a[i] - mean) * inv * wf[i] + bf[i];
      StoreRow(y, r, a);
    });
  });
}

// ---- RoPE ------------------------------------------------------------------------------------
void CpuBackend::Rope(const Tensor& x, const Tensor& positions, const RopeParams& p) {
  AVSERVE_CHECK(x.rank == 3 && x.dim(2) == p.head_dim && positions.numel() == x.dim(0), "Rope shapes");
  const int64_t n = x.dim(0), heads = x.dim(1), half = p.head_dim / 2;
  const int32_t* pos = I32(positions);
  std::vector<float> inv_freq(half, 0.0f);
  for (int64_t j = 0; j < std::min<int64_t>(p.rotated_pairs, half); ++j) {
    // As torch: 1 / theta^(arange(0, D, 2) / D), computed in fp32.
    const float expo = static_cast<float>(2 * j) / static_cast<float>(p.head_dim);
    inv_freq[j] = 1.0f / std::pow(p.theta, expo);
  }
  const DType dt = x.dtype;
  Run([&] {
    ForEachRow(n * heads, p.head_dim, [&](int64_t r, float* a, float* o) {
      LoadRow(x, r, a);
      const float t = static_cast<float>(pos[r / heads]);
      for (int64_t j = 0; j < half; ++j) {
        const float ang = t * inv_freq[j];
        const float c = RoundTo(dt, std::cos(ang)), s = RoundTo(dt, std::sin(ang));
        const float x1 = a[j], x2 = a[j + half];
        o[j] = RoundTo(dt, RoundTo(dt, x1 * c) + RoundTo(dt, -x2 * s));
        o[j + half] = RoundTo(dt, RoundTo(dt, x2 * c) + RoundTo(dt, x1 * s));
      }
      StoreRow(x, r, o);
    });
  });
}

// ---- Attention -------------------------------------------------------------------------------
void CpuBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* q_block_ids,
                           const AttentionParams& p, const Tensor& out) {
  AVSERVE_CHECK(q.rank == 3 && k.rank == 3 && v.rank == 3 && out.rank == 3, "Attention ranks");
  const int64_t n = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = k.dim(1), cap = k.dim(0);
  AVSERVE_CHECK(k.dim(2) == d && v.dim(2) == d && v.dim(1) == hkv && hq % hkv == 0, "Attention heads");
  AVSERVE_CHECK(cap == p.kv_capacity && p.kv_pos_end - p.kv_pos_begin <= cap, "Attention ring");
  AVSERVE_CHECK(p.kv_pos_end >= p.q_pos_start + n, "Attention: chunk keys not written");
  const int32_t* blocks = q_block_ids ? I32(*q_block_ids) : nullptr;
  const int64_t group = hq / hkv;
  Run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n * hq, 4), [&](const tbb::blocked_range<int64_t>& range) {
      std::vector<float> qf(d), kf(d), acc(d), scores(p.kv_pos_end - p.kv_pos_begin);
      for (int64_t r = range.begin(); r < range.end(); ++r) {
        AttendOneRow(q, k, v, blocks, p, n, r, r % hq / group, qf, kf, acc, scores);
        StoreRow(out, r, acc.data());
      }
    });
  });
}

// Attention of query row r (= i * Hq + head; position q_pos_start + i; kv head kvh) into acc.
void CpuBackend::AttendOneRow(const Tensor& q, const Tensor& k, const Tensor& v, const int32_t* blocks,
                              const AttentionParams& p, int64_t n, int64_t r, int64_t kvh, std::vector<float>& qf,
                              std::vector<float>& kf, std::vector<float>& acc, std::vector<float>& scores) {
  const int64_t i = r / q.dim(1);
  const int64_t d = q.dim(2), hkv = k.dim(1), cap = k.dim(0), qpos = p.q_pos_start + i;
  const int32_t qb = blocks ? blocks[i] : -1;
  LoadRow(q, r, qf.data());
  // Only keys in [lo, hi] can be visible: the causal/window range, widened to this query's block.
  int64_t lo = p.kv_pos_begin, hi = std::min(qpos, p.kv_pos_end - 1);
  if (p.sliding_window > 0 && !(qb >= 0 && p.block_or_windowed_causal)) {
    lo = std::max(lo, qpos - p.sliding_window + 1);
  }
  if (qb >= 0) hi = p.kv_pos_end - 1;
  std::fill(acc.begin(), acc.end(), 0.0f);
  float mx = -INFINITY;
  for (int64_t kpos = lo; kpos <= hi; ++kpos) {
    const bool causal = kpos <= qpos;
    const bool window = p.sliding_window == 0 || kpos > qpos - p.sliding_window;
    const bool block = qb >= 0 && kpos >= p.q_pos_start && kpos < p.q_pos_start + n &&
                       blocks[kpos - p.q_pos_start] == qb;
    const bool visible = p.block_or_windowed_causal ? ((window && causal) || block) : (window && (causal || block));
    float& sc = scores[kpos - lo];
    sc = -INFINITY;
    if (!visible) continue;
    LoadRow(k, (kpos % cap) * hkv + kvh, kf.data());
    float dot = 0.0f;
    for (int64_t e = 0; e < d; ++e) dot += qf[e] * kf[e];
    sc = dot * p.scale;
    mx = std::max(mx, sc);
  }
  // As flash attention (CUDA FA2 and PyTorch's CPU kernel): the denominator sums the fp32
  // exponentials, while P·V uses them rounded to V's dtype.
  float denom = 0.0f;
  for (int64_t kpos = lo; kpos <= hi; ++kpos) {
    if (scores[kpos - lo] == -INFINITY) continue;
    const float e = std::exp(scores[kpos - lo] - mx);
    denom += e;
    const float pe = RoundTo(v.dtype, e);
    LoadRow(v, (kpos % cap) * hkv + kvh, kf.data());
    for (int64_t c = 0; c < d; ++c) acc[c] += pe * kf[c];
  }
  const float inv = 1.0f / denom;
  for (int64_t c = 0; c < d; ++c) acc[c] *= inv;
}

// ---- Element-wise ----------------------------------------------------------------------------
void CpuBackend::GeluTanhMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t d = gate.dim(-1);
  AVSERVE_CHECK(up.rows() == gate.rows() && up.dim(-1) == d && out.rows() == gate.rows(), "GeluTanhMul");
  const DType dt = out.dtype;
  const float k = std::sqrt(2.0f / std::numbers::pi_v<float>);
  Run([&] {
    ForEachRow(gate.rows(), d, [&](int64_t r, float* g, float* u) {
      LoadRow(gate, r, g);
      LoadRow(up, r, u);
      for (int64_t i = 0; i < d; ++i) {
        const float x = g[i];
        const float gl = RoundTo(dt, 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))));
        g[i] = gl * u[i];
      }
      StoreRow(out, r, g);
    });
  });
}

void CpuBackend::Add(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int64_t d = a.dim(-1);
  AVSERVE_CHECK(b.rows() == a.rows() && b.dim(-1) == d && out.rows() == a.rows(), "Add shapes");
  Run([&] {
    ForEachRow(a.rows(), d, [&](int64_t r, float* x, float* y) {
      LoadRow(a, r, x);
      LoadRow(b, r, y);
      for (int64_t i = 0; i < d; ++i) x[i] += y[i];
      StoreRow(out, r, x);
    });
  });
}

void CpuBackend::Scale(const Tensor& x, float s, const Tensor& out) {
  Run([&] {
    ForEachRow(x.rows(), x.dim(-1), [&](int64_t r, float* a, float*) {
      LoadRow(x, r, a);
      for (int64_t i = 0; i < x.dim(-1); ++i) a[i] *= s;
      StoreRow(out, r, a);
    });
  });
}

void CpuBackend::Embed(const Tensor& table, const Tensor& ids, float scale, const Tensor& out) {
  const int32_t* id = I32(ids);
  AVSERVE_CHECK(out.rows() == ids.numel() && out.dim(-1) == table.dim(-1), "Embed shapes");
  Run([&] {
    ForEachRow(out.rows(), out.dim(-1), [&](int64_t r, float* a, float*) {
      AVSERVE_CHECK(id[r] >= 0 && id[r] < table.dim(0), "Embed id out of range");
      LoadRow(table, id[r], a);
      for (int64_t i = 0; i < out.dim(-1); ++i) a[i] *= scale;
      StoreRow(out, r, a);
    });
  });
}

void CpuBackend::AddPosition2d(const Tensor& x, const Tensor& table, const Tensor& positions,
                               const Tensor& out) {
  const int64_t d = x.dim(-1), rows = table.dim(0);
  AVSERVE_CHECK(table.rank == 3 && table.dim(1) == 2 && table.dim(2) == d, "AddPosition2d table");
  AVSERVE_CHECK(positions.numel() == 2 * x.rows(), "AddPosition2d positions");
  const int32_t* pos = I32(positions);
  const Tensor flat = table.Reshape({rows * 2, d});
  Run([&] {
    ForEachRow(x.rows(), d, [&](int64_t r, float* a, float* b) {
      const int32_t px = pos[2 * r], py = pos[2 * r + 1];
      AVSERVE_CHECK(px >= 0 && px < rows && py >= 0 && py < rows, "position out of the table");
      std::vector<float> c(d);
      LoadRow(flat, 2 * px + 0, b);
      LoadRow(flat, 2 * py + 1, c.data());
      LoadRow(x, r, a);
      for (int64_t i = 0; i < d; ++i) a[i] += RoundTo(x.dtype, b[i] + c[i]);
      StoreRow(out, r, a);
    });
  });
}

void CpuBackend::Softcap(const Tensor& x, float cap, const Tensor& out) {
  const DType dt = out.dtype;
  Run([&] {
    ForEachRow(x.rows(), x.dim(-1), [&](int64_t r, float* a, float*) {
      LoadRow(x, r, a);
      for (int64_t i = 0; i < x.dim(-1); ++i)
        a[i] = RoundTo(dt, RoundTo(dt, std::tanh(RoundTo(dt, a[i] / cap))) * cap);
      StoreRow(out, r, a);
    });
  });
}

void CpuBackend::Convert(const Tensor& x, const Tensor& out) {
  AVSERVE_CHECK(x.rows() == out.rows() && x.dim(-1) == out.dim(-1), "Convert shapes");
  Run([&] {
    ForEachRow(x.rows(), x.dim(-1), [&](int64_t r, float* a, float*) {
      LoadRow(x, r, a);
      StoreRow(out, r, a);
    });
  });
}

void CpuBackend::CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) {
  const int64_t n = src.dim(0), cap = dst.dim(0);
  AVSERVE_CHECK(src.numel() / n == dst.numel() / cap, "CopyRowsToRing row sizes");
  const Tensor s2 = src.Reshape({n, src.numel() / n}), d2 = dst.Reshape({cap, dst.numel() / cap});
  Run([&] {
    ForEachRow(n, s2.dim(1), [&](int64_t r, float* a, float*) {
      LoadRow(s2, r, a);
      StoreRow(d2, (first_pos + r) % cap, a);
    });
  });
}

void CpuBackend::ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) {
  const int32_t* idx = I32(indices);
  AVSERVE_CHECK(indices.numel() == src.rows() && src.dim(-1) == dst.dim(-1), "ScatterRows shapes");
  Run([&] {
    ForEachRow(src.rows(), src.dim(-1), [&](int64_t r, float* a, float*) {
      AVSERVE_CHECK(idx[r] >= 0 && idx[r] < dst.rows(), "ScatterRows index");
      LoadRow(src, r, a);
      StoreRow(dst, idx[r], a);
    });
  });
}

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace avserve::engine
