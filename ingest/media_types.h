// The values ingest produces: a probe of the media and a time-ordered stream of segments.
// This header is the contract between ingest/ and pipeline/ (and service/ for probes).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace avserve::ingest {

inline constexpr int kPatchSide = 48;                                  // model patch, pixels
inline constexpr int kPatchDim = kPatchSide * kPatchSide * 3;          // 6912 floats, HWC raster
inline constexpr int kAudioSampleRateHz = 16000;
inline constexpr int kAudioFrameSamples = 640;                         // 40 ms at 16 kHz
inline constexpr int kAudioFrameUs = 40000;

enum class SamplingMode {
  kExact,     // the frame on screen at each sample time (default)
  kKeyframe,  // approximate: the nearest preceding keyframe (much faster)
};

struct IngestOptions {
  double fps = 1.0;          // video samples per second of media, > 0
  int frame_budget = 70;     // soft tokens per frame: 70, 140, 280, 560 or 1120
  SamplingMode mode = SamplingMode::kExact;
  bool use_video = true;     // false: ignore the video stream
  bool use_audio = true;     // false: ignore the soundtrack
  int decode_threads = 0;    // 0: FFmpeg's choice
  // Exact mode: do not decode disposable frames that are on screen at no sample time. Output is
  // identical either way; false only to measure what the skipping buys (bench/ingest.sh).
  bool skip_disposable = true;
  // Convert chosen frames (RGB, resize, patchify) on a worker thread that overlaps decoding.
  // Output is identical either way; false keeps ingest on the caller's thread (and the decoder's).
  bool convert_on_worker = true;
  // Media window [window_start_us, window_end_us) (window_end_us 0: to the end). Only the
  // segments overlapping it are produced, with their own indices and times: exactly the segments
  // a full read gives there. A file is sought once to a keyframe before the window instead of
  // decoded from the start (see media_reader.h, Note [Window]).
  int64_t window_start_us = 0;
  int64_t window_end_us = 0;
};

struct MediaProbe {
  std::string container;          // e.g. "mov,mp4,m4a,3gp,3g2,mj2"
  int64_t duration_us = 0;        // best known duration of the media
  int64_t start_us = 0;           // media time 0 of avserve = this container time
  bool has_video = false;
  std::string video_codec;        // e.g. "h264"
  int width = 0, height = 0;      // displayed size, after rotation
  int rotation_deg = 0;           // display rotation applied (0, 90, 180, 270)
  double avg_frame_rate = 0;      // frames per second as the container reports it
  bool has_audio = false;
  std::string audio_codec;        // e.g. "aac"
  int audio_sample_rate_hz = 0;   // source rate, before resampling
  int audio_channels = 0;         // source channels, before downmixing
};

// One sampled video frame, resized to the budget and cut into 48x48 patches.
struct VideoFrame {
  int64_t sample_us = 0;          // the sample time t_k (media time)
  int64_t pts_us = 0;             // presentation time of the decoded frame chosen for t_k
  int grid_rows = 0, grid_cols = 0;
  std::vector<float> patches;     // [grid_rows * grid_cols, kPatchDim], row-major grid, HWC in [0,1]
  int num_patches() const { return grid_rows * grid_cols; }
};

// Consecutive 640-sample frames of 16 kHz mono audio.
struct AudioFrames {
  int64_t start_us = 0;           // media time of the first sample of the first frame
  int num_frames = 0;
  std::vector<float> samples;     // [num_frames, kAudioFrameSamples], mono in [-1, 1]
};

// Media span [start_us, end_us): segment k covers [k/fps, (k+1)/fps).
struct Segment {
  int64_t index = 0;
  int64_t start_us = 0, end_us = 0;
  std::optional<VideoFrame> frame;  // absent for audio-only media (or use_video = false)
  AudioFrames audio;                // num_frames == 0 when there is no audio
};

}  // namespace avserve::ingest
