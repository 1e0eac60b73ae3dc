// avserve.v1.InferenceService: Ask and Summarize as server-streaming callback reactors. Each call is
// handed to the EngineWorker as a task; events flow back through a per-call queue, so the engine
// thread never waits on the network and callback threads never wait on the engine.
#pragma once

#include "avserve/v1/avserve.grpc.pb.h"
#include "service/service_env.h"

namespace avserve::service {

class InferenceServiceImpl final : public v1::InferenceService::CallbackService {
 public:
  explicit InferenceServiceImpl(ServiceEnv env) : env_(std::move(env)) {}

  grpc::ServerWriteReactor<v1::AskEvent>* Ask(grpc::CallbackServerContext* context,
                                              const v1::AskRequest* request) override;
  grpc::ServerWriteReactor<v1::AskEvent>* Summarize(grpc::CallbackServerContext* context,
                                                    const v1::SummarizeRequest* request) override;

 private:
  ServiceEnv env_;
};

}  // namespace avserve::service
