// avserve.v1.MediaService over the callback API: uploads stream to the media store; path registration,
// probing and hashing run on the IoPool so callback threads never block.
#pragma once

#include "avserve/v1/avserve.grpc.pb.h"
#include "service/service_env.h"

namespace avserve::service {

class MediaServiceImpl final : public v1::MediaService::CallbackService {
 public:
  explicit MediaServiceImpl(ServiceEnv env) : env_(std::move(env)) {}

  grpc::ServerReadReactor<v1::UploadRequest>* Upload(grpc::CallbackServerContext* context,
                                                     v1::MediaInfo* response) override;
  grpc::ServerUnaryReactor* RegisterPath(grpc::CallbackServerContext* context, const v1::RegisterPathRequest* request,
                                         v1::MediaInfo* response) override;
  grpc::ServerUnaryReactor* GetMedia(grpc::CallbackServerContext* context, const v1::GetMediaRequest* request,
                                     v1::MediaInfo* response) override;
  grpc::ServerUnaryReactor* DeleteMedia(grpc::CallbackServerContext* context, const v1::DeleteMediaRequest* request,
                                        v1::DeleteMediaResponse* response) override;

 private:
  ServiceEnv env_;
};

}  // namespace avserve::service
