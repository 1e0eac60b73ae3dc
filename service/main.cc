// avserve: the gRPC server. Flags: avserve --help.
#include "service/media_probe.h"
#include "service/no_model_backend.h"
#include "service/server.h"

#if AVSERVE_HAVE_MODEL
#include "service/model_backend.h"
#endif

namespace {

absl::StatusOr<std::unique_ptr<avserve::service::InferenceBackend>> MakeBackend(
    const avserve::service::ServerConfig& config) {
  using avserve::service::NoModelBackend;
  if (config.checkpoint_dir.empty()) {
    return std::make_unique<NoModelBackend>("the server was started without --checkpoint: inference is off");
  }
#if AVSERVE_HAVE_MODEL
  return avserve::service::CreateModelBackend(config);
#else
  return std::make_unique<NoModelBackend>("this avserve was built without the engine and pipeline layers");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  return avserve::service::RunServerMain(argc, argv, "avserve", MakeBackend, avserve::service::ProbeMediaFile);
}
