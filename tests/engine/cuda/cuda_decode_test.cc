// GPU tests of the split-KV decode attention kernel (engine/backend/cuda/ops/decode_mma.cu): the key slices'
// merge inside the kernel (last slice to finish, counters reset for the next launch) and the shared-prefix
// reads of forked sequences. They skip where no CUDA device exists.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/attention.cuh"
#include "engine/backend/cuda/ops/decode_mma.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"

namespace avserve::engine::cuda {
namespace {

using testing::HaveDevice;
using testing::RandomBf16;
using testing::RelErr;

#define SKIP_WITHOUT_GPU() \
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device"

constexpr uint16_t kBf16Nan = 0x7FC0;

template <typename T>
DeviceBuffer<T> ToDevice(const std::vector<T>& host) {
  auto buf = DeviceBuffer<T>::Create(host.size());
  EXPECT_TRUE(buf.ok());
  EXPECT_EQ(cudaMemcpy(buf->get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return std::move(*buf);
}

template <typename T>
std::vector<T> ToHost(const DeviceBuffer<T>& buf) {
  std::vector<T> host(buf.size());
  EXPECT_EQ(cudaMemcpy(host.data(), buf.get(), buf.bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

const __nv_bfloat16* Bf16(const DeviceBuffer<uint16_t>& b) { return reinterpret_cast<const __nv_bfloat16*>(b.get()); }

// One attention layer's shape: heads / kv_heads = GQA group; q_len query positions per sequence.
struct Layer {
  int heads, kv_heads, dim, window, q_len;
};

// Layers of the 12B (group 16 at head_dim 512 without a window, group 2 at 256 with a 1024-key window) with
// several KV heads, one of them with two query positions per sequence.
const Layer kLayers[] = {{32, 2, 512, 0, 1}, {16, 8, 256, 1024, 1}, {8, 4, 256, 1024, 2}};

// AttentionParams for `count` sequences of `ly` (q, o, workspace set by the caller).
AttentionParams ParamsFor(const Layer& ly, int count, int num_splits) {
  AttentionParams p;
  p.q_token_stride = p.o_token_stride = ly.heads * ly.dim, p.q_head_stride = p.o_head_stride = ly.dim;
  p.k_slot_stride = p.v_slot_stride = ly.kv_heads * ly.dim, p.k_head_stride = p.v_head_stride = ly.dim;
  p.num_heads = ly.heads, p.num_kv_heads = ly.kv_heads, p.head_dim = ly.dim, p.window = ly.window;
  p.q_len = count * ly.q_len;
  p.num_splits = num_splits;
  return p;
}

// Sequence whose newest query sits at `last` (queries last - q_len + 1 .. last), keys from the window or the
// ring's oldest slot up to `last`.
DecodeSeq SeqAt(const Layer& ly, const DeviceBuffer<uint16_t>& k, const DeviceBuffer<uint16_t>& v, int last,
                int capacity) {
  DecodeSeq s;
  s.k = Bf16(k), s.v = Bf16(v);
  s.q_pos0 = last - ly.q_len + 1;
  s.kv_end = last + 1;
  s.kv_begin = ly.window > 0 ? std::max(0, last - ly.window + 1) : std::max(0, last + 1 - capacity);
  s.kv_capacity = capacity;
  return s;
}

// Runs the kernel on `seqs` and returns the output bits ([q_len, heads, dim]); `ws` must fit the splits.
std::vector<uint16_t> RunDecode(AttentionParams p, const DecodeSeqs& seqs, const DeviceBuffer<uint16_t>& q, void* ws) {
  const size_t n = static_cast<size_t>(p.q_len) * p.num_heads * p.head_dim;
  auto o = ToDevice(std::vector<uint16_t>(n, 0));
  p.q = Bf16(q);
  p.o = reinterpret_cast<__nv_bfloat16*>(o.get());
  p.workspace = ws;
  LaunchDecodeMma(p, seqs, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return ToHost(o);
}

// Splits merged inside the kernel: three sequences of different lengths (one a ring shorter than its
// positions) over several KV heads, each split count launched twice in a row (the second launch finds the
// counters that the first reset; left dirty, nothing would merge and the output would stay 0). Both launches
// give the same bits as attention.cu's combine kernel run on the partials the kernel left in the workspace,
// and the result is within rounding of one split. 64 splits leave many slices of the short sequences empty (and
// are merged in the kernel for 2-row groups); 300 exceed the rows the kernel merges itself (the combine kernel
// runs, AVSERVE_DECODE_MERGE_ROWS, default 128 splits x rows).
TEST(CudaDecodeMergeTest, InKernelMergeEqualsCombineKernelAndResets) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(23);
  for (const Layer& ly : kLayers) {
    const int caps[3] = {6000, 6000, 1100};
    const int lasts[3] = {5999, 1234, 3000};
    std::vector<DeviceBuffer<uint16_t>> ks, vs;
    DecodeSeqs seqs;
    seqs.count = 3, seqs.q_len = ly.q_len;
    for (int s = 0; s < 3; ++s) {
      const size_t elems = size_t{1} * caps[s] * ly.kv_heads * ly.dim;
      ks.push_back(ToDevice(RandomBf16(elems, rng, -0.25f, 0.25f)));
      vs.push_back(ToDevice(RandomBf16(elems, rng)));
      seqs.seq[s] = SeqAt(ly, ks[s], vs[s], lasts[s], caps[s]);
    }
    const size_t out_elems = size_t{3} * ly.q_len * ly.heads * ly.dim;
    auto q = ToDevice(RandomBf16(out_elems, rng, -0.25f, 0.25f));
    const std::vector<uint16_t> one = RunDecode(ParamsFor(ly, 3, 1), seqs, q, nullptr);
    for (const int splits : {2, 7, 64, 300}) {
      SCOPED_TRACE(::testing::Message() << "head_dim " << ly.dim << " kv_heads " << ly.kv_heads << " q_len "
                                        << ly.q_len << " splits " << splits);
      AttentionParams p = ParamsFor(ly, 3, splits);
      auto ws = DeviceBuffer<unsigned char>::Create(AttentionWorkspaceBytes(p));
      ASSERT_TRUE(ws.ok());
      const std::vector<uint16_t> first = RunDecode(p, seqs, q, ws->get());
      const std::vector<uint16_t> second = RunDecode(p, seqs, q, ws->get());
      EXPECT_EQ(first, second) << "the second launch differs: counters not reset?";
      // The combine kernel on the second launch's partials (still in the workspace).
      auto o_combine = ToDevice(std::vector<uint16_t>(out_elems, 0));
      p.o = reinterpret_cast<__nv_bfloat16*>(o_combine.get());
      p.workspace = ws->get();
      LaunchCombineSplits(p, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(second, ToHost(o_combine)) << "in-kernel merge differs from the combine kernel";
      EXPECT_LE(RelErr(testing::Bf16ToFloat(first), testing::Bf16ToFloat(one)), 5e-3);
    }
    // The sequences' rows differ (each reads its own cache).
    const size_t seq_elems = out_elems / 3;
    EXPECT_NE(std::vector<uint16_t>(one.begin(), one.begin() + seq_elems),
              std::vector<uint16_t>(one.begin() + seq_elems, one.begin() + 2 * seq_elems));
  }
}

// Forks of one snapshot: positions [kv_begin, shared_end) read from the shared cache. Each sequence's own cache
// holds NaN below its shared_end and the shared cache NaN from the longest shared_end on, so a row read from the
// wrong copy turns the output to NaN. The result must equal, bit for bit, the same sequences with the true values
// in their own caches and no sharing; shared_end = 0 must ignore k_shared / v_shared (all NaN).
TEST(CudaDecodeSharedPrefixTest, SharedPrefixEqualsOwnCopies) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(29);
  constexpr int kSeqs = 3, kCap = 2600, kPrefix = 1800;
  const int lasts[kSeqs] = {2400, 2100, 1900};
  const int shared_ends[kSeqs] = {kPrefix, kPrefix, 1500};  // > kv_begin on the sliding layers too (>= 1377)
  for (const Layer& ly : kLayers) {
    const size_t slot = size_t{1} * ly.kv_heads * ly.dim, elems = kCap * slot;
    const auto prefix_k = RandomBf16(elems, rng, -0.25f, 0.25f), prefix_v = RandomBf16(elems, rng);
    // Shared cache: the prefix's values below kPrefix, NaN from there on.
    std::vector<uint16_t> shared_k(elems, kBf16Nan), shared_v(elems, kBf16Nan);
    std::copy(prefix_k.begin(), prefix_k.begin() + kPrefix * slot, shared_k.begin());
    std::copy(prefix_v.begin(), prefix_v.begin() + kPrefix * slot, shared_v.begin());
    auto shared_k_d = ToDevice(shared_k), shared_v_d = ToDevice(shared_v);
    auto nan_d = ToDevice(std::vector<uint16_t>(elems, kBf16Nan));
    std::vector<DeviceBuffer<uint16_t>> true_k, true_v, forked_k, forked_v;
    for (int s = 0; s < kSeqs; ++s) {
      // True cache: the prefix below kPrefix, the sequence's own values after it.
      std::vector<uint16_t> k = RandomBf16(elems, rng, -0.25f, 0.25f), v = RandomBf16(elems, rng);
      std::copy(prefix_k.begin(), prefix_k.begin() + kPrefix * slot, k.begin());
      std::copy(prefix_v.begin(), prefix_v.begin() + kPrefix * slot, v.begin());
      true_k.push_back(ToDevice(k));
      true_v.push_back(ToDevice(v));
      // Forked cache: NaN below its shared_end (never to be read), the true values from there on.
      std::fill(k.begin(), k.begin() + shared_ends[s] * slot, kBf16Nan);
      std::fill(v.begin(), v.begin() + shared_ends[s] * slot, kBf16Nan);
      forked_k.push_back(ToDevice(k));
      forked_v.push_back(ToDevice(v));
    }
    auto q = ToDevice(RandomBf16(size_t{kSeqs} * ly.q_len * ly.heads * ly.dim, rng, -0.25f, 0.25f));
    for (const int splits : {1, 5}) {
      SCOPED_TRACE(::testing::Message() << "head_dim " << ly.dim << " kv_heads " << ly.kv_heads << " q_len "
                                        << ly.q_len << " splits " << splits);
      const AttentionParams p = ParamsFor(ly, kSeqs, splits);
      auto ws = DeviceBuffer<unsigned char>::Create(std::max<size_t>(AttentionWorkspaceBytes(p), 16));
      ASSERT_TRUE(ws.ok());
      DecodeSeqs own, forked, ignored;
      own.count = forked.count = ignored.count = kSeqs;
      own.q_len = forked.q_len = ignored.q_len = ly.q_len;
      for (int s = 0; s < kSeqs; ++s) {
        own.seq[s] = SeqAt(ly, true_k[s], true_v[s], lasts[s], kCap);
        forked.seq[s] = SeqAt(ly, forked_k[s], forked_v[s], lasts[s], kCap);
        forked.seq[s].k_shared = Bf16(shared_k_d), forked.seq[s].v_shared = Bf16(shared_v_d);
        forked.seq[s].shared_end = shared_ends[s];
        ASSERT_GT(shared_ends[s], forked.seq[s].kv_begin) << "the test must share some positions";
        ignored.seq[s] = own.seq[s];
        ignored.seq[s].k_shared = Bf16(nan_d), ignored.seq[s].v_shared = Bf16(nan_d);
        ignored.seq[s].shared_end = 0;
      }
      const std::vector<uint16_t> want = RunDecode(p, own, q, ws->get());
      const std::vector<float> want_f = testing::Bf16ToFloat(want);
      ASSERT_TRUE(std::none_of(want_f.begin(), want_f.end(), [](float x) { return std::isnan(x); }));
      EXPECT_EQ(RunDecode(p, forked, q, ws->get()), want) << "shared prefix read differs";
      EXPECT_EQ(RunDecode(p, ignored, q, ws->get()), want) << "shared_end = 0 did not ignore k_shared";
    }
  }
}

}  // namespace
}  // namespace avserve::engine::cuda
