// avserve.v1.BatchService over the callback API, backed by the BatchManager.
#pragma once

#include "avserve/v1/avserve.grpc.pb.h"
#include "service/service_env.h"

namespace avserve::service {

class BatchServiceImpl final : public v1::BatchService::CallbackService {
 public:
  explicit BatchServiceImpl(ServiceEnv env) : env_(std::move(env)) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* context, const v1::SubmitBatchRequest* request,
                                   v1::BatchJob* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetBatchRequest* request,
                                v1::BatchJob* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* context, const v1::ListBatchesRequest* request,
                                 v1::ListBatchesResponse* response) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context, const v1::CancelBatchRequest* request,
                                   v1::BatchJob* response) override;
  grpc::ServerWriteReactor<v1::BatchResult>* Watch(grpc::CallbackServerContext* context,
                                                   const v1::WatchBatchRequest* request) override;

 private:
  ServiceEnv env_;
};

}  // namespace avserve::service
