#include "service/media_service.h"

#include <atomic>
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "service/request_parsing.h"
#include "service/status_conversion.h"

namespace avserve::service {
namespace {

using Clock = std::chrono::steady_clock;

// Reads the client stream: header first, then chunks written straight to the pending upload. The
// commit (fsync + probe + publish) is posted to the IoPool.
class UploadReactor final : public grpc::ServerReadReactor<v1::UploadRequest> {
 public:
  UploadReactor(const ServiceEnv& env, grpc::CallbackServerContext* context, v1::MediaInfo* response)
      : env_(env), response_(response) {
    absl::Status status = CheckAuth(*context, env_.bearer_token);
    if (status.ok()) {
      auto upload = env_.media->BeginUpload();
      status = upload.status();
      if (upload.ok()) upload_ = *std::move(upload);
    }
    if (!status.ok()) {
      Complete(status);
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // client half-closed: all bytes are here
      if (!saw_header_) return Complete(absl::InvalidArgumentError("upload stream had no header message"));
      env_.io->Post([this] { Commit(); });
      return;
    }
    absl::Status status = Consume();
    if (!status.ok()) return Complete(status);
    StartRead(&request_);
  }

  void OnCancel() override { cancelled_ = true; }
  void OnDone() override { delete this; }

 private:
  absl::Status Consume() {
    if (request_.has_header()) {
      if (saw_header_) return absl::InvalidArgumentError("upload stream has a second header");
      saw_header_ = true;
      header_ = request_.header();
      if (header_.size_bytes() < 0) return absl::InvalidArgumentError("header.size_bytes must be >= 0");
      if (header_.size_bytes() > env_.media->max_upload_bytes()) {
        return absl::ResourceExhaustedError(absl::StrCat("upload of ", header_.size_bytes(),
                                                         " bytes exceeds the server's limit of ",
                                                         env_.media->max_upload_bytes()));
      }
      return absl::OkStatus();
    }
    if (!saw_header_) return absl::InvalidArgumentError("the first upload message must be the header");
    if (request_.part_case() != v1::UploadRequest::kChunk) {
      return absl::InvalidArgumentError("upload message carries neither header nor chunk");
    }
    env_.metrics->RecordUploadBytes(static_cast<int64_t>(request_.chunk().size()));
    return upload_->Write(request_.chunk());
  }

  void Commit() {
    if (cancelled_) return Complete(absl::CancelledError("upload cancelled by the client"));
    auto record = upload_->Commit(header_.filename(), header_.size_bytes(), header_.sha256_hex());
    if (record.ok()) ToProto(*record, response_);
    Complete(record.status());
  }

  void Complete(const absl::Status& status) {
    upload_.reset();  // removes the temporary file unless it was published
    RecordRpc(env_, "Upload", status, start_);
    Finish(ToGrpcStatus(status));
  }

  const ServiceEnv& env_;
  v1::MediaInfo* response_;
  const Clock::time_point start_ = Clock::now();
  std::unique_ptr<PendingUpload> upload_;
  v1::UploadRequest request_;
  v1::UploadHeader header_;
  bool saw_header_ = false;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

grpc::ServerReadReactor<v1::UploadRequest>* MediaServiceImpl::Upload(grpc::CallbackServerContext* context,
                                                                     v1::MediaInfo* response) {
  return new UploadReactor(env_, context, response);
}

grpc::ServerUnaryReactor* MediaServiceImpl::RegisterPath(grpc::CallbackServerContext* context,
                                                         const v1::RegisterPathRequest* request,
                                                         v1::MediaInfo* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  if (absl::Status auth = CheckAuth(*context, env_.bearer_token); !auth.ok()) {
    FinishUnary(env_, reactor, "RegisterPath", auth, start);
    return reactor;
  }
  env_.io->Post([this, reactor, request, response, start] {
    auto record = env_.media->RegisterPath(request->path());
    if (record.ok()) ToProto(*record, response);
    FinishUnary(env_, reactor, "RegisterPath", record.status(), start);
  });
  return reactor;
}

grpc::ServerUnaryReactor* MediaServiceImpl::GetMedia(grpc::CallbackServerContext* context,
                                                     const v1::GetMediaRequest* request, v1::MediaInfo* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  absl::Status status = CheckAuth(*context, env_.bearer_token);
  if (status.ok()) {
    auto record = env_.media->Get(request->media_id());
    if (record.ok()) ToProto(*record, response);
    status = record.status();
  }
  FinishUnary(env_, reactor, "GetMedia", status, start);
  return reactor;
}

grpc::ServerUnaryReactor* MediaServiceImpl::DeleteMedia(grpc::CallbackServerContext* context,
                                                        const v1::DeleteMediaRequest* request,
                                                        v1::DeleteMediaResponse* response) {
  auto start = Clock::now();
  auto* reactor = context->DefaultReactor();
  absl::Status status = CheckAuth(*context, env_.bearer_token);
  if (status.ok()) status = env_.media->Delete(request->media_id());
  if (status.ok()) response->set_deleted(true);
  FinishUnary(env_, reactor, "DeleteMedia", status, start);
  return reactor;
}

}  // namespace avserve::service
