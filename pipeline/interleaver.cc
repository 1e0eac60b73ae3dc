#include "pipeline/interleaver.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace avserve::pipeline {

using engine::PromptChunk;
using engine::TokenType;

std::string FormatTimestamp(int64_t time_us) {
  const int64_t seconds = std::max<int64_t>(time_us, 0) / 1000000;
  return absl::StrFormat("%02d:%02d", seconds / 60, seconds % 60);
}

std::vector<int32_t> TimestampIds(const engine::Tokenizer& tokenizer, int64_t ordinal, int64_t time_us) {
  return tokenizer.Encode(absl::StrCat(ordinal > 0 ? " " : "", FormatTimestamp(time_us), " "));
}

Interleaver::Interleaver(const engine::ModelInfo& info, const engine::Tokenizer& tokenizer,
                         const StreamOptions& options)
    : info_(info), tokenizer_(tokenizer), options_(options) {}

size_t Interleaver::Room() const {
  if (options_.max_chunk_tokens <= 0) return SIZE_MAX;
  const size_t max = static_cast<size_t>(options_.max_chunk_tokens);
  return current_.size() >= max ? 0 : max - current_.size();
}

void Interleaver::Flush(std::vector<PromptChunk>* ready) {
  if (current_.ids.empty()) return;
  tokens_emitted_ += static_cast<int64_t>(current_.size());
  ready->push_back(std::move(current_));
  current_ = PromptChunk();
}

void Interleaver::AppendText(const std::vector<int32_t>& ids, std::vector<PromptChunk>* ready) {
  for (int32_t id : ids) {
    if (Room() == 0) Flush(ready);
    current_.ids.push_back(id);
    current_.types.push_back(TokenType::kText);
  }
}

absl::Status Interleaver::AppendFrame(const ingest::VideoFrame& frame, std::vector<PromptChunk>* ready) {
  const int rows = frame.grid_rows, cols = frame.grid_cols;
  if (rows <= 0 || cols <= 0 ||
      frame.patches.size() != static_cast<size_t>(rows) * cols * ingest::kPatchDim) {
    return absl::InvalidArgumentError(absl::StrCat("frame at ", frame.pts_us, " us has ",
                                                   frame.patches.size(), " patch values for a ", rows,
                                                   "x", cols, " grid"));
  }
  const size_t n = static_cast<size_t>(rows) * cols;
  // The block (with its begin/end markers) goes whole into one chunk: it attends bidirectionally.
  if (n + 2 > Room()) Flush(ready);
  current_.ids.push_back(info_.boi_id);
  current_.types.push_back(TokenType::kText);
  current_.ids.insert(current_.ids.end(), n, info_.video_id);
  current_.types.insert(current_.types.end(), n, TokenType::kVideo);
  current_.ids.push_back(info_.eoi_id);
  current_.types.push_back(TokenType::kText);
  current_.vision_patches.insert(current_.vision_patches.end(), frame.patches.begin(), frame.patches.end());
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      current_.vision_positions.push_back(c);  // x = column
      current_.vision_positions.push_back(r);  // y = row
    }
  }
  return absl::OkStatus();
}

// Audio tokens are causal, so an audio block may be split across chunks at any frame.
void Interleaver::AppendAudio(const float* samples, int64_t num_frames, std::vector<PromptChunk>* ready) {
  AppendText({info_.boa_id}, ready);
  for (int64_t i = 0; i < num_frames; ++i) {
    if (Room() == 0) Flush(ready);
    current_.ids.push_back(info_.audio_id);
    current_.types.push_back(TokenType::kAudio);
    const float* frame = samples + i * ingest::kAudioFrameSamples;
    current_.audio_frames.insert(current_.audio_frames.end(), frame, frame + ingest::kAudioFrameSamples);
  }
  AppendText({info_.eoa_id}, ready);
}

absl::Status Interleaver::Add(const ingest::Segment& segment, std::vector<PromptChunk>* ready) {
  if (segment.index != next_index_) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment ", segment.index, " arrived where ", next_index_, " was expected"));
  }
  const ingest::AudioFrames& audio = segment.audio;
  if (audio.num_frames < 0 ||
      audio.samples.size() != static_cast<size_t>(audio.num_frames) * ingest::kAudioFrameSamples) {
    return absl::InvalidArgumentError(absl::StrCat("segment ", segment.index, " has ",
                                                   audio.samples.size(), " samples for ",
                                                   audio.num_frames, " audio frames"));
  }
  const int64_t ordinal = next_index_++;
  if (options_.layout == Layout::kReference) {
    if (segment.frame.has_value()) {
      const int64_t frames_so_far = reference_frames_++;
      AppendText(TimestampIds(tokenizer_, frames_so_far, segment.frame->pts_us), ready);
      RETURN_IF_ERROR(AppendFrame(*segment.frame, ready));
    }
    reference_audio_.insert(reference_audio_.end(), audio.samples.begin(), audio.samples.end());
    reference_audio_frames_ += audio.num_frames;
    return absl::OkStatus();
  }
  AppendText(TimestampIds(tokenizer_, ordinal, segment.start_us), ready);
  if (segment.frame.has_value()) RETURN_IF_ERROR(AppendFrame(*segment.frame, ready));
  if (audio.num_frames > 0) AppendAudio(audio.samples.data(), audio.num_frames, ready);
  return absl::OkStatus();
}

absl::Status Interleaver::Finish(std::vector<PromptChunk>* ready) {
  if (options_.layout == Layout::kReference && reference_audio_frames_ > 0) {
    AppendText(tokenizer_.Encode("\n\n"), ready);
    AppendAudio(reference_audio_.data(), reference_audio_frames_, ready);
    reference_audio_.clear();
  }
  Flush(ready);
  return absl::OkStatus();
}

}  // namespace avserve::pipeline
