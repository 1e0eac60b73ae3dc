#include "engine/model/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace avserve::engine {
namespace {

using Json = nlohmann::json;
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";        // U+2581 "▁"

// Debian's absl has its own string_view type; hash-map lookups and StrCat take that one.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string ReplaceAll(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size() + text.size() / 2);
  for (size_t pos = 0;;) {
    const size_t at = text.find(from, pos);
    if (at == std::string_view::npos) {
      out.append(text.substr(pos));
      return out;
    }
    out.append(text.substr(pos, at - pos)).append(to);
    pos = at + from.size();
  }
}

// Length of the well-formed UTF-8 sequence at text[pos], or minus the length of the maximal
// invalid subpart there (Unicode 15, table 3-7 and "best practice for U+FFFD substitution").
int Utf8Step(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return 1;
  int len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    len = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    len = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    len = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int i = 1; i < len; ++i) {
    if (pos + i >= text.size()) return -i;
    const uint8_t b = byte(pos + i);
    const uint8_t min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
    if (b < min || b > max) return -i;
  }
  return len;
}

// Parses "<0xXX>" (the byte-fallback spelling) into its byte.
std::optional<uint8_t> ParseByteToken(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  unsigned value = 0;
  for (char c : piece.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') value |= c - '0';
    else if (c >= 'A' && c <= 'F') value |= c - 'A' + 10;
    else return std::nullopt;
  }
  return static_cast<uint8_t>(value);
}

// obj[key], or null when obj is not an object or lacks the key (const operator[] would assert).
const Json& Field(const Json& obj, const char* key) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

absl::Status Unsupported(std::string_view what, const Json& value) {
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported ", AsAbsl(what), ": ",
                                               value.dump().substr(0, 200)));
}

// Reads a {"type": "Replace", "pattern": {"String": from}, "content": to} object.
absl::Status ParseReplace(const Json& node, std::string* from, std::string* to) {
  if (!node.is_object() || node.value("type", "") != "Replace" ||
      !node.contains("pattern") || !Field(node, "pattern").contains("String")) {
    return Unsupported("normalizer/decoder step", node);
  }
  *from = Field(Field(node, "pattern"), "String").get<std::string>();
  *to = Field(node, "content").get<std::string>();
  return absl::OkStatus();
}

// Whether `text` is a well-formed UTF-8 prefix whose last character is cut off by the end.
bool IsUnfinishedUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const int step = Utf8Step(text, pos);
    if (step > 0) {
      pos += step;
      continue;
    }
    const uint8_t lead = static_cast<uint8_t>(text[pos]);
    return lead >= 0xC2 && lead <= 0xF4 && pos - step == text.size();
  }
  return false;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const int step = Utf8Step(text, pos);
    if (step < 0) return false;
    pos += step;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const int step = Utf8Step(text, pos);
    if (step > 0) {
      out.append(text.substr(pos, step));
      pos += step;
    } else {
      out.append(kReplacementChar);
      pos += -step;
    }
  }
  return out;
}

// Leftmost-longest matcher over the added tokens' bytes (what the library does with its
// Aho-Corasick automaton in LeftmostLongest mode): a byte trie walked from each start position.
class Tokenizer::AddedMatcher {
 public:
  void Add(std::string_view content, int32_t id) {
    if (content.empty()) return;
    int node = 0;
    for (char c : content) {
      const uint8_t b = static_cast<uint8_t>(c);
      int child = Child(node, b);
      if (child < 0) {
        child = static_cast<int>(nodes_.size());
        nodes_.push_back({});
        nodes_[node].children.emplace_back(b, child);
      }
      node = child;
    }
    nodes_[node].id = id;
    can_start_[static_cast<uint8_t>(content[0])] = true;
  }
  // The longest token starting at text[pos]: (id, length), or id -1.
  std::pair<int32_t, size_t> Match(std::string_view text, size_t pos) const {
    std::pair<int32_t, size_t> best{-1, 0};
    if (!can_start_[static_cast<uint8_t>(text[pos])]) return best;
    int node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = Child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      if (nodes_[node].id >= 0) best = {nodes_[node].id, i + 1 - pos};
    }
    return best;
  }

 private:
  struct Node {
    int32_t id = -1;
    std::vector<std::pair<uint8_t, int>> children;
  };
  int Child(int node, uint8_t b) const {
    for (const auto& [byte, child] : nodes_[node].children) {
      if (byte == b) return child;
    }
    return -1;
  }
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool can_start_[256] = {};
};

Tokenizer::Tokenizer() { std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1); }
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::ostringstream buffer;
  buffer << file.rdbuf();
  if (!file.good() && !file.eof()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return LoadFromJson(buffer.str());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJson(std::string_view json) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  // nlohmann_json reports type mismatches by exception; none may leave this library.
  try {
    RETURN_IF_ERROR(tokenizer->Parse(json));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
  return tokenizer;
}

// The two big parts of tokenizer.json (model.vocab, model.merges) go straight into flat vectors
// through a SAX handler; everything else (small) is built as a DOM. ~3x faster than a full DOM.
struct Tokenizer::BigParts {
  std::vector<std::pair<std::string, int64_t>> vocab;       // [num_pieces] (piece, id)
  std::vector<std::pair<std::string, std::string>> merges;  // [num_merges] in rank order
  bool bad_entry = false;
};

namespace {

class TokenizerJsonSax : public nlohmann::json_sax<Json> {
 public:
  explicit TokenizerJsonSax(Tokenizer::BigParts* parts) : parts_(parts) {}
  Json root;

  bool null() override { return Value(nullptr); }
  bool boolean(bool v) override { return Value(v); }
  bool number_integer(number_integer_t v) override { return Number(v); }
  bool number_unsigned(number_unsigned_t v) override { return Number(static_cast<int64_t>(v)); }
  bool number_float(number_float_t v, const string_t&) override { return Value(v); }
  bool binary(binary_t&) override { return false; }
  bool string(string_t& v) override {
    if (mode_ == Mode::kMergePair) {
      pair_.push_back(std::move(v));
      return true;
    }
    if (mode_ == Mode::kMerges) {
      const size_t space = v.find(' ');
      if (space == std::string::npos) return Bad();
      parts_->merges.emplace_back(v.substr(0, space), v.substr(space + 1));
      return true;
    }
    return Value(std::move(v));
  }
  bool key(string_t& v) override {
    key_ = std::move(v);
    return true;
  }
  bool start_object(std::size_t) override {
    if (mode_ != Mode::kDom) return Bad();
    if (InModel("vocab")) return Enter(Mode::kVocab);
    return Open(Json::object());
  }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override {
    if (mode_ == Mode::kMerges) return Enter(Mode::kMergePair);
    if (mode_ != Mode::kDom) return Bad();
    if (InModel("merges")) return Enter(Mode::kMerges);
    return Open(Json::array());
  }
  bool end_array() override {
    if (mode_ == Mode::kMergePair) {
      if (pair_.size() != 2) return Bad();
      parts_->merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      pair_.clear();
      mode_ = Mode::kMerges;
      return true;
    }
    return Close();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };

  // Whether the value starting now is root["model"][field].
  bool InModel(const char* field) const {
    return stack_.size() == 2 && path_[1] == "model" && stack_.back()->is_object() && key_ == field;
  }
  bool Bad() {
    parts_->bad_entry = true;
    return false;
  }
  bool Enter(Mode mode) {
    mode_ = mode;
    return true;
  }
  bool Number(int64_t v) {
    if (mode_ == Mode::kVocab) {
      parts_->vocab.emplace_back(std::move(key_), v);
      return true;
    }
    return Value(v);
  }
  // Where the next value goes: the root, the current object under the last key, or the array's end.
  Json* Slot() {
    if (stack_.empty()) return &root;
    Json& top = *stack_.back();
    if (top.is_object()) return &top[key_];
    top.push_back(nullptr);
    return &top.back();
  }
  template <typename T>
  bool Value(T&& v) {
    if (mode_ != Mode::kDom) return Bad();
    *Slot() = Json(std::forward<T>(v));
    return true;
  }
  bool Open(Json container) {
    const bool in_object = !stack_.empty() && stack_.back()->is_object();
    path_.push_back(in_object ? key_ : std::string());
    Json* slot = Slot();
    *slot = std::move(container);
    stack_.push_back(slot);  // stable: the parent does not grow while this child is open
    return true;
  }
  bool Close() {
    if (mode_ == Mode::kVocab || mode_ == Mode::kMerges) return Enter(Mode::kDom);
    if (stack_.empty()) return Bad();
    stack_.pop_back();
    path_.pop_back();
    return true;
  }

  Tokenizer::BigParts* parts_;
  Mode mode_ = Mode::kDom;
  std::vector<Json*> stack_;        // open containers of the DOM
  std::vector<std::string> path_;   // keys leading to the open containers ("" for arrays)
  std::string key_;
  std::vector<std::string> pair_;   // the merge being read
};

}  // namespace

absl::Status Tokenizer::Parse(std::string_view text) {
  BigParts parts;
  TokenizerJsonSax sax(&parts);
  const bool parsed = Json::sax_parse(text.begin(), text.end(), &sax);
  Json& root = sax.root;
  if (!parsed && !parts.bad_entry) return absl::InvalidArgumentError("tokenizer.json is not valid JSON");
  if (!root.is_object() && !parts.bad_entry) {
    return absl::InvalidArgumentError("tokenizer.json is not a JSON object");
  }
  if (parts.bad_entry) return absl::InvalidArgumentError("tokenizer.json: malformed vocab or merges entry");
  const Json& model = Field(root, "model");
  if (!model.is_object() || model.value("type", "") != "BPE") return Unsupported("model", Field(model, "type"));
  if (!Field(model, "continuing_subword_prefix").is_null() ||
      !Field(model, "end_of_word_suffix").is_null() || !Field(model, "dropout").is_null() ||
      model.value("ignore_merges", false)) {
    return Unsupported("BPE options", model);
  }
  RETURN_IF_ERROR(BuildVocab(parts, Field(root, "added_tokens")));
  RETURN_IF_ERROR(BuildMerges(parts));
  return ParsePipeline(root, model);
}

absl::Status Tokenizer::BuildVocab(const BigParts& parts, const Json& added) {
  if (parts.vocab.empty()) return absl::InvalidArgumentError("tokenizer.json: no vocab");
  size_t size = 0;
  for (const auto& [piece, id] : parts.vocab) {
    if (id < 0 || id >= (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad id for ", piece));
    }
    size = std::max(size, static_cast<size_t>(id) + 1);
  }
  for (const Json& token : added) {
    const int64_t id = token.value("id", int64_t{-1});
    if (id < 0 || id >= (1 << 24)) return absl::InvalidArgumentError("tokenizer.json: bad added id");
    size = std::max(size, static_cast<size_t>(id) + 1);
  }
  pieces_.assign(size, "");
  special_.assign(size, 0);
  byte_of_.assign(size, -1);
  piece_to_id_.reserve(size);
  for (const auto& [piece, id] : parts.vocab) {
    pieces_[id] = piece;
    piece_to_id_[piece] = static_cast<int32_t>(id);
    if (auto b = ParseByteToken(piece)) {
      byte_ids_[*b] = static_cast<int32_t>(id);
      byte_of_[id] = *b;
    }
  }
  for (const Json& token : added) {
    if (token.value("lstrip", false) || token.value("rstrip", false) ||
        token.value("single_word", false) || token.value("normalized", false)) {
      return Unsupported("added token options", token);
    }
    AddedToken entry{Field(token, "id").get<int32_t>(), Field(token, "content").get<std::string>(),
                     token.value("special", false)};
    pieces_[entry.id] = entry.content;
    piece_to_id_[entry.content] = entry.id;
    special_[entry.id] = entry.special;
    added_.push_back(std::move(entry));
  }
  return RebuildAddedMatcher();
}

absl::Status Tokenizer::BuildMerges(const BigParts& parts) {
  merges_.reserve(parts.merges.size());
  int32_t rank = 0;
  std::string joined;
  for (const auto& [left, right] : parts.merges) {
    joined.assign(left).append(right);
    auto l = piece_to_id_.find(left), r = piece_to_id_.find(right), m = piece_to_id_.find(joined);
    if (l == piece_to_id_.end() || r == piece_to_id_.end() || m == piece_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge of unknown pieces \"", left,
                                                     "\" \"", right, "\""));
    }
    const uint64_t key = (uint64_t{static_cast<uint32_t>(l->second)} << 32) |
                         static_cast<uint32_t>(r->second);
    merges_.try_emplace(key, Merge{rank++, m->second});
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::ParsePipeline(const Json& root, const Json& model) {
  if (model.contains("unk_token") && Field(model, "unk_token").is_string()) {
    auto it = piece_to_id_.find(Field(model, "unk_token").get<std::string>());
    if (it != piece_to_id_.end()) unk_id_ = it->second;
  }
  fuse_unk_ = model.value("fuse_unk", false);
  if (!model.value("byte_fallback", false)) std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);

  const Json& normalizer = Field(root, "normalizer");
  if (!normalizer.is_null()) RETURN_IF_ERROR(ParseReplace(normalizer, &normalizer_from_, &normalizer_to_));
  const Json& pre = Field(root, "pre_tokenizer");
  if (!pre.is_null()) RETURN_IF_ERROR(ParseSplit(pre));
  const Json& decoder = Field(root, "decoder");
  if (!decoder.is_null()) {
    if (decoder.value("type", "") != "Sequence") return Unsupported("decoder", decoder);
    for (const Json& step : Field(decoder, "decoders")) {
      const std::string type = step.value("type", "");
      if (type == "Replace") {
        std::string from, to;
        RETURN_IF_ERROR(ParseReplace(step, &from, &to));
        if (from != kSpaceMark || to != " ") return Unsupported("decoder Replace", step);
      } else if (type != "ByteFallback" && type != "Fuse") {
        return Unsupported("decoder step", step);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::RebuildAddedMatcher() {
  matcher_ = std::make_unique<AddedMatcher>();
  for (const AddedToken& token : added_) matcher_->Add(token.content, token.id);
  return absl::OkStatus();
}

absl::Status Tokenizer::SetSpecialToken(int32_t id, std::string_view content) {
  if (id < 0 || id >= vocab_size()) {
    return absl::OutOfRangeError(absl::StrCat("special token id ", id, " outside the vocabulary"));
  }
  if (content.empty()) return absl::InvalidArgumentError("empty special token");
  auto old = piece_to_id_.find(pieces_[id]);
  if (old != piece_to_id_.end() && old->second == id) piece_to_id_.erase(old);
  pieces_[id] = std::string(content);
  piece_to_id_[pieces_[id]] = id;
  special_[id] = 1;
  byte_of_[id] = -1;
  auto it = std::find_if(added_.begin(), added_.end(), [&](const AddedToken& t) { return t.id == id; });
  if (it == added_.end()) {
    added_.push_back({id, std::string(content), true});
  } else {
    it->content = std::string(content);
    it->special = true;
  }
  return RebuildAddedMatcher();
}

std::string Tokenizer::Normalize(std::string_view text) const {
  if (normalizer_from_.empty()) return std::string(text);
  return ReplaceAll(text, normalizer_from_, normalizer_to_);
}

// BPE over one pre-tokenized word, as the library's Word::merge_all: a heap of candidate merges
// ordered by (rank, position); an entry is stale when the pair at its position no longer merges
// into the same new id.
void Tokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;  // [num_symbols]
  symbols.reserve(word.size());
  const auto push = [&](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  int32_t pending_unk = -1;  // a run of unknown characters being fused
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = static_cast<size_t>(std::max(1, Utf8Step(word, pos)));
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    if (auto it = piece_to_id_.find(AsAbsl(ch)); it != piece_to_id_.end()) {
      if (pending_unk >= 0) push(std::exchange(pending_unk, -1));
      push(it->second);
      continue;
    }
    bool all_bytes = true;
    for (char c : ch) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
    if (all_bytes) {
      for (char c : ch) push(byte_ids_[static_cast<uint8_t>(c)]);
      continue;
    }
    if (unk_id_ < 0) continue;
    if (pending_unk >= 0 && !fuse_unk_) push(pending_unk);
    pending_unk = unk_id_;
  }
  if (pending_unk >= 0) push(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator<(const Candidate& o) const {  // max-heap: lowest rank, then lowest pos on top
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto lookup = [&](int32_t left, int32_t right) -> const Merge* {
    auto it = merges_.find((uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::vector<Candidate> heap_storage;
  heap_storage.reserve(symbols.size());
  std::priority_queue<Candidate> heap(std::less<Candidate>(), std::move(heap_storage));
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = lookup(symbols[i].id, symbols[i + 1].id)) {
      heap.push({m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    const Merge* m = lookup(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) symbols[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = lookup(symbols[cur.prev].id, cur.id)) heap.push({pm->rank, cur.prev, pm->new_id});
    }
    if (cur.next >= 0) {
      if (const Merge* nm = lookup(cur.id, symbols[cur.next].id)) heap.push({nm->rank, top.pos, nm->new_id});
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

absl::Status Tokenizer::ParseSplit(const Json& pre) {
  const std::string behavior = pre.value("behavior", "");
  const Json& pattern = Field(pre, "pattern");
  if (pre.value("type", "") != "Split" || pre.value("invert", false) ||
      (behavior != "MergedWithPrevious" && behavior != "Isolated")) {
    return Unsupported("pre_tokenizer", pre);
  }
  split_isolated_ = behavior == "Isolated";
  if (Field(pattern, "String").is_string()) {
    split_literal_ = Field(pattern, "String").get<std::string>();
    if (split_literal_.empty()) return Unsupported("pre_tokenizer (empty pattern)", pre);
    return absl::OkStatus();
  }
  if (!Field(pattern, "Regex").is_string()) return Unsupported("pre_tokenizer pattern", pre);
  // RE2 is UTF-8 aware but its \d is ASCII digits only (tokenizers' Oniguruma may be wider).
  auto regex = std::make_shared<re2::RE2>(Field(pattern, "Regex").get<std::string>(), RE2::Quiet);
  if (!regex->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: pre_tokenizer regex does not compile: ", regex->error()));
  }
  split_regex_ = std::move(regex);
  return absl::OkStatus();
}

std::pair<size_t, size_t> Tokenizer::FindSplit(std::string_view text) const {
  if (!split_literal_.empty()) return {text.find(split_literal_), split_literal_.size()};
  if (!split_regex_) return {std::string_view::npos, 0};
  for (size_t from = 0; from < text.size();) {
    re2::StringPiece match;
    if (!split_regex_->Match(re2::StringPiece(text.data(), text.size()), from, text.size(),
                             RE2::UNANCHORED, &match, 1)) {
      break;
    }
    const size_t at = static_cast<size_t>(match.data() - text.data());
    if (!match.empty()) return {at, match.size()};
    from = at + 1;  // an empty match splits nothing
  }
  return {std::string_view::npos, 0};
}

void Tokenizer::EncodeNormalizedPiece(std::string_view text, std::vector<int32_t>* out) const {
  const std::string normalized = Normalize(text);
  std::string_view rest = normalized;
  while (!rest.empty()) {
    const auto [at, len] = FindSplit(rest);
    if (at == std::string_view::npos) break;
    if (split_isolated_) {
      if (at > 0) EncodeWord(rest.substr(0, at), out);
      EncodeWord(rest.substr(at, len), out);
    } else {
      EncodeWord(rest.substr(0, at + len), out);
    }
    rest.remove_prefix(at + len);
  }
  if (!rest.empty()) EncodeWord(rest, out);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view raw) const {
  std::string sanitized;
  std::string_view text = raw;
  if (!IsValidUtf8(raw)) {
    sanitized = SanitizeUtf8(raw);
    text = sanitized;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  size_t piece_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto [id, len] = matcher_->Match(text, pos);
    if (id < 0) {
      ++pos;
      continue;
    }
    if (pos > piece_start) EncodeNormalizedPiece(text.substr(piece_start, pos - piece_start), &ids);
    ids.push_back(id);
    pos += len;
    piece_start = pos;
  }
  if (piece_start < text.size()) EncodeNormalizedPiece(text.substr(piece_start), &ids);
  return ids;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special) const {
  std::string out, byte_run;
  const auto flush_bytes = [&] {
    if (IsValidUtf8(byte_run)) {
      out += byte_run;
    } else {
      for (size_t i = 0; i < byte_run.size(); ++i) out.append(kReplacementChar);
    }
    byte_run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || (skip_special && special_[id])) continue;
    if (byte_of_[id] >= 0) {
      byte_run.push_back(static_cast<char>(byte_of_[id]));
      continue;
    }
    if (!byte_run.empty()) flush_bytes();
    out += ReplaceAll(pieces_[id], kSpaceMark, " ");
  }
  if (!byte_run.empty()) flush_bytes();
  return out;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view piece) const {
  auto it = piece_to_id_.find(AsAbsl(piece));
  if (it == piece_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string_view Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return pieces_[id];
}

bool Tokenizer::IsSpecial(int32_t id) const { return id >= 0 && id < vocab_size() && special_[id]; }

std::optional<uint8_t> Tokenizer::ByteOf(int32_t id) const {
  if (id < 0 || id >= vocab_size() || byte_of_[id] < 0) return std::nullopt;
  return static_cast<uint8_t>(byte_of_[id]);
}

std::string StreamingDecoder::Add(int32_t id) {
  if (auto byte = tokenizer_.ByteOf(id)) {
    pending_bytes_.push_back(static_cast<char>(*byte));
    // An unfinished but so far well-formed character waits for its next byte.
    if (IsUnfinishedUtf8(pending_bytes_)) return {};
    return Flush();
  }
  std::string out = Flush();
  const int32_t single[1] = {id};
  out += tokenizer_.Decode(single, skip_special_);
  return out;
}

std::string StreamingDecoder::Flush() {
  if (pending_bytes_.empty()) return {};
  std::string out;
  if (IsValidUtf8(pending_bytes_)) {
    out = pending_bytes_;
  } else {
    for (size_t i = 0; i < pending_bytes_.size(); ++i) out.append(kReplacementChar);
  }
  pending_bytes_.clear();
  return out;
}

}  // namespace avserve::engine
