#include "ingest/frame_sampler.h"

#include "gtest/gtest.h"
#include "ingest/audio_framer.h"

namespace avserve::ingest {
namespace {

using Range = std::pair<int64_t, int64_t>;

TEST(SampleClockTest, ExactRationalTimes) {
  const SampleClock clock(1.0);
  EXPECT_EQ(clock.SegmentStartUs(7), 7000000);
  EXPECT_EQ(clock.SegmentCount(6520000), 7);   // ceil(6.52)
  EXPECT_EQ(clock.SegmentCount(6000000), 6);   // exact end: no empty extra segment
  EXPECT_EQ(clock.CeilIndex(3, AVRational{1, 3}), 1);  // 1.0 s is exactly t_1
  EXPECT_EQ(clock.CeilIndex(-5, AVRational{1, 10}), 0);
  EXPECT_EQ(clock.FirstAudioFrame(1), 25);
  const SampleClock half(0.5);  // one sample every 2 s
  EXPECT_EQ(half.SegmentStartUs(3), 6000000);
  EXPECT_EQ(half.FirstAudioFrame(1), 50);
}

TEST(FrameSamplerTest, PicksTheFrameOnScreenAtEachSample) {
  // 25 fps in a 1/25 time base: frame n at n/25 s; t_k shows frame 25k.
  FrameSampler sampler(SampleClock(1.0), AVRational{1, 25});
  EXPECT_EQ(sampler.Push(0), Range(0, 0));
  EXPECT_EQ(sampler.Push(1), Range(0, 1));  // frame 0 (the candidate) is on screen at t_0
  for (int n = 2; n <= 25; ++n) EXPECT_EQ(sampler.Push(n), Range(1, 1)) << n;
  EXPECT_EQ(sampler.Push(26), Range(1, 2));  // frame 25, at exactly 1.0 s, is on screen at t_1
  EXPECT_EQ(sampler.candidate_pts(), 26);
}

TEST(FrameSamplerTest, AssignsEachSampleTheLastFrameNotAfterIt) {
  FrameSampler sampler(SampleClock(1.0), AVRational{1, 1000});
  EXPECT_EQ(sampler.Push(0), Range(0, 0));        // frame A at 0 ms
  EXPECT_EQ(sampler.Push(400), Range(0, 1));      // t_0 = 0 shows A
  EXPECT_EQ(sampler.Push(1000), Range(1, 1));     // B (400 ms) is shown at no sample
  EXPECT_EQ(sampler.Push(3500), Range(1, 4));     // C at exactly 1.0 s covers t_1..t_3
  EXPECT_EQ(sampler.next_segment(), 4);
}

TEST(FrameSamplerTest, LateStartShowsTheFirstFrameFromTimeZero) {
  FrameSampler sampler(SampleClock(1.0), AVRational{1, 1000});
  EXPECT_EQ(sampler.Push(2500), Range(0, 0));
  EXPECT_EQ(sampler.Push(2600), Range(0, 3));  // t_0, t_1, t_2 all get the first frame
}

TEST(FrameSamplerTest, OnScreenTest) {
  const SampleClock clock(1.0);
  const AVRational tb{1, 1000};
  EXPECT_TRUE(IsOnScreenAtSample(clock, tb, 960, 1000 + 40));
  EXPECT_TRUE(IsOnScreenAtSample(clock, tb, 1000, 1040));
  EXPECT_FALSE(IsOnScreenAtSample(clock, tb, 960, 1000));  // replaced exactly at t_1
  EXPECT_FALSE(IsOnScreenAtSample(clock, tb, 1040, 1080));
  EXPECT_FALSE(IsOnScreenAtSample(clock, tb, -80, -40));   // before time 0
  // A window from sample 2 on: a frame shown over t_1 only no longer matters.
  EXPECT_TRUE(IsOnScreenAtSample(clock, tb, 960, 1040, /*first_sample=*/1));
  EXPECT_FALSE(IsOnScreenAtSample(clock, tb, 960, 1040, /*first_sample=*/2));
  EXPECT_TRUE(IsOnScreenAtSample(clock, tb, 960, 2040, /*first_sample=*/2));
}

TEST(AudioFramerTest, DropBeforeFreesOnlyWhatNoLaterTakeNeeds) {
  std::vector<float> ramp(5000);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i);
  AudioFramer kept, dropped;
  kept.Append(0, ramp.data(), ramp.size());
  dropped.Append(0, ramp.data(), 2000);
  dropped.DropBefore(3 * kAudioFrameSamples);  // frames 3+ are still wanted
  dropped.Append(0, ramp.data() + 2000, ramp.size() - 2000);
  dropped.DropBefore(3 * kAudioFrameSamples);
  kept.Finish();
  dropped.Finish();
  const AudioFrames a = kept.Take(3, 8), b = dropped.Take(3, 8);
  EXPECT_EQ(a.num_frames, 5);
  EXPECT_EQ(a.start_us, b.start_us);
  EXPECT_TRUE(a.samples == b.samples);
  EXPECT_EQ(b.samples[0], 3.0f * kAudioFrameSamples);
}

TEST(AudioFramerTest, PlacesLateAudioOnTheTimelineAndPadsTheEnd) {
  AudioFramer framer;
  std::vector<float> ones(1000, 1.0f);
  framer.Append(/*start_us=*/50000, ones.data(), ones.size());  // starts at sample 800
  framer.Finish();
  EXPECT_EQ(framer.end_sample(), 1800);
  EXPECT_EQ(framer.total_frames(), 3);
  const AudioFrames frames = framer.Take(0, 3);
  ASSERT_EQ(frames.num_frames, 3);
  ASSERT_EQ(frames.samples.size(), 3u * 640);
  EXPECT_EQ(frames.samples[799], 0.0f);
  EXPECT_EQ(frames.samples[800], 1.0f);
  EXPECT_EQ(frames.samples[1799], 1.0f);
  EXPECT_EQ(frames.samples[1800], 0.0f);  // zero padding of the last frame
  EXPECT_EQ(frames.start_us, 0);
}

TEST(AudioFramerTest, FillsGapsAndTakesInPieces) {
  AudioFramer framer;
  std::vector<float> a(640, 0.5f);
  framer.Append(0, a.data(), a.size());
  framer.Append(1000000, a.data(), a.size());  // 1 s later: a gap of zeros
  framer.Finish();
  EXPECT_EQ(framer.end_sample(), 16640);
  const AudioFrames first = framer.Take(0, 1);
  EXPECT_EQ(first.samples[639], 0.5f);
  const AudioFrames last = framer.Take(25, 26);
  EXPECT_EQ(last.start_us, 1000000);
  EXPECT_EQ(last.samples[0], 0.5f);
}

}  // namespace
}  // namespace avserve::ingest
