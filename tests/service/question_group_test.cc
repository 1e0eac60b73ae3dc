// FormQuestionGroup (service/question_group.h): which questions of a request decode together when memory runs out
// at a fork or at a question's prefill. Sequences here are test doubles that record what they were fed and fail
// on command; the real engine's Fork and ring growth are tested in tests/engine.
#include "service/question_group.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace avserve::service {
namespace {

// A fork of the prefix: remembers the ids it was prefilled with; fails its prefill with `fail` if set.
class FakeSequence : public engine::Sequence {
 public:
  explicit FakeSequence(absl::Status fail) : fail_(std::move(fail)) {}
  int64_t length() const override { return static_cast<int64_t>(ids_.size()); }
  size_t memory_bytes() const override { return 0; }
  absl::Status Prefill(const engine::PromptChunk& chunk, const std::atomic<bool>* cancel) override {
    if (!fail_.ok()) return fail_;
    ids_.insert(ids_.end(), chunk.ids.begin(), chunk.ids.end());
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<engine::Sequence>> Fork() const override {
    return absl::UnimplementedError("not used");
  }
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  absl::Status fail_;
  std::vector<int32_t> ids_;
};

// Forks on demand: the n-th fork (0-based, counted over the whole request) fails with fork_fails[n], or its prefill
// with prefill_fails[n]. Question q's suffix is q + 1 copies of the id 100 + q.
struct Request {
  std::map<int, absl::Status> fork_fails, prefill_fails;
  int forks = 0;
  std::vector<std::pair<size_t, int64_t>> prefilled;
  std::atomic<bool> cancel{false};

  absl::StatusOr<QuestionGroup> Group(size_t first, size_t end, size_t max_size) {
    const ForkFn fork = [this]() -> absl::StatusOr<std::unique_ptr<engine::Sequence>> {
      const int n = forks++;
      if (fork_fails.count(n)) return fork_fails[n];
      return std::make_unique<FakeSequence>(prefill_fails.count(n) ? prefill_fails[n] : absl::OkStatus());
    };
    const SuffixFn suffix = [](size_t q) -> absl::StatusOr<std::vector<int32_t>> {
      return std::vector<int32_t>(q + 1, static_cast<int32_t>(100 + q));
    };
    return FormQuestionGroup(first, end, max_size, fork, suffix, cancel,
                             [this](size_t q, int64_t tokens) { prefilled.emplace_back(q, tokens); });
  }
};

// The questions a group holds, read back from what each fork was prefilled with.
std::vector<int> Questions(const QuestionGroup& group) {
  std::vector<int> out;
  for (const auto& f : group.forks) {
    const auto& ids = static_cast<const FakeSequence&>(*f).ids();
    EXPECT_FALSE(ids.empty());
    out.push_back(ids.empty() ? -1 : ids[0] - 100);
  }
  return out;
}

// The questions of the group that r forms from [first, end), at most max_size; none if it failed.
std::vector<int> GroupOf(Request& r, size_t first, size_t end, size_t max_size) {
  auto group = r.Group(first, end, max_size);
  EXPECT_TRUE(group.ok()) << group.status();
  return group.ok() ? Questions(*group) : std::vector<int>{};
}

TEST(QuestionGroupTest, HoldsUpToMaxSizeQuestionsEachPrefilledWithItsSuffix) {
  Request r;
  auto group = r.Group(0, 5, 3);
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ(Questions(*group), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(group->suffix_tokens, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(r.prefilled, (std::vector<std::pair<size_t, int64_t>>{{0, 1}, {1, 2}, {2, 3}}));
  EXPECT_EQ(GroupOf(r, 3, 5, 3), (std::vector<int>{3, 4}));
}

TEST(QuestionGroupTest, AQuestionWhosePrefillRunsOutOfMemoryStartsTheNextGroup) {
  Request r;
  r.prefill_fails[2] = absl::ResourceExhaustedError("no room to grow the fork's rings");
  EXPECT_EQ(GroupOf(r, 0, 4, 8), (std::vector<int>{0, 1}));
  EXPECT_EQ(r.prefilled.size(), 2u);  // no progress reported for the question that did not fit
  // The next group, once the first has answered and freed its forks.
  EXPECT_EQ(GroupOf(r, 2, 4, 8), (std::vector<int>{2, 3}));
}

TEST(QuestionGroupTest, AFailedForkEndsTheGroup) {
  Request r;
  r.fork_fails[1] = absl::ResourceExhaustedError("no room for another fork");
  EXPECT_EQ(GroupOf(r, 0, 3, 8), (std::vector<int>{0}));
}

TEST(QuestionGroupTest, TheFirstQuestionOfAGroupNotFittingIsAnError) {
  Request prefill;
  prefill.prefill_fails[0] = absl::ResourceExhaustedError("question too long");
  EXPECT_TRUE(absl::IsResourceExhausted(prefill.Group(0, 3, 8).status()));
  Request fork;
  fork.fork_fails[0] = absl::ResourceExhaustedError("no memory");
  EXPECT_TRUE(absl::IsResourceExhausted(fork.Group(0, 3, 8).status()));
}

TEST(QuestionGroupTest, OtherErrorsFailTheRequestEvenWithQuestionsInTheGroup) {
  Request r;
  r.prefill_fails[1] = absl::CancelledError("cancelled");
  EXPECT_TRUE(absl::IsCancelled(r.Group(0, 3, 8).status()));
  Request f;
  f.fork_fails[2] = absl::InternalError("device error");
  EXPECT_TRUE(absl::IsInternal(f.Group(0, 3, 8).status()));
}

}  // namespace
}  // namespace avserve::service
