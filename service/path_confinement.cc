#include "service/path_confinement.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace avserve::service {
namespace {

absl::StatusOr<std::string> RealPath(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> resolved(realpath(path.c_str(), nullptr), &std::free);
  if (resolved == nullptr) {
    if (errno == ENOENT || errno == ENOTDIR) return absl::NotFoundError(absl::StrCat("no such file: ", path));
    return absl::PermissionDeniedError(absl::StrCat("cannot resolve path: ", path));
  }
  return std::string(resolved.get());
}

bool IsInside(const std::string& root, const std::string& path) {
  if (root == "/") return true;
  return absl::StartsWith(path, root) && path.size() > root.size() && path[root.size()] == '/';
}

}  // namespace

absl::StatusOr<std::string> ResolveUnderRoot(const std::string& root, const std::string& user_path) {
  if (user_path.empty()) return absl::InvalidArgumentError("path is empty");
  if (user_path.find('\0') != std::string::npos) return absl::InvalidArgumentError("path contains NUL");
  if (user_path.size() > PATH_MAX) return absl::InvalidArgumentError("path is too long");
  for (absl::string_view part : absl::StrSplit(user_path, '/')) {
    if (part == "..") return absl::PermissionDeniedError("path must not contain '..' components");
  }
  auto real_root = RealPath(root);
  if (!real_root.ok()) return absl::FailedPreconditionError(absl::StrCat("media root unusable: ", root));
  std::string joined = user_path[0] == '/' ? user_path : absl::StrCat(*real_root, "/", user_path);
  // Lexical check first so that probing for the existence of files outside the root is not possible.
  if (user_path[0] == '/' && !IsInside(*real_root, joined) && !IsInside(root, joined)) {
    return absl::PermissionDeniedError("path is outside the media root");
  }
  auto real = RealPath(joined);
  if (!real.ok()) return real.status();
  if (!IsInside(*real_root, *real)) {
    return absl::PermissionDeniedError("path resolves outside the media root (symlink escape)");
  }
  struct stat st {};
  if (stat(real->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError("path is not a regular file");
  }
  return *real;
}

}  // namespace avserve::service
