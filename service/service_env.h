// What every RPC handler needs, owned by the Server (server.h) and borrowed by the services.
#pragma once

#include <chrono>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "service/engine_worker.h"
#include "service/io_pool.h"
#include "service/media_store.h"
#include "service/metrics.h"

namespace avserve::service {

class BatchManager;

struct ServiceEnv {
  MediaStore* media = nullptr;
  EngineWorker* engine = nullptr;
  Metrics* metrics = nullptr;
  IoPool* io = nullptr;
  BatchManager* batches = nullptr;
  std::string bearer_token;  // empty: no auth
};

// UNAUTHENTICATED unless the call carries "authorization: Bearer <token>" (when a token is set).
absl::Status CheckAuth(const grpc::CallbackServerContext& context, const std::string& token);

// Metrics + one structured log line for a finished RPC.
void RecordRpc(const ServiceEnv& env, const char* method, const absl::Status& status,
               std::chrono::steady_clock::time_point start);

// For unary handlers: finish `reactor` with `status` converted at the boundary, and record it.
void FinishUnary(const ServiceEnv& env, grpc::ServerUnaryReactor* reactor, const char* method,
                 const absl::Status& status, std::chrono::steady_clock::time_point start);

}  // namespace avserve::service
