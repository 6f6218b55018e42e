// libFuzzer harness for the request-head parser: whatever the bytes, no crash,
// no read outside the input, and the invariants the session relies on.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/http_parser.h"

namespace {

using s3gate::ParseLimits;
using s3gate::ParseResult;
using s3gate::ParseStatus;
using s3gate::Reason;

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

bool inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

bool sameAnswer(const ParseResult& a, const ParseResult& b) {
  if (a.status != b.status || a.reason != b.reason || a.head.method != b.head.method) {
    return false;
  }
  if (a.status != ParseStatus::complete) {
    return true;
  }
  if (a.head.head_length != b.head.head_length || a.head.target.host != b.head.target.host ||
      a.head.target.port != b.head.target.port || a.head.target.path != b.head.target.path ||
      a.head.headers.size() != b.head.headers.size()) {
    return false;
  }
  for (size_t i = 0; i < a.head.headers.size(); ++i) {
    if (a.head.headers[i].name != b.head.headers[i].name ||
        a.head.headers[i].value != b.head.headers[i].value) {
      return false;
    }
  }
  return true;
}

void checkOne(std::string_view input, const ParseLimits& limits) {
  const ParseResult r = s3gate::parseRequestHead(input, limits);
  switch (r.status) {
    case ParseStatus::incomplete:
      check(r.reason == Reason::none);
      check(input.size() <= limits.max_header_bytes);
      break;
    case ParseStatus::error:
      check(r.reason == Reason::bad_request || r.reason == Reason::bad_host ||
            r.reason == Reason::header_too_large);
      check(inside(r.head.method, input));
      break;
    case ParseStatus::complete: {
      check(r.reason == Reason::none);
      const size_t length = r.head.head_length;
      check(length >= 4 && length <= input.size() && length <= limits.max_header_bytes);
      const std::string_view head = input.substr(0, length);
      check(head.substr(length - 4) == "\r\n\r\n");
      check(head.find("\r\n\r\n") == length - 4);  // the first blank line ends it
      check(!r.head.method.empty() && inside(r.head.method, head));
      check(!r.head.target_text.empty() && inside(r.head.target_text, head));
      check(r.head.headers.size() <= limits.max_headers);
      for (const auto& field : r.head.headers) {
        check(!field.name.empty() && inside(field.name, head) && inside(field.value, head));
      }
      check(r.head.target.form == s3gate::TargetForm::origin || !r.head.target.host.empty());
      check(r.head.target.form == s3gate::TargetForm::authority || !r.head.target.path.empty());
      // The head alone, re-parsed from its own bytes, gives the same fields:
      // nothing after the blank line was read.
      check(sameAnswer(s3gate::parseRequestHead(head, limits), r));
      break;
    }
  }

  // Any split gives the same answer: a prefix answers incomplete or exactly
  // this, and resuming from a prefix that was incomplete changes nothing.
  const size_t cuts[] = {1, input.size() / 3, input.size() / 2, input.size() - 1};
  for (size_t cut : cuts) {
    if (cut == 0 || cut >= input.size()) {
      continue;
    }
    const ParseResult early = s3gate::parseRequestHead(input.substr(0, cut), limits);
    if (early.status != ParseStatus::incomplete) {
      check(sameAnswer(early, r));
    } else {
      check(sameAnswer(s3gate::parseRequestHead(input, limits, cut), r));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  checkOne(input, ParseLimits{});
  // Small limits reach header_too_large with short inputs.
  checkOne(input, ParseLimits{64, 2});
  return 0;
}
