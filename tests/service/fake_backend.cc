#include "tests/service/fake_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"

namespace avserve::service::testing {
namespace {

// Engine state stand-in: `length` positions, each holding bytes_per_token bytes of real memory.
class FakeSequence final : public engine::Sequence {
 public:
  explicit FakeSequence(int64_t bytes_per_token) : bytes_per_token_(bytes_per_token) {}
  int64_t length() const override { return length_; }
  size_t memory_bytes() const override { return kv_.size(); }
  absl::Status Prefill(const engine::PromptChunk& chunk, const std::atomic<bool>* cancel) override {
    if (cancel != nullptr && cancel->load()) return absl::CancelledError("cancelled during prefill");
    length_ += static_cast<int64_t>(chunk.size());
    kv_.resize(static_cast<size_t>(length_ * bytes_per_token_), 1);  // touched: resident
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<engine::Sequence>> Fork() const override {
    auto copy = std::make_unique<FakeSequence>(bytes_per_token_);
    copy->length_ = length_;
    copy->kv_ = kv_;
    return copy;
  }
  void Grow(int64_t tokens) {
    engine::PromptChunk chunk;
    chunk.ids.assign(static_cast<size_t>(tokens), 0);
    Prefill(chunk, nullptr).IgnoreError();
  }

 private:
  int64_t bytes_per_token_;
  int64_t length_ = 0;
  std::vector<char> kv_;
};

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::strtoll(v, nullptr, 10);
}

void SleepUs(int64_t us) {
  if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

int64_t MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

constexpr int64_t kChunkTokens = 256;

}  // namespace

FakeBackendOptions FakeBackendOptions::FromEnvironment() {
  FakeBackendOptions o;
  o.prefill_us_per_token = EnvInt("AVSERVE_FAKE_PREFILL_US_PER_TOKEN", o.prefill_us_per_token);
  o.decode_ms_per_token = EnvInt("AVSERVE_FAKE_DECODE_MS_PER_TOKEN", o.decode_ms_per_token);
  o.bytes_per_token = EnvInt("AVSERVE_FAKE_BYTES_PER_TOKEN", o.bytes_per_token);
  o.max_context = EnvInt("AVSERVE_FAKE_MAX_CONTEXT", o.max_context);
  return o;
}

FakeBackend::FakeBackend(FakeBackendOptions options) : options_(options), cache_(options.prefix_cache_bytes) {}

absl::StatusOr<int64_t> FakeBackend::CountMediaTokens(const MediaRef& media, const IngestSpec& ingest) {
  int64_t end = ingest.end_us > 0 ? std::min(ingest.end_us, media.duration_us) : media.duration_us;
  int64_t span_us = std::max<int64_t>(0, end - ingest.start_us);
  int64_t segments = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(span_us * ingest.fps / 1e6)));
  int64_t per_segment = 4;  // "MM:SS " and separators
  if (ingest.use_video && media.has_video) per_segment += ingest.frame_budget + 2;
  if (ingest.use_audio && media.has_audio) per_segment += static_cast<int64_t>(25 / ingest.fps) + 2;
  return segments * per_segment;
}

absl::StatusOr<AskOutcome> FakeBackend::Ask(const AskSpec& spec, AskObserver& observer,
                                            const std::atomic<bool>& cancel) {
  ++asks_;
  AskOutcome outcome;
  ASSIGN_OR_RETURN(outcome.prefix_tokens, CountMediaTokens(spec.media, spec.ingest));
  const std::string key = PrefixCache::Key(name(), spec.media.media_id, spec.ingest.CacheKey());
  std::unique_ptr<engine::Sequence> prefix;
  auto cached = cache_.ForkCached(key);
  auto start = std::chrono::steady_clock::now();
  if (cached.ok()) {
    outcome.prefix_cache_hit = true;
  } else {
    auto seq = std::make_unique<FakeSequence>(options_.bytes_per_token);
    for (int64_t done = 0; done < outcome.prefix_tokens;) {
      if (cancel.load()) return absl::CancelledError("cancelled during prefill");
      int64_t n = std::min(kChunkTokens, outcome.prefix_tokens - done);
      SleepUs(n * options_.prefill_us_per_token);
      seq->Grow(n);
      done += n;
      observer.OnIngestProgress(spec.media.duration_us * done / outcome.prefix_tokens, spec.media.duration_us);
      observer.OnPrefillProgress(-1, done, outcome.prefix_tokens);
    }
    auto keep = seq->Fork();
    if (keep.ok()) cache_.Insert(key, *std::move(keep));
  }
  outcome.prefill_ms = MsSince(start);
  for (size_t q = 0; q < spec.questions.size(); ++q) {
    std::string text = absl::StrCat("Answer ", q, ": you asked \"", spec.questions[q], "\" about media ",
                                    spec.media.media_id.substr(7, 8), " from ", spec.ingest.start_us / 1000000,
                                    " s.");
    ASSIGN_OR_RETURN(QuestionOutcome answer, Answer(static_cast<int>(q), text, spec.sampling, observer, cancel));
    outcome.questions.push_back(std::move(answer));
  }
  outcome.decode_ms = MsSince(start) - outcome.prefill_ms;
  return outcome;
}

absl::StatusOr<QuestionOutcome> FakeBackend::Answer(int question_index, const std::string& text,
                                                    const SamplingSpec& sampling, AskObserver& observer,
                                                    const std::atomic<bool>& cancel) {
  QuestionOutcome out;
  out.prompt_tokens = static_cast<int64_t>(std::count(text.begin(), text.end(), ' ')) + 8;
  out.finish_reason = "stop";
  std::vector<std::string> words = absl::StrSplit(text, ' ');
  for (size_t i = 0; i < words.size(); ++i) {
    if (cancel.load()) return absl::CancelledError("cancelled during decode");
    if (out.completion_tokens >= sampling.max_new_tokens) {
      out.finish_reason = "length";
      break;
    }
    SleepUs(options_.decode_ms_per_token * 1000);
    std::string piece = i == 0 ? words[i] : " " + words[i];
    observer.OnAnswerDelta(question_index, piece);
    out.answer += piece;
    ++out.completion_tokens;
  }
  return out;
}

absl::StatusOr<QuestionOutcome> FakeBackend::Complete(const std::string& prompt, const SamplingSpec& sampling,
                                                      AskObserver& observer, const std::atomic<bool>& cancel) {
  int64_t parts = static_cast<int64_t>(std::count(prompt.begin(), prompt.end(), '['));
  return Answer(0, absl::StrCat("Summary of ", parts, " parts: 00:00 it begins."), sampling, observer, cancel);
}

BackendStats FakeBackend::stats() const {
  return BackendStats{cache_.bytes(), cache_.entries(), 0};
}

}  // namespace avserve::service::testing
