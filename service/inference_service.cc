#include "service/inference_service.h"

#include "service/inference_call.h"

namespace avserve::service {

grpc::ServerWriteReactor<v1::AskEvent>* InferenceServiceImpl::Ask(grpc::CallbackServerContext* context,
                                                                  const v1::AskRequest* request) {
  return InferenceCall::StartAsk(env_, context, *request);
}

grpc::ServerWriteReactor<v1::AskEvent>* InferenceServiceImpl::Summarize(grpc::CallbackServerContext* context,
                                                                        const v1::SummarizeRequest* request) {
  return InferenceCall::StartSummarize(env_, context, *request);
}

}  // namespace avserve::service
