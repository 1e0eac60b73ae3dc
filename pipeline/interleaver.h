// Turns ingest's time-ordered segments into the media part of the prompt as engine PromptChunks
// (design.md §1). Plain class, no threads inside: the TBB graph (ingest_graph.h) and tests drive it.
//
// kInterleaved, per segment k (text in quotes is tokenized, names are ids from ModelInfo):
//   [" " if k > 0] "MM:SS " boi n×video eoi [boa m_k×audio eoa]
//   (the frame block is absent without video; the audio block when the segment has no audio frame)
// kReference, transformers' Gemma4UnifiedProcessor for a [video, audio] prompt: each frame as
//   [" " if not first] "MM:SS " boi n×video eoi, timestamps from the frame's pts; then, when there is
//   audio, "\n\n" boa N×audio eoa with all audio frames (the chat template's audio item follows the
//   video item's trailing "\n\n").
// Text pieces are tokenized on their own: every piece sits between special tokens or the template's
// "\n\n" (an added token), so this equals tokenizing the whole expanded prompt text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/api.h"
#include "engine/model/tokenizer.h"
#include "ingest/media_types.h"

namespace avserve::pipeline {

enum class Layout { kInterleaved, kReference };

struct StreamOptions {
  Layout layout = Layout::kInterleaved;
  // Chunks hold at most this many tokens, except that a frame block is never split (a chunk holding
  // one larger block is as long as the block). The default is one engine prefill step.
  int max_chunk_tokens = engine::kDefaultPrefillChunkTokens;
};

// "MM:SS" of floor(time_us) seconds; minutes may exceed 59 (and 99), as in transformers.
std::string FormatTimestamp(int64_t time_us);

class Interleaver {
 public:
  Interleaver(const engine::ModelInfo& info, const engine::Tokenizer& tokenizer,
              const StreamOptions& options);

  // Appends one segment (segments must come in index order). Completed chunks are appended to
  // `ready`. Errors: malformed segment (patch count vs grid, audio size, order).
  absl::Status Add(const ingest::Segment& segment, std::vector<engine::PromptChunk>* ready);
  // Ends the stream: the reference layout's audio block is written, the last chunk flushed.
  absl::Status Finish(std::vector<engine::PromptChunk>* ready);

  int64_t tokens_emitted() const { return tokens_emitted_; }  // in chunks handed out so far
  int64_t tokens_total() const { return tokens_emitted_ + static_cast<int64_t>(current_.size()); }
  // Reference layout: whether an audio block follows the frames (known once audio has arrived).
  bool reference_has_audio() const { return reference_audio_frames_ > 0; }

 private:
  void AppendText(const std::vector<int32_t>& ids, std::vector<engine::PromptChunk>* ready);
  absl::Status AppendFrame(const ingest::VideoFrame& frame, std::vector<engine::PromptChunk>* ready);
  void AppendAudio(const float* samples, int64_t num_frames, std::vector<engine::PromptChunk>* ready);
  void Flush(std::vector<engine::PromptChunk>* ready);
  size_t Room() const;

  const engine::ModelInfo& info_;
  const engine::Tokenizer& tokenizer_;
  StreamOptions options_;
  engine::PromptChunk current_;
  int64_t tokens_emitted_ = 0;
  int64_t next_index_ = 0;
  int64_t reference_frames_ = 0;
  std::vector<float> reference_audio_;  // [reference_audio_frames_, 640] kept for the final block
  int64_t reference_audio_frames_ = 0;
};

// Ids of the text piece before segment/frame `ordinal` (0-based) with timestamp `time_us`:
// "MM:SS " for the first, " MM:SS " after.
std::vector<int32_t> TimestampIds(const engine::Tokenizer& tokenizer, int64_t ordinal, int64_t time_us);

}  // namespace avserve::pipeline
