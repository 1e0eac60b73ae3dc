// TEST DOUBLE server: the real avserve server (RunServerMain, every service, the real media store and
// prober) with the FakeBackend in place of the model. For wire-level end-to-end tests that must not
// depend on a checkpoint; the model path is covered by tests that run the real avserve binary.
#include "service/media_probe.h"
#include "service/server.h"
#include "tests/service/fake_backend.h"

int main(int argc, char** argv) {
  using avserve::service::testing::FakeBackend;
  using avserve::service::testing::FakeBackendOptions;
  auto factory = [](const avserve::service::ServerConfig& config)
      -> absl::StatusOr<std::unique_ptr<avserve::service::InferenceBackend>> {
    FakeBackendOptions options = FakeBackendOptions::FromEnvironment();
    options.prefix_cache_bytes = config.prefix_cache_bytes;
    return std::make_unique<FakeBackend>(options);
  };
  return avserve::service::RunServerMain(argc, argv, "avserve_fake_server", factory,
                                         avserve::service::ProbeMediaFile);
}
