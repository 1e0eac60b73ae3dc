#include "service/model_backend.h"

#include <algorithm>
#include <chrono>
#include <functional>

#include "absl/strings/str_cat.h"
#include "engine/api.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"
#include "ingest/media_reader.h"
#include "pipeline/ingest_graph.h"
#include "pipeline/interleaver.h"
#include "pipeline/prompt.h"
#include "pipeline/token_count.h"
#include "service/log.h"
#include "service/prefix_cache.h"
#include "service/question_group.h"

namespace avserve::service {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

ingest::IngestOptions ToIngestOptions(const IngestSpec& spec) {
  ingest::IngestOptions o;
  o.fps = spec.fps;
  o.frame_budget = spec.frame_budget;
  o.use_audio = spec.use_audio;
  o.use_video = spec.use_video;
  return o;
}

// The reference layout samples transformers' 32 uniformly spaced frames instead of `fps`.
absl::StatusOr<ingest::IngestOptions> OptionsFor(const std::string& path, const IngestSpec& spec) {
  ingest::IngestOptions options = ToIngestOptions(spec);
  if (spec.layout != PromptLayout::kReference) return options;
  ASSIGN_OR_RETURN(ingest::MediaProbe probe, ingest::ProbeFile(path));
  return pipeline::ReferenceIngestOptions(probe, options);
}

pipeline::Layout ToLayout(PromptLayout layout) {
  return layout == PromptLayout::kReference ? pipeline::Layout::kReference : pipeline::Layout::kInterleaved;
}

// Room every sequence keeps after the media for a question and its answer.
constexpr int64_t kQuestionReserveTokens = 2048;
// Questions of one request decoded in lockstep, one batched model step per token.
constexpr size_t kDecodeTogether = 8;

class ModelBackend final : public InferenceBackend {
 public:
  ModelBackend(std::unique_ptr<engine::Engine> engine, std::unique_ptr<engine::Tokenizer> tokenizer,
               std::string model_key, int64_t cache_bytes)
      : engine_(std::move(engine)), tokenizer_(std::move(tokenizer)), model_key_(std::move(model_key)),
        cache_(cache_bytes) {
    channel_end_id_ = tokenizer_->TokenToId("<channel|>").value_or(-1);
  }

  std::string name() const override { return absl::StrCat("model:", engine_->backend_name()); }
  int64_t max_context_tokens() const override { return engine_->info().max_context; }

  absl::StatusOr<int64_t> CountMediaTokens(const MediaRef& media, const IngestSpec& ingest) override {
    ASSIGN_OR_RETURN(ingest::MediaProbe probe, ingest::ProbeFile(media.file_path));
    pipeline::StreamOptions stream;
    stream.layout = ToLayout(ingest.layout);
    ASSIGN_OR_RETURN(ingest::IngestOptions options, OptionsFor(media.file_path, ingest));
    return CountWindowTokens(probe, options, ingest, stream);
  }

  absl::StatusOr<AskOutcome> Ask(const AskSpec& spec, AskObserver& observer, const std::atomic<bool>& cancel) override;
  absl::StatusOr<QuestionOutcome> Complete(const std::string& prompt, const SamplingSpec& sampling,
                                           AskObserver& observer, const std::atomic<bool>& cancel) override;
  BackendStats stats() const override { return BackendStats{cache_.bytes(), cache_.entries(), 0}; }

 private:
  // The media prefix (chat prefix + media stream) prefilled into a new sequence.
  absl::StatusOr<std::unique_ptr<engine::Sequence>> PrefillMedia(const AskSpec& spec,
                                                                 const pipeline::MediaPromptOptions& prompt,
                                                                 AskObserver& observer,
                                                                 const std::atomic<bool>& cancel, int64_t* tokens,
                                                                 int64_t* ingest_ms);
  // Exact for the whole media; for a window [start_us, end_us) an upper bound (whole segments and
  // audio frames overlapping it), which is what capacity checks and chunk planning need.
  absl::StatusOr<int64_t> CountWindowTokens(const ingest::MediaProbe& probe, const ingest::IngestOptions& options,
                                            const IngestSpec& spec, const pipeline::StreamOptions& stream) const;
  absl::Status AnswerTogether(const AskSpec& spec, const pipeline::MediaPromptOptions& prompt,
                              const ForkFn& fork_prefix, AskObserver& observer, const std::atomic<bool>& cancel,
                              AskOutcome& outcome);
  // Decodes the answers of seqs (questions first_question, first_question + 1, ...) together,
  // streaming each one's text to the observer as it comes.
  absl::StatusOr<std::vector<QuestionOutcome>> Generate(const std::vector<engine::Sequence*>& seqs, int first_question,
                                                        const SamplingSpec& sampling, bool thinking,
                                                        AskObserver& observer, const std::atomic<bool>& cancel);

  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<engine::Tokenizer> tokenizer_;
  std::string model_key_;
  PrefixCache cache_;
  int32_t channel_end_id_ = -1;
};

absl::StatusOr<int64_t> ModelBackend::CountWindowTokens(const ingest::MediaProbe& probe,
                                                        const ingest::IngestOptions& options, const IngestSpec& spec,
                                                        const pipeline::StreamOptions& stream) const {
  if ((spec.start_us == 0 && spec.end_us == 0) || probe.duration_us <= 0) {
    return pipeline::CountTokens(probe, options, stream, engine_->info(), *tokenizer_);
  }
  ASSIGN_OR_RETURN(pipeline::StreamPlan plan, pipeline::PlanStream(probe, options));
  const int64_t end = spec.end_us > 0 ? std::min(spec.end_us, probe.duration_us) : probe.duration_us;
  const int64_t span_us = std::max<int64_t>(0, end - spec.start_us);
  plan.num_segments = std::min<int64_t>(plan.num_segments, static_cast<int64_t>(span_us * options.fps / 1e6) + 2);
  plan.num_audio_frames = std::min<int64_t>(plan.num_audio_frames, span_us / ingest::kAudioFrameUs + 2);
  return pipeline::CountPlanTokens(plan, options.fps, stream, *tokenizer_);
}

absl::StatusOr<std::unique_ptr<engine::Sequence>> ModelBackend::PrefillMedia(
    const AskSpec& spec, const pipeline::MediaPromptOptions& prompt, AskObserver& observer,
    const std::atomic<bool>& cancel, int64_t* tokens, int64_t* ingest_ms) {
  ASSIGN_OR_RETURN(std::vector<int32_t> prefix_ids, pipeline::MediaPrefixIds(*tokenizer_, prompt));
  ASSIGN_OR_RETURN(ingest::IngestOptions options, OptionsFor(spec.media.file_path, spec.ingest));
  // The reader seeks to the window instead of decoding from the start (Note [Window] in
  // ingest/media_reader.h) and yields only the segments overlapping it.
  options.window_start_us = spec.ingest.start_us;
  options.window_end_us = spec.ingest.end_us;
  ASSIGN_OR_RETURN(auto reader, ingest::MediaReader::OpenFile(spec.media.file_path, options));
  pipeline::GraphOptions graph;
  graph.stream.layout = prompt.layout;
  ASSIGN_OR_RETURN(int64_t media_tokens, CountWindowTokens(reader->probe(), reader->options(), spec.ingest,
                                                           graph.stream));
  const int64_t total = static_cast<int64_t>(prefix_ids.size()) + media_tokens;
  if (total + 16 > engine_->info().max_context) {
    return absl::OutOfRangeError(absl::StrCat("the media takes ", total, " tokens, more than the context of ",
                                              engine_->info().max_context,
                                              ": lower fps or frame_budget, pick a window, or use Summarize"));
  }
  ASSIGN_OR_RETURN(auto seq, engine_->NewSequence(
                                 std::min(engine_->info().max_context, total + kQuestionReserveTokens + 8192)));
  RETURN_IF_ERROR(seq->Prefill(engine::TextChunk(prefix_ids), &cancel));
  int64_t next_index = 0;
  // Runs on a TBB worker: the reader is used there only. The window's segments keep their media
  // indices; they are renumbered from 0 (Note [Chunk timestamps] in summarizer.h).
  pipeline::SegmentSource source = [&]() -> absl::StatusOr<std::optional<ingest::Segment>> {
    absl::StatusOr<std::optional<ingest::Segment>> next = reader->Next();
    if (next.ok() && next->has_value()) (*next)->index = next_index++;
    return next;
  };
  graph.media_us_total = spec.media.duration_us;
  graph.tokens_total = media_tokens;
  int64_t done = static_cast<int64_t>(prefix_ids.size());
  auto start = Clock::now();
  // Prefill overlaps ingest: chunks arrive on this (the engine) thread while TBB workers decode.
  RETURN_IF_ERROR(pipeline::RunIngestGraph(
      source, engine_->info(), *tokenizer_, graph,
      [&](engine::PromptChunk&& chunk, const pipeline::IngestProgress& progress) -> absl::Status {
        RETURN_IF_ERROR(seq->Prefill(chunk, &cancel));
        done += static_cast<int64_t>(chunk.size());
        observer.OnIngestProgress(progress.media_us_ingested, spec.media.duration_us);
        observer.OnPrefillProgress(-1, done, std::max(done, total));
        return absl::OkStatus();
      },
      &cancel));
  observer.OnPrefillProgress(-1, done, done);
  *tokens = done;
  *ingest_ms = MsSince(start);
  return seq;
}

absl::StatusOr<std::vector<QuestionOutcome>> ModelBackend::Generate(const std::vector<engine::Sequence*>& seqs,
                                                                    int first_question, const SamplingSpec& sampling,
                                                                    bool thinking, AskObserver& observer,
                                                                    const std::atomic<bool>& cancel) {
  engine::SamplingOptions options;
  options.temperature = sampling.temperature;
  options.top_k = sampling.top_k;
  options.top_p = sampling.top_p;
  options.seed = sampling.seed;  // question i of the group samples with seed + i
  options.max_new_tokens = sampling.max_new_tokens;
  struct Answer {
    engine::StreamingDecoder decoder;
    bool in_thought;
    QuestionOutcome out;
  };
  std::vector<Answer> answers;
  for (size_t i = 0; i < seqs.size(); ++i) {
    // With thinking on, the thought (up to "<channel|>") is generated but not streamed or returned.
    answers.push_back({engine::StreamingDecoder(*tokenizer_), thinking && channel_end_id_ >= 0, {}});
  }
  RETURN_IF_ERROR(engine_->GenerateBatch(
      seqs, options,
      [&](size_t i, int32_t id) {
        Answer& a = answers[i];
        ++a.out.completion_tokens;
        if (a.in_thought) {
          a.in_thought = id != channel_end_id_;
          return true;
        }
        std::string text = a.decoder.Add(id);
        if (!text.empty()) {
          observer.OnAnswerDelta(first_question + static_cast<int>(i), text);
          a.out.answer += text;
        }
        return true;
      },
      &cancel));
  if (cancel.load()) return absl::CancelledError("cancelled during decode");
  std::vector<QuestionOutcome> outcomes;
  for (size_t i = 0; i < answers.size(); ++i) {
    QuestionOutcome& out = answers[i].out;
    std::string tail = answers[i].decoder.Flush();
    if (!tail.empty()) {
      observer.OnAnswerDelta(first_question + static_cast<int>(i), tail);
      out.answer += tail;
    }
    out.finish_reason = out.completion_tokens >= sampling.max_new_tokens ? "length" : "stop";
    outcomes.push_back(std::move(out));
  }
  return outcomes;
}

absl::StatusOr<AskOutcome> ModelBackend::Ask(const AskSpec& spec, AskObserver& observer,
                                             const std::atomic<bool>& cancel) {
  pipeline::MediaPromptOptions prompt;
  prompt.enable_thinking = spec.thinking;
  prompt.layout = ToLayout(spec.ingest.layout);
  prompt.reference_audio = spec.media.has_audio && spec.ingest.use_audio;
  const std::string key =
      PrefixCache::Key(model_key_, spec.media.media_id, absl::StrCat(spec.ingest.CacheKey(), ";think=", spec.thinking));
  AskOutcome outcome;
  auto start = Clock::now();
  std::unique_ptr<engine::Sequence> uncached;  // the prefix when the cache could not keep it
  if (cache_.CachedLength(key) >= 0) {
    outcome.prefix_cache_hit = true;
    outcome.prefix_tokens = cache_.CachedLength(key);
  } else {
    ASSIGN_OR_RETURN(uncached,
                     PrefillMedia(spec, prompt, observer, cancel, &outcome.prefix_tokens, &outcome.ingest_ms));
    auto keep = uncached->Fork();
    if (keep.ok()) cache_.Insert(key, *std::move(keep));
  }
  outcome.prefill_ms = MsSince(start);
  const auto fork_prefix = [&]() { return cache_.CachedLength(key) >= 0 ? cache_.ForkCached(key) : uncached->Fork(); };
  while (outcome.questions.size() < spec.questions.size()) {
    RETURN_IF_ERROR(AnswerTogether(spec, prompt, fork_prefix, observer, cancel, outcome));
  }
  return outcome;
}

// Answers the next questions of `spec` (from outcome.questions.size()) together: up to kDecodeTogether forks of the
// prefix, each prefilled with its question (FormQuestionGroup: as many as memory holds), then decoded in lockstep
// (each step reads the weights once for all of them). Each fork shares the prefix's full-attention K/V and holds
// sliding rings sized for its question (engine Note [Fork rings]).
absl::Status ModelBackend::AnswerTogether(const AskSpec& spec, const pipeline::MediaPromptOptions& prompt,
                                          const ForkFn& fork_prefix, AskObserver& observer,
                                          const std::atomic<bool>& cancel, AskOutcome& outcome) {
  const size_t first = outcome.questions.size();
  const auto suffix = [&](size_t q) { return pipeline::QuestionSuffixIds(*tokenizer_, prompt, spec.questions[q]); };
  const auto prefilled = [&](size_t q, int64_t tokens) {
    observer.OnPrefillProgress(static_cast<int>(q), tokens, tokens);
  };
  auto t = Clock::now();
  ASSIGN_OR_RETURN(QuestionGroup group, FormQuestionGroup(first, spec.questions.size(), kDecodeTogether, fork_prefix,
                                                          suffix, cancel, prefilled));
  outcome.prefill_ms += MsSince(t);
  std::vector<engine::Sequence*> seqs;
  for (auto& f : group.forks) seqs.push_back(f.get());
  t = Clock::now();
  ASSIGN_OR_RETURN(std::vector<QuestionOutcome> answers,
                   Generate(seqs, static_cast<int>(first), spec.sampling, spec.thinking, observer, cancel));
  outcome.decode_ms += MsSince(t);
  for (size_t i = 0; i < answers.size(); ++i) {
    answers[i].prompt_tokens = group.suffix_tokens[i];
    outcome.questions.push_back(std::move(answers[i]));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuestionOutcome> ModelBackend::Complete(const std::string& prompt, const SamplingSpec& sampling,
                                                       AskObserver& observer, const std::atomic<bool>& cancel) {
  pipeline::ChatOptions chat;
  ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                   pipeline::TextPromptIds(*tokenizer_, {pipeline::ChatMessage::Text("user", prompt)}, chat));
  const int64_t need = static_cast<int64_t>(ids.size()) + sampling.max_new_tokens + 1;
  if (need > engine_->info().max_context) {
    return absl::OutOfRangeError("the summary notes do not fit the context; use a longer chunk_us");
  }
  ASSIGN_OR_RETURN(auto seq, engine_->NewSequence(need));
  RETURN_IF_ERROR(seq->Prefill(engine::TextChunk(ids), &cancel));
  ASSIGN_OR_RETURN(std::vector<QuestionOutcome> out, Generate({seq.get()}, 0, sampling, false, observer, cancel));
  out[0].prompt_tokens = static_cast<int64_t>(ids.size());
  return std::move(out[0]);
}

absl::StatusOr<engine::BackendKind> PickBackend(const std::string& name) {
  if (name == "cpu") return engine::BackendKind::kCpu;
  if (name == "cuda") return engine::BackendKind::kCuda;
  if (name == "auto") return engine::BackendKind::kCuda;  // falls back to CPU below when CUDA fails
  return absl::InvalidArgumentError(absl::StrCat("--backend must be auto, cpu or cuda; got ", name));
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceBackend>> CreateModelBackend(const ServerConfig& config) {
  engine::EngineOptions options;
  options.checkpoint_dir = config.checkpoint_dir;
  ASSIGN_OR_RETURN(options.backend, PickBackend(config.backend));
  options.num_threads = config.cpu_threads;
  options.max_context = config.max_context_tokens;
  // A log line per tenth of the weights: a 24 GB checkpoint takes seconds to minutes to read and upload.
  options.on_load_progress = [tenth = int64_t{-1}](int64_t done, int64_t total) mutable {
    const int64_t now = total > 0 ? done * 10 / total : 10;
    if (now == tenth) return;
    tenth = now;
    LogEvent(LogLevel::kInfo, "loading_weights",
             {{"percent", now * 10}, {"bytes_done", done}, {"bytes_total", total}});
  };
  // The warm-up's default: one prefill step on a GPU; none on the CPU, which has no one-time costs worth it.
  const auto warmup_for = [&](engine::BackendKind kind) {
    if (config.warmup_tokens >= 0) return config.warmup_tokens;
    return kind == engine::BackendKind::kCuda ? options.prefill_chunk_tokens : 0;
  };
  options.warmup_tokens = warmup_for(options.backend);
  auto engine = engine::Engine::Load(options);
  if (!engine.ok() && config.backend == "auto") {
    LogEvent(LogLevel::kInfo, "cuda_unavailable", {{"reason", engine.status().ToString()}});
    options.backend = engine::BackendKind::kCpu;
    options.warmup_tokens = warmup_for(options.backend);
    engine = engine::Engine::Load(options);
  }
  if (!engine.ok()) return engine.status();
  if ((*engine)->warmup_seconds() > 0) {
    LogEvent(LogLevel::kInfo, "warmed_up",
             {{"tokens", options.warmup_tokens}, {"seconds", (*engine)->warmup_seconds()}});
  }
  ASSIGN_OR_RETURN(auto tokenizer, engine::Tokenizer::LoadFromFile(config.checkpoint_dir + "/tokenizer.json"));
  std::string model_key = absl::StrCat((*engine)->info().model_type, "@", config.checkpoint_dir);
  return std::unique_ptr<InferenceBackend>(
      new ModelBackend(*std::move(engine), std::move(tokenizer), model_key, config.prefix_cache_bytes));
}

}  // namespace avserve::service
