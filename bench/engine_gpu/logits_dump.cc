// logits_dump: runs one mixed prompt through avserve's engine (the real checkpoint loader and model path) and
// writes what bench/engine_gpu/parity_12b.py compares with transformers.
//   logits_dump --checkpoint DIR --inputs DIR --out DIR [--backend cuda|cpu] [--chunk N] [--rows_every K]
// Inputs (raw little-endian files, as parity_12b.py writes them): ids.i32 [n], types.i32 [n] (TokenType),
// vision_u8.bin [num_vision, 6912] (value / 255 = patch input), vision_xy.i32 [num_vision, 2], audio_f32.bin
// [num_audio, 640]; or `--inputs text:N` for N synthetic text tokens (e.g. a 262144-token context).
// Outputs: top1.i32 [n] (argmax of every position's logits), rows.i32 [r] (positions 0, K, 2K, ... and the
// last one) and logits_rows.f32 [r, vocab], plus timing on stdout. With --all_logits 0 only the last position
// of each chunk has logits (top1 is 0 elsewhere) and those positions are the rows.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/api.h"

namespace avserve::engine {
namespace {

template <typename T>
std::vector<T> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

template <typename T>
bool WriteFile(const std::string& path, const std::vector<T>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  return static_cast<bool>(out);
}

struct Args {
  std::string checkpoint, inputs, out, backend = "cuda";
  int chunk = 1024, rows_every = 64;
  bool all_logits = true;  // false: only each chunk's last position (long contexts: no 1 GB/chunk copies)
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--checkpoint") a->checkpoint = v;
    else if (k == "--inputs") a->inputs = v;
    else if (k == "--out") a->out = v;
    else if (k == "--backend") a->backend = v;
    else if (k == "--chunk") a->chunk = std::stoi(v);
    else if (k == "--rows_every") a->rows_every = std::stoi(v);
    else if (k == "--all_logits") a->all_logits = v != "0";
    else return false;
  }
  return !a->checkpoint.empty() && !a->inputs.empty() && !a->out.empty() && a->chunk > 0 && a->rows_every > 0;
}

// Positions [begin, end) of the prompt with their media rows (media rows counted from position 0).
PromptChunk Slice(const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                  const std::vector<uint8_t>& vision, const std::vector<int32_t>& xy,
                  const std::vector<float>& audio, int begin, int end) {
  PromptChunk c;
  size_t vrow = 0, arow = 0;
  for (int i = 0; i < end; ++i) {
    const bool is_vision = types[i] == 1 || types[i] == 2, is_audio = types[i] == 3;
    if (i >= begin) {
      c.ids.push_back(ids[i]);
      c.types.push_back(static_cast<TokenType>(types[i]));
      if (is_vision) {
        for (size_t k = 0; k < 6912; ++k) c.vision_patches.push_back(vision[vrow * 6912 + k] / 255.0f);
        c.vision_positions.push_back(xy[2 * vrow]);
        c.vision_positions.push_back(xy[2 * vrow + 1]);
      }
      if (is_audio) c.audio_frames.insert(c.audio_frames.end(), audio.begin() + arow * 640,
                                          audio.begin() + (arow + 1) * 640);
    }
    vrow += is_vision;
    arow += is_audio;
  }
  return c;
}

// Chunk ends: steps of `chunk` positions, never cutting a vision block (the engine refuses that).
std::vector<int> ChunkEnds(const std::vector<int32_t>& types, int chunk) {
  std::vector<int> ends;
  const int n = static_cast<int>(types.size());
  int begin = 0;
  while (begin < n) {
    int end = std::min(n, begin + chunk);
    const auto vision = [&](int i) { return types[i] == 1 || types[i] == 2; };
    while (end < n && end > begin && vision(end) && vision(end - 1)) --end;
    if (end == begin) end = std::min(n, begin + chunk);  // a block longer than a chunk: let the engine say so
    ends.push_back(end);
    begin = end;
  }
  return ends;
}

// `--inputs text:N`: N pseudo-random plain-text ids after <bos> (long-context runs, no media): [1000, 200000)
// for the real vocabulary, [109, 200) for the tiny test checkpoints'.
void SyntheticText(int n, int vocab, std::vector<int32_t>* ids, std::vector<int32_t>* types) {
  const uint32_t lo = vocab > 4096 ? 1000 : 109, span = vocab > 4096 ? 199000 : 91;
  uint32_t state = 12345;
  ids->assign(1, 2);
  for (int i = 1; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    ids->push_back(static_cast<int32_t>(lo + (state >> 8) % span));
  }
  types->assign(n, 0);
}

int Run(const Args& a) {
  const bool synthetic = a.inputs.rfind("text:", 0) == 0;
  std::vector<int32_t> ids, types;
  if (synthetic) {
    const int n = std::stoi(a.inputs.substr(5));
    ids.assign(n, 0);  // filled once the vocabulary is known
    types.assign(n, 0);
  } else {
    ids = ReadFile<int32_t>(a.inputs + "/ids.i32");
    types = ReadFile<int32_t>(a.inputs + "/types.i32");
  }
  const auto vision = ReadFile<uint8_t>(a.inputs + "/vision_u8.bin");
  const auto xy = ReadFile<int32_t>(a.inputs + "/vision_xy.i32");
  const auto audio = ReadFile<float>(a.inputs + "/audio_f32.bin");
  if (ids.empty() || ids.size() != types.size()) return std::fprintf(stderr, "bad ids/types\n"), 2;
  EngineOptions o;
  o.checkpoint_dir = a.checkpoint;
  o.backend = a.backend == "cpu" ? BackendKind::kCpu : BackendKind::kCuda;
  o.prefill_chunk_tokens = a.chunk;
  auto t0 = std::chrono::steady_clock::now();
  auto engine = Engine::Load(o);
  if (!engine.ok()) return std::fprintf(stderr, "load: %s\n", engine.status().ToString().c_str()), 1;
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (synthetic) SyntheticText(static_cast<int>(ids.size()), (*engine)->info().vocab_size, &ids, &types);
  auto seq = (*engine)->NewSequence(static_cast<int64_t>(ids.size()));
  if (!seq.ok()) return std::fprintf(stderr, "sequence: %s\n", seq.status().ToString().c_str()), 1;
  (*seq)->set_keep_all_logits(a.all_logits);
  const int n = static_cast<int>(ids.size());
  std::vector<int32_t> top1(n), rows;
  std::vector<float> kept;
  int begin = 0;
  double prefill_s = 0;
  for (int end : ChunkEnds(types, a.chunk)) {
    t0 = std::chrono::steady_clock::now();
    const absl::Status st = (*seq)->Prefill(Slice(ids, types, vision, xy, audio, begin, end), nullptr);
    prefill_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!st.ok()) return std::fprintf(stderr, "prefill [%d, %d): %s\n", begin, end, st.ToString().c_str()), 1;
    const std::vector<float>& lg = (*seq)->logits();  // [end - begin, vocab], or [1, vocab]
    const size_t vocab = static_cast<size_t>((*engine)->info().vocab_size);
    const int first = a.all_logits ? begin : end - 1;
    if (lg.size() != static_cast<size_t>(end - first) * vocab) return std::fprintf(stderr, "logits size\n"), 1;
    if (!a.all_logits) std::printf("  prefilled %d positions, %.2f s\n", end, prefill_s), std::fflush(stdout);
    for (int i = first; i < end; ++i) {
      const float* row = lg.data() + static_cast<size_t>(i - first) * vocab;
      top1[i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      if (i % a.rows_every == 0 || i == n - 1 || !a.all_logits) {
        rows.push_back(i);
        kept.insert(kept.end(), row, row + vocab);
      }
    }
    if (a.all_logits) (*seq)->set_keep_all_logits(true);  // clears what was kept: the next chunk's rows only
    begin = end;
  }
  if (!WriteFile(a.out + "/top1.i32", top1) || !WriteFile(a.out + "/rows.i32", rows) ||
      !WriteFile(a.out + "/logits_rows.f32", kept)) {
    return std::fprintf(stderr, "cannot write to %s\n", a.out.c_str()), 1;
  }
  std::printf("logits_dump backend=%s positions=%d load_s=%.2f prefill_s=%.3f rows_kept=%zu\n",
              (*engine)->backend_name().c_str(), n, load_s, prefill_s, rows.size());
  return 0;
}

}  // namespace
}  // namespace avserve::engine

int main(int argc, char** argv) {
  avserve::engine::Args a;
  if (!avserve::engine::ParseArgs(argc, argv, &a)) {
    std::fprintf(stderr, "usage: logits_dump --checkpoint DIR --inputs DIR --out DIR [--backend cuda|cpu] "
                         "[--chunk N] [--rows_every K] [--all_logits 0|1]\n");
    return 2;
  }
  return avserve::engine::Run(a);
}
