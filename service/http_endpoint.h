// A tiny HTTP/1.1 server for Prometheus scrapes: GET /metrics (text format) and GET /healthz.
// One thread, one connection at a time, request head capped at 8 KiB, 2 s I/O timeouts: a scrape
// endpoint needs nothing more, and it keeps the surface small.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace avserve::service {

class HttpEndpoint {
 public:
  using Handler = std::function<std::string()>;  // body of GET /metrics

  // Binds `host:port` (port 0 = ephemeral) and starts serving.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& host, int port, Handler metrics);
  ~HttpEndpoint();  // Stop()
  void Stop();
  int port() const { return port_; }

 private:
  HttpEndpoint(int listen_fd, int port, Handler metrics);
  void Loop();
  void Serve(int fd);

  int listen_fd_;
  int port_;
  Handler metrics_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace avserve::service
