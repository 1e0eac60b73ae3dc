// End-to-end ingest on generated media: sampling vs ffprobe timestamps and the ffmpeg CLI's
// `fps=1:round=up` frames (pixel for pixel before resizing), audio timing, patches, OpenBytes.
#include "ingest/media_reader.h"

#include <chrono>
#include <cmath>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/patchify.h"
#include "ingest/resize.h"
#include "tests/ingest/test_media.h"

namespace avserve::ingest {
namespace {

using testing::IngestAll;
using testing::Ingested;
using testing::NativeFrame;
using testing::Sample;

Ingested IngestFile(const std::string& path, IngestOptions options = {}) {
  auto reader = MediaReader::OpenFile(path, options);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return Ingested{{}, {}, {}, reader.status()};
  return IngestAll(std::move(*reader));
}

// Sampling: every segment's frame shows the time of the frame ffprobe says is on screen at t_k.
class SamplingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SamplingTest, EachSegmentShowsTheFrameOnScreenAtItsStart) {
  const std::string path = Sample(GetParam());
  const std::vector<double> times = testing::ProbeFrameTimes(path);
  ASSERT_GT(times.size(), 10u);
  const double origin = testing::ProbeStartTime(path);
  const Ingested in = IngestFile(path);
  ASSERT_TRUE(in.status.ok()) << in.status;
  ASSERT_GE(in.segments.size(), 3u);
  for (const Segment& seg : in.segments) {
    const double t = seg.start_us / 1e6;
    // The last frame with (pts - origin) <= t, or the first frame before the video starts.
    size_t expected = 0;
    for (size_t i = 0; i < times.size(); ++i) {
      if (times[i] - origin <= t + 1e-9) expected = i;
    }
    const RgbImage* native = NativeFrame(in, seg.index);
    ASSERT_NE(native, nullptr);
    const int encoded_cs = testing::DecodeBars(*native);
    const int expected_cs = static_cast<int>(std::lround((times[expected] - times[0]) * 100));
    EXPECT_NEAR(encoded_cs, expected_cs, 1) << GetParam() << " segment " << seg.index;
    ASSERT_TRUE(seg.frame.has_value());
    EXPECT_NEAR(seg.frame->pts_us / 1e6, times[expected] - origin, 2e-3) << "segment " << seg.index;
    EXPECT_EQ(seg.frame->sample_us, seg.start_us);
  }
}

INSTANTIATE_TEST_SUITE_P(Media, SamplingTest,
                         ::testing::Values("cfr25.mp4", "cfr30.mp4", "cfr60.mp4", "vfr.mp4", "offset.mp4",
                                           "offset.ts", "vp9.webm", "hevc.mp4", "av1.mkv", "rotated.mp4"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

// The ffmpeg CLI's fps=1:round=up frames, RGB24 at native (autorotated) size. The audio goes to a
// second (null) output: the CLI's time origin is the earliest start among the streams it outputs.
std::vector<std::vector<uint8_t>> CliFrames(const std::string& path, size_t frame_bytes) {
  const std::string raw = testing::Capture("ffmpeg -v error -nostdin -i '" + path +
                                           "' -map 0:v:0 -vf fps=1:round=up -fps_mode passthrough -pix_fmt rgb24 "
                                           "-f rawvideo - -map 0:a:0? -f null /dev/null");
  std::vector<std::vector<uint8_t>> frames;
  for (size_t pos = 0; pos + frame_bytes <= raw.size(); pos += frame_bytes) {
    frames.emplace_back(raw.begin() + pos, raw.begin() + pos + frame_bytes);
  }
  return frames;
}

class CliParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CliParityTest, SampledFramesEqualTheCliPixelForPixel) {
  const std::string path = Sample(GetParam());
  const Ingested in = IngestFile(path);
  ASSERT_TRUE(in.status.ok()) << in.status;
  const RgbImage* first = NativeFrame(in, 0);
  ASSERT_NE(first, nullptr);
  const auto cli = CliFrames(path, first->pixels.size());
  ASSERT_GE(cli.size(), 2u);
  // The CLI starts at the first sample time at or after the video's first frame.
  const std::vector<double> times = testing::ProbeFrameTimes(path);
  const double first_rel = times.at(0) - testing::ProbeStartTime(path);
  const int64_t k0 = static_cast<int64_t>(std::ceil(first_rel - 1e-9));
  for (size_t i = 0; i < cli.size(); ++i) {
    const int64_t k = k0 + static_cast<int64_t>(i);
    ASSERT_LT(k, static_cast<int64_t>(in.segments.size()));
    const RgbImage* ours = NativeFrame(in, k);
    ASSERT_NE(ours, nullptr);
    EXPECT_TRUE(ours->pixels == cli[i]) << GetParam() << ": CLI frame " << i << " != segment " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Media, CliParityTest,
                         ::testing::Values("cfr25.mp4", "cfr60.mp4", "vfr.mp4", "offset.mp4", "offset.ts",
                                           "vp9.webm", "hevc.mp4", "rotated.mp4", "w426.mp4"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(MediaReaderTest, ExactModeSkipsDisposableFramesButNoSampledOnes) {
  const Ingested in = IngestFile(Sample("cfr25.mp4"));
  ASSERT_TRUE(in.status.ok()) << in.status;
  EXPECT_GT(in.stats.video_packets_skipped, in.stats.video_packets / 5);
  EXPECT_EQ(in.stats.video_frames_decoded + in.stats.video_packets_skipped, in.stats.video_packets);
  EXPECT_LE(in.stats.video_frames_converted, static_cast<int64_t>(in.segments.size()) + 1);
}

TEST(MediaReaderTest, SkippingDisposableFramesDoesNotChangeTheOutput) {
  IngestOptions no_skip;
  no_skip.skip_disposable = false;
  for (const char* name : {"cfr25.mp4", "vfr.mp4", "hevc.mp4"}) {
    const Ingested skipped = IngestFile(Sample(name));
    const Ingested full = IngestFile(Sample(name), no_skip);
    ASSERT_TRUE(skipped.status.ok() && full.status.ok());
    EXPECT_GT(skipped.stats.video_packets_skipped, 0) << name;
    EXPECT_EQ(full.stats.video_packets_skipped, 0) << name;
    ASSERT_EQ(skipped.segments.size(), full.segments.size());
    for (size_t k = 0; k < full.segments.size(); ++k) {
      EXPECT_TRUE(skipped.segments[k].frame->patches == full.segments[k].frame->patches) << name << " " << k;
    }
  }
}

TEST(MediaReaderTest, ConversionWorkerDoesNotChangeTheOutput) {
  IngestOptions inline_options;
  inline_options.convert_on_worker = false;
  // Damaged files with a single decoder thread: when a multi-threaded decoder logs the damage
  // (and so where the stream stops) depends on its threads' timing.
  IngestOptions damaged, damaged_inline;
  damaged.decode_threads = damaged_inline.decode_threads = 1;
  damaged_inline.convert_on_worker = false;
  IngestOptions keyframe_options, keyframe_inline;
  keyframe_options.mode = keyframe_inline.mode = SamplingMode::kKeyframe;
  keyframe_inline.convert_on_worker = false;
  const std::vector<std::pair<std::string, std::pair<IngestOptions, IngestOptions>>> cases = {
      {"cfr25.mp4", {{}, inline_options}},       {"vfr.mp4", {{}, inline_options}},
      {"rotated.mp4", {{}, inline_options}},     {"offset.ts", {{}, inline_options}},
      {"corrupt.mp4", {damaged, damaged_inline}}, {"truncated.mp4", {damaged, damaged_inline}},
      {"cfr30.mp4", {keyframe_options, keyframe_inline}}};
  for (const auto& [name, options] : cases) {
    const Ingested worker = IngestFile(Sample(name), options.first);
    const Ingested same_thread = IngestFile(Sample(name), options.second);
    EXPECT_EQ(worker.status, same_thread.status) << name;
    ASSERT_EQ(worker.segments.size(), same_thread.segments.size()) << name;
    ASSERT_GT(worker.segments.size(), 0u) << name;
    for (size_t k = 0; k < worker.segments.size(); ++k) {
      const Segment& a = worker.segments[k];
      const Segment& b = same_thread.segments[k];
      ASSERT_TRUE(a.frame.has_value() && b.frame.has_value()) << name;
      EXPECT_EQ(a.frame->pts_us, b.frame->pts_us) << name << " " << k;
      EXPECT_TRUE(a.frame->patches == b.frame->patches) << name << " " << k;
      EXPECT_TRUE(a.audio.samples == b.audio.samples) << name << " " << k;
    }
    // The hook saw the same native frames, and all of them before Next() ended the stream.
    ASSERT_EQ(worker.hooked.size(), same_thread.hooked.size()) << name;
    for (size_t i = 0; i < worker.hooked.size(); ++i) {
      EXPECT_EQ(worker.hooked[i].first, same_thread.hooked[i].first) << name;
      EXPECT_TRUE(worker.hooked[i].second.pixels == same_thread.hooked[i].second.pixels) << name << " " << i;
    }
    EXPECT_EQ(worker.stats.video_frames_converted, same_thread.stats.video_frames_converted) << name;
  }
}

// A reader dropped mid-stream (a cancelled request) while conversions it queued ahead are still pending finishes
// them while everything they use is alive: no use after free (scripts/sanitize runs this under ASan), and they
// convert the right frames. It once crashed the server ("free(): invalid pointer") when a client cancelled an ask.
// vfr.mp4 at 4 fps: near the end the reader queues conversions for segments it has not handed out yet.
TEST(MediaReaderTest, DestroyedMidStreamFinishesItsQueuedConversionsFirst) {
  const std::string path = Sample("vfr.mp4");
  IngestOptions options;
  options.fps = 4;
  const Ingested full = IngestFile(path, options);
  std::vector<std::pair<int64_t, RgbImage>> hooked;  // written by the worker, read after it has been joined
  int64_t queued = 0, emitted = 0;                   // conversions submitted, segments handed out when it goes
  {
    auto reader = MediaReader::OpenFile(path, options);
    ASSERT_TRUE(reader.ok()) << reader.status();
    (*reader)->set_native_frame_hook([&hooked](int64_t k, const RgbImage& image) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pending conversions stay pending
      hooked.emplace_back(k, image);
    });
    while (queued < emitted + 2) {
      auto segment = (*reader)->Next();
      ASSERT_TRUE(segment.ok() && segment->has_value()) << "no conversion ran ahead of the segments";
      ++emitted;
      queued = (*reader)->stats().video_frames_converted;
    }
  }
  ASSERT_LT(emitted, static_cast<int64_t>(full.segments.size()));
  ASSERT_EQ(static_cast<int64_t>(hooked.size()), queued);
  for (size_t i = 0; i < hooked.size(); ++i) {
    EXPECT_EQ(hooked[i].first, full.hooked[i].first) << i;
    EXPECT_TRUE(hooked[i].second.pixels == full.hooked[i].second.pixels) << i;
  }
}

TEST(MediaReaderTest, KeyframeModeSamplesTheLastKeyframe) {
  IngestOptions options;
  options.mode = SamplingMode::kKeyframe;
  const std::string path = Sample("cfr25.mp4");
  const Ingested in = IngestFile(path, options);
  ASSERT_TRUE(in.status.ok()) << in.status;
  const std::string keys = testing::Capture("ffprobe -v error -select_streams v:0 -skip_frame nokey -show_entries "
                                            "frame=best_effort_timestamp_time -of csv=p=0 '" + path + "'");
  EXPECT_LE(in.stats.video_frames_decoded, 10);
  EXPECT_EQ(in.segments.size(), 7u);
  for (const Segment& seg : in.segments) {
    ASSERT_TRUE(seg.frame.has_value());
    EXPECT_LE(seg.frame->pts_us, seg.start_us);
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.6f", seg.frame->pts_us / 1e6);
    EXPECT_THAT(keys, ::testing::HasSubstr(buf)) << "segment " << seg.index << " is not a keyframe";
  }
}

TEST(MediaReaderTest, SegmentsCoverTheMediaAndTheLastIsShorter) {
  auto reader = MediaReader::OpenFile(Sample("cfr25.mp4"), {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->num_segments(), 7);  // 6.52 s
  EXPECT_EQ((*reader)->grid_rows(), 5);     // 192x96 at budget 70 -> 528x240
  EXPECT_EQ((*reader)->grid_cols(), 11);
  const Ingested in = IngestAll(std::move(*reader));
  ASSERT_TRUE(in.status.ok()) << in.status;
  ASSERT_EQ(in.segments.size(), 7u);
  int64_t audio_frames = 0;
  for (size_t k = 0; k < in.segments.size(); ++k) {
    const Segment& s = in.segments[k];
    EXPECT_EQ(s.index, static_cast<int64_t>(k));
    EXPECT_EQ(s.start_us, static_cast<int64_t>(k) * 1000000);
    EXPECT_EQ(s.audio.start_us, s.start_us);
    EXPECT_EQ(s.audio.samples.size(), size_t(s.audio.num_frames) * kAudioFrameSamples);
    if (k + 1 < in.segments.size()) {
      EXPECT_EQ(s.audio.num_frames, 25);
    }
    audio_frames += s.audio.num_frames;
  }
  EXPECT_EQ(in.segments.back().end_us, 6520000);
  EXPECT_EQ(in.segments.back().audio.num_frames, 13);  // ceil(0.52 s / 40 ms)
  EXPECT_EQ(audio_frames, 163);
}

TEST(MediaReaderTest, PatchesAreTheResizedFrameInSpecOrder) {
  const Ingested in = IngestFile(Sample("cfr30.mp4"));
  ASSERT_TRUE(in.status.ok()) << in.status;
  ASSERT_FALSE(in.segments.empty());
  for (const Segment& seg : in.segments) {
    const RgbImage* native = NativeFrame(in, seg.index);
    ASSERT_NE(native, nullptr);
    const RgbImage resized = ResizeBicubicAntialias(*native, 240, 528);
    ASSERT_TRUE(seg.frame.has_value());
    ASSERT_EQ(seg.frame->num_patches(), 55);
    ASSERT_EQ(seg.frame->patches.size(), 55u * kPatchDim);
    // Element (r, c, y, x, ch) is pixel (48r + y, 48c + x, ch) / 255.
    for (int r = 0; r < 5; ++r)
      for (int c = 0; c < 11; c += 3)
        for (int y = 0; y < 48; y += 11)
          for (int x = 0; x < 48; x += 13)
            for (int ch = 0; ch < 3; ++ch) {
              const float v = seg.frame->patches[size_t(r * 11 + c) * kPatchDim + (y * 48 + x) * 3 + ch];
              const uint8_t p = resized.pixels[(size_t(48 * r + y) * 528 + 48 * c + x) * 3 + ch];
              ASSERT_EQ(v, p / 255.0f);
            }
  }
}

TEST(MediaReaderTest, RotatedVideoIsPortrait) {
  auto probe = ProbeFile(Sample("rotated.mp4"));
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_EQ(probe->rotation_deg, 90);
  EXPECT_EQ(probe->width, 96);
  EXPECT_EQ(probe->height, 192);
}

TEST(MediaReaderTest, ProbeDescribesStreams) {
  auto probe = ProbeFile(Sample("cfr25.mp4"));
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_TRUE(probe->has_video);
  EXPECT_EQ(probe->video_codec, "h264");
  EXPECT_EQ(probe->width, 192);
  EXPECT_EQ(probe->height, 96);
  EXPECT_NEAR(probe->avg_frame_rate, 25.0, 1e-6);
  EXPECT_TRUE(probe->has_audio);
  EXPECT_EQ(probe->audio_codec, "aac");
  EXPECT_EQ(probe->audio_sample_rate_hz, 48000);
  EXPECT_EQ(probe->duration_us, 6520000);
}

TEST(MediaReaderTest, AudioOnlyAndVideoOnly) {
  const Ingested audio = IngestFile(Sample("audio_only.m4a"));
  ASSERT_TRUE(audio.status.ok()) << audio.status;
  ASSERT_EQ(audio.segments.size(), 5u);
  for (const Segment& s : audio.segments) {
    EXPECT_FALSE(s.frame.has_value());
    EXPECT_EQ(s.audio.num_frames, 25);
  }
  const Ingested video = IngestFile(Sample("cfr30.mp4"));
  ASSERT_TRUE(video.status.ok()) << video.status;
  for (const Segment& s : video.segments) {
    EXPECT_TRUE(s.frame.has_value());
    EXPECT_EQ(s.audio.num_frames, 0);
  }
  IngestOptions no_video;
  no_video.use_video = false;
  const Ingested sound = IngestFile(Sample("cfr25.mp4"), no_video);
  ASSERT_TRUE(sound.status.ok()) << sound.status;
  EXPECT_FALSE(sound.segments.at(0).frame.has_value());
  EXPECT_EQ(sound.stats.video_packets, 0);
}

// Audio timing: 1 kHz bursts at [1.0, 1.2) s and [3.0, 3.2) s land in audio frames 25-29 and 75-79.
double Rms(const float* s, int n) {
  double acc = 0;
  for (int i = 0; i < n; ++i) acc += double(s[i]) * s[i];
  return std::sqrt(acc / n);
}

class ToneBurstTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ToneBurstTest, BurstsLandInTheRightFrames) {
  const Ingested in = IngestFile(Sample(GetParam()));
  ASSERT_TRUE(in.status.ok()) << in.status;
  std::vector<double> rms;  // per 40 ms frame, in time order
  for (const Segment& s : in.segments) {
    for (int j = 0; j < s.audio.num_frames; ++j) {
      EXPECT_EQ(s.audio.start_us + j * kAudioFrameUs, static_cast<int64_t>(rms.size()) * kAudioFrameUs);
      rms.push_back(Rms(&s.audio.samples[size_t(j) * kAudioFrameSamples], kAudioFrameSamples));
    }
  }
  ASSERT_EQ(rms.size(), 125u);  // 5 s
  for (int j = 0; j < 125; ++j) {
    const bool inside = (j >= 25 && j < 30) || (j >= 75 && j < 80);
    const bool edge = j == 24 || j == 30 || j == 74 || j == 80;
    if (inside) {
      EXPECT_GT(rms[j], 0.25) << GetParam() << " frame " << j;  // 0.5 sine -> rms 0.35
    }
    if (!inside && !edge) {
      EXPECT_LT(rms[j], 0.02) << GetParam() << " frame " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Media, ToneBurstTest,
                         ::testing::Values("tone44k.wav", "tone48k.mkv", "tone48k_aac.mp4", "audio_only.m4a"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

// OpenBytes (an upload in 4 KiB pieces) gives exactly what OpenFile gives.
class OpenBytesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(OpenBytesTest, MatchesOpenFile) {
  const std::string path = Sample(GetParam());
  const Ingested from_file = IngestFile(path);
  auto reader = MediaReader::OpenBytes(MakeMemoryByteSource(testing::ReadBytes(path), 4096), {});
  ASSERT_TRUE(reader.ok()) << reader.status();
  const Ingested from_memory = IngestAll(std::move(*reader));
  ASSERT_TRUE(from_file.status.ok()) << from_file.status;
  ASSERT_TRUE(from_memory.status.ok()) << from_memory.status;
  ASSERT_EQ(from_file.segments.size(), from_memory.segments.size());
  for (size_t k = 0; k < from_file.segments.size(); ++k) {
    const Segment& a = from_file.segments[k];
    const Segment& b = from_memory.segments[k];
    EXPECT_EQ(a.frame.has_value(), b.frame.has_value());
    if (a.frame && b.frame) {
      EXPECT_TRUE(a.frame->patches == b.frame->patches) << "segment " << k;
    }
    EXPECT_EQ(a.audio.num_frames, b.audio.num_frames);
    EXPECT_TRUE(a.audio.samples == b.audio.samples) << "segment " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Media, OpenBytesTest,
                         ::testing::Values("cfr25.mp4", "offset.ts", "vp9.webm", "tone44k.wav", "hevc.mp4",
                                           "rotated.mp4", "audio_only.m4a"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace avserve::ingest
