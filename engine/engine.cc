// Engine and Sequence (engine/api.h) over Gemma4Model: input validation, chunked prefill that never
// splits a vision block, lazy feeding of generated tokens, forks, and the generation loop.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <span>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "engine/api.h"
#include "engine/backend/backend.h"
#include "engine/backend/op_timer.h"
#include "engine/base/status_macros.h"
#include "engine/model/config.h"
#include "engine/model/gemma4.h"
#include "engine/model/kv_cache.h"
#include "engine/model/sampler.h"
#include "engine/model/weights.h"

namespace avserve::engine {

namespace {
absl::StatusOr<std::unique_ptr<Backend>> CreateBareBackend(BackendKind kind, int num_threads) {
  switch (kind) {
    case BackendKind::kCpu: return CreateCpuBackend(num_threads);
    case BackendKind::kCuda:
#if defined(AVSERVE_WITH_CUDA)
      return CreateCudaBackend();
#else
      return absl::UnimplementedError("this build has no CUDA backend (AVSERVE_ENABLE_CUDA=OFF)");
#endif
  }
  return absl::InvalidArgumentError("unknown backend kind");
}
}  // namespace

// AVSERVE_OP_TIMES=1 wraps the backend in an op timer (engine/backend/op_timer.h) for profiling; =host times the
// host side of each call without synchronising.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, int num_threads) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBareBackend(kind, num_threads));
  const char* times = std::getenv("AVSERVE_OP_TIMES");
  if (times != nullptr && times[0] != '\0' && times[0] != '0') {
    return WrapWithOpTimer(std::move(backend), std::string_view(times) != "host");
  }
  return backend;
}

namespace {

bool IsVision(TokenType t) { return t == TokenType::kImage || t == TokenType::kVideo; }

// Note [Provisional tail]
// PyTorch's CPU attention (where transformers' goldens come from) takes a fast exp for a key when
// it lies in a whole 16-key vector of its 512-key block, counted over the keys of the forward pass
// (engine/backend/torch_softmax.h). One pass over a prompt of N tokens therefore rounds its last
// N mod 16 keys differently from every other key. The steps of one Prefill call tell the backend
// where the call ends (ForwardInput::pass_end), so they round as one pass over the call would.
// A call that ends at an unaligned M < N still rounds keys [16⌊M/16⌋, M) the last-key way, and
// every later position would inherit that; its logits are wanted now, so that cannot be avoided.
// Instead, on backends whose rounding depends on the pass's end, the tokens after the last
// aligned, block-safe position stay a provisional tail: computed (K/V, logits) like the rest, but
// recomputed in front of the next Prefill call. Positions before the tail are final: causal
// queries never see the tail's keys, and no vision block crosses into it. A generated token
// commits the tail (generation steps are passes of their own in transformers, too). The cost is at
// most one vision block plus 15 tokens per call.

// Tokens [from, to) of `c` as a chunk of their own (their vision and audio rows included).
PromptChunk Slice(const PromptChunk& c, int64_t from, int64_t to, int64_t patch_dim, int64_t frame_dim) {
  const auto media_rows = [&](int64_t end) {  // vision and audio rows of tokens [0, end)
    std::pair<int64_t, int64_t> rows{0, 0};
    for (int64_t i = 0; i < end; ++i) {
      rows.first += IsVision(c.types[i]);
      rows.second += c.types[i] == TokenType::kAudio;
    }
    return rows;
  };
  const auto [v0, a0] = media_rows(from);
  const auto [v1, a1] = media_rows(to);
  PromptChunk out;
  out.ids.assign(c.ids.begin() + from, c.ids.begin() + to);
  out.types.assign(c.types.begin() + from, c.types.begin() + to);
  out.vision_patches.assign(c.vision_patches.begin() + v0 * patch_dim, c.vision_patches.begin() + v1 * patch_dim);
  out.vision_positions.assign(c.vision_positions.begin() + 2 * v0, c.vision_positions.begin() + 2 * v1);
  out.audio_frames.assign(c.audio_frames.begin() + a0 * frame_dim, c.audio_frames.begin() + a1 * frame_dim);
  return out;
}

// `tail` followed by `c`.
PromptChunk Join(PromptChunk tail, const PromptChunk& c) {
  const auto append = [](auto& to, const auto& from) { to.insert(to.end(), from.begin(), from.end()); };
  append(tail.ids, c.ids);
  append(tail.types, c.types);
  append(tail.vision_patches, c.vision_patches);
  append(tail.vision_positions, c.vision_positions);
  append(tail.audio_frames, c.audio_frames);
  return tail;
}

class SequenceImpl final : public Sequence {
 public:
  SequenceImpl(Gemma4Model& model, KvCache cache, int chunk_tokens, int fork_chunk_tokens)
      : model_(model),
        cache_(std::move(cache)),
        chunk_tokens_(chunk_tokens),
        fork_chunk_tokens_(fork_chunk_tokens),
        provisional_tails_(model.backend().RoundingDependsOnStepEnd()) {}

  int64_t length() const override { return length_ + (pending_ >= 0 ? 1 : 0); }
  int64_t capacity() const { return cache_.max_tokens(); }
  size_t memory_bytes() const override { return cache_.bytes(); }
  // The last position's row comes to the host on the first call after a step (greedy decoding never asks).
  const std::vector<float>& logits() const override {
    if (on_device_) {
      on_device_ = false;
      if (!model_.Download(last_.rows.Slice(last_row_, last_row_ + 1), logits_).ok()) logits_.clear();
    }
    return logits_;
  }
  void set_keep_all_logits(bool keep) override {
    keep_all_ = keep;
    logits_from_ = length_;
    const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
    // Turning it off keeps the last position's row (what Generate samples from).
    if (keep || logits_.size() < vocab) {
      logits_.clear();
    } else {
      logits_.erase(logits_.begin(), logits_.end() - vocab);
    }
    if (keep) SetLast(StepLogits(), 0);
  }
  // The next token after the last position. Greedy runs on the backend while that row is still there (only the
  // id comes back), else `sampler` on the host logits; both choose alike (engine/backend/argmax.h).
  absl::StatusOr<int32_t> SampleNext(Sampler& sampler, bool greedy);

  absl::Status Prefill(const PromptChunk& chunk, const std::atomic<bool>* cancel) override;
  absl::StatusOr<std::unique_ptr<Sequence>> Fork() const override;

  // Emits `token` as generated: it is fed (decoded) before anything else happens to the sequence.
  // It commits the provisional tail.
  void SetPending(int32_t token) {
    pending_ = token;
    tail_ = PromptChunk();
  }
  absl::Status FeedPending(const std::atomic<bool>* cancel);
  // For Engine::GenerateBatch, which feeds the pending tokens of several sequences in one step.
  int32_t pending() const { return pending_; }
  int64_t cached_length() const { return length_; }
  KvCache& cache() { return cache_; }
  // The pending token went through a batched step at position cached_length(); row `row` of `step` is its logits.
  absl::Status PendingFed(const StepLogits& step, int64_t row);

 private:
  absl::Status Validate(const PromptChunk& chunk) const;
  absl::Status Step(const PromptChunk& chunk, int64_t begin, int64_t end, int64_t vision_row,
                    int64_t audio_row, const std::atomic<bool>* cancel, int64_t pass_end = 0);
  absl::Status RunSteps(const PromptChunk& chunk, const std::atomic<bool>* cancel);
  void RewindTail();
  void KeepTail(const PromptChunk& chunk);
  // Row `row` of `step` becomes the last position's logits, left on the backend (an empty step drops them).
  void SetLast(StepLogits step, int64_t row) {
    last_ = std::move(step);
    last_row_ = row;
    on_device_ = last_.buffer != nullptr;
  }

  Gemma4Model& model_;
  KvCache cache_;
  int chunk_tokens_;
  int fork_chunk_tokens_;  // steps a fork's rings start with (Note [Fork rings] in engine/model/kv_cache.cc)
  const bool provisional_tails_;        // Note [Provisional tail]
  int64_t length_ = 0;                  // positions whose K/V are in the cache (the tail's included)
  int32_t pending_ = -1;                // generated token not yet fed
  PromptChunk tail_;                    // the last positions, to be recomputed by the next Prefill
  int64_t logits_from_ = 0;             // with keep_all_: position of logits_'s first row
  TokenType last_type_ = TokenType::kText;
  bool keep_all_ = false;
  // Host logits: every kept row with keep_all_, else the last position's row unless on_device_.
  mutable std::vector<float> logits_;
  StepLogits last_;  // without keep_all_: the step that holds the last position's logits
  int64_t last_row_ = 0;
  mutable bool on_device_ = false;  // logits_ is not yet a copy of last_'s row last_row_
};

absl::Status SequenceImpl::Validate(const PromptChunk& c) const {
  const ModelConfig& cfg = model_.config();
  const int64_t n = static_cast<int64_t>(c.ids.size());
  if (c.types.size() != c.ids.size()) return absl::InvalidArgumentError("PromptChunk: ids and types differ in length");
  if (length() + n > cache_.max_tokens()) {
    return absl::ResourceExhaustedError(absl::StrCat("sequence capacity ", cache_.max_tokens(), " exceeded"));
  }
  int64_t nv = 0, na = 0, run = 0;
  for (int64_t i = 0; i < n; ++i) {
    const TokenType t = c.types[i];
    if (static_cast<int>(t) > 3) return absl::InvalidArgumentError("PromptChunk: bad token type");
    if (t == TokenType::kText && (c.ids[i] < 0 || c.ids[i] >= cfg.vocab_size)) {
      return absl::InvalidArgumentError(absl::StrCat("PromptChunk: token id ", c.ids[i], " outside the vocabulary"));
    }
    nv += IsVision(t);
    na += t == TokenType::kAudio;
    run = IsVision(t) ? run + 1 : 0;
    if (run > chunk_tokens_) {
      return absl::InvalidArgumentError(absl::StrCat("vision block longer than prefill_chunk_tokens (",
                                                     chunk_tokens_, ")"));
    }
  }
  if (n > 0 && IsVision(c.types[0]) && IsVision(last_type_) && pending_ < 0) {
    return absl::InvalidArgumentError("a vision block may not straddle two PromptChunks");
  }
  if (nv > 0 && !cfg.vision.present) return absl::InvalidArgumentError("model has no vision embedder");
  if (na > 0 && !cfg.audio.present) return absl::InvalidArgumentError("model has no audio embedder");
  if (c.vision_patches.size() != static_cast<size_t>(nv) * cfg.vision.patch_dim ||
      c.vision_positions.size() != static_cast<size_t>(2 * nv)) {
    return absl::InvalidArgumentError(absl::StrCat("PromptChunk: ", nv, " vision positions need ", nv,
                                                   " patches of ", cfg.vision.patch_dim, " values and ",
                                                   nv, " (x, y) pairs"));
  }
  for (int32_t p : c.vision_positions) {
    if (p < 0 || p >= cfg.vision.posemb_size) return absl::InvalidArgumentError("vision position outside the table");
  }
  if (c.audio_frames.size() != static_cast<size_t>(na) * cfg.audio.frame_dim) {
    return absl::InvalidArgumentError(absl::StrCat("PromptChunk: ", na, " audio positions need ", na,
                                                   " frames of ", cfg.audio.frame_dim, " samples"));
  }
  return absl::OkStatus();
}

absl::Status SequenceImpl::Prefill(const PromptChunk& chunk, const std::atomic<bool>* cancel) {
  RETURN_IF_ERROR(Validate(chunk));
  RETURN_IF_ERROR(FeedPending(cancel));
  if (chunk.size() == 0) return absl::OkStatus();
  if (tail_.size() > 0) {
    RewindTail();  // tail_ keeps its tokens, to be run again in front of `chunk`
    PromptChunk joined = Join(std::move(tail_), chunk);
    tail_ = PromptChunk();
    RETURN_IF_ERROR(RunSteps(joined, cancel));
    KeepTail(joined);
  } else {
    RETURN_IF_ERROR(RunSteps(chunk, cancel));
    KeepTail(chunk);
  }
  last_type_ = chunk.types.back();
  model_.backend().Synchronize();  // returns once its work is done, as when each step downloaded logits (timed)
  return absl::OkStatus();
}

// Forgets the positions (K/V, logits) of the provisional tail.
void SequenceImpl::RewindTail() {
  const int64_t n = static_cast<int64_t>(tail_.size());
  const int64_t keep_rows = keep_all_ ? std::max<int64_t>(0, length_ - n - logits_from_) : 0;
  const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
  if (keep_all_ && logits_.size() > static_cast<size_t>(keep_rows) * vocab) logits_.resize(keep_rows * vocab);
  length_ -= n;
}

// After `chunk` (ending at length_) ran: keeps its tokens after the last aligned, block-safe
// position as the provisional tail (Note [Provisional tail]).
void SequenceImpl::KeepTail(const PromptChunk& chunk) {
  const int64_t n = static_cast<int64_t>(chunk.size()), base = length_ - n;
  if (!provisional_tails_) return;
  int64_t from = std::max<int64_t>(0, length_ / 16 * 16 - base);
  while (from > 0 && from < n && IsVision(chunk.types[from]) && IsVision(chunk.types[from - 1])) --from;
  // The ring of a sliding layer must still hold the window before the tail when it is redone.
  if (from == n || n - from > cache_.max_chunk()) return;
  tail_ = Slice(chunk, from, n, model_.config().vision.patch_dim, model_.config().audio.frame_dim);
}

// Runs `chunk` (positions from length_) as one forward pass, in steps of at most chunk_tokens_
// that never cut a vision block.
absl::Status SequenceImpl::RunSteps(const PromptChunk& chunk, const std::atomic<bool>* cancel) {
  const int64_t n = static_cast<int64_t>(chunk.size());
  const int64_t pass_end = length_ + n;
  int64_t begin = 0, vision_row = 0, audio_row = 0;
  while (begin < n) {
    int64_t end = std::min<int64_t>(n, begin + chunk_tokens_);
    while (end < n && end > begin && IsVision(chunk.types[end]) && IsVision(chunk.types[end - 1])) --end;
    if (end == begin) return absl::InternalError("chunking made no progress");
    RETURN_IF_ERROR(Step(chunk, begin, end, vision_row, audio_row, cancel, pass_end));
    for (int64_t i = begin; i < end; ++i) {
      vision_row += IsVision(chunk.types[i]);
      audio_row += chunk.types[i] == TokenType::kAudio;
    }
    begin = end;
  }
  return absl::OkStatus();
}

absl::Status SequenceImpl::Step(const PromptChunk& c, int64_t begin, int64_t end, int64_t vision_row,
                                int64_t audio_row, const std::atomic<bool>* cancel, int64_t pass_end) {
  const ModelConfig& cfg = model_.config();
  ForwardInput in;
  in.ids = c.ids.data() + begin;
  in.types = c.types.data() + begin;
  in.n = end - begin;
  in.pos0 = length_;
  in.vision = c.vision_patches.data() + vision_row * cfg.vision.patch_dim;
  in.vision_pos = c.vision_positions.data() + 2 * vision_row;
  in.audio = c.audio_frames.data() + audio_row * cfg.audio.frame_dim;
  for (int64_t i = begin; i < end; ++i) {
    in.num_vision += IsVision(c.types[i]);
    in.num_audio += c.types[i] == TokenType::kAudio;
  }
  in.all_logits = keep_all_;
  in.cancel = cancel;
  in.pass_end = pass_end;
  if (in.n > cache_.max_chunk()) {  // a fork's rings, made for shorter steps (Note [Fork rings])
    const absl::Status grown = cache_.GrowRings(model_.backend(), std::max<int64_t>(chunk_tokens_, in.n), length_);
    if (!grown.ok()) return absl::ResourceExhaustedError(absl::StrCat("growing the KV rings: ", grown.message()));
  }
  ASSIGN_OR_RETURN(StepLogits step, model_.Forward(in, cache_));
  if (keep_all_) {
    // Rows before logits_from_ belong to a provisional tail recomputed after keeping started.
    const int64_t skip = std::clamp<int64_t>(logits_from_ - length_, 0, in.n);
    std::vector<float> rows;
    RETURN_IF_ERROR(model_.Download(step.rows.Slice(skip, in.n), rows));
    logits_.insert(logits_.end(), rows.begin(), rows.end());
  } else {
    SetLast(std::move(step), 0);
  }
  length_ += in.n;
  return absl::OkStatus();
}

absl::Status SequenceImpl::FeedPending(const std::atomic<bool>* cancel) {
  if (pending_ < 0) return absl::OkStatus();
  PromptChunk one;
  one.ids = {pending_};
  one.types = {TokenType::kText};
  pending_ = -1;
  RETURN_IF_ERROR(Step(one, 0, 1, 0, 0, cancel));
  last_type_ = TokenType::kText;
  return absl::OkStatus();
}

absl::Status SequenceImpl::PendingFed(const StepLogits& step, int64_t row) {
  pending_ = -1;
  last_type_ = TokenType::kText;
  if (keep_all_ && length_ >= logits_from_) {
    std::vector<float> host;
    RETURN_IF_ERROR(model_.Download(step.rows.Slice(row, row + 1), host));
    logits_.insert(logits_.end(), host.begin(), host.end());
  } else if (!keep_all_) {
    SetLast(step, row);
  }
  ++length_;
  return absl::OkStatus();
}

absl::StatusOr<int32_t> SequenceImpl::SampleNext(Sampler& sampler, bool greedy) {
  if (greedy && on_device_) {
    ASSIGN_OR_RETURN(const std::vector<int32_t> ids, model_.GreedyTokens(last_.rows.Slice(last_row_, last_row_ + 1)));
    return ids[0];
  }
  const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
  const std::vector<float>& lg = logits();
  if (lg.size() < vocab) return absl::FailedPreconditionError("Generate needs a prefilled sequence");
  return sampler.Sample(std::span<const float>(lg.data() + lg.size() - vocab, vocab));
}

absl::StatusOr<std::unique_ptr<Sequence>> SequenceImpl::Fork() const {
  // The provisional tail's positions are computed again by the next Prefill: only those before it are final.
  // Its rings start small (Note [Fork rings]); Copy sizes them for the tail too, which the next Prefill runs again.
  const int64_t tail = static_cast<int64_t>(tail_.size());
  ASSIGN_OR_RETURN(KvCache copy, cache_.Copy(model_.backend(), length_ - tail, length_, fork_chunk_tokens_));
  auto fork = std::make_unique<SequenceImpl>(model_, std::move(copy), chunk_tokens_, fork_chunk_tokens_);
  fork->length_ = length_;
  fork->pending_ = pending_;
  fork->last_type_ = last_type_;
  fork->keep_all_ = keep_all_;
  if (!on_device_) fork->logits_ = logits_;
  fork->SetLast(last_, last_row_);  // shared: a step's logits are never written again
  fork->on_device_ = on_device_;
  fork->tail_ = tail_;
  fork->logits_from_ = logits_from_;
  return fork;
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(std::unique_ptr<Backend> backend, ModelConfig config, ModelWeights weights,
             const EngineOptions& options)
      : backend_(std::move(backend)),
        model_(*backend_, std::move(config), std::move(weights), options.bidirectional_all_layers),
        options_(options) {}

  const ModelInfo& info() const override { return model_.config().info; }
  std::string backend_name() const override { return backend_->Name(); }
  double warmup_seconds() const override { return warmup_seconds_; }

  // EngineOptions::warmup_tokens.
  absl::Status WarmUp(int tokens);
  PromptChunk WarmUpPrompt(int n) const;

  // Positions a sequence may hold: EngineOptions::max_context, or the model's.
  int64_t ContextLimit() const { return options_.max_context > 0 ? options_.max_context : info().max_context; }

  absl::StatusOr<std::unique_ptr<Sequence>> NewSequence(int64_t max_tokens) override {
    const int64_t limit = ContextLimit();
    if (max_tokens <= 0 || max_tokens > limit) {
      return absl::InvalidArgumentError(absl::StrCat("max_tokens must be in [1, ", limit, "]"));
    }
    absl::StatusOr<KvCache> cache = KvCache::Create(*backend_, model_.config(), model_.act_dtype(), max_tokens,
                                                    options_.prefill_chunk_tokens);
    if (!cache.ok()) return absl::ResourceExhaustedError(cache.status().message());
    return std::make_unique<SequenceImpl>(model_, *std::move(cache), options_.prefill_chunk_tokens,
                                          options_.fork_chunk_tokens);
  }

  absl::Status Generate(Sequence& seq, const SamplingOptions& options,
                        const std::function<bool(int32_t)>& on_token, const std::atomic<bool>* cancel) override;
  absl::Status GenerateBatch(const std::vector<Sequence*>& seqs, const SamplingOptions& options,
                             const std::function<bool(size_t, int32_t)>& on_token,
                             const std::atomic<bool>* cancel) override;

 private:
  // Sampling of one sequence in a generation loop; `next` is its token when a batched step chose it already.
  struct Draw {
    Sampler& sampler;
    bool greedy = false;
    int32_t next = kNotChosen;
  };
  static constexpr int32_t kNotChosen = -2;
  absl::StatusOr<bool> Step(SequenceImpl& s, const Draw& draw, int emitted, int max_new,
                            const std::function<bool(int32_t)>& on_token, const std::atomic<bool>* cancel);
  // Feeds the pending tokens of the running sequences in one step; with `greedy` it also chooses their next
  // tokens there (next[i], else kNotChosen).
  absl::Status FeedPendingTogether(const std::vector<SequenceImpl*>& seqs, const std::vector<bool>& running,
                                   bool greedy, const std::atomic<bool>* cancel, std::vector<int32_t>& next);

  std::unique_ptr<Backend> backend_;
  Gemma4Model model_;
  EngineOptions options_;
  double warmup_seconds_ = 0.0;
};

// One generation step of `s`: feeds the pending token, samples the next one and hands it out.
// Returns false once this sequence is finished (stop id, limit, full, or on_token said stop).
absl::StatusOr<bool> EngineImpl::Step(SequenceImpl& s, const Draw& draw, int emitted, int max_new,
                                      const std::function<bool(int32_t)>& on_token,
                                      const std::atomic<bool>* cancel) {
  if (emitted >= max_new) return false;
  if (cancel && cancel->load(std::memory_order_relaxed)) return absl::CancelledError("generation cancelled");
  int32_t token = draw.next;
  if (token == kNotChosen) {
    RETURN_IF_ERROR(s.FeedPending(cancel));
    ASSIGN_OR_RETURN(token, s.SampleNext(draw.sampler, draw.greedy));
  }
  if (token < 0) return absl::InternalError("no token could be sampled (all suppressed or NaN)");
  const std::vector<int32_t>& stops = info().stop_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) return false;
  if (s.length() >= s.capacity()) return false;  // full: nowhere to put the token
  s.SetPending(token);
  return on_token(token) && emitted + 1 < max_new;
}

absl::Status EngineImpl::Generate(Sequence& seq, const SamplingOptions& options,
                                  const std::function<bool(int32_t)>& on_token, const std::atomic<bool>* cancel) {
  auto* s = dynamic_cast<SequenceImpl*>(&seq);
  if (s == nullptr) return absl::InvalidArgumentError("sequence from another engine");
  Sampler sampler(options, info().suppress_ids);
  const Draw draw{sampler, options.temperature <= 0.0f};
  for (int t = 0;; ++t) {
    ASSIGN_OR_RETURN(bool more, Step(*s, draw, t, options.max_new_tokens, on_token, cancel));
    if (!more) return absl::OkStatus();
  }
}

absl::Status EngineImpl::GenerateBatch(const std::vector<Sequence*>& seqs, const SamplingOptions& options,
                                       const std::function<bool(size_t, int32_t)>& on_token,
                                       const std::atomic<bool>* cancel) {
  std::vector<SequenceImpl*> impl;
  std::vector<Sampler> samplers;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto* s = seqs[i] ? dynamic_cast<SequenceImpl*>(seqs[i]) : nullptr;
    if (s == nullptr) return absl::InvalidArgumentError("sequence from another engine");
    if (std::find(impl.begin(), impl.end(), s) != impl.end()) {
      return absl::InvalidArgumentError("GenerateBatch: a sequence appears twice");
    }
    impl.push_back(s);
    SamplingOptions o = options;
    o.seed = options.seed + i;
    samplers.emplace_back(o, info().suppress_ids);
  }
  // Lockstep: one token per running sequence per iteration; the tokens sampled in the previous
  // iteration go through the model together (one pass over the weights for all of them).
  std::vector<bool> running(seqs.size(), true);
  const bool greedy = options.temperature <= 0.0f;
  std::vector<int32_t> next;
  for (int t = 0; std::find(running.begin(), running.end(), true) != running.end(); ++t) {
    RETURN_IF_ERROR(FeedPendingTogether(impl, running, greedy, cancel, next));
    for (size_t i = 0; i < impl.size(); ++i) {
      if (!running[i]) continue;
      const Draw draw{samplers[i], greedy, next[i]};
      ASSIGN_OR_RETURN(bool more, Step(*impl[i], draw, t, options.max_new_tokens,
                                       [&](int32_t tok) { return on_token(i, tok); }, cancel));
      running[i] = more;
    }
  }
  return absl::OkStatus();
}

absl::Status EngineImpl::FeedPendingTogether(const std::vector<SequenceImpl*>& seqs, const std::vector<bool>& running,
                                             bool greedy, const std::atomic<bool>* cancel, std::vector<int32_t>& next) {
  next.assign(seqs.size(), kNotChosen);
  std::vector<size_t> fed;  // indices into seqs
  std::vector<int32_t> ids;
  std::vector<int64_t> pos;
  std::vector<KvCache*> caches;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (!running[i] || seqs[i]->pending() < 0) continue;
    fed.push_back(i);
    ids.push_back(seqs[i]->pending());
    pos.push_back(seqs[i]->cached_length());
    caches.push_back(&seqs[i]->cache());
  }
  if (fed.size() < 2) return absl::OkStatus();  // Step feeds a lone token itself
  if (cancel && cancel->load(std::memory_order_relaxed)) return absl::CancelledError("generation cancelled");
  ASSIGN_OR_RETURN(const StepLogits logits, model_.DecodeBatch(ids, pos, caches));
  for (size_t b = 0; b < fed.size(); ++b) RETURN_IF_ERROR(seqs[fed[b]]->PendingFed(logits, static_cast<int64_t>(b)));
  if (greedy) {  // one choice for all rows; only their ids leave the backend
    ASSIGN_OR_RETURN(const std::vector<int32_t> chosen, model_.GreedyTokens(logits.rows));
    for (size_t b = 0; b < fed.size(); ++b) next[fed[b]] = chosen[b];
  }
  return absl::OkStatus();
}

}  // namespace

// The warm-up prompt of n positions: a video frame of side² patches (one bidirectional block, at most half a
// prefill step), audio frames and text between the markers a real prompt has; media only from 16 positions on and
// where the checkpoint takes them.
PromptChunk EngineImpl::WarmUpPrompt(int n) const {
  const ModelInfo& mi = info();
  const int step = options_.prefill_chunk_tokens;
  int side = 1;
  while ((side + 1) * (side + 1) <= std::min(n / 4, 256) && (side + 1) * (side + 1) + 2 <= step / 2) ++side;
  const bool media = n >= 16;
  const int vision = media && model_.config().vision.patch_dim > 0 ? side * side : 0;
  const int audio = media && model_.config().audio.frame_dim > 0 ? std::min(n / 8, 64) : 0;
  PromptChunk c;
  auto add = [&](int32_t id, TokenType type) {
    c.ids.push_back(id);
    c.types.push_back(type);
  };
  add(mi.bos_id, TokenType::kText);
  if (vision > 0) {
    add(mi.boi_id, TokenType::kText);
    for (int i = 0; i < vision; ++i) {
      add(mi.video_id, TokenType::kVideo);
      c.vision_positions.push_back(i % side);
      c.vision_positions.push_back(i / side);
    }
    c.vision_patches.assign(static_cast<size_t>(vision) * model_.config().vision.patch_dim, 0.5f);
    add(mi.eoi_id, TokenType::kText);
  }
  if (audio > 0) {
    add(mi.boa_id, TokenType::kText);
    for (int i = 0; i < audio; ++i) add(mi.audio_id, TokenType::kAudio);
    c.audio_frames.resize(static_cast<size_t>(audio) * model_.config().audio.frame_dim);
    for (size_t i = 0; i < c.audio_frames.size(); ++i) c.audio_frames[i] = 0.1f * std::sin(0.05f * i);
    add(mi.eoa_id, TokenType::kText);
  }
  const int64_t ids = std::max(1, mi.vocab_size - 10);  // text ids from 5 on, clear of the control tokens
  for (int64_t i = 0; static_cast<int>(c.ids.size()) < n; ++i) {
    add(static_cast<int32_t>(5 + (i * 7919) % ids), TokenType::kText);
  }
  return c;
}

// The warm-up request: WarmUpPrompt of as many positions as asked (at most the context limit), then two tokens,
// and two forks of it decoding two tokens together.
absl::Status EngineImpl::WarmUp(int tokens) {
  constexpr int kRoom = 8;  // positions past the prompt: its two tokens, and each fork's two
  const int n = static_cast<int>(std::min<int64_t>(tokens, ContextLimit() - kRoom));
  if (n <= 0) return absl::OkStatus();
  const auto t0 = std::chrono::steady_clock::now();
  const PromptChunk c = WarmUpPrompt(n);
  absl::StatusOr<std::unique_ptr<Sequence>> seq = NewSequence(n + kRoom);
  absl::Status st = seq.status();
  SamplingOptions greedy;
  greedy.max_new_tokens = 2;
  if (st.ok()) st = (*seq)->Prefill(c, nullptr);
  if (st.ok()) st = Generate(**seq, greedy, [](int32_t) { return true; }, nullptr);
  std::vector<std::unique_ptr<Sequence>> forks;
  for (int i = 0; i < 2 && st.ok(); ++i) {
    absl::StatusOr<std::unique_ptr<Sequence>> fork = (*seq)->Fork();
    st = fork.status();
    if (st.ok()) forks.push_back(*std::move(fork));
  }
  if (st.ok()) {
    st = GenerateBatch({forks[0].get(), forks[1].get()}, greedy, [](size_t, int32_t) { return true; }, nullptr);
  }
  if (absl::IsResourceExhausted(st)) return absl::OkStatus();  // the device is small: requests will say so
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat("warm-up: ", st.message()));
  warmup_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.checkpoint_dir));
  if (options.prefill_chunk_tokens <= 0) return absl::InvalidArgumentError("prefill_chunk_tokens must be > 0");
  if (options.fork_chunk_tokens <= 0) return absl::InvalidArgumentError("fork_chunk_tokens must be > 0");
  if (options.warmup_tokens < 0) return absl::InvalidArgumentError("warmup_tokens must be >= 0");
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBackend(options.backend, options.num_threads));
  ASSIGN_OR_RETURN(ModelWeights weights,
                   LoadWeights(options.checkpoint_dir, config, *backend, options.on_load_progress));
  auto engine = std::make_unique<EngineImpl>(std::move(backend), std::move(config), std::move(weights), options);
  if (options.warmup_tokens > 0) RETURN_IF_ERROR(engine->WarmUp(options.warmup_tokens));
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace avserve::engine
