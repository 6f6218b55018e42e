#pragma once
// A strict HTTP/1.x request-head parser: a pure function over bytes, no I/O.
// Call it with everything received so far; it answers incomplete, complete
// (with the head's length) or an error with the SPEC reason.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "acl/reason.h"

namespace s3gate {

struct HeaderField {
  std::string_view name;   // as received (case preserved)
  std::string_view value;  // leading and trailing spaces/tabs trimmed
};

enum class TargetForm {
  authority,  // CONNECT host:port
  absolute,   // http://host[:port]/path
  origin,     // /path (only GET /ping is served; the session decides)
};

// A request target split into its parts; host is as written (not normalised:
// acl/ normalises and validates names), without brackets for IPv6 literals.
struct RequestTarget {
  TargetForm form = TargetForm::origin;
  std::string host;
  uint16_t port = 0;                  // the port written, or the scheme's default
  bool port_given = false;            // a port was written
  bool host_is_ipv6_literal = false;  // written in brackets
  std::string path;  // absolute and origin form: path and query ("/" when empty); authority: ""
};

struct RequestHead {
  std::string_view method;
  std::string_view target_text;
  int version_minor = 1;  // HTTP/1.0 or HTTP/1.1
  std::vector<HeaderField> headers;
  RequestTarget target;
  size_t head_length = 0;  // bytes up to and including the blank line

  // First field with that name (case-insensitive), or nullptr.
  const HeaderField* find(std::string_view name) const;
};

struct ParseLimits {
  size_t max_header_bytes = 65536;  // the whole head, request line included
  size_t max_headers = 100;
};

enum class ParseStatus { incomplete, complete, error };

struct ParseResult {
  ParseStatus status = ParseStatus::incomplete;
  Reason reason = Reason::none;  // on error: bad_request, bad_host or header_too_large
  // On complete; string_views point into the input. On error, head.method is
  // set when the input starts with a method and a space (for the log line).
  RequestHead head;
};

// Parses the head at the start of `input`. Bytes after the head are left alone.
// Incomplete input longer than max_header_bytes is already header_too_large.
// The answer for a prefix of the input, when not incomplete, is the answer for
// the whole input: what can be judged early (a bare CR or LF, a control
// character, a method that is not a token) is bad_request at once.
//
// `checked` is optional: the input's length at the previous call on the same,
// since grown, buffer that answered incomplete (0 on a first call or after the
// buffer was consumed). Those bytes are not scanned again, so a head trickling
// in byte by byte costs linear time, not quadratic; the answer is the same as
// with 0.
ParseResult parseRequestHead(std::string_view input, const ParseLimits& limits, size_t checked = 0);

// Parses a request target for `method` (CONNECT: authority-form; otherwise
// absolute-form "http://..." or origin-form "/..."). Used by the parser and by
// `s3gate explain`. Returns Reason::none on success, else bad_request or bad_host.
Reason parseRequestTarget(std::string_view method, std::string_view target, RequestTarget* out);

}  // namespace s3gate
