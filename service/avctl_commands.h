// avctl's commands: each takes the parsed options, talks to avserve and prints human text (stdout:
// results; stderr: progress bars) or, with --json, one JSON object per line on stdout.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

namespace avserve::avctl {

struct GlobalOptions {
  std::string server = "127.0.0.1:50051";
  std::string token;      // bearer token (or --token-file)
  std::string tls_ca;     // PEM roots: enables TLS
  std::string tls_server_name;
  bool json = false;
  double timeout_s = 0;   // 0 = no deadline
  bool no_progress = false;
};

struct AskOptions {
  std::string media_id;
  std::vector<std::string> questions;
  double fps = 0;
  int frame_budget = 0;
  std::string layout = "interleaved";
  bool ignore_audio = false, ignore_video = false;
  double start_s = 0, end_s = 0;
  float temperature = 0, top_p = 0;
  int top_k = 0, max_tokens = 0;
  uint64_t seed = 0;
  bool thinking = false;
  // Summarize only.
  std::string instructions;
  double chunk_s = 0;
};

struct BatchOptions {
  std::vector<std::string> media_ids;
  std::string job_id;
  std::string label;
  bool include_results = false;
};

// Every command returns the process exit code: 0 on success, else the gRPC status code.
class Client {
 public:
  explicit Client(const GlobalOptions& options);
  int Upload(const std::string& file);
  int Register(const std::string& path);
  int Probe(const std::string& media_id);
  int Delete(const std::string& media_id);
  int Ask(const AskOptions& options);
  int Summarize(const AskOptions& options);
  int BatchSubmit(const AskOptions& ask, const BatchOptions& batch);
  int BatchGet(const BatchOptions& batch);
  int BatchList();
  int BatchCancel(const BatchOptions& batch);
  int BatchWatch(const BatchOptions& batch);
  int Health(const std::string& service);

 private:
  void Prepare(grpc::ClientContext* context) const;
  int Fail(const grpc::Status& status) const;

  GlobalOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace avserve::avctl
