#include "common/duration.h"

#include <charconv>

namespace s3gate {

namespace {

// A hundred years: longer is a typo, and it keeps every sum within int64.
constexpr int64_t kMaxDurationMs = int64_t{1000} * 60 * 60 * 24 * 365 * 100;

}  // namespace

// The largest unit that states the value exactly: 10m, 90s, 1500ms.
std::string formatDuration(Duration d) {
  int64_t ms = d.count();
  if (ms != 0 && ms % (60 * 60 * 1000) == 0) {
    return std::to_string(ms / (60 * 60 * 1000)) + "h";
  }
  if (ms != 0 && ms % (60 * 1000) == 0) {
    return std::to_string(ms / (60 * 1000)) + "m";
  }
  if (ms % 1000 == 0) {
    return std::to_string(ms / 1000) + "s";
  }
  return std::to_string(ms) + "ms";
}

std::optional<Duration> parseDuration(std::string_view text) {
  // One or more number-and-unit groups ("1m30s"); a unit is always required so
  // that "30" is never read as seconds by one reader and milliseconds by another.
  if (text.empty()) {
    return std::nullopt;
  }
  int64_t total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t digits_end = pos;
    while (digits_end < text.size() && text[digits_end] >= '0' && text[digits_end] <= '9') {
      ++digits_end;
    }
    if (digits_end == pos) {
      return std::nullopt;
    }
    int64_t number = 0;
    auto [stop, ec] = std::from_chars(text.data() + pos, text.data() + digits_end, number);
    if (ec != std::errc() || stop != text.data() + digits_end) {
      return std::nullopt;
    }
    size_t unit_end = digits_end;
    while (unit_end < text.size() && !(text[unit_end] >= '0' && text[unit_end] <= '9')) {
      ++unit_end;
    }
    std::string_view unit = text.substr(digits_end, unit_end - digits_end);
    int64_t scale = 0;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60 * 1000;
    } else if (unit == "h") {
      scale = 60 * 60 * 1000;
    } else {
      return std::nullopt;
    }
    if (number > kMaxDurationMs / scale || total + number * scale > kMaxDurationMs) {
      return std::nullopt;
    }
    total += number * scale;
    pos = unit_end;
  }
  return Duration(total);
}

}  // namespace s3gate
