// The greedy choice on the GPU over many blocks per row (LaunchArgmaxRowsSplit, and LaunchArgmaxRows, which picks
// the split or one block per row) against the CPU rule (engine/backend/argmax.h): the planted greedy cases, ties,
// -0 against +0, NaNs and suppressed ids placed on both sides of block boundaries, nothing left (-1), several
// rows, strided and unaligned rows, repeated launches (the per-row counters reset) and random rows full of ties.
// The split arithmetic is checked on the host too (no GPU needed).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "engine/backend/argmax.h"
#include "engine/backend/cuda/cuda_raii.h"
#include "engine/backend/cuda/ops/sampling.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"
#include "tests/engine/greedy_cases.h"

namespace avserve::engine::cuda {
namespace {

using testing::HaveDevice;

#define SKIP_WITHOUT_GPU() \
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device: the ArgmaxRows kernels run only on a GPU"

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// `rows` rows of `vocab` logits `stride` apart, the first one `offset` floats into the buffer (offset % 4 != 0 or
// stride % 4 != 0 leaves rows off 16-byte alignment).
struct Logits {
  Logits(int rows_in, int vocab_in, int64_t stride_in, int offset_in, float fill)
      : rows(rows_in), vocab(vocab_in), stride(stride_in), offset(offset_in),
        host(static_cast<size_t>(offset_in + rows_in * stride_in), fill) {}
  float* row(int r) { return host.data() + offset + r * stride; }
  const float* row(int r) const { return host.data() + offset + r * stride; }
  void Random(std::mt19937& rng) {
    std::uniform_real_distribution<float> dist(-30.f, 30.f);
    for (int r = 0; r < rows; ++r) std::generate(row(r), row(r) + vocab, [&] { return dist(rng); });
  }
  int rows, vocab;
  int64_t stride;
  int offset;
  std::vector<float> host;
};

// The CPU rule, row by row.
std::vector<int32_t> CpuIds(const Logits& l, const std::vector<int32_t>& sup) {
  std::vector<uint8_t> banned(static_cast<size_t>(l.vocab), 0);
  for (int32_t id : sup) banned[static_cast<size_t>(id)] = 1;
  std::vector<int32_t> ids;
  for (int r = 0; r < l.rows; ++r) ids.push_back(GreedyArgmax({l.row(r), static_cast<size_t>(l.vocab)}, banned.data()));
  return ids;
}

template <typename T>
DeviceBuffer<T> ToDevice(const std::vector<T>& host) {
  auto buf = DeviceBuffer<T>::Create(std::max<size_t>(host.size(), 1));
  EXPECT_TRUE(buf.ok());
  if (!host.empty()) {
    EXPECT_EQ(cudaMemcpy(buf->get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return std::move(*buf);
}

// The logits and suppressed ids on the GPU; Ids() launches and brings the ids back.
class DeviceRows {
 public:
  DeviceRows(const Logits& l, const std::vector<int32_t>& sup)
      : l_(l), logits_(ToDevice(l.host)), sup_(ToDevice(sup)), num_sup_(static_cast<int>(sup.size())),
        out_(ToDevice(std::vector<int32_t>(static_cast<size_t>(l.rows)))) {}

  // The first `rows` rows (all when -1) by LaunchArgmaxRowsSplit with `split`, or by LaunchArgmaxRows without
  // one. The ids start out as -7, so a row that no block writes shows.
  std::vector<int32_t> Ids(std::optional<ArgmaxSplit> split, cudaStream_t stream = nullptr, int rows = -1) {
    rows = rows < 0 ? l_.rows : rows;
    const std::vector<int32_t> init(static_cast<size_t>(rows), -7);
    EXPECT_EQ(cudaMemcpy(out_.get(), init.data(), init.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // landed before a launch on another stream
    ArgmaxParams p;
    p.logits = logits_.get() + l_.offset;
    p.row_stride = l_.stride;
    p.rows = rows;
    p.vocab = l_.vocab;
    p.suppressed = num_sup_ > 0 ? sup_.get() : nullptr;
    p.num_suppressed = num_sup_;
    p.out_ids = out_.get();
    if (split.has_value()) {
      LaunchArgmaxRowsSplit(p, *split, stream);
    } else {
      LaunchArgmaxRows(p, stream);
    }
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<int32_t> ids(static_cast<size_t>(rows));
    EXPECT_EQ(cudaMemcpy(ids.data(), out_.get(), ids.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    return ids;
  }

 private:
  const Logits& l_;
  DeviceBuffer<float> logits_;
  DeviceBuffer<int32_t> sup_;
  int num_sup_;
  DeviceBuffer<int32_t> out_;
};

int NumSms() {
  int device = 0, sms = 0;
  EXPECT_EQ(cudaGetDevice(&device), cudaSuccess);
  EXPECT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  return sms;
}

// ---- The split arithmetic (host only). ----

TEST(ArgmaxSplitTest, SplitsTileTheRowInSlicesOfFour) {
  for (int vocab : {1, 3, 4, 5, 1000, 4095, 4096, 262143, 262144, 262147}) {
    for (int want : {-3, 0, 1, 2, 7, 64, 127, 128, 129, 5000}) {
      const ArgmaxSplit s = SplitArgmaxRow(vocab, want);
      EXPECT_EQ(s.slice % 4, 0) << vocab << " " << want;
      EXPECT_GE(s.blocks_per_row, 1);
      EXPECT_LE(s.blocks_per_row, std::clamp(want, 1, kMaxArgmaxBlocksPerRow)) << vocab << " " << want;
      EXPECT_LT(int64_t{s.slice} * (s.blocks_per_row - 1), vocab) << vocab << " " << want;  // no empty block
      EXPECT_GE(int64_t{s.slice} * s.blocks_per_row, vocab) << vocab << " " << want;        // every id covered
    }
  }
}

TEST(ArgmaxSplitTest, DecodeBatchesFillTheGpu) {
  constexpr int kVocab = 262144;
  for (int sms : {132, 78, 16}) {
    EXPECT_EQ(ChooseArgmaxSplit(1, kVocab, sms).blocks_per_row, std::min(kMaxArgmaxBlocksPerRow, kArgmaxBlocksPerSm * sms));
    for (int rows = 1; rows <= kMaxArgmaxSplitRows; ++rows) {
      const ArgmaxSplit s = ChooseArgmaxSplit(rows, kVocab, sms);
      EXPECT_GE(s.slice, kMinArgmaxSlice) << rows << " rows, " << sms << " SMs";
      EXPECT_LT(int64_t{s.slice} * (s.blocks_per_row - 1), kVocab);
      EXPECT_GE(int64_t{s.slice} * s.blocks_per_row, kVocab);
      if (rows <= 16) {
        EXPECT_GE(s.blocks_per_row, 2) << rows << " rows, " << sms << " SMs";
      }
      // Up to 16 rows at least two blocks per SM once rows have enough ids for them.
      if (rows <= 16 && rows * kMaxArgmaxBlocksPerRow >= 2 * sms) {
        EXPECT_GE(rows * s.blocks_per_row, 2 * sms) << rows << " rows, " << sms << " SMs";
      }
    }
    EXPECT_GE(8 * ChooseArgmaxSplit(8, kVocab, sms).blocks_per_row, 3 * sms) << "8 questions decoding together";
  }
  EXPECT_EQ(ChooseArgmaxSplit(kMaxArgmaxSplitRows + 1, kVocab, 132).blocks_per_row, 1);  // one block per row
  EXPECT_EQ(ChooseArgmaxSplit(1, 2 * kMinArgmaxSlice - 1, 132).blocks_per_row, 1);      // too short to split
  EXPECT_EQ(ChooseArgmaxSplit(1, 2 * kMinArgmaxSlice, 132).blocks_per_row, 2);
}

// ---- The kernels. ----

// Greedy cases (greedy_cases.h) with 40 suppressed ids, with and without suppression: every split, the chosen
// path, at the real vocabulary, odd widths, and strided unaligned rows.
TEST(CudaArgmaxTest, GreedyCasesMatchTheCpuRule) {
  SKIP_WITHOUT_GPU();
  struct Case {
    int vocab;
    int64_t stride;
    int offset;
  };
  std::mt19937 rng(11);
  for (const Case c : {Case{262144, 262144, 0}, Case{262147, 262147, 0}, Case{1000, 1000, 0}, Case{4096, 4099, 1},
                       Case{9001, 9008, 2}}) {
    constexpr int kRows = 24;
    std::vector<int32_t> sup;  // ascending, >= 3, < vocab - 2, none of the ids the cases plant
    for (int64_t i = 0; i < 40; ++i) {
      const auto id = static_cast<int32_t>(3 + i * (c.vocab - 10) / 40);
      if (id != 8 && id != 10 && id != 12 && id != 60 && id != 61 && id != 200) sup.push_back(id);
    }
    Logits l(kRows, c.vocab, c.stride, c.offset, 0.f);
    const std::vector<int32_t> planted =
        avserve::engine::testing::PlantGreedyCases(l.row(0), kRows, c.vocab, c.stride, sup, rng);
    std::vector<std::optional<ArgmaxSplit>> splits = {std::nullopt};
    for (int want : {2, 7, 64, 128}) splits.push_back(SplitArgmaxRow(c.vocab, want));
    for (const bool with_sup : {true, false}) {
      const std::vector<int32_t> none;
      DeviceRows dev(l, with_sup ? sup : none);
      const std::vector<int32_t> want = CpuIds(l, with_sup ? sup : none);
      if (with_sup) {
        ASSERT_EQ(std::vector<int32_t>(want.begin() + 1, want.begin() + 12), planted) << "the CPU rule itself";
      }
      for (const auto& split : splits) {
        EXPECT_EQ(dev.Ids(split), want) << "vocab " << c.vocab << " stride " << c.stride << " blocks/row "
                                        << (split ? split->blocks_per_row : 0) << " suppressed " << with_sup;
      }
    }
  }
}

// The splits that the boundary tests run: the chosen one for 8 rows, 7 and 128 blocks per row.
std::vector<ArgmaxSplit> BoundarySplits(int vocab) {
  return {ChooseArgmaxSplit(8, vocab, NumSms()), SplitArgmaxRow(vocab, 7), SplitArgmaxRow(vocab, 128)};
}

// The same value in two blocks' slices: the lower id wins, whichever block finishes first.
TEST(CudaArgmaxTest, TiesAcrossBlocksGoToTheLowerId) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  for (const auto& [vocab, offset] : {std::pair{262144, 0}, std::pair{262147, 1}}) {
    for (const ArgmaxSplit split : BoundarySplits(vocab)) {
      const int s = split.slice, last_block = (split.blocks_per_row - 1) * s, v1 = vocab - 1;
      ASSERT_GE(split.blocks_per_row, 7);
      Logits l(6, vocab, vocab, offset, 0.f);
      l.Random(rng);
      l.row(0)[5 * s + 3] = l.row(0)[2 * s + 3] = 99.f;  // blocks 5 and 2
      l.row(1)[3 * s - 1] = l.row(1)[3 * s] = 99.f;      // the last id of block 2, the first of block 3
      l.row(2)[v1] = l.row(2)[last_block] = 99.f;        // both in the last block
      l.row(3)[0] = l.row(3)[v1] = 99.f;                 // the first and the last id
      l.row(4)[s] = l.row(4)[s - 1] = 99.f;              // the first id of block 1, the last of block 0
      for (int b = 0; b < split.blocks_per_row; ++b) l.row(5)[b * s + 1] = 99.f;  // every block
      const std::vector<int32_t> want = {2 * s + 3, 3 * s - 1, last_block, 0, s - 1, 1};
      ASSERT_EQ(CpuIds(l, {}), want);
      DeviceRows dev(l, {});
      EXPECT_EQ(dev.Ids(split), want) << "vocab " << vocab << " slice " << s;
    }
  }
}

TEST(CudaArgmaxTest, NegativeZeroEqualsPositiveZeroAcrossBlocks) {
  SKIP_WITHOUT_GPU();
  constexpr int kVocab = 262144;
  for (const ArgmaxSplit split : BoundarySplits(kVocab)) {
    const int s = split.slice;
    Logits l(3, kVocab, kVocab, 0, -1.f);
    l.row(0)[2 * s + 7] = -0.f, l.row(0)[5 * s + 1] = 0.f;
    l.row(1)[2 * s + 7] = 0.f, l.row(1)[5 * s + 1] = -0.f;
    l.row(2)[5 * s + 1] = -0.f, l.row(2)[5 * s - 1] = 0.f;  // the last id of block 4 against block 5
    const std::vector<int32_t> want = {2 * s + 7, 2 * s + 7, 5 * s - 1};
    ASSERT_EQ(CpuIds(l, {}), want);
    DeviceRows dev(l, {});
    EXPECT_EQ(dev.Ids(split), want) << "slice " << s;
  }
}

TEST(CudaArgmaxTest, NanEverywhereButOneId) {
  SKIP_WITHOUT_GPU();
  constexpr int kVocab = 262147;
  for (const ArgmaxSplit split : BoundarySplits(kVocab)) {
    const int s = split.slice;
    Logits l(5, kVocab, kVocab, 0, kNan);
    l.row(0)[3 * s + 17] = -5.f;
    l.row(1)[6 * s] = -kInf;                     // -inf may win: the first id of block 6
    l.row(2)[kVocab - 1] = 1.f;                  // the last id
    l.row(3)[0] = l.row(3)[6 * s + 2] = -kInf;   // two -inf: the first
    const std::vector<int32_t> want = {3 * s + 17, 6 * s, kVocab - 1, 0, -1};  // row 4: all NaN
    ASSERT_EQ(CpuIds(l, {}), want);
    DeviceRows dev(l, {});
    EXPECT_EQ(dev.Ids(split), want) << "slice " << s;
    EXPECT_EQ(dev.Ids(std::nullopt), want) << "chosen split";
  }
}

TEST(CudaArgmaxTest, NothingLeftGivesMinusOne) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  {  // numbers only at suppressed ids (the first and last id of every block): -1
    constexpr int kVocab = 262144;
    for (const ArgmaxSplit split : BoundarySplits(kVocab)) {
      const int s = split.slice;
      std::vector<int32_t> sup;
      for (int b = 0; b < split.blocks_per_row; ++b) {
        sup.push_back(b * s);
        sup.push_back(std::min(kVocab, (b + 1) * s) - 1);
      }
      Logits l(3, kVocab, kVocab, 0, kNan);
      for (int r = 0; r < 2; ++r) {
        for (int32_t id : sup) l.row(r)[id] = r == 0 ? 1.f : -kInf;
      }
      const std::vector<int32_t> want = {-1, -1, -1};  // row 2 all NaN
      ASSERT_EQ(CpuIds(l, sup), want);
      DeviceRows dev(l, sup);
      EXPECT_EQ(dev.Ids(split), want) << "slice " << s;
      EXPECT_EQ(dev.Ids(std::nullopt), want) << "chosen split";
    }
  }
  {  // every id suppressed
    constexpr int kVocab = 1000;
    std::vector<int32_t> sup(kVocab);
    for (int i = 0; i < kVocab; ++i) sup[static_cast<size_t>(i)] = i;
    Logits l(3, kVocab, kVocab, 0, 0.f);
    l.Random(rng);
    DeviceRows dev(l, sup);
    for (int want_blocks : {1, 2, 128}) {
      EXPECT_EQ(dev.Ids(SplitArgmaxRow(kVocab, want_blocks)), std::vector<int32_t>(3, -1)) << want_blocks;
    }
    EXPECT_EQ(dev.Ids(std::nullopt), std::vector<int32_t>(3, -1)) << "one block per row";
  }
}

// Suppressed maxima on both sides of block boundaries: the second pass of a block must see exactly its own part
// of the suppressed list.
TEST(CudaArgmaxTest, SuppressedIdsAtBlockBoundaries) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(14);
  constexpr int kVocab = 262144, v1 = kVocab - 1;
  for (const ArgmaxSplit split : BoundarySplits(kVocab)) {
    const int s = split.slice;
    std::vector<int32_t> sup = {0};  // 0, then the last and the first id around every boundary, the last id
    for (int b = 1; b < split.blocks_per_row; ++b) sup.insert(sup.end(), {b * s - 1, b * s});
    sup.push_back(v1);
    Logits l(6, kVocab, kVocab, 0, 0.f);
    l.Random(rng);
    l.row(0)[s] = 99.f, l.row(0)[s + 1] = 98.f;
    l.row(1)[2 * s - 1] = 99.f, l.row(1)[2 * s - 2] = 98.f;
    l.row(2)[s - 1] = l.row(2)[s] = l.row(2)[3 * s] = l.row(2)[3 * s + 5] = 99.f;
    for (int32_t id : sup) l.row(3)[id] = 99.f;
    l.row(3)[v1 - 1] = l.row(3)[5 * s + 1] = 50.f;
    l.row(4)[0] = 99.f, l.row(4)[1] = 98.f;
    l.row(5)[v1] = 99.f, l.row(5)[v1 - 1] = 98.f;
    const std::vector<int32_t> want = {s + 1, 2 * s - 2, 3 * s + 5, 5 * s + 1, 1, v1 - 1};
    ASSERT_EQ(CpuIds(l, sup), want);
    DeviceRows dev(l, sup);
    EXPECT_EQ(dev.Ids(split), want) << "slice " << s;
  }
}

// 1, 8 and 16 rows by LaunchArgmaxRows (the chosen split), contiguous, strided, and strided off 16-byte
// alignment: a tie of two unsuppressed ids in every row, above it a suppressed id in odd rows.
TEST(CudaArgmaxTest, SeveralRowsContiguousAndStrided) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(15);
  constexpr int kVocab = 262144;
  std::vector<int32_t> sup;
  for (int i = 0; i < 300; ++i) sup.push_back(static_cast<int32_t>(rng() % kVocab));
  std::sort(sup.begin(), sup.end());
  sup.erase(std::unique(sup.begin(), sup.end()), sup.end());
  const auto is_sup = [&](int id) { return std::binary_search(sup.begin(), sup.end(), id); };
  for (int rows : {1, 8, 16}) {
    ASSERT_GT(ChooseArgmaxSplit(rows, kVocab, NumSms()).blocks_per_row, 1) << "the many-blocks kernel";
    for (const auto& [stride, offset] : {std::pair{int64_t{kVocab}, 0}, std::pair{int64_t{kVocab + 4}, 0},
                                        std::pair{int64_t{kVocab + 5}, 1}}) {
      Logits l(rows, kVocab, stride, offset, 0.f);
      l.Random(rng);
      std::vector<int32_t> want;
      for (int r = 0; r < rows; ++r) {
        int a = static_cast<int>(rng() % kVocab), b = static_cast<int>(rng() % kVocab);
        while (is_sup(a)) a = (a + 1) % kVocab;
        while (is_sup(b) || b == a) b = (b + 1) % kVocab;
        l.row(r)[a] = l.row(r)[b] = 40.f + static_cast<float>(r);
        if (r % 2 == 1) l.row(r)[sup[static_cast<size_t>(r) % sup.size()]] = 90.f;
        want.push_back(std::min(a, b));
      }
      ASSERT_EQ(CpuIds(l, sup), want);
      DeviceRows dev(l, sup);
      EXPECT_EQ(dev.Ids(std::nullopt), want) << rows << " rows, stride " << stride << ", offset " << offset;
    }
  }
}

// More rows than the many-blocks kernel takes: one block per row, the same answers.
TEST(CudaArgmaxTest, ManyRowsTakeOneBlockPerRow) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(16);
  constexpr int kRows = kMaxArgmaxSplitRows + 16, kVocab = 5003;
  const std::vector<int32_t> sup = {3, 77, 1000, 4000};
  Logits l(kRows, kVocab, kVocab, 0, 0.f);
  const std::vector<int32_t> planted =
      avserve::engine::testing::PlantGreedyCases(l.row(0), kRows, kVocab, kVocab, sup, rng);
  const std::vector<int32_t> want = CpuIds(l, sup);
  ASSERT_EQ(std::vector<int32_t>(want.begin() + 1, want.begin() + 12), planted);
  DeviceRows dev(l, sup);
  EXPECT_EQ(dev.Ids(std::nullopt), want);
}

// The kernel again and again on one stream (the last block of each row must have reset its counter, or no block
// would write the next launch's ids), with other splits and row counts in between, and on a second stream.
TEST(CudaArgmaxTest, RepeatedLaunchesResetTheCounters) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  constexpr int kRows = 8, kVocab = 262144;
  Logits l(kRows, kVocab, kVocab, 0, 0.f);
  l.Random(rng);
  for (int r = 0; r < kRows; ++r) l.row(r)[(r * 37717) % kVocab] = 77.f;
  const std::vector<int32_t> sup = {5, 9, 40000};
  const std::vector<int32_t> want = CpuIds(l, sup);
  DeviceRows dev(l, sup);
  const ArgmaxSplit chosen = ChooseArgmaxSplit(kRows, kVocab, NumSms());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(dev.Ids(chosen), want) << "launch " << i;
  EXPECT_EQ(dev.Ids(SplitArgmaxRow(kVocab, 7)), want);
  EXPECT_EQ(dev.Ids(SplitArgmaxRow(kVocab, 7), nullptr, 3), std::vector<int32_t>(want.begin(), want.begin() + 3));
  EXPECT_EQ(dev.Ids(SplitArgmaxRow(kVocab, 128)), want);
  EXPECT_EQ(dev.Ids(std::nullopt), want);
  auto stream = CudaStream::Create();
  ASSERT_TRUE(stream.ok());
  for (int i = 0; i < 2; ++i) EXPECT_EQ(dev.Ids(chosen, stream->get()), want) << "second stream, launch " << i;
  EXPECT_EQ(dev.Ids(chosen), want) << "back on the first stream";
}

// Random shapes, splits, alignments and suppress lists over a few values (ties everywhere, NaN, +-0, +-inf).
TEST(CudaArgmaxTest, RandomRowsFullOfTiesMatchTheCpuRule) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(18);
  const float values[] = {-kInf, -1.f, -0.f, 0.f, 1.f, 2.f, kNan, kInf};
  for (int trial = 0; trial < 150; ++trial) {
    const int vocab = 1 + static_cast<int>(rng() % (trial % 3 == 0 ? 40000 : 3000));
    const int rows = 1 + static_cast<int>(rng() % 16);
    Logits l(rows, vocab, vocab + static_cast<int64_t>(rng() % 6), static_cast<int>(rng() % 4), 0.f);
    const int mode = (trial / 3) % 3;  // few values; mostly NaN; many distinct values
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < vocab; ++i) {
        l.row(r)[i] = mode == 0 ? values[rng() % 8]
                    : mode == 1 ? (rng() % 5 != 0 ? kNan : values[rng() % 8])
                                : static_cast<float>(rng() % 1000);
      }
    }
    std::vector<int32_t> sup;
    const int density = static_cast<int>(rng() % 4);  // none, a third, one in fifty, all
    for (int i = 0; i < vocab; ++i) {
      if (density == 1 ? rng() % 3 == 0 : density == 2 ? rng() % 50 == 0 : density == 3) sup.push_back(i);
    }
    const ArgmaxSplit split = SplitArgmaxRow(vocab, 1 + static_cast<int>(rng() % 140));
    DeviceRows dev(l, sup);
    EXPECT_EQ(dev.Ids(split), CpuIds(l, sup)) << "trial " << trial << ": vocab " << vocab << ", " << rows
                                              << " rows, " << split.blocks_per_row << " blocks of " << split.slice;
  }
}

}  // namespace
}  // namespace avserve::engine::cuda
