// Test helpers: generated sample media (samples/make_samples.sh), ffmpeg/ffprobe CLI oracles.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ingest/media_reader.h"

namespace avserve::ingest::testing {

inline std::string SamplesDir() { return std::string(AVSERVE_SOURCE_DIR) + "/samples/out"; }

// Path of a generated sample; generates it on first use (a few seconds at most).
inline std::string Sample(const std::string& name) {
  const std::string path = SamplesDir() + "/" + name;
  std::ifstream probe(path);
  if (!probe.good()) {
    const std::string cmd = std::string(AVSERVE_SOURCE_DIR) + "/samples/make_samples.sh '" + SamplesDir() + "' " + name;
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  return path;
}

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs a shell command and returns its stdout.
inline std::string Capture(const std::string& cmd) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe.get())) > 0) out.append(buf, n);
  return out;
}

// Presentation times (seconds, container clock) of every video frame, from ffprobe.
inline std::vector<double> ProbeFrameTimes(const std::string& path) {
  const std::string out = Capture("ffprobe -v error -select_streams v:0 -show_entries frame=best_effort_timestamp_time "
                                  "-of csv=p=0 '" + path + "'");
  std::vector<double> times;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t end = out.find('\n', pos);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(pos, end - pos);
    if (!line.empty() && line.find_first_not_of("0123456789.-,") == std::string::npos) {
      times.push_back(std::strtod(line.c_str(), nullptr));
    }
    pos = end + 1;
  }
  return times;
}

inline double ProbeStartTime(const std::string& path) {
  return std::strtod(Capture("ffprobe -v error -show_entries format=start_time -of csv=p=0 '" + path + "'").c_str(),
                     nullptr);
}

// Decodes the time a test frame encodes (centiseconds): 16 bars of 12 px, white = bit set. A
// portrait image is the landscape test frame rotated 90 degrees clockwise: bars run down it.
inline int DecodeBars(const RgbImage& image) {
  const bool rotated = image.height > image.width;
  const int length = rotated ? image.height : image.width;
  int value = 0;
  for (int bit = 0; bit < 16 && bit * 12 + 6 < length; ++bit) {
    const int along = bit * 12 + 6;
    const int y = rotated ? along : image.height / 2;
    const int x = rotated ? image.width / 2 : along;
    if (image.pixels[(static_cast<size_t>(y) * image.width + x) * 3] > 128) value |= 1 << bit;
  }
  return value;
}

// Every segment of a reader, with the native frames seen by the hook ([k] -> image).
struct Ingested {
  std::vector<Segment> segments;
  std::vector<std::pair<int64_t, RgbImage>> hooked;  // (first segment, native frame)
  MediaReader::Stats stats;
  absl::Status status;
};

inline Ingested IngestAll(std::unique_ptr<MediaReader> reader) {
  Ingested out;
  reader->set_native_frame_hook([&out](int64_t k, const RgbImage& image) { out.hooked.emplace_back(k, image); });
  while (true) {
    auto next = reader->Next();
    if (!next.ok()) {
      out.status = next.status();
      break;
    }
    if (!next->has_value()) break;
    out.segments.push_back(std::move(**next));
  }
  out.stats = reader->stats();
  return out;
}

// The native frame of segment k (the last hooked frame whose first segment is <= k).
inline const RgbImage* NativeFrame(const Ingested& in, int64_t k) {
  const RgbImage* found = nullptr;
  for (const auto& [first, image] : in.hooked) {
    if (first <= k) found = &image;
  }
  return found;
}

}  // namespace avserve::ingest::testing
