#pragma once
// What the plain-HTTP forwarder needs to pass a request and its response on,
// with no I/O: message framing (RFC 9112 section 6) judged the strict way, the
// heads rewritten for the next hop without copying, a strict response-head
// parser, and body framers that say where a streamed body ends.
//
// Ownership: every string_view here points into bytes the caller received (or
// into static storage); they stay valid as long as those bytes do.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "acl/reason.h"
#include "proxy/http_parser.h"

namespace s3gate {

// ---------------------------------------------------------------------------
// Framing

enum class BodyKind {
  none,            // no body
  content_length,  // exactly `length` bytes
  chunked,         // chunked transfer coding, passed on as it is
  until_close,     // everything until the peer closes (responses only)
};

struct BodyFraming {
  BodyKind kind = BodyKind::none;
  uint64_t length = 0;  // content_length only; at most 2^63 - 1
};

struct RequestFraming {
  Reason reason = Reason::none;  // bad_framing or bad_request; none: the request may go on
  BodyFraming body;              // none, content_length or chunked
  bool expect_continue = false;  // "Expect: 100-continue" on HTTP/1.1, passed on upstream
  bool keep_alive = false;       // the client wants the connection kept after the response
};

// Judges a parsed request head before it is sent on (RFC 9112 section 6,
// smuggling defences): exactly one well-formed Content-Length, or a
// Transfer-Encoding of exactly "chunked" on HTTP/1.1, never both; no
// Connection option naming Content-Length or Transfer-Encoding (bad_framing)
// or Host (bad_request), which the rewrite would otherwise drop. An
// absolute-form target must name the same host and port as a Host field
// (bad_request). With `require_host`, an HTTP/1.1 request without Host is
// bad_request. keep_alive and expect_continue are set whatever the reason.
[[nodiscard]] RequestFraming checkRequestFraming(const RequestHead& head, bool require_host);

// ---------------------------------------------------------------------------
// Heads for the next hop

// A head to send, as pieces to write in order (writev, evbuffer_add_reference).
// Adjacent pieces of the received head are merged, so a request with no
// hop-by-hop field is typically three to five pieces.
class HeadPieces {
 public:
  const std::vector<std::string_view>& pieces() const { return pieces_; }
  size_t size() const { return size_; }  // total bytes
  std::string joined() const;            // one copy, for tests and logs

  // `within`: the received head; pieces inside it that touch are merged.
  void append(std::string_view piece, std::string_view within = {});

 private:
  std::vector<std::string_view> pieces_;
  size_t size_ = 0;
};

// What the rewrite adds to the head: nothing, or a Connection field.
enum class ConnectionField { none, close, keep_alive };

// Hop-by-hop fields, dropped from both directions (RFC 9110 section 7.6.1):
// Connection and every field it names, Keep-Alive, Proxy-Connection,
// Proxy-Authorization, Proxy-Authenticate, TE, Upgrade. Content-Length,
// Transfer-Encoding and Host are never dropped, even when Connection names them.
// Trailer is kept: chunked bodies go on unchanged, trailer section included.
bool isHopByHop(std::string_view name);

// Whether a request with this method may be sent again after a connection
// failed before any of its response arrived: the idempotent methods of RFC 9110
// section 9.2.2 (GET, HEAD, PUT, DELETE, OPTIONS, TRACE). Methods are
// case-sensitive: "get" is not GET. A POST, even without a body, may have had
// its effect already (S3's POST ?delete, ?restore, multipart completion).
bool isIdempotentMethod(std::string_view method);

// The request to send upstream: "METHOD /path?query HTTP/1.x" (the client's
// own version: an HTTP/1.0 client cannot read a chunked answer), then every
// field line byte for byte as received and in order but the hop-by-hop ones,
// then `add`. Host is kept as written (SigV4 signs it); a request in absolute-form
// without Host (HTTP/1.0) gets "Host: <authority of the target>". The head
// must be absolute- or origin-form and have passed checkRequestFraming().
[[nodiscard]] HeadPieces rewriteRequestHead(const RequestHead& head,
                                            ConnectionField add = ConnectionField::none);

// ---------------------------------------------------------------------------
// Responses

struct ResponseHead {
  int version_minor = 1;  // HTTP/1.0 or HTTP/1.1
  int status_code = 0;    // 100 to 599
  std::string_view reason_phrase;
  std::vector<HeaderField> headers;
  std::string_view bytes;  // the whole head as received, blank line included
  size_t head_length = 0;  // bytes.size()

  // First field with that name (case-insensitive), or nullptr.
  const HeaderField* find(std::string_view name) const;
  bool interim() const { return status_code < 200; }  // 1xx: another head follows
};

// Why an upstream response is refused; every one is a 502 for the client.
enum class UpstreamError {
  none,
  bad_status_line,  // not "HTTP/1.x SSS reason", or a status outside 100-599
  bad_field,        // a bare CR or LF, a control character, obs-fold, a malformed field
  head_too_large,   // more than max_header_bytes or max_headers
  bad_framing,      // conflicting or malformed Content-Length / Transfer-Encoding, 101
};

std::string_view upstreamErrorName(UpstreamError e);  // "bad_framing"; "" for none

struct ResponseParseResult {
  ParseStatus status = ParseStatus::incomplete;
  UpstreamError error = UpstreamError::none;
  ResponseHead head;  // on complete
};

// Parses the response head at the start of `input`, as strictly as
// parseRequestHead() parses a request: CRLF only, no obs-fold, no whitespace
// before a colon, no control character but HTAB in values, limits on bytes and
// fields. Bytes after the head (the body, or the next head after a 1xx) are
// left alone: after a 1xx, drop head_length bytes and call again with checked 0.
// `checked` works as in parseRequestHead(): the input's length at the previous
// incomplete call on the same grown buffer, so a trickling head costs linear time.
[[nodiscard]] ResponseParseResult parseResponseHead(std::string_view input,
                                                    const ParseLimits& limits, size_t checked = 0);

struct ResponseFraming {
  UpstreamError error = UpstreamError::none;  // bad_framing: answer 502, close upstream
  BodyFraming body;
  bool reusable = false;  // upstream may carry another request once this body is read
};

// The response body's framing (RFC 9112 section 6.3) for a request of
// `request_method`: HEAD, 1xx, 204 and 304 have none; a Transfer-Encoding whose
// final coding is chunked is chunked; another Transfer-Encoding is until_close;
// a valid Content-Length (a list or repeated fields of one value allowed) is
// content_length; neither is until_close. Refused: Transfer-Encoding with
// Content-Length, chunked twice or with parameters, Transfer-Encoding on
// HTTP/1.0, Content-Lengths that differ or are malformed, a Connection option
// naming a framing field, 101 (we never ask for an upgrade).
// reusable: HTTP/1.1 without "Connection: close", or HTTP/1.0 with
// "Connection: keep-alive", and a body that does not end at close.
[[nodiscard]] ResponseFraming checkResponseFraming(std::string_view request_method,
                                                   const ResponseHead& head);

// The response to send the client: the status line with our version
// ("HTTP/1.1 SSS reason", the rest as received), every field line byte for
// byte but the hop-by-hop ones, then `add`. Interim (1xx) heads are rewritten
// the same way.
[[nodiscard]] HeadPieces rewriteResponseHead(const ResponseHead& head,
                                             ConnectionField add = ConnectionField::none);

// ---------------------------------------------------------------------------
// Bodies

enum class BodyError {
  none,
  bad_chunk_size,        // not hex, empty, or whitespace not followed by ';'
  chunk_size_too_large,  // more than 16 hex digits or more than 2^63 - 1
  chunk_line_too_long,   // size line with extensions over kMaxChunkLine bytes
  bad_chunk_extension,   // a control character in an extension
  missing_crlf,          // chunk data not followed by CRLF
  bad_line_ending,       // a bare LF, or CR not followed by LF
  bad_trailer_field,     // malformed trailer, or one naming a framing field
  trailers_too_large,    // the trailer section over kMaxTrailerBytes
  truncated,             // the peer closed before the body's end
};

std::string_view bodyErrorName(BodyError e);  // "missing_crlf"; "" for none

inline constexpr size_t kMaxChunkLine = 1024;      // size, extensions; CRLF excluded
inline constexpr size_t kMaxTrailerBytes = 16384;  // trailer fields and final CRLF

// Where a chunked body stands; fed by feedChunked(). Start value: a new body.
struct ChunkedState {
  enum class Phase : uint8_t {
    size,        // hex digits of a chunk size
    size_space,  // whitespace after the size: only ';' may follow
    extension,   // after ';', up to CR
    size_lf,     // CR seen after the size line
    data,        // `remaining` bytes of chunk data
    data_cr,     // CRLF after the data
    data_lf,
    trailer_start,  // start of a trailer line, or the final CRLF
    trailer_name,
    trailer_value,
    trailer_lf,
    final_lf,
    done,
    failed,
  };
  Phase phase = Phase::size;
  uint64_t remaining = 0;      // chunk size being read, then data bytes left
  uint32_t digits = 0;         // hex digits of the size so far
  uint32_t line_bytes = 0;     // bytes of the current size line
  uint32_t trailer_bytes = 0;  // bytes of the trailer section so far
  uint8_t name_length = 0;     // bytes of the trailer name (capped at name.size())
  char name[20] = {};          // its first bytes, lower-cased: framing fields are refused
  BodyError error = BodyError::none;
};

struct ChunkedResult {
  size_t consumed = 0;  // bytes of the input that belong to the body (framing included)
  bool done = false;    // the body ended inside the input (at input[consumed - 1])
  BodyError error = BodyError::none;  // set: input[consumed] is the offending byte
};

// Feeds the next bytes of a chunked body; any split gives the same answer.
// After done or an error, further calls consume nothing and repeat the answer.
[[nodiscard]] ChunkedResult feedChunked(ChunkedState& state, std::string_view bytes);

// One interface over every framing, for the relay: how many of the received
// bytes belong to the body, and whether it has ended.
class BodyFramer {
 public:
  static BodyFramer none();
  static BodyFramer contentLength(uint64_t length);
  static BodyFramer chunked();
  static BodyFramer untilClose();
  static BodyFramer forFraming(const BodyFraming& framing);

  // Returns how many bytes of `bytes`, from the start, belong to the body; the
  // rest belong to what follows (a pipelined request, the next response).
  // *done: the body has ended (at once for none and a length of 0; never for
  // until_close). *error: the body is malformed (chunked only); stop relaying.
  [[nodiscard]] size_t feed(std::string_view bytes, bool* done, BodyError* error);

  // At the peer's EOF: none if the body ended there or before (until_close
  // ends there), the body's error if it failed, else truncated.
  [[nodiscard]] BodyError atEof() const;

  // How many of the next body bytes may be moved without being looked at
  // (spliced): content_length, the bytes still to come; until_close, as many
  // as come (UINT64_MAX); none and chunked, 0: their bytes must be fed.
  uint64_t skippable() const;
  // Takes `n` body bytes that were moved without feed(); n <= skippable().
  void skip(uint64_t n);

  BodyKind kind() const { return kind_; }
  bool done() const { return done_; }
  uint64_t bodyBytes() const { return body_bytes_; }  // fed and taken so far

 private:
  BodyFramer(BodyKind kind, uint64_t length)
      : kind_(kind),
        remaining_(length),
        done_(kind == BodyKind::none || (kind == BodyKind::content_length && length == 0)) {}

  BodyKind kind_;
  uint64_t remaining_;  // content_length: bytes still to come
  bool done_;
  BodyError error_ = BodyError::none;
  uint64_t body_bytes_ = 0;
  ChunkedState chunked_;
};

}  // namespace s3gate
