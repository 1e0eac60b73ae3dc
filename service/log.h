// Structured logs: one JSON object per line on stderr ({"ts":..,"level":..,"event":..,...fields}).
#pragma once

#include <string_view>

#include "nlohmann/json.hpp"

namespace avserve::service {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

void SetMinLogLevel(LogLevel level);
void LogEvent(LogLevel level, std::string_view event, nlohmann::json fields = nlohmann::json::object());

}  // namespace avserve::service
