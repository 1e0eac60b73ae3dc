// The avserve server: gRPC services + health + reflection, the engine thread, batch runner and the
// metrics endpoint, started and stopped as one unit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "service/inference_backend.h"
#include "service/media_store.h"

namespace avserve::service {

struct ServerConfig {
  std::string listen = "127.0.0.1:0";          // host:port; port 0 = ephemeral
  std::string metrics_listen = "127.0.0.1:0";  // IPv4 host:port of the Prometheus endpoint; "" = off
  std::string data_dir = "avserve-data";
  std::string media_root;                      // "" disables RegisterPath
  int64_t max_upload_bytes = int64_t{2} << 30;
  int max_message_bytes = 8 << 20;             // per gRPC message (uploads send chunks)
  int max_queued_requests = 8;
  std::string bearer_token;                    // "" = no auth
  std::string tls_cert_file, tls_key_file;     // both set = TLS
  // Engine.
  std::string checkpoint_dir;
  std::string backend = "auto";                // auto | cpu | cuda
  int cpu_threads = 0;
  int64_t prefix_cache_bytes = int64_t{4} << 30;
  int64_t max_context_tokens = 0;              // 0 = the model's
  // A throwaway request after loading (EngineOptions::warmup_tokens): -1 = one prefill step's worth on a GPU and
  // none on the CPU, 0 = none.
  int warmup_tokens = -1;
};

using BackendFactory = std::function<absl::StatusOr<std::unique_ptr<InferenceBackend>>(const ServerConfig&)>;

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerConfig& config,
                                                       std::unique_ptr<InferenceBackend> backend,
                                                       MediaProber prober);
  ~Server();  // Shutdown()

  int grpc_port() const;
  int metrics_port() const;
  // Graceful: health NOT_SERVING, stop accepting, give calls `grace_ms` to finish, cancel the rest,
  // stop the batch runner (a running item reruns after restart), stop the engine. Idempotent.
  void Shutdown(int grace_ms = 5000);

  struct Impl;  // defined in server.cc

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The avserve main: flags -> config, backend from `factory`, SIGTERM/SIGINT -> graceful shutdown.
// Prints "avserve listening on <host>:<port> metrics <port>" and writes --port-file as JSON.
int RunServerMain(int argc, char** argv, const std::string& program, const BackendFactory& factory,
                  MediaProber prober);

}  // namespace avserve::service
