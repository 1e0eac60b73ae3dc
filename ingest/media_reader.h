// The streaming ingest API: open a media file (or bytes arriving in pieces) and pull time-ordered
// segments of 48x48 frame patches and 40 ms audio frames, with memory bounded by a few segments.
//
// Timeline (see media_types.h and design.md §2): media time 0 is the container's first presented
// timestamp. Segment k covers [k/fps, (k+1)/fps); its frame is the one on screen at t_k = k/fps
// (the last frame with pts <= t_k; the first frame while the video has not started yet; the last
// frame again once the video has ended but the audio goes on). Audio frame j (640 samples at
// 16 kHz starting at j*40 ms, the last one zero-padded) belongs to the segment containing its start.
//
// Note [Window]: with IngestOptions::window_start_us/window_end_us the reader produces only the
// segments k overlapping the window (start_us < window_end_us, end_us > window_start_us), keeping
// their indices k and times: byte for byte the segments a full read gives there. An opened file
// with video is sought ONCE per window (never per sample) to a keyframe at or before the window
// start, on the video stream; the seek is accepted when that keyframe's presentation time is <= t_k of the first
// window segment (with B-frames a decode-time index can land later: then it seeks further back, a
// few times at most), and frames presented before it (open-GOP leading pictures) are dropped.
// Frames then decode forward; only those chosen for window segments are converted. The audio is
// decoded from the start by a second, audio-only demuxer (decoding and resampling are ~600x
// realtime, and only a continuous decode reproduces the decoder's and the resampler's state and
// the sample timeline exactly); what precedes the window is freed as it goes. Anything that
// goes wrong before the first window segment (the seek fails or lands after the window, damage
// near the seek point, a frame without a timestamp) restarts the read without seeking: decode
// from the start and discard, never a different answer (the native frame hook may then see a
// window frame twice). Bytes (OpenBytes) are never sought. A read from the start (bytes, the
// restart, a window starting in the first half second) still converts only the window's frames
// and skips disposable frames on screen before it. Damage before the window that a full read
// would stop at is not seen by a seeking read. MPEG-TS seeks by timestamp search and usually
// lands after the keyframe it needs, so TS windows mostly restart from the start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/media_types.h"
#include "ingest/rgb_image.h"

namespace avserve::ingest {

// Bytes of a media file that arrive in pieces (an upload). Read blocks until at least one byte is
// available, returns 0 at the end, or an error status (e.g. the client cancelled).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual absl::StatusOr<size_t> Read(uint8_t* dst, size_t n) = 0;
  // Total size when known up front (e.g. a Content-Length), else -1.
  virtual int64_t size_hint() const { return -1; }
};

// A ByteSource over bytes already in memory; `max_chunk` > 0 caps each Read (to mimic an upload).
std::unique_ptr<ByteSource> MakeMemoryByteSource(std::vector<uint8_t> bytes, size_t max_chunk = 0);

// Probes a file: container, duration, streams, codecs, displayed size, rotation, audio format.
absl::StatusOr<MediaProbe> ProbeFile(const std::string& path);

class MediaReaderImpl;

class MediaReader {
 public:
  static absl::StatusOr<std::unique_ptr<MediaReader>> OpenFile(const std::string& path,
                                                               const IngestOptions& options);
  // Opens bytes through a custom AVIOContext. The bytes read so far are kept in memory so that
  // containers that need to seek (MP4 with the index at the end) work; memory ~ upload size.
  // A window (Note [Window]) is read by decoding from the start and discarding.
  static absl::StatusOr<std::unique_ptr<MediaReader>> OpenBytes(std::unique_ptr<ByteSource> source,
                                                                const IngestOptions& options);
  ~MediaReader();
  MediaReader(const MediaReader&) = delete;
  MediaReader& operator=(const MediaReader&) = delete;

  const MediaProbe& probe() const;
  const IngestOptions& options() const;
  // Patch grid of every frame (the same for the whole video); 0 x 0 without video.
  int grid_rows() const;
  int grid_cols() const;
  // Expected number of segments from the probe: ceil(duration * fps). The stream of Next() may end
  // earlier on damaged input (then Next() returns an error saying how far it got).
  int64_t num_segments() const;

  // Next time-ordered segment; std::nullopt at the end; an error status on failure.
  absl::StatusOr<std::optional<Segment>> Next();

  // Test/tool hook: called once for every converted frame at native size (after rotation,
  // before resizing) with the first segment it was chosen for; it is the frame of that segment and
  // of the following ones up to the next call's segment (with a window: the first window segment
  // at the earliest). Set before the first Next().
  using NativeFrameHook = std::function<void(int64_t first_segment, const RgbImage& image)>;
  void set_native_frame_hook(NativeFrameHook hook);

  // Counters of what the decoder did (for tests and the bench).
  struct Stats {
    int64_t video_packets = 0;          // video packets demuxed
    int64_t video_packets_skipped = 0;  // not decoded (disposable and not sampled, or keyframe mode)
    int64_t video_frames_decoded = 0;
    int64_t video_frames_converted = 0;  // converted to RGB + resized (sampled frames only)
    int64_t audio_samples_16k = 0;       // mono 16 kHz samples produced
    int64_t window_seeks = 0;            // seeks made for the window (Note [Window])
    bool window_from_start = false;      // the window was read by decoding from the start
  };
  const Stats& stats() const;

 private:
  MediaReader(std::unique_ptr<MediaReaderImpl> impl, std::string path);
  // Replaces a reader whose seek did not work out by one that decodes from the start.
  absl::Status RestartWithoutSeek();
  std::unique_ptr<MediaReaderImpl> impl_;
  std::string path_;  // the opened file; empty for bytes
};

// Target (height, width) for a frame of (height, width) at a soft-token budget (70, 140, 280, 560
// or 1120), spec §2.1. Pure; the pipeline uses it to count tokens up front.
absl::StatusOr<std::pair<int, int>> TargetSize(int height, int width, int budget);

}  // namespace avserve::ingest
