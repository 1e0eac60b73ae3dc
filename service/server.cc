#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "service/batch_manager.h"
#include "service/batch_service.h"
#include "service/file_util.h"
#include "service/http_endpoint.h"
#include "service/inference_service.h"
#include "service/log.h"
#include "service/media_service.h"

namespace avserve::service {

// Members are declared in dependency order; ~Impl runs after Shutdown() has stopped everything.
struct Server::Impl {
  ServerConfig config;
  Metrics metrics;
  std::unique_ptr<IoPool> io;
  std::unique_ptr<MediaStore> media;
  std::unique_ptr<EngineWorker> engine;
  std::unique_ptr<BatchManager> batches;
  std::unique_ptr<MediaServiceImpl> media_service;
  std::unique_ptr<InferenceServiceImpl> inference_service;
  std::unique_ptr<BatchServiceImpl> batch_service;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<HttpEndpoint> http;
  int grpc_port = 0;
  bool shut_down = false;
};

namespace {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const ServerConfig& config) {
  if (config.tls_cert_file.empty() && config.tls_key_file.empty()) return grpc::InsecureServerCredentials();
  if (config.tls_cert_file.empty() || config.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  ASSIGN_OR_RETURN(std::string cert, ReadFile(config.tls_cert_file, 1 << 20));
  ASSIGN_OR_RETURN(std::string key, ReadFile(config.tls_key_file, 1 << 20));
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("expected host:port, got '", address, "'"));
  }
  return std::make_pair(address.substr(0, colon), port);
}

absl::Status StartGrpc(Server::Impl* impl);  // below

}  // namespace

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { Shutdown(); }
int Server::grpc_port() const { return impl_->grpc_port; }
int Server::metrics_port() const { return impl_->http ? impl_->http->port() : 0; }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerConfig& config,
                                                      std::unique_ptr<InferenceBackend> backend,
                                                      MediaProber prober) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->io = std::make_unique<IoPool>(2);
  ASSIGN_OR_RETURN(impl->media, MediaStore::Open({config.data_dir, config.media_root, config.max_upload_bytes},
                                                 std::move(prober)));
  impl->engine = std::make_unique<EngineWorker>(std::move(backend), config.max_queued_requests);
  ASSIGN_OR_RETURN(impl->batches,
                   BatchManager::Open(config.data_dir, impl->engine.get(), impl->media.get(), &impl->metrics));
  ServiceEnv env{impl->media.get(), impl->engine.get(), &impl->metrics, impl->io.get(), impl->batches.get(),
                 config.bearer_token};
  impl->media_service = std::make_unique<MediaServiceImpl>(env);
  impl->inference_service = std::make_unique<InferenceServiceImpl>(env);
  impl->batch_service = std::make_unique<BatchServiceImpl>(env);
  Impl* raw = impl.get();
  impl->metrics.set_gauge_source([raw] {
    BackendStats stats = raw->engine->backend_stats();
    return Metrics::Gauges{raw->engine->queue_depth(), raw->engine->busy() ? 1 : 0, stats.prefix_cache_bytes,
                           stats.prefix_cache_entries, stats.device_memory_bytes, raw->batches->active_jobs()};
  });
  RETURN_IF_ERROR(StartGrpc(raw));
  if (!config.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(auto host_port, SplitHostPort(config.metrics_listen));
    ASSIGN_OR_RETURN(impl->http, HttpEndpoint::Start(host_port.first, host_port.second,
                                                     [raw] { return raw->metrics.RenderPrometheus(); }));
  }
  impl->batches->Start();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

namespace {

absl::Status StartGrpc(Server::Impl* impl) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  ASSIGN_OR_RETURN(auto credentials, MakeCredentials(impl->config));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(impl->config.listen, credentials, &impl->grpc_port);
  builder.SetMaxReceiveMessageSize(impl->config.max_message_bytes);
  builder.SetMaxSendMessageSize(impl->config.max_message_bytes);
  builder.RegisterService(impl->media_service.get());
  builder.RegisterService(impl->inference_service.get());
  builder.RegisterService(impl->batch_service.get());
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", impl->config.listen));
  }
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  return absl::OkStatus();
}

}  // namespace

void Server::Shutdown(int grace_ms) {
  Impl& s = *impl_;
  if (s.shut_down) return;
  s.shut_down = true;
  LogEvent(LogLevel::kInfo, "shutdown_begin", {{"grace_ms", grace_ms}});
  s.grpc_server->GetHealthCheckService()->SetServingStatus(false);
  s.grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  s.batches->Stop();
  s.engine->Stop();
  if (s.http) s.http->Stop();
  s.grpc_server->Wait();
  LogEvent(LogLevel::kInfo, "shutdown_done");
}

}  // namespace avserve::service
