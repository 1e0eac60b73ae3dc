// A Hugging Face `tokenizer.json` BPE tokenizer (the Gemma scheme): added/special tokens matched in
// the raw text (leftmost-longest), normalizer Replace(" " -> "▁"), optional Split pre-tokenizer,
// BPE with ranked merges and byte fallback, decoder Replace("▁" -> " ") + ByteFallback + Fuse.
// Matches the `tokenizers` library id for id (tests/engine/tokenizer_test.cc, goldens from it).
//
// Invalid UTF-8: `tokenizers` only accepts valid Unicode strings; callers in Python/JS first decode
// bytes with replacement. Encode() does the same: every maximal invalid subpart becomes U+FFFD (the
// Unicode "best practice" that Python's errors="replace" and WHATWG TextDecoder both follow).
//
// Thread-safety: a loaded Tokenizer is immutable except SetSpecialToken(); const methods may be
// called from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json_fwd.hpp"

namespace re2 {
class RE2;
}

namespace avserve::engine {

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromJson(std::string_view json);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  ~Tokenizer();

  // Token ids of `text`, without BOS. Added and special tokens written in the text are recognized.
  std::vector<int32_t> Encode(std::string_view text) const;
  // Text of `ids` as the `tokenizers` decoder writes it (runs of byte tokens that are not valid
  // UTF-8 become one U+FFFD per byte). Unknown ids are skipped.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special = false) const;

  std::optional<int32_t> TokenToId(std::string_view piece) const;
  std::string_view IdToToken(int32_t id) const;  // "" when out of range
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  bool IsSpecial(int32_t id) const;
  // The byte a "<0xXX>" byte-fallback token stands for, if `id` is one.
  std::optional<uint8_t> ByteOf(int32_t id) const;

  // Makes `id` a special added token spelled `content` (renaming its piece). Used to load another
  // checkpoint's control tokens (Gemma 4's over a Gemma 3 vocabulary) in tests.
  absl::Status SetSpecialToken(int32_t id, std::string_view content);

  struct BigParts;  // parsing detail: tokenizer.json's vocab and merges as read (tokenizer.cc)

 private:
  struct AddedToken {
    int32_t id;
    std::string content;
    bool special;
  };
  class AddedMatcher;
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  Tokenizer();
  absl::Status Parse(std::string_view json);
  absl::Status BuildVocab(const BigParts& parts, const nlohmann::json& added);
  absl::Status BuildMerges(const BigParts& parts);
  absl::Status ParsePipeline(const nlohmann::json& root, const nlohmann::json& model);
  absl::Status RebuildAddedMatcher();
  std::string Normalize(std::string_view text) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeNormalizedPiece(std::string_view text, std::vector<int32_t>* out) const;
  absl::Status ParseSplit(const nlohmann::json& pre);
  // The next split match in `text` as (offset, length); offset == npos when there is none.
  std::pair<size_t, size_t> FindSplit(std::string_view text) const;

  std::vector<std::string> pieces_;                          // [vocab_size] id -> piece
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;    // model vocab + added tokens
  absl::flat_hash_map<uint64_t, Merge> merges_;              // (left << 32 | right) -> merge
  std::vector<AddedToken> added_;
  std::vector<uint8_t> special_;                             // [vocab_size] 1 = special
  std::vector<int16_t> byte_of_;                             // [vocab_size] -1 or the byte
  int32_t byte_ids_[256];                                    // "<0xXX>" ids, -1 if absent
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  std::string normalizer_from_, normalizer_to_;              // Replace; empty = none
  // Split pre-tokenizer (none when both pattern fields are empty): a literal or an RE2 regex;
  // MergedWithPrevious ends a word after each match, Isolated makes each match its own word.
  std::string split_literal_;
  std::shared_ptr<const re2::RE2> split_regex_;              // shared_ptr: RE2 stays incomplete here
  bool split_isolated_ = false;
  std::unique_ptr<AddedMatcher> matcher_;
};

// Decodes tokens one at a time: returns the text that is complete after each token (a UTF-8
// character whose bytes arrive over several byte-fallback tokens is held back until whole).
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  std::string Add(int32_t id);
  std::string Flush();  // the held-back bytes (as U+FFFD per byte when they are not valid UTF-8)

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_bytes_;  // a run of byte tokens not yet valid UTF-8
};

// Replaces each maximal invalid UTF-8 subpart of `text` by U+FFFD.
std::string SanitizeUtf8(std::string_view text);
// Whether `text` is well-formed UTF-8.
bool IsValidUtf8(std::string_view text);

}  // namespace avserve::engine
