#include "service/service_env.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "service/log.h"
#include "service/status_conversion.h"

namespace avserve::service {

absl::Status CheckAuth(const grpc::CallbackServerContext& context, const std::string& token) {
  if (token.empty()) return absl::OkStatus();
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return absl::UnauthenticatedError("missing authorization: Bearer <token> metadata");
  std::string_view got(it->second.data(), it->second.size());
  std::string want = absl::StrCat("Bearer ", token);
  // Constant-time comparison: the time taken does not reveal how much of the token matched.
  unsigned char diff = got.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i] ^ (i < got.size() ? got[i] : 0));
  if (diff != 0) return absl::UnauthenticatedError("invalid bearer token");
  return absl::OkStatus();
}

void RecordRpc(const ServiceEnv& env, const char* method, const absl::Status& status,
               std::chrono::steady_clock::time_point start) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string code = absl::StatusCodeToString(status.code());
  env.metrics->RecordRequest(method, code, seconds);
  nlohmann::json fields{{"method", method}, {"code", code}, {"ms", static_cast<int64_t>(seconds * 1000)}};
  if (!status.ok()) fields["error"] = std::string(status.message());
  LogEvent(status.ok() ? LogLevel::kInfo : LogLevel::kWarning, "rpc", std::move(fields));
}

void FinishUnary(const ServiceEnv& env, grpc::ServerUnaryReactor* reactor, const char* method,
                 const absl::Status& status, std::chrono::steady_clock::time_point start) {
  RecordRpc(env, method, status, start);
  reactor->Finish(ToGrpcStatus(status));
}

}  // namespace avserve::service
