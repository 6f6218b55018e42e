#pragma once
// Durations as the configuration writes them ("500ms", "30s", "5m", "1h"):
// a primitive the relay, the pool and the resolver use without the
// configuration model.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace s3gate {

using Duration = std::chrono::milliseconds;

// Parses "500ms", "30s", "5m", "1h" and sums like "1m30s"; nullopt when malformed.
std::optional<Duration> parseDuration(std::string_view text);

// The largest unit that states the value exactly: 10m, 90s, 1500ms.
std::string formatDuration(Duration d);

}  // namespace s3gate
