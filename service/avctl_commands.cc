#include "service/avctl_commands.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/generic/generic_stub.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>

#include "avserve/v1/avserve.grpc.pb.h"
#include "service/content_hash.h"
#include "service/file_util.h"

namespace avserve::avctl {
namespace {

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

void PrintJson(const google::protobuf::Message& message) {
  std::printf("%s\n", ToJson(message).c_str());
  std::fflush(stdout);
}

std::string Bar(int64_t done, int64_t total) {
  constexpr int kWidth = 20;
  int filled = total > 0 ? static_cast<int>(kWidth * std::min(done, total) / total) : 0;
  return "[" + std::string(filled, '#') + std::string(kWidth - filled, '-') + "]";
}

void FillIngest(const AskOptions& a, v1::IngestOptions* in) {
  in->set_fps(a.fps);
  in->set_frame_budget(a.frame_budget);
  in->set_layout(a.layout == "reference" ? v1::LAYOUT_REFERENCE : v1::LAYOUT_INTERLEAVED);
  in->set_ignore_audio(a.ignore_audio);
  in->set_ignore_video(a.ignore_video);
  in->set_start_us(static_cast<int64_t>(a.start_s * 1e6));
  in->set_end_us(static_cast<int64_t>(a.end_s * 1e6));
}

void FillSampling(const AskOptions& a, v1::SamplingOptions* s) {
  s->set_temperature(a.temperature);
  s->set_top_k(a.top_k);
  s->set_top_p(a.top_p);
  s->set_seed(a.seed);
  s->set_max_new_tokens(a.max_tokens);
}

void PrintMedia(const v1::MediaInfo& m) {
  const auto& p = m.probe();
  std::printf("%s\n  name: %s\n  size: %lld bytes\n  duration: %.3f s\n", m.media_id().c_str(),
              m.display_name().c_str(), static_cast<long long>(m.size_bytes()), p.duration_us() / 1e6);
  if (p.has_video()) {
    std::printf("  video: %s %dx%d %.3f fps\n", p.video_codec().c_str(), p.width(), p.height(), p.avg_frame_rate());
  }
  if (p.has_audio()) {
    std::printf("  audio: %s %d Hz %d ch\n", p.audio_codec().c_str(), p.audio_sample_rate_hz(), p.audio_channels());
  }
}

const char* StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_QUEUED: return "queued";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::JOB_STATE_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

void PrintJob(const v1::BatchJob& j) {
  std::printf("%s %s %d/%d finished (%d failed) %s\n", j.job_id().c_str(), StateName(j.state()), j.finished_items(),
              j.total_items(), j.failed_items(), j.label().c_str());
  for (const auto& r : j.results()) {
    std::printf("  [%d] %s q%d: %s%s\n", r.item_index(), r.media_id().substr(0, 15).c_str(), r.question_index(),
                r.status_code() == 0 ? "" : ("error " + r.error_message() + " ").c_str(), r.answer().c_str());
  }
}

}  // namespace

Client::Client(const GlobalOptions& options) : options_(options) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (!options_.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = service::ReadFile(options_.tls_ca, 1 << 20).value_or("");
    creds = grpc::SslCredentials(ssl);
    if (!options_.tls_server_name.empty()) args.SetSslTargetNameOverride(options_.tls_server_name);
  }
  channel_ = grpc::CreateCustomChannel(options_.server, creds, args);
}

void Client::Prepare(grpc::ClientContext* context) const {
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
  if (options_.timeout_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1000)));
  }
}

int Client::Fail(const grpc::Status& status) const {
  if (options_.json) {
    std::printf("{\"error\":{\"code\":%d,\"message\":\"%s\"}}\n", status.error_code(),
                status.error_message().c_str());
  }
  std::fprintf(stderr, "error: %d %s\n", status.error_code(), status.error_message().c_str());
  return status.error_code() == 0 ? 1 : status.error_code();
}

int Client::Upload(const std::string& file) {
  auto hex = service::Sha256OfFile(file);
  if (!hex.ok()) return Fail(grpc::Status(grpc::StatusCode::NOT_FOUND, std::string(hex.status().message())));
  std::ifstream in(file, std::ios::binary);
  grpc::ClientContext context;
  Prepare(&context);
  v1::MediaInfo info;
  auto stub = v1::MediaService::NewStub(channel_);
  auto writer = stub->Upload(&context, &info);
  v1::UploadRequest header;
  header.mutable_header()->set_filename(file.substr(file.find_last_of('/') + 1));
  header.mutable_header()->set_sha256_hex(*hex);
  bool ok = writer->Write(header);
  std::string buf(1 << 20, '\0');
  while (ok && in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() <= 0) break;
    v1::UploadRequest chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(in.gcount()));
    ok = writer->Write(chunk);
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(info) : PrintMedia(info);
  return 0;
}

int Client::Register(const std::string& path) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::RegisterPathRequest request;
  request.set_path(path);
  v1::MediaInfo info;
  grpc::Status status = v1::MediaService::NewStub(channel_)->RegisterPath(&context, request, &info);
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(info) : PrintMedia(info);
  return 0;
}

int Client::Probe(const std::string& media_id) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetMediaRequest request;
  request.set_media_id(media_id);
  v1::MediaInfo info;
  grpc::Status status = v1::MediaService::NewStub(channel_)->GetMedia(&context, request, &info);
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(info) : PrintMedia(info);
  return 0;
}

int Client::Delete(const std::string& media_id) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::DeleteMediaRequest request;
  request.set_media_id(media_id);
  v1::DeleteMediaResponse response;
  grpc::Status status = v1::MediaService::NewStub(channel_)->DeleteMedia(&context, request, &response);
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(response) : (void)std::printf("deleted %s\n", media_id.c_str());
  return 0;
}

namespace {

// Prints one Ask/Summarize event: answers to stdout (prefixed per question when there are several),
// progress bars to stderr.
class EventPrinter {
 public:
  EventPrinter(bool json, bool progress, int num_questions)
      : json_(json), progress_(progress && !json), num_questions_(num_questions) {}
  void Print(const v1::AskEvent& e) {
    if (json_) return PrintJson(e);
    switch (e.event_case()) {
      case v1::AskEvent::kIngestProgress:
        ingest_ = {e.ingest_progress().media_done_us(), e.ingest_progress().media_total_us()};
        return Progress();
      case v1::AskEvent::kPrefillProgress:
        if (e.prefill_progress().question_index() < 0) {
          prefill_ = {e.prefill_progress().tokens_done(), e.prefill_progress().tokens_total()};
        }
        return Progress();
      case v1::AskEvent::kChunkProgress:
        if (progress_) {
          std::fprintf(stderr, "\nchunk %d/%d %s\n", e.chunk_progress().chunk_index() + 1,
                       e.chunk_progress().num_chunks(), e.chunk_progress().done() ? "done" : "started");
        }
        return;
      case v1::AskEvent::kAnswer: return Answer(e.answer());
      case v1::AskEvent::kFinal: return Final(e.final());
      default: return;
    }
  }

 private:
  void Progress() {
    if (!progress_) return;
    std::fprintf(stderr, "\ringest %s %.1f/%.1f s  prefill %s %lld/%lld tok",
                 Bar(ingest_.first, ingest_.second).c_str(), ingest_.first / 1e6, ingest_.second / 1e6,
                 Bar(prefill_.first, prefill_.second).c_str(), static_cast<long long>(prefill_.first),
                 static_cast<long long>(prefill_.second));
    std::fflush(stderr);
    bar_shown_ = true;
  }
  // Questions decode together, so their deltas interleave: the first one to speak is printed live,
  // the others are held and printed whole at the end.
  void Answer(const v1::AnswerDelta& a) {
    if (current_ < 0) {
      if (bar_shown_) std::fprintf(stderr, "\n");
      bar_shown_ = false;
      current_ = a.question_index();
      if (num_questions_ > 1) std::printf("[%d] ", current_);
    }
    if (a.question_index() != current_) {
      held_[a.question_index()] += a.text();
      return;
    }
    std::printf("%s", a.text().c_str());
    std::fflush(stdout);
  }
  void Final(const v1::FinalEvent& f) {
    if (bar_shown_) std::fprintf(stderr, "\n");
    std::printf("\n");
    for (const auto& [index, text] : held_) std::printf("[%d] %s\n", index, text.c_str());
    std::fprintf(stderr, "tokens: prefix %lld, suffix %lld, completion %lld; cache %s; %lld ms total\n",
                 static_cast<long long>(f.usage().prefix_tokens()), static_cast<long long>(f.usage().suffix_tokens()),
                 static_cast<long long>(f.usage().completion_tokens()), f.prefix_cache_hit() ? "hit" : "miss",
                 static_cast<long long>(f.timings().total_ms()));
  }

  bool json_, progress_;
  int num_questions_;
  int current_ = -1;
  std::map<int, std::string> held_;
  bool bar_shown_ = false;
  std::pair<int64_t, int64_t> ingest_{0, 0}, prefill_{0, 0};
};

}  // namespace

int Client::Ask(const AskOptions& a) {
  v1::AskRequest request;
  request.set_media_id(a.media_id);
  for (const auto& q : a.questions) request.add_questions(q);
  FillIngest(a, request.mutable_ingest());
  FillSampling(a, request.mutable_sampling());
  request.set_thinking(a.thinking);
  grpc::ClientContext context;
  Prepare(&context);
  auto reader = v1::InferenceService::NewStub(channel_)->Ask(&context, request);
  EventPrinter printer(options_.json, !options_.no_progress, static_cast<int>(a.questions.size()));
  v1::AskEvent event;
  while (reader->Read(&event)) printer.Print(event);
  grpc::Status status = reader->Finish();
  return status.ok() ? 0 : Fail(status);
}

int Client::Summarize(const AskOptions& a) {
  v1::SummarizeRequest request;
  request.set_media_id(a.media_id);
  request.set_instructions(a.instructions);
  request.set_chunk_us(static_cast<int64_t>(a.chunk_s * 1e6));
  FillIngest(a, request.mutable_ingest());
  FillSampling(a, request.mutable_sampling());
  grpc::ClientContext context;
  Prepare(&context);
  auto reader = v1::InferenceService::NewStub(channel_)->Summarize(&context, request);
  EventPrinter printer(options_.json, !options_.no_progress, 1);
  v1::AskEvent event;
  while (reader->Read(&event)) printer.Print(event);
  grpc::Status status = reader->Finish();
  return status.ok() ? 0 : Fail(status);
}

int Client::BatchSubmit(const AskOptions& a, const BatchOptions& b) {
  v1::SubmitBatchRequest request;
  for (const auto& m : b.media_ids) request.add_media_ids(m);
  for (const auto& q : a.questions) request.add_questions(q);
  FillIngest(a, request.mutable_ingest());
  FillSampling(a, request.mutable_sampling());
  request.set_label(b.label);
  grpc::ClientContext context;
  Prepare(&context);
  v1::BatchJob job;
  grpc::Status status = v1::BatchService::NewStub(channel_)->Submit(&context, request, &job);
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(job) : PrintJob(job);
  return 0;
}

int Client::BatchGet(const BatchOptions& b) {
  v1::GetBatchRequest request;
  request.set_job_id(b.job_id);
  request.set_include_results(b.include_results);
  grpc::ClientContext context;
  Prepare(&context);
  v1::BatchJob job;
  grpc::Status status = v1::BatchService::NewStub(channel_)->Get(&context, request, &job);
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(job) : PrintJob(job);
  return 0;
}

int Client::BatchList() {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListBatchesResponse response;
  grpc::Status status = v1::BatchService::NewStub(channel_)->List(&context, v1::ListBatchesRequest(), &response);
  if (!status.ok()) return Fail(status);
  for (const auto& job : response.jobs()) options_.json ? PrintJson(job) : PrintJob(job);
  return 0;
}

int Client::BatchCancel(const BatchOptions& b) {
  v1::CancelBatchRequest request;
  request.set_job_id(b.job_id);
  grpc::ClientContext context;
  Prepare(&context);
  v1::BatchJob job;
  grpc::Status status = v1::BatchService::NewStub(channel_)->Cancel(&context, request, &job);
  if (!status.ok()) return Fail(status);
  options_.json ? PrintJson(job) : PrintJob(job);
  return 0;
}

int Client::BatchWatch(const BatchOptions& b) {
  v1::WatchBatchRequest request;
  request.set_job_id(b.job_id);
  grpc::ClientContext context;
  Prepare(&context);
  auto reader = v1::BatchService::NewStub(channel_)->Watch(&context, request);
  v1::BatchResult r;
  while (reader->Read(&r)) {
    if (options_.json) {
      PrintJson(r);
    } else {
      std::printf("[%d] %s q%d: %s\n", r.item_index(), r.media_id().substr(0, 15).c_str(), r.question_index(),
                  r.status_code() == 0 ? r.answer().c_str() : ("error: " + r.error_message()).c_str());
      std::fflush(stdout);
    }
  }
  grpc::Status status = reader->Finish();
  return status.ok() ? 0 : Fail(status);
}

int Client::Health(const std::string& service) {
  // grpc.health.v1.Health/Check through the generic stub: HealthCheckRequest is {1: service}, the
  // response {1: status enum}; encoding these two tiny messages by hand spares a generated client.
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back(0x0a);
    request_bytes.push_back(static_cast<char>(service.size()));  // names < 128 bytes
    request_bytes += service.substr(0, 127);
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext context;
  Prepare(&context);
  if (options_.timeout_s <= 0) context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  if (!status.ok()) return Fail(status);
  std::vector<grpc::Slice> slices;
  response.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  int code = bytes.size() >= 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  static const std::map<int, const char*> kNames = {
      {0, "UNKNOWN"}, {1, "SERVING"}, {2, "NOT_SERVING"}, {3, "SERVICE_UNKNOWN"}};
  const char* name = kNames.count(code) ? kNames.at(code) : "UNKNOWN";
  if (options_.json) {
    std::printf("{\"status\":\"%s\"}\n", name);
  } else {
    std::printf("%s\n", name);
  }
  return code == 1 ? 0 : 1;
}

}  // namespace avserve::avctl
