// Decode steps recorded and replayed as CUDA graphs (Note [Decode graphs] in engine/backend/cuda/cuda_backend.cc)
// against the same steps launched kernel by kernel, on the tiny checkpoint.
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/base/status_macros.h"
#include "engine/model/config.h"
#include "engine/model/gemma4.h"
#include "engine/model/kv_cache.h"
#include "engine/model/weights.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/test_util.h"
#include "tests/engine/golden.h"
#include "tests/engine/model_steps.h"

namespace avserve::engine {
namespace {

using cuda::testing::HaveDevice;

struct DecodeRun {
  std::vector<float> logits;  // every step's, in order
  cuda::CudaBackend::GraphStats stats;
  int decode_steps = 0;
};

// A 20-token prefill, 40 single-sequence decode steps (the sliding layers' 23-row rings wrap, the full layers'
// split counts grow), then 12 steps of three sequences together: the first and two forks of it that share its
// first 40 positions, each at its own position.
absl::StatusOr<DecodeRun> Decode(bool graphs) {
  ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBackend> backend, cuda::CudaBackend::Create(0));
  backend->set_graphs(graphs);
  const std::string dir = testing::TinyBf16();
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(dir, config, *backend));
  Gemma4Model model(*backend, config, std::move(weights), /*vision_blocks_all_layers=*/false);
  ASSIGN_OR_RETURN(KvCache a, KvCache::Create(*backend, model.config(), model.act_dtype(), 128, 16));
  std::mt19937 rng(11);
  std::vector<int32_t> ids(128);
  for (int32_t& id : ids) id = 3 + static_cast<int32_t>(rng() % 400);
  DecodeRun run;
  std::vector<float> logits;
  const auto forward = [&](int64_t pos0, int64_t n) {  // positions [pos0, pos0 + n) of cache a
    return testing::ForwardText(model, a, ids, pos0, n, run.logits);
  };
  RETURN_IF_ERROR(forward(0, 10));
  RETURN_IF_ERROR(forward(10, 10));
  int64_t pos = 20;
  for (; pos < 60; ++pos, ++run.decode_steps) RETURN_IF_ERROR(forward(pos, 1));
  ASSIGN_OR_RETURN(KvCache b, a.Copy(*backend, 40, 45));
  ASSIGN_OR_RETURN(KvCache c, a.Copy(*backend, 40, 52));
  for (int step = 0; step < 12; ++step, ++run.decode_steps) {
    const int64_t pa = pos + step, pb = 45 + step, pc = 52 + step;
    RETURN_IF_ERROR(model.DecodeBatch({ids[pa], ids[pb] ^ 1, ids[pc] ^ 2}, {pa, pb, pc}, {&a, &b, &c}, logits));
    run.logits.insert(run.logits.end(), logits.begin(), logits.end());
  }
  run.stats = backend->graph_stats();
  return run;
}

TEST(CudaGraphTest, DecodeStepsReplayedAsGraphsMatchPlainLaunches) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  absl::StatusOr<DecodeRun> plain = Decode(false), graphed = Decode(true);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(graphed.ok()) << graphed.status();
  ASSERT_EQ(graphed->logits.size(), plain->logits.size());
  size_t differ = 0;
  for (size_t i = 0; i < plain->logits.size(); ++i) {
    differ += std::memcmp(&graphed->logits[i], &plain->logits[i], sizeof(float)) != 0;
  }
  EXPECT_EQ(differ, 0u) << "of " << plain->logits.size() << " logits";
  EXPECT_EQ(plain->stats.launches, 0);
  // Four layers: layer 0 plain, then the runs 1 and 2-3, each step's recorded and replayed.
  EXPECT_EQ(graphed->stats.launches, 2 * graphed->decode_steps);
  EXPECT_EQ(graphed->stats.updates + graphed->stats.instantiations, graphed->stats.launches);
  // Most steps update the graph of their key in place; a new batch size or split count builds a new one.
  EXPECT_GT(graphed->stats.updates, graphed->stats.launches / 2);
  EXPECT_GE(graphed->stats.instantiations, 4);  // two keys for one sequence, two for three
}

}  // namespace
}  // namespace avserve::engine
