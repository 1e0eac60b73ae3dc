#include "service/batch_journal.h"

#include <fstream>

#include "gtest/gtest.h"
#include "tests/service/test_util.h"

namespace avserve::service {
namespace {

BatchJobSpec Spec() {
  BatchJobSpec spec;
  spec.job_id = "job-1-abc";
  spec.media_ids = {"sha256:" + std::string(64, 'a'), "sha256:" + std::string(64, 'b')};
  spec.questions = {"q0", "q1"};
  spec.ingest.fps = 2.0;
  spec.sampling.max_new_tokens = 17;
  spec.label = "label";
  return spec;
}

BatchItemResult Result(int item, std::string answer) {
  BatchItemResult r;
  r.item_index = item;
  r.media_id = "m";
  r.answer = std::move(answer);
  r.completion_tokens = 3;
  return r;
}

TEST(BatchJournalTest, ReplaysSpecAndResultsAfterReopen) {
  testing::TempDir dir;
  {
    auto journal = BatchJournal::Create(dir.path(), Spec());
    ASSERT_TRUE(journal.ok()) << journal.status();
    ASSERT_TRUE((*journal)->AppendResult(Result(2, "two \"quoted\"\nline")).ok());
    ASSERT_TRUE((*journal)->AppendResult(Result(0, "zero")).ok());
  }
  BatchJobState state;
  auto journal = BatchJournal::Open(dir.path() + "/job-1-abc", &state);
  ASSERT_TRUE(journal.ok()) << journal.status();
  EXPECT_EQ(state.spec.total_items(), 4);
  EXPECT_EQ(state.spec.ingest.fps, 2.0);
  EXPECT_EQ(state.spec.sampling.max_new_tokens, 17);
  ASSERT_EQ(state.results.size(), 2u);
  EXPECT_EQ(state.results[0].item_index, 2);
  EXPECT_EQ(state.results[0].answer, "two \"quoted\"\nline");
  EXPECT_FALSE(state.cancelled);
}

TEST(BatchJournalTest, TornLastLineIsDroppedAndAppendingContinuesCleanly) {
  testing::TempDir dir;
  {
    auto journal = BatchJournal::Create(dir.path(), Spec());
    ASSERT_TRUE(journal.ok());
    ASSERT_TRUE((*journal)->AppendResult(Result(1, "one")).ok());
  }
  std::ofstream(dir.path() + "/job-1-abc/events.jsonl", std::ios::app) << "{\"type\":\"result\",\"item\":3,\"ans";
  BatchJobState state;
  auto journal = BatchJournal::Open(dir.path() + "/job-1-abc", &state);
  ASSERT_TRUE(journal.ok());
  ASSERT_EQ(state.results.size(), 1u);
  ASSERT_TRUE((*journal)->AppendResult(Result(3, "three")).ok());
  BatchJobState again;
  ASSERT_TRUE(BatchJournal::Open(dir.path() + "/job-1-abc", &again).ok());
  ASSERT_EQ(again.results.size(), 2u);
  EXPECT_EQ(again.results[1].answer, "three");
}

TEST(BatchJournalTest, CancelAndDuplicateAndOutOfRangeItems) {
  testing::TempDir dir;
  {
    auto journal = BatchJournal::Create(dir.path(), Spec());
    ASSERT_TRUE(journal.ok());
    ASSERT_TRUE((*journal)->AppendResult(Result(1, "first")).ok());
    ASSERT_TRUE((*journal)->AppendResult(Result(1, "duplicate")).ok());
    ASSERT_TRUE((*journal)->AppendResult(Result(99, "out of range")).ok());
    ASSERT_TRUE((*journal)->AppendCancelled().ok());
  }
  BatchJobState state;
  ASSERT_TRUE(BatchJournal::Open(dir.path() + "/job-1-abc", &state).ok());
  ASSERT_EQ(state.results.size(), 1u);
  EXPECT_EQ(state.results[0].answer, "first");
  EXPECT_TRUE(state.cancelled);
}

TEST(BatchJournalTest, MalformedJobFileIsDataLossNotACrash) {
  testing::TempDir dir;
  dir.Write("job-x/job.json", "{\"job_id\": 5, \"media_ids\": [1, 2], \"questions\": \"no\"}");
  BatchJobState state;
  EXPECT_FALSE(BatchJournal::Open(dir.path() + "/job-x", &state).ok());
  dir.Write("job-y/job.json", "not json");
  EXPECT_FALSE(BatchJournal::Open(dir.path() + "/job-y", &state).ok());
}

}  // namespace
}  // namespace avserve::service
