// Durable batch jobs (Note [Batch durability]). Per job, under <data_dir>/batches/<job_id>/:
//   job.json       the submitted spec, written atomically before Submit returns
//   events.jsonl   one line per finished item (and one for a cancel), appended and fsynced before the
//                  result is reported to anyone
// A line cut short by a crash is ignored (and truncated away) on load, so `kill -9` loses nothing that
// was reported and the job resumes with the items that have no line yet.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "service/inference_backend.h"

namespace avserve::service {

struct BatchItemResult {
  int item_index = 0;
  std::string media_id;
  int question_index = 0;
  std::string answer;
  int status_code = 0;  // absl/gRPC canonical code
  std::string error_message;
  int64_t prefix_tokens = 0, suffix_tokens = 0, completion_tokens = 0;
  bool prefix_cache_hit = false;
};

struct BatchJobSpec {
  std::string job_id;
  std::vector<std::string> media_ids;
  std::vector<std::string> questions;
  IngestSpec ingest;
  SamplingSpec sampling;
  std::string label;
  int64_t created_unix_ms = 0;
  int total_items() const { return static_cast<int>(media_ids.size() * questions.size()); }
};

// What a job's directory holds after replaying its journal.
struct BatchJobState {
  BatchJobSpec spec;
  std::vector<BatchItemResult> results;  // in the order they finished
  bool cancelled = false;
};

// Appends to one job's events.jsonl. Not thread-safe; the BatchManager serializes access.
class BatchJournal {
 public:
  // Creates the job directory and job.json (durably).
  static absl::StatusOr<std::unique_ptr<BatchJournal>> Create(const std::string& batches_dir,
                                                              const BatchJobSpec& spec);
  // Replays an existing job directory; truncates a torn final line.
  static absl::StatusOr<std::unique_ptr<BatchJournal>> Open(const std::string& job_dir, BatchJobState* state);
  ~BatchJournal();

  absl::Status AppendResult(const BatchItemResult& result);
  absl::Status AppendCancelled();

 private:
  explicit BatchJournal(int fd) : fd_(fd) {}
  absl::Status AppendLine(const std::string& line);
  int fd_;
};

std::string NewJobId();

}  // namespace avserve::service
