// libFuzzer target over the in-memory open + decode path (MediaReader::OpenBytes + Next).
// Build: clang, -DAVSERVE_FUZZ=ON; run: ingest/fuzz/run_fuzzer.sh BUILD_DIR SECONDS.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ingest/media_reader.h"

extern "C" {
#include <libavutil/log.h>
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    av_log_set_level(AV_LOG_QUIET);
    return true;
  }();
  (void)quiet;
  avserve::ingest::IngestOptions options;
  options.decode_threads = 1;  // deterministic and cheap
  auto reader = avserve::ingest::MediaReader::OpenBytes(
      avserve::ingest::MakeMemoryByteSource(std::vector<uint8_t>(data, data + size), 4096), options);
  if (!reader.ok()) return 0;
  // A bounded number of segments: a valid header may claim hours of media.
  for (int i = 0; i < 16; ++i) {
    auto segment = (*reader)->Next();
    if (!segment.ok() || !segment->has_value()) break;
  }
  return 0;
}
