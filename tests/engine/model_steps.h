// Steps of the model for tests that drive Gemma4Model directly (no Engine).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/base/status_macros.h"
#include "engine/model/gemma4.h"
#include "engine/model/kv_cache.h"

namespace avserve::engine::testing {

// Text positions [pos0, pos0 + n) of `ids` as one step over `cache`; appends the step's logits (its last row) to
// `out`.
inline absl::Status ForwardText(Gemma4Model& model, KvCache& cache, const std::vector<int32_t>& ids, int64_t pos0,
                                int64_t n, std::vector<float>& out) {
  const std::vector<TokenType> types(static_cast<size_t>(n), TokenType::kText);
  ForwardInput in;
  in.ids = ids.data() + pos0;
  in.types = types.data();
  in.n = n;
  in.pos0 = pos0;
  std::vector<float> logits;
  RETURN_IF_ERROR(model.Forward(in, cache, logits));
  out.insert(out.end(), logits.begin(), logits.end());
  return absl::OkStatus();
}

}  // namespace avserve::engine::testing
