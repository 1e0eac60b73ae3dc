#include "service/log.h"

#include <atomic>
#include <chrono>
#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace avserve::service {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};

spdlog::logger& Logger() {
  // spdlog's stderr sink is mutex-protected, so concurrent lines never interleave.
  static auto* logger = [] {
    auto* l = new spdlog::logger("avserve", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    l->set_pattern("%v");
    l->flush_on(spdlog::level::info);
    return l;
  }();
  return *logger;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }

void LogEvent(LogLevel level, std::string_view event, nlohmann::json fields) {
  if (static_cast<int>(level) < g_min_level.load()) return;
  nlohmann::json line = nlohmann::json::object();
  line["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  line["level"] = LevelName(level);
  line["event"] = std::string(event);
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) line[k] = std::move(v);
  }
  Logger().info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace avserve::service
