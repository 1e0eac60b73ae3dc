#include "engine/model/tokenizer.h"

#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/pipeline/test_util.h"

namespace avserve::engine {
namespace {

using ::avserve::testing::Gemma4TestTokenizer;
using ::avserve::testing::ReadFile;
using ::avserve::testing::TestDataPath;

// Reads little-endian u32 values and byte strings from a golden file.
class Reader {
 public:
  explicit Reader(std::string data) : data_(std::move(data)) {}
  bool ok() const { return ok_; }
  uint32_t U32() {
    uint32_t v = 0;
    if (pos_ + 4 > data_.size()) return ok_ = false, 0;
    std::memcpy(&v, data_.data() + pos_, 4);
    pos_ += 4;
    return v;
  }
  std::string Bytes(size_t n) {
    if (pos_ + n > data_.size()) return ok_ = false, std::string();
    std::string out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

 private:
  std::string data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

struct GoldenDoc {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

std::vector<GoldenDoc> ReadGoldens() {
  Reader corpus(ReadFile(TestDataPath("tokenizer/corpus.bin")));
  Reader goldens(ReadFile(TestDataPath("tokenizer/goldens.bin")));
  std::vector<GoldenDoc> docs;
  if (corpus.Bytes(4) != "AVCP" || goldens.Bytes(4) != "AVTG") return docs;
  const uint32_t n = corpus.U32();
  if (goldens.U32() != n) return docs;
  for (uint32_t i = 0; i < n && corpus.ok() && goldens.ok(); ++i) {
    GoldenDoc doc;
    doc.text = corpus.Bytes(corpus.U32());
    doc.ids.resize(goldens.U32());
    for (int32_t& id : doc.ids) id = static_cast<int32_t>(goldens.U32());
    doc.decoded = goldens.Bytes(goldens.U32());
    docs.push_back(std::move(doc));
  }
  return docs;
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = Gemma4TestTokenizer();
    if (tokenizer_ == nullptr) GTEST_SKIP() << "no tokenizer.json: run scripts/fetch_test_data";
  }
  const Tokenizer* tokenizer_ = nullptr;
};

TEST_F(TokenizerTest, MatchesTheTokenizersLibraryOnTheCorpus) {
  const std::vector<GoldenDoc> docs = ReadGoldens();
  ASSERT_GT(docs.size(), 800u);
  size_t bytes = 0, mismatches = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    bytes += docs[i].text.size();
    const std::vector<int32_t> ids = tokenizer_->Encode(docs[i].text);
    if (ids != docs[i].ids && ++mismatches <= 5) {
      ADD_FAILURE() << "document " << i << " encodes differently (" << ids.size() << " vs "
                    << docs[i].ids.size() << " ids)";
    }
    EXPECT_EQ(tokenizer_->Decode(docs[i].ids), docs[i].decoded) << "document " << i;
  }
  EXPECT_GE(bytes, 1000000u);
  EXPECT_EQ(mismatches, 0u);
}

TEST_F(TokenizerTest, DecodeRoundTripsValidText) {
  int checked = 0;
  for (const GoldenDoc& doc : ReadGoldens()) {
    // "▁" in the input decodes as a space, exactly as in the library, so it cannot round-trip.
    if (!IsValidUtf8(doc.text) || doc.text.find("\xE2\x96\x81") != std::string::npos) continue;
    EXPECT_EQ(tokenizer_->Decode(tokenizer_->Encode(doc.text)), doc.text);
    ++checked;
  }
  EXPECT_GT(checked, 150);
}

TEST_F(TokenizerTest, RecognizesGemma4SpecialTokensInText) {
  const std::vector<int32_t> ids = tokenizer_->Encode("<bos><|turn>user\nHi<turn|>\n<|turn>model\n");
  ASSERT_GE(ids.size(), 6u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 105);
  EXPECT_EQ(tokenizer_->TokenToId("<|video|>"), 258884);
  EXPECT_EQ(tokenizer_->IdToToken(258882), "<image|>");
  EXPECT_TRUE(tokenizer_->IsSpecial(106));
  EXPECT_FALSE(tokenizer_->TokenToId("<start_of_turn>").has_value());
  EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special=*/true), "user\nHi\nmodel\n");
}

TEST_F(TokenizerTest, ReplacesInvalidUtf8LikePythonReplace) {
  // "\xE2\x82" is one maximal subpart (one U+FFFD); "\xFF" and "\xC0" are one each.
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82" "b\xFF\xC0\xAF"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer_->Encode("x\xFFy"), tokenizer_->Encode("x\xEF\xBF\xBDy"));
}

TEST_F(TokenizerTest, StreamingDecoderHoldsSplitCharactersBack) {
  // An astral character outside the vocabulary is encoded as four byte-fallback tokens.
  const std::string text = "go \xF0\x9F\xAB\xA0 now \xE6\x97\xA5";
  const std::vector<int32_t> ids = tokenizer_->Encode(text);
  StreamingDecoder decoder(*tokenizer_);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = decoder.Add(id);
    EXPECT_TRUE(IsValidUtf8(piece));
    streamed += piece;
  }
  streamed += decoder.Flush();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(streamed, tokenizer_->Decode(ids));
}

TEST_F(TokenizerTest, StreamingDecoderReplacesBrokenBytes) {
  const auto byte_id = [&](const char* piece) { return *tokenizer_->TokenToId(piece); };
  StreamingDecoder decoder(*tokenizer_);
  EXPECT_EQ(decoder.Add(byte_id("<0xE6>")), "");
  EXPECT_EQ(decoder.Add(byte_id("<0x41>")), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(decoder.Add(byte_id("<0xE6>")), "");
  EXPECT_EQ(decoder.Flush(), "\xEF\xBF\xBD");
}

TEST(TokenizerLoadTest, RejectsBadFiles) {
  EXPECT_FALSE(Tokenizer::LoadFromJson("not json").ok());
  EXPECT_FALSE(Tokenizer::LoadFromJson("{}").ok());
  EXPECT_FALSE(Tokenizer::LoadFromJson(R"({"model": {"type": "Unigram", "vocab": []}})").ok());
  EXPECT_EQ(Tokenizer::LoadFromFile("/nonexistent/tokenizer.json").status().code(),
            absl::StatusCode::kNotFound);
  // Malformed vocab or merges entries.
  EXPECT_FALSE(Tokenizer::LoadFromJson(R"({"model": {"type": "BPE", "vocab": {"a": "x"}}})").ok());
  EXPECT_FALSE(Tokenizer::LoadFromJson(
                   R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b", "c"]]}})")
                   .ok());
  EXPECT_FALSE(Tokenizer::LoadFromJson(
                   R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["ab"]}})")
                   .ok());
  EXPECT_FALSE(Tokenizer::LoadFromJson(R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "x": [1, 2)").ok());
  // A merge of pieces that are not in the vocabulary is an error, not a crash.
  EXPECT_FALSE(Tokenizer::LoadFromJson(
                   R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "b"]]}})")
                   .ok());
}

TEST(TokenizerLoadTest, EncodesWithATinyVocabulary) {
  auto tokenizer = Tokenizer::LoadFromJson(R"({
    "added_tokens": [{"id": 5, "content": "<s>", "special": true}],
    "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    "model": {"type": "BPE", "byte_fallback": true, "unk_token": null,
              "vocab": {"a": 0, "b": 1, "ab": 2, "\u2581": 3, "\u2581ab": 4, "<s>": 5, "<0x63>": 6},
              "merges": [["a", "b"], ["\u2581", "ab"]]}})");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Encode("ab ab<s>c"), (std::vector<int32_t>{2, 4, 5, 6}));
  EXPECT_EQ((*tokenizer)->Decode({2, 4, 5, 6}), "ab ab<s>c");
  EXPECT_EQ((*tokenizer)->Decode({2, 4, 5, 6}, /*skip_special=*/true), "ab abc");
  // Merges in the older "left right" string form load the same.
  auto legacy = Tokenizer::LoadFromJson(R"({"model": {"type": "BPE", "byte_fallback": true,
      "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ((*legacy)->Encode("abab"), (std::vector<int32_t>{2, 2}));
}

TEST(TokenizerLoadTest, RegexSplitIsolatesEachMatch) {
  // The pre-tokenizer of transformers-made small checkpoints: digits are words of their own,
  // so "12" never merges even though the vocabulary has "12".
  auto tokenizer = Tokenizer::LoadFromJson(R"({
    "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated",
                      "invert": false},
    "model": {"type": "BPE", "byte_fallback": true, "unk_token": null,
              "vocab": {"a": 0, "1": 1, "2": 2, "12": 3, "a1": 4, "\u2581": 5},
              "merges": [["1", "2"], ["a", "1"]]}})");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Encode("a12 a"), (std::vector<int32_t>{0, 1, 2, 5, 0}));
  EXPECT_EQ((*tokenizer)->Decode({0, 1, 2, 5, 0}), "a12 a");
  // Without the pre-tokenizer the same text merges across the digits.
  auto merged = Tokenizer::LoadFromJson(R"({"model": {"type": "BPE", "byte_fallback": true,
      "vocab": {"a": 0, "1": 1, "2": 2, "12": 3, "a1": 4}, "merges": [["1", "2"], ["a", "1"]]}})");
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ((*merged)->Encode("a12"), (std::vector<int32_t>{0, 3}));
  // A regex that does not compile is a clear error.
  auto bad = Tokenizer::LoadFromJson(R"({"pre_tokenizer": {"type": "Split",
      "pattern": {"Regex": "("}, "behavior": "Isolated"},
      "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerLoadTest, LoadsTheTinyTestCheckpointTokenizer) {
  auto tokenizer =
      Tokenizer::LoadFromFile(std::string(AVSERVE_SOURCE_DIR) + "/tests/data/engine/tiny/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<int32_t> ids = (*tokenizer)->Encode("frame 2024");
  EXPECT_EQ((*tokenizer)->Decode(ids), "frame 2024");
  int digits = 0;
  for (int32_t id : ids) digits += (*tokenizer)->IdToToken(id).size() == 1 &&
                                   std::isdigit(static_cast<unsigned char>((*tokenizer)->IdToToken(id)[0]));
  EXPECT_EQ(digits, 4);
}

}  // namespace
}  // namespace avserve::engine
