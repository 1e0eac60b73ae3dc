// avctl: the command-line client of avserve. `avctl --help`, `avctl ask --help`, ...
#include <cstdio>

#include "CLI/CLI.hpp"
#include "service/avctl_commands.h"
#include "service/file_util.h"

namespace {

using avserve::avctl::AskOptions;
using avserve::avctl::BatchOptions;
using avserve::avctl::GlobalOptions;

void AddIngestSamplingFlags(CLI::App* cmd, AskOptions& a) {
  cmd->add_option("--fps", a.fps, "samples per second of media (default 1)");
  cmd->add_option("--budget", a.frame_budget, "soft tokens per frame: 70 140 280 560 1120");
  cmd->add_option("--layout", a.layout, "interleaved | reference");
  cmd->add_flag("--no-audio", a.ignore_audio, "leave the soundtrack out");
  cmd->add_flag("--no-video", a.ignore_video, "leave the pictures out");
  cmd->add_option("--start", a.start_s, "window start, seconds");
  cmd->add_option("--end", a.end_s, "window end, seconds (0 = end)");
  cmd->add_option("--temperature", a.temperature, "0 = greedy");
  cmd->add_option("--top-k", a.top_k, "0 = off");
  cmd->add_option("--top-p", a.top_p, "0 = off");
  cmd->add_option("--seed", a.seed, "sampling seed");
  cmd->add_option("--max-tokens", a.max_tokens, "answer length limit");
  cmd->add_flag("--thinking", a.thinking, "let the model think first");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"avctl: talk to an avserve server"};
  app.require_subcommand(1);
  GlobalOptions g;
  std::string token_file;
  app.add_option("-s,--server", g.server, "host:port of avserve")->capture_default_str();
  app.add_option("--token", g.token, "bearer token");
  app.add_option("--token-file", token_file, "file holding the bearer token");
  app.add_option("--tls-ca", g.tls_ca, "PEM root certificates: connect with TLS");
  app.add_option("--tls-server-name", g.tls_server_name, "TLS name to verify (default: the host)");
  app.add_flag("--json", g.json, "one JSON object per line on stdout");
  app.add_option("--timeout", g.timeout_s, "deadline in seconds (0 = none)");
  app.add_flag("--no-progress", g.no_progress, "no progress bars on stderr");

  std::string file, path, media_id, service;
  AskOptions ask;
  BatchOptions batch;
  auto* upload = app.add_subcommand("upload", "upload a media file; prints its media id");
  upload->add_option("file", file)->required();
  auto* reg = app.add_subcommand("register", "register a file under the server's media root");
  reg->add_option("path", path)->required();
  auto* probe = app.add_subcommand("probe", "show what the server knows about a media id");
  probe->add_option("media_id", media_id)->required();
  auto* del = app.add_subcommand("delete", "forget a media id");
  del->add_option("media_id", media_id)->required();
  auto* ask_cmd = app.add_subcommand("ask", "ask questions about a media id (answers stream)");
  ask_cmd->add_option("media_id", ask.media_id)->required();
  ask_cmd->add_option("-q,--question", ask.questions, "a question (repeat for several)")->required();
  AddIngestSamplingFlags(ask_cmd, ask);
  auto* sum = app.add_subcommand("summarize", "summarize a recording, with timestamps");
  sum->add_option("media_id", ask.media_id)->required();
  sum->add_option("--instructions", ask.instructions, "extra instructions");
  sum->add_option("--chunk-seconds", ask.chunk_s, "map-reduce chunk length (0 = automatic)");
  AddIngestSamplingFlags(sum, ask);
  auto* health = app.add_subcommand("health", "grpc.health.v1 check");
  health->add_option("service", service, "service name ('' = server)");

  auto* batch_cmd = app.add_subcommand("batch", "durable batch jobs");
  batch_cmd->require_subcommand(1);
  auto* submit = batch_cmd->add_subcommand("submit", "submit media x questions; prints the job");
  submit->add_option("-m,--media", batch.media_ids, "media id (repeat)")->required();
  submit->add_option("-q,--question", ask.questions, "question (repeat)")->required();
  submit->add_option("--label", batch.label, "free text");
  AddIngestSamplingFlags(submit, ask);
  auto* get = batch_cmd->add_subcommand("get", "show a job");
  get->add_option("job_id", batch.job_id)->required();
  get->add_flag("--results", batch.include_results, "include finished results");
  auto* list = batch_cmd->add_subcommand("list", "list jobs");
  auto* cancel = batch_cmd->add_subcommand("cancel", "cancel a job");
  cancel->add_option("job_id", batch.job_id)->required();
  auto* watch = batch_cmd->add_subcommand("watch", "stream results as they finish");
  watch->add_option("job_id", batch.job_id)->required();

  CLI11_PARSE(app, argc, argv);
  if (!token_file.empty()) {
    auto token = avserve::service::ReadFile(token_file, 4096);
    if (!token.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(token.status().message()).c_str());
      return 2;
    }
    g.token = *token;
    while (!g.token.empty() && (g.token.back() == '\n' || g.token.back() == '\r')) g.token.pop_back();
  }
  avserve::avctl::Client client(g);
  if (*upload) return client.Upload(file);
  if (*reg) return client.Register(path);
  if (*probe) return client.Probe(media_id);
  if (*del) return client.Delete(media_id);
  if (*ask_cmd) return client.Ask(ask);
  if (*sum) return client.Summarize(ask);
  if (*health) return client.Health(service);
  if (*submit) return client.BatchSubmit(ask, batch);
  if (*get) return client.BatchGet(batch);
  if (*list) return client.BatchList();
  if (*cancel) return client.BatchCancel(batch);
  if (*watch) return client.BatchWatch(batch);
  return 2;
}
