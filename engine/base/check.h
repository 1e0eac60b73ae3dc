// Broken invariants (programming errors, never bad input): abort with file:line and a message.
// AVSERVE_CHECK is always on; AVSERVE_DCHECK only in debug and sanitizer builds.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace avserve::internal {
[[noreturn]] inline void CheckFailed(const char* file, int line, const char* cond, const char* msg) {
  std::fprintf(stderr, "%s:%d: check failed: %s %s\n", file, line, cond, msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}
}  // namespace avserve::internal

#define AVSERVE_CHECK(cond, ...)                                                             \
  do {                                                                                       \
    if (!(cond)) ::avserve::internal::CheckFailed(__FILE__, __LINE__, #cond, "" __VA_ARGS__); \
  } while (0)

#if !defined(NDEBUG) || defined(AVSERVE_SANITIZE_BUILD)
#define AVSERVE_DCHECK(cond, ...) AVSERVE_CHECK(cond, __VA_ARGS__)
#else
#define AVSERVE_DCHECK(cond, ...) \
  do {                            \
  } while (0)
#endif
