// Confines client-supplied paths to a configured media root.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace avserve::service {

// Resolves `user_path` (relative to `root`, or absolute) to the canonical path of an existing regular
// file inside `root`. Rejects, with PERMISSION_DENIED: any `..` component, absolute paths outside the
// root, and paths whose symlinks resolve outside it (checked on the realpath, so a symlink inside the
// root pointing out is caught). NOT_FOUND when the file does not exist, INVALID_ARGUMENT for empty
// paths, embedded NULs, or something that is not a regular file.
absl::StatusOr<std::string> ResolveUnderRoot(const std::string& root, const std::string& user_path);

}  // namespace avserve::service
