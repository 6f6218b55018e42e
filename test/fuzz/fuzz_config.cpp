// libFuzzer harness for the configuration loader (SPEC section 1): whatever an
// operator writes, the loader answers with a configuration or with errors, never
// a crash, and every error has the documented "FILE:LINE:COLUMN: KEY.PATH:
// message" shape, in file order.

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>

#include "config/config.h"

namespace {

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

const std::string kSource = "fuzz.yaml";

// "LINE:COLUMN: " after the source name; returns the position after it, or npos.
size_t readPosition(std::string_view text, int* line, int* column) {
  size_t pos = 0;
  for (int* out : {line, column}) {
    size_t start = pos;
    long long value = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 9) {
      value = value * 10 + (text[pos] - '0');
      ++pos;
    }
    if (pos == start || pos >= text.size() || text[pos] != ':') {
      return std::string_view::npos;
    }
    ++pos;
    *out = static_cast<int>(value);
  }
  return pos < text.size() && text[pos] == ' ' ? pos + 1 : std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  const s3gate::ConfigLoadResult r = s3gate::loadConfigFromString(yaml, kSource);
  check(r.ok() == r.errors.empty());
  if (r.ok()) {
    check(r.config->source == kSource);
    check(!r.config->listeners.empty());
    return 0;
  }
  std::tuple<int, int> previous{0, 0};
  for (const std::string& error : r.errors) {
    const std::string_view text(error);
    check(text.starts_with(kSource + ":"));
    int line = 0;
    int column = 0;
    const size_t rest = readPosition(text.substr(kSource.size() + 1), &line, &column);
    check(rest != std::string_view::npos && line >= 1 && column >= 1);
    // Then the key path (or "(file)") and the message. The path may be empty:
    // a key written as "" is named by its empty text.
    const std::string_view tail = text.substr(kSource.size() + 1 + rest);
    const size_t colon = tail.find(": ");
    check(colon != std::string_view::npos && colon + 2 < tail.size());
    check(std::tuple{line, column} >= previous);
    previous = {line, column};
  }
  return 0;
}
