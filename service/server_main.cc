// RunServerMain: flags, signals and the life of one Server (shared by avserve and test servers).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "service/file_util.h"
#include "service/log.h"
#include "service/server.h"

namespace avserve::service {
namespace {

void AddFlags(CLI::App& app, ServerConfig& c, std::string& port_file, std::string& token_file) {
  app.add_option("--listen", c.listen, "gRPC address host:port (port 0 = ephemeral)")->capture_default_str();
  app.add_option("--metrics-listen", c.metrics_listen, "Prometheus endpoint IPv4 host:port ('' = off)")
      ->capture_default_str();
  app.add_option("--data-dir", c.data_dir, "uploads, media metadata and batch journals")->capture_default_str();
  app.add_option("--media-root", c.media_root, "directory RegisterPath may reference ('' = disabled)");
  app.add_option("--max-upload-bytes", c.max_upload_bytes, "largest accepted upload")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-message-bytes", c.max_message_bytes, "largest gRPC message")
      ->capture_default_str()
      ->check(CLI::Range(4096, 1 << 30));
  app.add_option("--max-queue", c.max_queued_requests, "requests waiting for the engine before RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--token-file", token_file, "file holding the bearer token clients must send");
  app.add_option("--tls-cert", c.tls_cert_file, "PEM certificate chain (enables TLS with --tls-key)");
  app.add_option("--tls-key", c.tls_key_file, "PEM private key");
  app.add_option("--checkpoint", c.checkpoint_dir, "model folder (config.json, model.safetensors, tokenizer.json)");
  app.add_option("--backend", c.backend, "auto | cpu | cuda")->capture_default_str();
  app.add_option("--cpu-threads", c.cpu_threads, "CPU backend threads (0 = all cores)")->check(CLI::Range(0, 1024));
  app.add_option("--prefix-cache-bytes", c.prefix_cache_bytes, "prefix cache budget")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-context", c.max_context_tokens, "context limit in tokens (0 = the model's)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup-tokens", c.warmup_tokens,
                 "prompt positions of a throwaway request run after loading, so the first request does not pay the "
                 "GPU's one-time costs (-1 = one prefill step on a GPU, none on the CPU; 0 = none)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 20));
  app.add_option("--port-file", port_file, "write {\"grpc_port\":..,\"metrics_port\":..} here once listening");
}

}  // namespace

int RunServerMain(int argc, char** argv, const std::string& program, const BackendFactory& factory,
                  MediaProber prober) {
  CLI::App app{program + ": answers questions about long videos over gRPC"};
  ServerConfig config;
  std::string port_file, token_file;
  AddFlags(app, config, port_file, token_file);
  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) {
    auto token = ReadFile(token_file, 4096);
    if (!token.ok()) {
      LogEvent(LogLevel::kError, "startup_failed", {{"error", token.status().ToString()}});
      return 2;
    }
    while (!token->empty() && (token->back() == '\n' || token->back() == '\r')) token->pop_back();
    config.bearer_token = *token;
  }
  // Signals are taken synchronously by this thread (sigwait), so every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto backend = factory(config);
  if (!backend.ok()) {
    LogEvent(LogLevel::kError, "startup_failed", {{"error", backend.status().ToString()}});
    return 1;
  }
  std::string backend_name = (*backend)->name();
  auto server = Server::Start(config, *std::move(backend), std::move(prober));
  if (!server.ok()) {
    LogEvent(LogLevel::kError, "startup_failed", {{"error", server.status().ToString()}});
    return 1;
  }
  int grpc_port = (*server)->grpc_port(), metrics_port = (*server)->metrics_port();
  if (!port_file.empty()) {
    nlohmann::json ports{{"grpc_port", grpc_port}, {"metrics_port", metrics_port}, {"pid", getpid()}};
    if (auto st = WriteFileAtomically(port_file, ports.dump()); !st.ok()) {
      LogEvent(LogLevel::kError, "startup_failed", {{"error", st.ToString()}});
      return 1;
    }
  }
  LogEvent(LogLevel::kInfo, "listening",
           {{"grpc_port", grpc_port}, {"metrics_port", metrics_port}, {"backend", backend_name},
            {"tls", !config.tls_cert_file.empty()}, {"auth", !config.bearer_token.empty()}});
  std::printf("avserve listening on port %d metrics %d\n", grpc_port, metrics_port);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  LogEvent(LogLevel::kInfo, "signal", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  (*server)->Shutdown();
  return 0;
}

}  // namespace avserve::service
