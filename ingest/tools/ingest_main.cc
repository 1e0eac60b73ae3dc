// avserve_ingest_tool: probe a media file, or run ingest on it and print a per-segment summary,
// optionally dumping raw patches and audio frames (float32 little endian) to a directory.
//   avserve_ingest_tool probe FILE
//   avserve_ingest_tool run FILE [--fps 1] [--budget 70] [--mode exact|keyframe] [--threads 0]
//                               [--dump DIR] [--quiet] [--from-memory] [--hash]
//                               [--no-skip] [--no-worker] [--window-start S] [--window-end S]
//                               [--filter-window] [--no-audio]
// --filter-window applies the window the old way (for bench/ingest.sh): a full read from the start
// that drops the segments outside it and stops after it, instead of the reader's seek.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "CLI/CLI.hpp"
#include "ingest/media_reader.h"

namespace {

using avserve::ingest::IngestOptions;
using avserve::ingest::MediaProbe;
using avserve::ingest::MediaReader;
using avserve::ingest::Segment;

void PrintProbe(const MediaProbe& p) {
  std::printf("container=%s duration_s=%.3f start_s=%.3f\n", p.container.c_str(), p.duration_us / 1e6,
              p.start_us / 1e6);
  if (p.has_video) {
    std::printf("video codec=%s size=%dx%d rotation=%d fps=%.3f\n", p.video_codec.c_str(), p.width, p.height,
                p.rotation_deg, p.avg_frame_rate);
    for (int budget : {70, 140, 280, 560, 1120}) {
      auto size = avserve::ingest::TargetSize(p.height, p.width, budget);
      if (size.ok()) std::printf("target budget=%d height=%d width=%d\n", budget, size->first, size->second);
    }
  }
  if (p.has_audio) {
    std::printf("audio codec=%s rate_hz=%d channels=%d\n", p.audio_codec.c_str(), p.audio_sample_rate_hz,
                p.audio_channels);
  }
}

// FNV-1a over the bit patterns of `v` (32-bit words), folded into `hash`: a cheap fingerprint to
// compare outputs bit for bit across builds and options.
void HashFloats(const std::vector<float>& v, uint64_t* hash) {
  for (float f : v) {
    uint32_t bits = 0;
    std::memcpy(&bits, &f, sizeof(bits));
    *hash = (*hash ^ bits) * 1099511628211ull;
  }
}

bool WriteFloats(const std::string& path, const std::vector<float>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return static_cast<bool>(out);
}

absl::StatusOr<std::unique_ptr<MediaReader>> Open(const std::string& path, const IngestOptions& options,
                                                  bool from_memory) {
  if (!from_memory) return MediaReader::OpenFile(path, options);
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return MediaReader::OpenBytes(avserve::ingest::MakeMemoryByteSource(std::move(bytes), 1 << 16), options);
}

int Run(const std::string& path, const IngestOptions& options, const std::string& dump_dir, bool quiet,
        bool from_memory, bool hash, bool filter_window) {
  const auto start = std::chrono::steady_clock::now();
  IngestOptions open_options = options;
  if (filter_window) open_options.window_start_us = open_options.window_end_us = 0;
  auto reader = Open(path, open_options, from_memory);
  if (!reader.ok()) {
    std::fprintf(stderr, "error: %s\n", reader.status().ToString().c_str());
    return 1;
  }
  MediaReader& r = **reader;
  if (!quiet) PrintProbe(r.probe());
  std::printf("grid=%dx%d expected_segments=%lld mode=%s\n", r.grid_rows(), r.grid_cols(),
              static_cast<long long>(r.num_segments()),
              options.mode == avserve::ingest::SamplingMode::kExact ? "exact" : "keyframe");
  int64_t segments = 0, audio_frames = 0;
  uint64_t fingerprint = 14695981039346656037ull;
  while (true) {
    auto next = r.Next();
    if (!next.ok()) {
      std::fprintf(stderr, "error: %s\n", next.status().ToString().c_str());
      return 1;
    }
    if (!next->has_value()) break;
    const Segment& s = **next;
    if (filter_window) {
      if (options.window_end_us > 0 && s.start_us >= options.window_end_us) break;
      if (s.end_us <= options.window_start_us) continue;
    }
    ++segments;
    audio_frames += s.audio.num_frames;
    if (hash) {
      if (s.frame) HashFloats(s.frame->patches, &fingerprint);
      HashFloats(s.audio.samples, &fingerprint);
    }
    if (!quiet) {
      std::printf("segment %lld [%.3f, %.3f) frame_pts_s=%.3f patches=%d audio_frames=%d\n",
                  static_cast<long long>(s.index), s.start_us / 1e6, s.end_us / 1e6,
                  s.frame ? s.frame->pts_us / 1e6 : -1.0, s.frame ? s.frame->num_patches() : 0, s.audio.num_frames);
    }
    if (!dump_dir.empty()) {
      const std::string base = dump_dir + "/segment_" + std::to_string(s.index);
      if ((s.frame && !WriteFloats(base + "_patches.f32", s.frame->patches)) ||
          !WriteFloats(base + "_audio.f32", s.audio.samples)) {
        std::fprintf(stderr, "error: cannot write to %s\n", dump_dir.c_str());
        return 1;
      }
    }
  }
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto& st = r.stats();
  std::printf("done segments=%lld audio_frames=%lld wall_s=%.3f peak_rss_mb=%.1f video_packets=%lld skipped=%lld "
              "decoded=%lld converted=%lld window_seeks=%lld from_start=%d\n",
              static_cast<long long>(segments), static_cast<long long>(audio_frames), wall_s,
              usage.ru_maxrss / 1024.0, static_cast<long long>(st.video_packets),
              static_cast<long long>(st.video_packets_skipped), static_cast<long long>(st.video_frames_decoded),
              static_cast<long long>(st.video_frames_converted), static_cast<long long>(st.window_seeks),
              st.window_from_start ? 1 : 0);
  if (hash) std::printf("hash=%016llx\n", static_cast<unsigned long long>(fingerprint));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"avserve ingest tool"};
  app.require_subcommand(1);
  std::string path, dump_dir, mode = "exact";
  IngestOptions options;
  bool quiet = false, from_memory = false, hash = false;
  CLI::App* probe = app.add_subcommand("probe", "print what the media contains");
  probe->add_option("file", path)->required();
  CLI::App* run = app.add_subcommand("run", "ingest the media and print each segment");
  run->add_option("file", path)->required();
  run->add_option("--fps", options.fps, "samples per second");
  run->add_option("--budget", options.frame_budget, "soft tokens per frame");
  run->add_option("--mode", mode, "exact or keyframe")->check(CLI::IsMember({"exact", "keyframe"}));
  run->add_option("--threads", options.decode_threads, "decoder threads (0: auto)");
  run->add_option("--dump", dump_dir, "write segment_<k>_patches.f32 / _audio.f32 here");
  run->add_flag("--quiet", quiet, "only the summary line");
  bool no_skip = false, no_worker = false;
  run->add_flag("--no-skip", no_skip, "decode disposable frames too (to measure the skipping)");
  run->add_flag("--from-memory", from_memory, "read the file into memory and use OpenBytes");
  run->add_flag("--no-worker", no_worker, "convert frames on the decoding thread (to measure the worker)");
  bool no_audio = false;
  run->add_flag("--no-audio", no_audio, "ignore the soundtrack");
  double window_start_s = 0, window_end_s = 0;
  bool filter_window = false;
  run->add_option("--window-start", window_start_s, "media window start, seconds (the reader seeks)");
  run->add_option("--window-end", window_end_s, "media window end, seconds (0: to the end)");
  run->add_flag("--filter-window", filter_window, "apply the window by reading from the start and dropping");
  run->add_flag("--hash", hash, "print a fingerprint of every patch and audio sample");
  CLI11_PARSE(app, argc, argv);
  if (*probe) {
    auto p = avserve::ingest::ProbeFile(path);
    if (!p.ok()) {
      std::fprintf(stderr, "error: %s\n", p.status().ToString().c_str());
      return 1;
    }
    PrintProbe(*p);
    return 0;
  }
  options.skip_disposable = !no_skip;
  options.convert_on_worker = !no_worker;
  options.use_audio = !no_audio;
  options.mode = mode == "keyframe" ? avserve::ingest::SamplingMode::kKeyframe : avserve::ingest::SamplingMode::kExact;
  options.window_start_us = static_cast<int64_t>(window_start_s * 1e6 + 0.5);
  options.window_end_us = static_cast<int64_t>(window_end_s * 1e6 + 0.5);
  return Run(path, options, dump_dir, quiet, from_memory, hash, filter_window);
}
