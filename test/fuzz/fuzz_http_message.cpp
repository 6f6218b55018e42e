// libFuzzer harness for proxy/http_message.h: the response-head parser, the
// response framing and rewrite, the chunked decoder and, over request heads
// the request parser accepts, the request framing and rewrite. Whatever the
// bytes: no crash, no read outside the input, and the invariants the
// forwarder relies on.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http_message.h"

namespace {

using s3gate::BodyError;
using s3gate::BodyFramer;
using s3gate::BodyKind;
using s3gate::ChunkedResult;
using s3gate::ChunkedState;
using s3gate::HeadPieces;
using s3gate::ParseLimits;
using s3gate::ParseStatus;
using s3gate::ResponseParseResult;
using s3gate::UpstreamError;

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

bool inside(std::string_view part, std::string_view whole) {
  const auto p = reinterpret_cast<uintptr_t>(part.data());
  const auto w = reinterpret_cast<uintptr_t>(whole.data());
  return part.empty() || (p >= w && p + part.size() <= w + whole.size());
}

bool sameAnswer(const ResponseParseResult& a, const ResponseParseResult& b) {
  if (a.status != b.status || a.error != b.error) {
    return false;
  }
  if (a.status != ParseStatus::complete) {
    return true;
  }
  if (a.head.head_length != b.head.head_length || a.head.status_code != b.head.status_code ||
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

void checkPieces(const HeadPieces& out) {
  size_t total = 0;
  for (std::string_view piece : out.pieces()) {
    check(!piece.empty());
    total += piece.size();
  }
  check(total == out.size());
}

void checkResponse(std::string_view input, const ParseLimits& limits) {
  const ResponseParseResult r = s3gate::parseResponseHead(input, limits);
  switch (r.status) {
    case ParseStatus::incomplete:
      check(r.error == UpstreamError::none);
      check(input.size() <= limits.max_header_bytes);
      break;
    case ParseStatus::error:
      check(r.error != UpstreamError::none && r.error != UpstreamError::bad_framing);
      break;
    case ParseStatus::complete: {
      const s3gate::ResponseHead& head = r.head;
      check(r.error == UpstreamError::none);
      check(head.head_length >= 16 && head.head_length <= input.size() &&
            head.head_length <= limits.max_header_bytes);
      check(head.bytes.data() == input.data() && head.bytes.size() == head.head_length);
      check(head.bytes.find("\r\n\r\n") == head.head_length - 4);
      check(head.status_code >= 100 && head.status_code <= 599);
      check(head.headers.size() <= limits.max_headers);
      check(inside(head.reason_phrase, head.bytes));
      for (const auto& field : head.headers) {
        check(!field.name.empty() && inside(field.name, head.bytes) &&
              inside(field.value, head.bytes));
      }

      for (std::string_view method : {"GET", "HEAD"}) {
        const s3gate::ResponseFraming f = s3gate::checkResponseFraming(method, head);
        if (f.error != UpstreamError::none) {
          check(f.error == UpstreamError::bad_framing && !f.reusable);
          continue;
        }
        check(f.body.kind != BodyKind::until_close || !f.reusable);
        check(f.body.kind == BodyKind::content_length || f.body.length == 0);
        check(f.body.length <= static_cast<uint64_t>(INT64_MAX));
        if (method == "HEAD" || head.interim()) {
          check(f.body.kind == BodyKind::none);
        }
      }

      // The rewritten head is a response with the same status and no
      // hop-by-hop field, its other fields in order.
      const HeadPieces out = s3gate::rewriteResponseHead(head, s3gate::ConnectionField::close);
      checkPieces(out);
      const std::string text = out.joined();
      const ResponseParseResult again = s3gate::parseResponseHead(text, ParseLimits{1 << 20, 1000});
      check(again.status == ParseStatus::complete && again.head.head_length == text.size());
      check(again.head.version_minor == 1 && again.head.status_code == head.status_code);
      check(again.head.reason_phrase == head.reason_phrase);
      check(!again.head.headers.empty() && again.head.headers.size() <= head.headers.size() + 1);
      for (size_t i = 0; i + 1 < again.head.headers.size(); ++i) {
        check(!s3gate::isHopByHop(again.head.headers[i].name));
      }
      break;
    }
  }

  const size_t cuts[] = {1, input.size() / 3, input.size() / 2, input.size() - 1};
  for (size_t cut : cuts) {
    if (cut == 0 || cut >= input.size()) {
      continue;
    }
    const ResponseParseResult early = s3gate::parseResponseHead(input.substr(0, cut), limits);
    if (early.status != ParseStatus::incomplete) {
      check(sameAnswer(early, r));
    } else {
      check(sameAnswer(s3gate::parseResponseHead(input, limits, cut), r));
    }
  }
}

// Feeds the input in pieces whose sizes come from `schedule`; the answer must
// be the one-shot answer.
ChunkedResult feedSplit(std::string_view input, std::string_view schedule) {
  ChunkedState state;
  ChunkedResult total;
  size_t pos = 0;
  size_t k = 0;
  while (pos < input.size()) {
    size_t n = input.size() - pos;
    if (k < schedule.size()) {
      n = std::min<size_t>(n, static_cast<unsigned char>(schedule[k]) % 17);
    }
    ++k;
    const ChunkedResult r = s3gate::feedChunked(state, input.substr(pos, n));
    check(r.consumed <= n);
    total.consumed += r.consumed;
    total.done = r.done;
    total.error = r.error;
    if (r.done || r.error != BodyError::none) {
      const ChunkedResult after = s3gate::feedChunked(state, input.substr(pos + r.consumed));
      check(after.consumed == 0 && after.done == r.done && after.error == r.error);
      break;
    }
    check(r.consumed == n);
    pos += n;
  }
  return total;
}

void checkChunked(std::string_view input) {
  ChunkedState state;
  const ChunkedResult whole = s3gate::feedChunked(state, input);
  check(whole.consumed <= input.size());
  check(!(whole.done && whole.error != BodyError::none));
  if (whole.error != BodyError::none) {
    check(whole.consumed < input.size());
    check(whole.error != BodyError::truncated);
  } else if (!whole.done) {
    check(whole.consumed == input.size());
  } else {
    check(whole.consumed >= 5 && input.substr(whole.consumed - 2, 2) == "\r\n");
  }

  const auto same = [&whole](const ChunkedResult& r) {
    check(r.consumed == whole.consumed && r.done == whole.done && r.error == whole.error);
  };
  same(feedSplit(input, std::string(input.size(), '\1')));  // one byte at a time
  same(feedSplit(input, input));                            // sizes from the data itself

  BodyFramer framer = BodyFramer::chunked();
  bool done = false;
  BodyError error = BodyError::none;
  const size_t take = framer.feed(input, &done, &error);
  check(take == whole.consumed && done == whole.done && error == whole.error);
  check(framer.atEof() ==
        (done ? BodyError::none : (error != BodyError::none ? error : BodyError::truncated)));
}

void checkRequest(std::string_view input) {
  const s3gate::ParseResult r = s3gate::parseRequestHead(input, ParseLimits{});
  if (r.status != ParseStatus::complete || r.head.target.form == s3gate::TargetForm::authority) {
    return;
  }
  const s3gate::RequestFraming f = s3gate::checkRequestFraming(r.head, true);
  check(f.reason == s3gate::Reason::none || f.reason == s3gate::Reason::bad_framing ||
        f.reason == s3gate::Reason::bad_request);
  if (f.reason != s3gate::Reason::none) {
    return;
  }
  check(f.body.kind != BodyKind::until_close);
  const HeadPieces out = s3gate::rewriteRequestHead(r.head);
  checkPieces(out);
  // What goes upstream parses again, in origin-form, with the same framing.
  const std::string text = out.joined();
  const s3gate::ParseResult again = s3gate::parseRequestHead(text, ParseLimits{1 << 20, 1000});
  check(again.status == ParseStatus::complete && again.head.head_length == text.size());
  check(again.head.target.form == s3gate::TargetForm::origin);
  // The client's version goes on (an HTTP/1.0 client cannot read a chunked answer).
  check(again.head.version_minor == r.head.version_minor && again.head.method == r.head.method);
  const s3gate::RequestFraming g = s3gate::checkRequestFraming(again.head, false);
  check(g.reason == s3gate::Reason::none);
  check(g.body.kind == f.body.kind && g.body.length == f.body.length);
  for (const auto& field : again.head.headers) {
    check(!s3gate::isHopByHop(field.name));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  checkResponse(input, ParseLimits{});
  // Small limits reach head_too_large with short inputs.
  checkResponse(input, ParseLimits{64, 2});
  checkChunked(input);
  checkRequest(input);
  return 0;
}
