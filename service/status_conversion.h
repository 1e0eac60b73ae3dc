// The service boundary between absl::Status (everything inside avserve) and grpc::Status (the wire).
// This is the only place that builds a grpc::Status from an absl::Status (style.md §4).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace avserve::service {

// Same canonical code, same message. OK maps to grpc::Status::OK.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for clients (avctl) and for tests that compare codes.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace avserve::service
