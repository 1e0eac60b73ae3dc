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
#include <span>
#include <vector>

#include "engine/backend/argmax.h"
#include "engine/backend/backend.h"
#include "engine/backend/cpu/torch_moments.h"
#include "engine/backend/torch_softmax.h"
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
  bool RoundingDependsOnStepEnd() const override { return true; }

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
  void ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) override;
  void CopyRowsToRing(const Tensor& src, const Tensor& dst, int64_t first_pos) override;
  void ScatterRows(const Tensor& src, const Tensor& indices, const Tensor& dst) override;

 private:
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
  const bool reduced = x.dtype != DType::kF32;
  Run([&] {
    ForEachRow(x.rows(), d, [&](int64_t r, float* a, float*) {
      LoadRow(x, r, a);
      if (reduced) {
        // As PyTorch's CPU kernel for 16-bit inputs: its fp32 moments, then
        // y = (x·rstd + (-rstd·mean))·w + b with both multiply-adds fused.
        float mean, var;
        torch_compat::RowMoments(a, d, &mean, &var);
        const float rstd = 1.0f / std::sqrt(var + eps), shift = -rstd * mean;
        for (int64_t i = 0; i < d; ++i) a[i] = std::fma(std::fma(a[i], rstd, shift), wf[i], bf[i]);
      } else {
        double sum = 0.0;
        for (int64_t i = 0; i < d; ++i) sum += a[i];
        const double mean = sum / d;
        double var = 0.0;
        for (int64_t i = 0; i < d; ++i) var += (a[i] - mean) * (a[i] - mean);
        const float inv = static_cast<float>(1.0 / std::sqrt(var / d + eps));
        for (int64_t i = 0; i < d; ++i) a[i] = static_cast<float>(a[i] - mean) * inv * wf[i] + bf[i];
      }
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
// Reproduces PyTorch's CPU flash-attention kernel (what transformers' sdpa runs on CPU), which the
// goldens come from. Keys are taken in blocks of kKeyBlock positions counted from position 0 with an
// online softmax (running max; earlier sums and outputs rescaled by std::exp(old max - new max)).
// Within a block of `len` keys, the first 16·floor(len/16) (one AVX-512 vector at a time) get their
// numerators from TorchFastExp when the probabilities are rounded to bf16/f16, the rest from
// std::exp. The denominator sums the unrounded numerators; P·V uses them rounded to V's dtype.
// The kernel sees the whole sequence at once, so its block lengths follow the full key count; here
// they follow AttentionParams::pass_key_count, the end of the Prefill call the step belongs to.

constexpr int64_t kKeyBlock = kTorchKeyBlock;  // torch's kv split size
constexpr int64_t kQueryTile = 32;  // query positions per task

struct AttendTask {
  const Tensor *q, *k, *v;
  const int32_t* blocks;
  const AttentionParams* p;
  int64_t n, group, kvh;
};

bool Visible(const AttendTask& t, int64_t i, int64_t kpos) {
  const AttentionParams& p = *t.p;
  const int64_t qpos = p.q_pos_start + i;
  const int32_t qb = t.blocks ? t.blocks[i] : -1;
  const bool causal = kpos <= qpos;
  const bool window = p.sliding_window == 0 || kpos > qpos - p.sliding_window;
  const bool block = qb >= 0 && kpos >= p.q_pos_start && kpos < p.q_pos_start + t.n &&
                     t.blocks[kpos - p.q_pos_start] == qb;
  return p.block_or_windowed_causal ? ((window && causal) || block) : (window && (causal || block));
}

// Keys [lo, hi] hold every key visible to query positions [i0, i1): the causal/window range,
// widened to the end of the chunk when a vision block is present.
std::pair<int64_t, int64_t> KeySpan(const AttendTask& t, int64_t i0, int64_t i1) {
  const AttentionParams& p = *t.p;
  int64_t lo = p.kv_pos_begin, hi = std::min(p.q_pos_start + i1 - 1, p.kv_pos_end - 1);
  if (p.sliding_window > 0 && !(t.blocks && p.block_or_windowed_causal)) {
    lo = std::max(lo, p.q_pos_start + i0 - p.sliding_window + 1);
  }
  if (t.blocks) hi = p.kv_pos_end - 1;
  return {lo, hi};
}

// Rows of one query tile for one kv head: m = tile * group rows (position-major), fp32 state.
struct TileState {
  std::vector<float> qf, acc, mx, sum, scores, probs, kf, vf;
};

// One key block [b0, b1] of the tile's online softmax: S = Q·Kᵀ and A += P·V with OpenBLAS.
void AttendKeyBlock(const AttendTask& t, int64_t i0, int64_t rows, int64_t b0, int64_t b1, TileState& st) {
  const int64_t d = t.q->dim(2), hkv = t.k->dim(1), cap = t.k->dim(0), nk = b1 - b0 + 1;
  const bool reduced = t.v->dtype != DType::kF32;
  const int64_t pass_keys = std::max(t.p->kv_pos_end, t.p->pass_key_count);
  for (int64_t j = 0; j < nk; ++j) {
    LoadRow(*t.k, ((b0 + j) % cap) * hkv + t.kvh, st.kf.data() + j * d);
    LoadRow(*t.v, ((b0 + j) % cap) * hkv + t.kvh, st.vf.data() + j * d);
  }
  const int m = static_cast<int>(rows), ik = static_cast<int>(nk), id = static_cast<int>(d);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, ik, id, t.p->scale, st.qf.data(), id, st.kf.data(), id,
              0.0f, st.scores.data(), ik);
  for (int64_t r = 0; r < rows; ++r) {
    float* s = st.scores.data() + r * nk;
    float* pr = st.probs.data() + r * nk;
    const int64_t i = i0 + r / t.group;
    float bmax = st.mx[r];
    for (int64_t j = 0; j < nk; ++j) {
      if (!Visible(t, i, b0 + j)) s[j] = -INFINITY;
      bmax = std::max(bmax, s[j]);
    }
    const float corr = bmax == -INFINITY ? 1.0f : std::exp(st.mx[r] - bmax);
    float bsum = 0.0f;
    for (int64_t j = 0; j < nk; ++j) {
      float e = 0.0f;
      if (s[j] != -INFINITY) {
        e = reduced && TorchFastExpKey(b0 + j, pass_keys) ? TorchFastExp(s[j] - bmax) : std::exp(s[j] - bmax);
      }
      bsum += e;
      pr[j] = RoundTo(t.v->dtype, e);
    }
    st.sum[r] = bsum + corr * st.sum[r];
    st.mx[r] = bmax;
    for (int64_t c = 0; c < d; ++c) st.acc[r * d + c] *= corr;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, id, ik, 1.0f, st.probs.data(), ik, st.vf.data(), id,
              1.0f, st.acc.data(), id);
}

// Query positions [i0, i1) of kv head t.kvh: rows (i, h) for the group's query heads h.
void AttendTile(const AttendTask& t, int64_t i0, int64_t i1, const Tensor& out, TileState& st) {
  const int64_t d = t.q->dim(2), hq = t.q->dim(1), rows = (i1 - i0) * t.group;
  st.qf.resize(rows * d);
  st.acc.assign(rows * d, 0.0f);
  st.mx.assign(rows, -INFINITY);
  st.sum.assign(rows, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    LoadRow(*t.q, (i0 + r / t.group) * hq + t.kvh * t.group + r % t.group, st.qf.data() + r * d);
  }
  const auto [lo, hi] = KeySpan(t, i0, i1);
  for (int64_t b0 = lo; b0 <= hi;) {
    const int64_t b1 = std::min(hi, (b0 / kKeyBlock + 1) * kKeyBlock - 1);
    const int64_t nk = b1 - b0 + 1;
    st.scores.resize(rows * nk);
    st.probs.resize(rows * nk);
    st.kf.resize(nk * d);
    st.vf.resize(nk * d);
    AttendKeyBlock(t, i0, rows, b0, b1, st);
    b0 = b1 + 1;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = st.sum[r] > 0.0f ? 1.0f / st.sum[r] : 0.0f;
    for (int64_t c = 0; c < d; ++c) st.acc[r * d + c] *= inv;
    StoreRow(out, (i0 + r / t.group) * hq + t.kvh * t.group + r % t.group, st.acc.data() + r * d);
  }
}

void CpuBackend::Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* q_block_ids,
                           const AttentionParams& p, const Tensor& out) {
  AVSERVE_CHECK(q.rank == 3 && k.rank == 3 && v.rank == 3 && out.rank == 3, "Attention ranks");
  const int64_t n = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = k.dim(1), cap = k.dim(0);
  AVSERVE_CHECK(k.dim(2) == d && v.dim(2) == d && v.dim(1) == hkv && hq % hkv == 0, "Attention heads");
  AVSERVE_CHECK(cap == p.kv_capacity && p.kv_pos_end - p.kv_pos_begin <= cap, "Attention ring");
  AVSERVE_CHECK(p.kv_pos_end >= p.q_pos_start + n, "Attention: chunk keys not written");
  const int32_t* blocks = q_block_ids ? I32(*q_block_ids) : nullptr;
  const int64_t tiles = (n + kQueryTile - 1) / kQueryTile;
  Run([&] {
    tbb::parallel_for(int64_t{0}, tiles * hkv, [&](int64_t task) {
      const AttendTask t{&q, &k, &v, blocks, &p, n, hq / hkv, task % hkv};
      const int64_t i0 = task / hkv * kQueryTile;
      TileState st;
      AttendTile(t, i0, std::min(n, i0 + kQueryTile), out, st);
    });
  });
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

void CpuBackend::ArgmaxRows(const Tensor& logits, const Tensor& suppressed, const Tensor& out) {
  AVSERVE_CHECK(logits.dtype == DType::kF32 && logits.strides[logits.rank - 1] == 1, "ArgmaxRows: f32 rows");
  AVSERVE_CHECK(out.numel() == logits.rows(), "ArgmaxRows: one id per row");
  int32_t* ids = const_cast<int32_t*>(I32(out));
  const int64_t vocab = logits.dim(-1), n = suppressed.data == nullptr ? 0 : suppressed.numel();
  std::vector<uint8_t> banned(static_cast<size_t>(vocab), 0);
  const int32_t* sup = n > 0 ? I32(suppressed) : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    // The order is the CUDA kernel's precondition (a binary search); checked here where it is cheap.
    AVSERVE_CHECK(sup[i] >= 0 && sup[i] < vocab && (i == 0 || sup[i - 1] < sup[i]),
                  "ArgmaxRows: suppressed ids must ascend within the vocabulary");
    banned[sup[i]] = 1;
  }
  Run([&] {
    tbb::parallel_for(int64_t{0}, logits.rows(), [&](int64_t r) {
      const auto* row = reinterpret_cast<const float*>(RowPtr(logits, r));
      ids[r] = GreedyArgmax(std::span<const float>(row, static_cast<size_t>(vocab)), banned.data());
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
