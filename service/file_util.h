// Small durable-file helpers (POSIX): the media store and the batch journal build on them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace avserve::service {

absl::Status MakeDirs(const std::string& dir);
absl::Status FsyncPath(const std::string& path);  // a file or a directory
// Writes `contents` to `path` via a temporary file + fsync + rename + fsync of the directory.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);
// Whole file; refuses files over `max_bytes` (RESOURCE_EXHAUSTED).
absl::StatusOr<std::string> ReadFile(const std::string& path, int64_t max_bytes = int64_t{64} << 20);
// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
absl::Status WriteAll(int fd, std::string_view bytes);
absl::Status RemoveTree(const std::string& path);
int64_t NowUnixMs();

}  // namespace avserve::service
