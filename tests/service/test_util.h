// Helpers shared by the service unit tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "ingest/media_types.h"

namespace avserve::service::testing {

// A fresh directory under the test's temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "avserve_test_XXXXXX").string();
    path_ = mkdtemp(templ.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& contents) const {
    std::string p = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }

 private:
  std::string path_;
};

// Test prober: "media" is any file starting with FAKEMEDIA; its duration is 10 s with video + audio.
inline absl::StatusOr<ingest::MediaProbe> FakeProbe(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(9, '\0');
  in.read(head.data(), 9);
  if (head != "FAKEMEDIA") return absl::InvalidArgumentError("not fake media");
  ingest::MediaProbe probe;
  probe.container = "fake";
  probe.duration_us = 10'000'000;
  probe.has_video = probe.has_audio = true;
  probe.width = 64;
  probe.height = 48;
  return probe;
}

}  // namespace avserve::service::testing
