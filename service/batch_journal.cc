#include "service/batch_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "service/file_util.h"

namespace avserve::service {
namespace {

using nlohmann::json;

json SpecToJson(const BatchJobSpec& s) {
  return json{{"job_id", s.job_id},
              {"media_ids", s.media_ids},
              {"questions", s.questions},
              {"label", s.label},
              {"created_unix_ms", s.created_unix_ms},
              {"ingest", {{"fps", s.ingest.fps}, {"frame_budget", s.ingest.frame_budget},
                          {"layout", static_cast<int>(s.ingest.layout)}, {"use_audio", s.ingest.use_audio},
                          {"use_video", s.ingest.use_video}, {"start_us", s.ingest.start_us},
                          {"end_us", s.ingest.end_us}}},
              {"sampling", {{"temperature", s.sampling.temperature}, {"top_k", s.sampling.top_k},
                            {"top_p", s.sampling.top_p}, {"seed", s.sampling.seed},
                            {"max_new_tokens", s.sampling.max_new_tokens}}}};
}

absl::StatusOr<BatchJobSpec> SpecFromJsonUnchecked(const json& j) {
  if (!j.is_object() || !j.contains("job_id") || !j["media_ids"].is_array() || !j["questions"].is_array()) {
    return absl::DataLossError("job.json is malformed");
  }
  BatchJobSpec s;
  s.job_id = j.value("job_id", "");
  s.media_ids = j["media_ids"].get<std::vector<std::string>>();
  s.questions = j["questions"].get<std::vector<std::string>>();
  s.label = j.value("label", "");
  s.created_unix_ms = j.value("created_unix_ms", int64_t{0});
  const json& in = j.value("ingest", json::object());
  s.ingest.fps = in.value("fps", 1.0);
  s.ingest.frame_budget = in.value("frame_budget", 70);
  s.ingest.layout = static_cast<PromptLayout>(in.value("layout", 0));
  s.ingest.use_audio = in.value("use_audio", true);
  s.ingest.use_video = in.value("use_video", true);
  s.ingest.start_us = in.value("start_us", int64_t{0});
  s.ingest.end_us = in.value("end_us", int64_t{0});
  const json& sa = j.value("sampling", json::object());
  s.sampling.temperature = sa.value("temperature", 0.0f);
  s.sampling.top_k = sa.value("top_k", 0);
  s.sampling.top_p = sa.value("top_p", 1.0f);
  s.sampling.seed = sa.value("seed", uint64_t{0});
  s.sampling.max_new_tokens = sa.value("max_new_tokens", 256);
  return s;
}

// nlohmann throws on type mismatches; a damaged journal becomes DATA_LOSS instead (we throw nothing).
absl::StatusOr<BatchJobSpec> SpecFromJson(const json& j) {
  try {
    return SpecFromJsonUnchecked(j);
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("job.json is malformed: ", e.what()));
  }
}

json ResultToJson(const BatchItemResult& r) {
  return json{{"type", "result"},
              {"item", r.item_index},
              {"media_id", r.media_id},
              {"question", r.question_index},
              {"answer", r.answer},
              {"code", r.status_code},
              {"error", r.error_message},
              {"prefix_tokens", r.prefix_tokens},
              {"suffix_tokens", r.suffix_tokens},
              {"completion_tokens", r.completion_tokens},
              {"cache_hit", r.prefix_cache_hit}};
}

BatchItemResult ResultFromJson(const json& j) {
  BatchItemResult r;
  r.item_index = j.value("item", 0);
  r.media_id = j.value("media_id", "");
  r.question_index = j.value("question", 0);
  r.answer = j.value("answer", "");
  r.status_code = j.value("code", 0);
  r.error_message = j.value("error", "");
  r.prefix_tokens = j.value("prefix_tokens", int64_t{0});
  r.suffix_tokens = j.value("suffix_tokens", int64_t{0});
  r.completion_tokens = j.value("completion_tokens", int64_t{0});
  r.prefix_cache_hit = j.value("cache_hit", false);
  return r;
}

absl::StatusOr<int> OpenForAppend(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  return fd;
}

}  // namespace

std::string NewJobId() {
  std::random_device rd;
  return absl::StrFormat("job-%d-%08x", NowUnixMs(), rd());
}

absl::StatusOr<std::unique_ptr<BatchJournal>> BatchJournal::Create(const std::string& batches_dir,
                                                                   const BatchJobSpec& spec) {
  std::string dir = absl::StrCat(batches_dir, "/", spec.job_id);
  RETURN_IF_ERROR(MakeDirs(dir));
  ASSIGN_OR_RETURN(int fd, OpenForAppend(dir + "/events.jsonl"));
  auto journal = std::unique_ptr<BatchJournal>(new BatchJournal(fd));
  // job.json last: a directory without it is an aborted submit and is ignored on load.
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/job.json", SpecToJson(spec).dump()));
  RETURN_IF_ERROR(FsyncPath(batches_dir));
  return journal;
}

absl::StatusOr<std::unique_ptr<BatchJournal>> BatchJournal::Open(const std::string& job_dir, BatchJobState* state) {
  ASSIGN_OR_RETURN(std::string spec_text, ReadFile(job_dir + "/job.json"));
  json spec_json = json::parse(spec_text, nullptr, false);
  ASSIGN_OR_RETURN(state->spec, SpecFromJson(spec_json));
  std::string events_path = job_dir + "/events.jsonl";
  auto events = ReadFile(events_path, int64_t{1} << 30);
  std::string text = events.ok() ? *events : "";
  // Keep only complete lines; a torn tail (crash mid-append) is cut off before appending again.
  size_t good = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  std::vector<bool> seen(static_cast<size_t>(state->spec.total_items()), false);
  for (absl::string_view line : absl::StrSplit(absl::string_view(text).substr(0, good), '\n', absl::SkipEmpty())) {
    json j = json::parse(std::string(line), nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    if (j.value("type", "") == "cancelled") state->cancelled = true;
    if (j.value("type", "") != "result") continue;
    BatchItemResult r;
    try {
      r = ResultFromJson(j);
    } catch (const json::exception&) {
      continue;  // a damaged line is not a result; the item runs again
    }
    if (r.item_index < 0 || r.item_index >= state->spec.total_items() || seen[r.item_index]) continue;
    seen[r.item_index] = true;
    state->results.push_back(std::move(r));
  }
  if (good != text.size() && truncate(events_path.c_str(), static_cast<off_t>(good)) != 0) {
    return absl::InternalError(absl::StrCat("cannot truncate torn journal ", events_path));
  }
  ASSIGN_OR_RETURN(int fd, OpenForAppend(events_path));
  return std::unique_ptr<BatchJournal>(new BatchJournal(fd));
}

BatchJournal::~BatchJournal() { close(fd_); }

absl::Status BatchJournal::AppendLine(const std::string& line) {
  RETURN_IF_ERROR(WriteAll(fd_, line + "\n"));
  if (fdatasync(fd_) != 0) return absl::InternalError(absl::StrCat("fdatasync: ", std::strerror(errno)));
  return absl::OkStatus();
}

absl::Status BatchJournal::AppendResult(const BatchItemResult& result) {
  return AppendLine(ResultToJson(result).dump(-1, ' ', false, json::error_handler_t::replace));
}

absl::Status BatchJournal::AppendCancelled() {
  return AppendLine(json{{"type", "cancelled"}, {"unix_ms", NowUnixMs()}}.dump());
}

}  // namespace avserve::service
