// Windowed ingest (IngestOptions::window_start_us/window_end_us, Note [Window] in media_reader.h):
// for several windows of the generated media, the segments are byte for byte those of a full read
// that overlap the window, whether the reader seeks, seeks further back, or decodes from the start.
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ingest/media_reader.h"
#include "tests/ingest/test_media.h"

namespace avserve::ingest {
namespace {

using testing::IngestAll;
using testing::Ingested;
using testing::Sample;

Ingested Read(const std::string& path, const IngestOptions& options) {
  auto reader = MediaReader::OpenFile(path, options);
  if (!reader.ok()) return Ingested{{}, {}, {}, reader.status()};
  return IngestAll(std::move(*reader));
}

IngestOptions Window(IngestOptions options, int64_t start_us, int64_t end_us) {
  options.window_start_us = start_us;
  options.window_end_us = end_us;
  return options;
}

// The segments of a full read overlapping [start_us, end_us) (end_us 0: to the end), as
// service/model_backend.cc selected them before windowed reading existed.
std::vector<const Segment*> Overlapping(const Ingested& full, int64_t start_us, int64_t end_us) {
  std::vector<const Segment*> out;
  for (const Segment& s : full.segments) {
    if ((end_us == 0 || s.start_us < end_us) && s.end_us > start_us) out.push_back(&s);
  }
  return out;
}

void ExpectSameSegments(const std::vector<const Segment*>& want, const std::vector<Segment>& got,
                        const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    const Segment& a = *want[i];
    const Segment& b = got[i];
    const std::string at = what + " segment " + std::to_string(a.index);
    EXPECT_EQ(a.index, b.index) << at;
    EXPECT_EQ(a.start_us, b.start_us) << at;
    EXPECT_EQ(a.end_us, b.end_us) << at;
    ASSERT_EQ(a.frame.has_value(), b.frame.has_value()) << at;
    if (a.frame) {
      EXPECT_EQ(a.frame->sample_us, b.frame->sample_us) << at;
      EXPECT_EQ(a.frame->pts_us, b.frame->pts_us) << at;
      EXPECT_EQ(a.frame->grid_rows, b.frame->grid_rows) << at;
      EXPECT_EQ(a.frame->grid_cols, b.frame->grid_cols) << at;
      EXPECT_TRUE(a.frame->patches == b.frame->patches) << at << ": patches differ";
    }
    EXPECT_EQ(a.audio.start_us, b.audio.start_us) << at;
    EXPECT_EQ(a.audio.num_frames, b.audio.num_frames) << at;
    EXPECT_TRUE(a.audio.samples == b.audio.samples) << at << ": audio differs";
  }
}

struct Case {
  std::string name;
  double fps;
  SamplingMode mode;
  bool seeks = true;  // false: the seek lands after the window, so the reader decodes from the start
};

class WindowTest : public ::testing::TestWithParam<Case> {};

// Windows: from 0, mid-GOP, on a second boundary, a fraction of a sample off one, near the end,
// ending exactly at the end, past the end, and one ending before it starts.
TEST_P(WindowTest, WindowIsTheSameSpanOfAFullRead) {
  const Case& c = GetParam();
  const std::string path = Sample(c.name);
  IngestOptions options;
  options.fps = c.fps;
  options.mode = c.mode;
  const Ingested full = Read(path, options);
  ASSERT_TRUE(full.status.ok()) << full.status;
  ASSERT_GE(full.segments.size(), 3u);
  const int64_t duration = full.segments.back().end_us;
  const std::vector<std::pair<int64_t, int64_t>> windows = {
      {0, 1500000},           {1370000, 3210000}, {2000000, 3000000},     {2000001, 0},
      {duration - 700000, 0}, {duration - 1900000, duration}, {duration + 1000000, 0},
      {3000000, 2000000},     {4100000, 4100001}};
  for (const auto& [start, end] : windows) {
    if (start < 0) continue;
    const std::string what = c.name + " window [" + std::to_string(start) + ", " + std::to_string(end) + ")";
    const Ingested windowed = Read(path, Window(options, start, end));
    ASSERT_TRUE(windowed.status.ok()) << what << ": " << windowed.status;
    ExpectSameSegments(Overlapping(full, start, end), windowed.segments, what);
    // Every window past the first half second of a video seeks (and most decode less).
    if (full.segments[0].frame && start > 600000 && (end == 0 || end > start)) {
      EXPECT_GT(windowed.stats.window_seeks, 0) << what;
      EXPECT_TRUE(!c.seeks || !windowed.stats.window_from_start) << what;
    }
    EXPECT_LE(windowed.stats.video_frames_decoded, full.stats.video_frames_decoded) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Media, WindowTest,
    ::testing::Values(Case{"cfr25.mp4", 1.0, SamplingMode::kExact},  // H.264 with B-frames, AAC 48 kHz
                      Case{"cfr25.mp4", 3.0, SamplingMode::kExact}, Case{"cfr30.mp4", 1.0, SamplingMode::kExact},
                      Case{"cfr60.mp4", 2.5, SamplingMode::kExact}, Case{"vfr.mp4", 2.0, SamplingMode::kExact},
                      Case{"offset.mp4", 1.0, SamplingMode::kExact},      // video starts 0.5 s late, AAC 44.1 kHz
                      // MPEG-TS seeks by searching timestamps and lands after the keyframe: falls back (mostly).
                      Case{"offset.ts", 1.0, SamplingMode::kExact, /*seeks=*/false},
                      Case{"vp9.webm", 1.0, SamplingMode::kExact},        // VP9 + Opus in WebM
                      Case{"hevc.mp4", 2.0, SamplingMode::kExact},        // HEVC with B-frames, no audio
                      Case{"av1.mkv", 1.0, SamplingMode::kExact},         // AV1 in Matroska
                      Case{"rotated.mp4", 1.0, SamplingMode::kExact},
                      Case{"tone48k_aac.mp4", 1.0, SamplingMode::kExact},  // tone bursts
                      Case{"audio_only.m4a", 1.0, SamplingMode::kExact},
                      Case{"tone44k.wav", 1.0, SamplingMode::kExact},
                      Case{"cfr25.mp4", 1.0, SamplingMode::kKeyframe},
                      Case{"cfr30.mp4", 2.0, SamplingMode::kKeyframe}),
    [](const auto& info) {
      std::string name = info.param.name + "_fps" + std::to_string(static_cast<int>(info.param.fps * 10)) +
                         (info.param.mode == SamplingMode::kKeyframe ? "_keyframe" : "");
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

TEST(WindowReadTest, LateWindowDecodesLessThanAFullRead) {
  const std::string path = Sample("cfr25.mp4");  // 6.5 s, a keyframe every 2 s
  const Ingested full = Read(path, {});
  const Ingested late = Read(path, Window({}, 5000000, 0));
  ASSERT_TRUE(full.status.ok() && late.status.ok()) << late.status;
  EXPECT_EQ(late.stats.window_seeks, 1);
  EXPECT_FALSE(late.stats.window_from_start);
  EXPECT_LT(late.stats.video_frames_decoded * 2, full.stats.video_frames_decoded);
  EXPECT_LT(late.stats.video_frames_converted, full.stats.video_frames_converted);
  // The hook sees only the window's frames, from the window's first segment on.
  ASSERT_FALSE(late.hooked.empty());
  EXPECT_EQ(late.hooked.front().first, 5);
}

TEST(WindowReadTest, BytesAreReadFromTheStartWithTheSameResult) {
  const std::string path = Sample("cfr25.mp4");
  const Ingested full = Read(path, {});
  ASSERT_TRUE(full.status.ok());
  const IngestOptions options = Window({}, 2500000, 5000000);
  auto reader = MediaReader::OpenBytes(MakeMemoryByteSource(testing::ReadBytes(path), 4096), options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const Ingested from_bytes = IngestAll(std::move(*reader));
  ASSERT_TRUE(from_bytes.status.ok()) << from_bytes.status;
  EXPECT_EQ(from_bytes.stats.window_seeks, 0);
  EXPECT_TRUE(from_bytes.stats.window_from_start);
  ExpectSameSegments(Overlapping(full, 2500000, 5000000), from_bytes.segments, "bytes");
}

TEST(WindowReadTest, VideoOnlyAndAudioOnlyOptions) {
  const std::string path = Sample("tone48k_aac.mp4");
  for (const bool video : {false, true}) {
    IngestOptions options;
    options.use_video = video;
    options.use_audio = !video;
    const Ingested full = Read(path, options);
    ASSERT_TRUE(full.status.ok());
    const Ingested windowed = Read(path, Window(options, 2700000, 4300000));
    ASSERT_TRUE(windowed.status.ok()) << windowed.status;
    ExpectSameSegments(Overlapping(full, 2700000, 4300000), windowed.segments, video ? "video only" : "audio only");
  }
}

TEST(WindowReadTest, RejectsNegativeWindow) {
  EXPECT_FALSE(MediaReader::OpenFile(Sample("cfr25.mp4"), Window({}, -1, 0)).ok());
  EXPECT_FALSE(MediaReader::OpenFile(Sample("cfr25.mp4"), Window({}, 0, -5)).ok());
}

}  // namespace
}  // namespace avserve::ingest
