#include "common/host_name.h"

#include "common/text.h"

namespace s3gate {

namespace {

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

}  // namespace

bool isValidHostName(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view label = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    bool all_digits = true;
    for (char c : label) {
      const bool ok = (c >= 'a' && c <= 'z') || isDigit(c) || c == '-' || c == '_';
      if (!ok) {
        return false;
      }
      all_digits = all_digits && isDigit(c);
    }
    if (dot == std::string_view::npos) {
      return !all_digits;
    }
    start = dot + 1;
  }
}

bool normalizeHostName(std::string_view raw, std::string* out) {
  out->clear();
  if (!raw.empty() && raw.back() == '.') {
    raw.remove_suffix(1);
  }
  out->reserve(raw.size());
  for (char c : raw) {
    *out += lowerAscii(c);
  }
  if (!isValidHostName(*out)) {
    out->clear();
    return false;
  }
  return true;
}

}  // namespace s3gate
