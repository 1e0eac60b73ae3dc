// Status plumbing shared by every layer (ingest, engine, pipeline, service).
// Errors on outside input travel as absl::Status / absl::StatusOr<T>; nothing in avserve throws.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define AVSERVE_CONCAT_INNER_(a, b) a##b
#define AVSERVE_CONCAT_(a, b) AVSERVE_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status avserve_status_ = (expr);       \
    if (!avserve_status_.ok()) return avserve_status_; \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns `lhs` from a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  AVSERVE_ASSIGN_OR_RETURN_IMPL_(AVSERVE_CONCAT_(avserve_statusor_, __LINE__), lhs, rexpr)
#define AVSERVE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()
