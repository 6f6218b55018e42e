#include "proxy/http_message.h"

#include "common/text.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <unordered_set>
#include <utility>

// Choices where RFC 9112 lets an intermediary be lenient, taken the strict way
// because a proxy that frames a message differently from the peer behind it can
// be used to smuggle a request or split a response:
// - a request's Content-Length is one field of digits; a list, even "5, 5", or
//   a second field is bad_framing (a response may repeat one value, RFC 9110
//   section 8.6, since a 502 for it would help nobody);
// - a request's Transfer-Encoding is exactly "chunked": we apply no codings, and
//   anything else could only be framed by reading to the close, which a request
//   cannot do;
// - Transfer-Encoding with Content-Length is refused in both directions, not
//   resolved in favour of Transfer-Encoding: the peer might not agree;
// - a Connection option naming Content-Length, Transfer-Encoding or Host is
//   refused: dropping the field would change the framing or the target;
// - chunk sizes are at most 16 hex digits and 2^63 - 1; whitespace after a size
//   must lead to an extension; a bare LF anywhere in the framing is an error;
//   trailer fields are checked like header fields and may not be
//   Content-Length, Transfer-Encoding or Host (some peers merge trailers into
//   the head).
// `Trailer` is not treated as hop-by-hop (RFC 9110 section 7.6.1 does not list
// it): chunked bodies, trailer section included, are passed on unchanged, so
// the field announcing the trailers stays true.

namespace s3gate {

namespace {

constexpr uint64_t kMaxLength = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr size_t kMaxChunkDigits = 16;
constexpr std::string_view kHeadEnd = "\r\n\r\n";
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kVersion11 = "HTTP/1.1";

enum CharClass : uint8_t {
  kToken = 1 << 0,    // tchar (RFC 9110 section 5.6.2)
  kControl = 1 << 1,  // 0x00-0x1F and 0x7F
  kHexDigit = 1 << 2,
};

constexpr std::array<uint8_t, 256> makeClasses() {
  std::array<uint8_t, 256> classes{};
  for (int c = 0; c < 256; ++c) {
    uint8_t bits = 0;
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    if (alpha || digit ||
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos) {
      bits |= kToken;
    }
    if (c < 0x20 || c == 0x7f) {
      bits |= kControl;
    }
    if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
      bits |= kHexDigit;
    }
    classes[static_cast<size_t>(c)] = bits;
  }
  return classes;
}

constexpr std::array<uint8_t, 256> kClasses = makeClasses();

bool is(char c, uint8_t cls) {
  return (kClasses[static_cast<unsigned char>(c)] & cls) != 0;
}

bool allTokenChars(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return is(c, kToken); });
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  return lowerAscii(c) - 'a' + 10;
}

std::string_view trimOws(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) {
    return {};
  }
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// Calls fn(element) for each comma-separated element of a list value, OWS
// trimmed, empty ones included; stops early when fn returns false.
template <typename Fn>
void forEachElement(std::string_view value, Fn&& fn) {
  size_t start = 0;
  while (true) {
    const size_t comma = value.find(',', start);
    const std::string_view element =
        trimOws(value.substr(start, comma == std::string_view::npos ? comma : comma - start));
    if (!fn(element) || comma == std::string_view::npos) {
      return;
    }
    start = comma + 1;
  }
}

// 1*DIGIT, at most 2^63 - 1.
bool parseLength(std::string_view text, uint64_t* out) {
  if (text.empty()) {
    return false;
  }
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    const auto digit = static_cast<uint64_t>(c - '0');
    if (value > (kMaxLength - digit) / 10) {
      return false;
    }
    value = value * 10 + digit;
  }
  *out = value;
  return true;
}

// Fields whose removal would change the framing or the target.
bool isProtected(std::string_view name) {
  return equalsIgnoreCase(name, "content-length") || equalsIgnoreCase(name, "transfer-encoding") ||
         equalsIgnoreCase(name, "host");
}

const HeaderField* findField(const std::vector<HeaderField>& headers, std::string_view name) {
  for (const HeaderField& field : headers) {
    if (equalsIgnoreCase(field.name, name)) {
      return &field;
    }
  }
  return nullptr;
}

// What the Connection (and the legacy Proxy-Connection) fields say.
struct ConnectionOptions {
  bool close = false;
  bool keep_alive = false;
  bool names_framing = false;  // Content-Length or Transfer-Encoding
  bool names_host = false;
  bool names_expect = false;
  bool malformed = false;  // an element that is not a token
};

ConnectionOptions connectionOptions(const std::vector<HeaderField>& headers) {
  ConnectionOptions out;
  for (const HeaderField& field : headers) {
    const bool connection = equalsIgnoreCase(field.name, "connection");
    if (!connection && !equalsIgnoreCase(field.name, "proxy-connection")) {
      continue;
    }
    forEachElement(field.value, [&](std::string_view option) {
      if (option.empty()) {
        return true;  // "a, , b": empty list elements are allowed (RFC 9110 section 5.6.1)
      }
      if (!allTokenChars(option)) {
        out.malformed = true;
      }
      out.close = out.close || equalsIgnoreCase(option, "close");
      out.keep_alive = out.keep_alive || equalsIgnoreCase(option, "keep-alive");
      // Proxy-Connection is not standard: its options name no fields.
      if (connection) {
        out.names_framing = out.names_framing || equalsIgnoreCase(option, "content-length") ||
                            equalsIgnoreCase(option, "transfer-encoding");
        out.names_host = out.names_host || equalsIgnoreCase(option, "host");
        out.names_expect = out.names_expect || equalsIgnoreCase(option, "expect");
      }
      return true;
    });
  }
  return out;
}

// Case-insensitive hashing and equality for field names (ASCII).
struct FoldedHash {
  size_t operator()(std::string_view text) const {
    uint64_t h = 14695981039346656037ULL;  // FNV-1a
    for (char c : text) {
      h = (h ^ static_cast<uint8_t>(lowerAscii(c))) * 1099511628211ULL;
    }
    return static_cast<size_t>(h);
  }
};
struct FoldedEqual {
  bool operator()(std::string_view a, std::string_view b) const { return equalsIgnoreCase(a, b); }
};
using FoldedNames = std::unordered_set<std::string_view, FoldedHash, FoldedEqual>;

// Calls fn(option) for every non-empty option of every Connection field.
template <typename Fn>
void forEachConnectionOption(const std::vector<HeaderField>& headers, Fn&& fn) {
  for (const HeaderField& field : headers) {
    if (!equalsIgnoreCase(field.name, "connection")) {
      continue;
    }
    forEachElement(field.value, [&fn](std::string_view option) {
      if (!option.empty()) {
        fn(option);
      }
      return true;
    });
  }
}

// The field names the Connection fields list, asked once per field. A few
// options (the usual "close" or "keep-alive") are compared directly; many are
// looked up in a hash of the head's field names, one pass: a head listing
// thousands of options costs time linear in its size, where asking every
// field of every option cost options x fields (a 64 KB head could list 30000).
class ConnectionNames {
 public:
  explicit ConnectionNames(const std::vector<HeaderField>& headers) {
    size_t count = 0;
    forEachConnectionOption(headers, [&count](std::string_view) { ++count; });
    if (count <= kDirect) {
      forEachConnectionOption(headers,
                              [this](std::string_view option) { options_.push_back(option); });
      return;
    }
    hashed_ = true;
    FoldedNames fields;
    for (const HeaderField& field : headers) {
      fields.insert(field.name);
    }
    forEachConnectionOption(headers, [&](std::string_view option) {
      auto it = fields.find(option);
      if (it != fields.end()) {
        named_.insert(*it);
      }
    });
  }

  bool contains(std::string_view name) const {
    if (hashed_) {
      return named_.count(name) != 0;
    }
    return std::any_of(options_.begin(), options_.end(),
                       [name](std::string_view option) { return equalsIgnoreCase(option, name); });
  }

 private:
  static constexpr size_t kDirect = 16;
  bool hashed_ = false;
  std::vector<std::string_view> options_;  // when few; inside the head
  FoldedNames named_;                      // when many: the head's field names that are named
};

// A Host field value: host, host:port, [v6] or [v6]:port. The port is 1 to
// 65535 without leading zeros, 80 when not written.
struct HostValue {
  std::string_view host;
  uint16_t port = 80;
  bool bracketed = false;
};

bool parseHostValue(std::string_view value, HostValue* out) {
  std::string_view port_text;
  bool has_port = false;
  if (!value.empty() && value[0] == '[') {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    out->host = value.substr(1, close - 1);
    out->bracketed = true;
    const std::string_view rest = value.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') {
        return false;
      }
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    const size_t colon = value.rfind(':');
    out->host = value.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = value.substr(colon + 1);
      has_port = true;
    }
  }
  if (out->host.empty()) {
    return false;
  }
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5 || port_text[0] == '0') {
      return false;
    }
    uint32_t port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9') {
        return false;
      }
      port = port * 10 + static_cast<uint32_t>(c - '0');
    }
    if (port > 65535) {
      return false;
    }
    out->port = static_cast<uint16_t>(port);
  }
  return true;
}

bool hostMatchesTarget(std::string_view value, const RequestTarget& target) {
  HostValue host;
  return parseHostValue(value, &host) && host.bracketed == target.host_is_ipv6_literal &&
         equalsIgnoreCase(host.host, target.host) && host.port == target.port;
}

Reason requestBodyFraming(const RequestHead& head, BodyFraming* body) {
  const HeaderField* content_length = nullptr;
  const HeaderField* transfer_encoding = nullptr;
  for (const HeaderField& field : head.headers) {
    if (equalsIgnoreCase(field.name, "content-length")) {
      if (content_length != nullptr) {
        return Reason::bad_framing;
      }
      content_length = &field;
    } else if (equalsIgnoreCase(field.name, "transfer-encoding")) {
      if (transfer_encoding != nullptr) {
        return Reason::bad_framing;
      }
      transfer_encoding = &field;
    }
  }
  if (content_length != nullptr && transfer_encoding != nullptr) {
    return Reason::bad_framing;
  }
  if (transfer_encoding != nullptr) {
    // HTTP/1.0 has no Transfer-Encoding (RFC 9112 section 6.1: faulty framing).
    if (head.version_minor == 0 || !equalsIgnoreCase(transfer_encoding->value, "chunked")) {
      return Reason::bad_framing;
    }
    body->kind = BodyKind::chunked;
    return Reason::none;
  }
  if (content_length != nullptr) {
    if (!parseLength(content_length->value, &body->length)) {
      return Reason::bad_framing;
    }
    body->kind = BodyKind::content_length;
  }
  return Reason::none;
}

// A field line as received: from the name to its CRLF, both included.
std::string_view fieldLine(std::string_view raw, const HeaderField& field) {
  const size_t start = static_cast<size_t>(field.name.data() - raw.data());
  const size_t end = raw.find('\r', start + field.name.size());
  return raw.substr(start, end + kCrlf.size() - start);
}

// Appends every field line of `headers` (all inside `raw`) but the hop-by-hop ones.
void appendEndToEndFields(HeadPieces& out, std::string_view raw,
                          const std::vector<HeaderField>& headers) {
  const ConnectionNames named(headers);
  for (const HeaderField& field : headers) {
    const bool drop =
        !isProtected(field.name) && (isHopByHop(field.name) || named.contains(field.name));
    if (!drop) {
      out.append(fieldLine(raw, field), raw);
    }
  }
}

void appendConnectionField(HeadPieces& out, ConnectionField add) {
  switch (add) {
    case ConnectionField::none:
      break;
    case ConnectionField::close:
      out.append("Connection: close\r\n");
      break;
    case ConnectionField::keep_alive:
      out.append("Connection: keep-alive\r\n");
      break;
  }
}

// What can be judged before the head is whole: it starts with "HTTP/1.", and has
// no bare CR, bare LF or control character but HTAB. Only bytes from `from` on
// are scanned for the latter; a CR as the very last byte waits for its successor.
UpstreamError responsePrefixError(std::string_view window, size_t from) {
  constexpr std::string_view kPrefix = "HTTP/1.";
  const size_t n = std::min(window.size(), kPrefix.size());
  if (window.substr(0, n) != kPrefix.substr(0, n)) {
    return UpstreamError::bad_status_line;
  }
  const size_t start = from > 0 ? from - 1 : 0;
  for (size_t j = start; j < window.size(); ++j) {
    const char c = window[j];
    if (!is(c, kControl)) {
      continue;
    }
    if (c == '\n') {
      if (j == 0 || window[j - 1] != '\r') {
        return UpstreamError::bad_field;
      }
    } else if (c == '\r') {
      if (j + 1 < window.size() && window[j + 1] != '\n') {
        return UpstreamError::bad_field;
      }
    } else if (c != '\t') {
      return UpstreamError::bad_field;
    }
  }
  return UpstreamError::none;
}

ResponseParseResult responseFailure(UpstreamError error) {
  ResponseParseResult result;
  result.status = ParseStatus::error;
  result.error = error;
  return result;
}

// The whole head, through responsePrefixError(): every line ends with CRLF.
ResponseParseResult parseWholeResponse(std::string_view head, const ParseLimits& limits) {
  ResponseParseResult result;
  ResponseHead& out = result.head;
  const size_t line_end = head.find(kCrlf);
  const std::string_view line = head.substr(0, line_end);
  // "HTTP/1.1 200 OK", or "HTTP/1.1 200" without the space some servers omit.
  if (line.size() < 12 || line[8] != ' ' || (line.size() > 12 && line[12] != ' ')) {
    return responseFailure(UpstreamError::bad_status_line);
  }
  const std::string_view version = line.substr(0, 8);
  if (version == "HTTP/1.1") {
    out.version_minor = 1;
  } else if (version == "HTTP/1.0") {
    out.version_minor = 0;
  } else {
    return responseFailure(UpstreamError::bad_status_line);
  }
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') {
      return responseFailure(UpstreamError::bad_status_line);
    }
    code = code * 10 + (line[i] - '0');
  }
  if (code < 100 || code > 599) {
    return responseFailure(UpstreamError::bad_status_line);
  }
  out.status_code = code;
  out.reason_phrase = line.size() > 12 ? line.substr(13) : std::string_view();

  const size_t fields = static_cast<size_t>(std::count(head.begin(), head.end(), '\n')) - 2;
  if (fields > limits.max_headers) {
    return responseFailure(UpstreamError::head_too_large);
  }
  out.headers.reserve(fields);
  size_t pos = line_end + kCrlf.size();
  while (true) {
    const size_t eol = head.find(kCrlf, pos);
    if (eol == pos) {
      break;
    }
    const std::string_view field = head.substr(pos, eol - pos);
    pos = eol + kCrlf.size();
    const size_t colon = field.find(':');
    // A leading SP or HTAB (obs-fold) or whitespace before the colon fails the token test.
    if (colon == std::string_view::npos || !allTokenChars(field.substr(0, colon))) {
      return responseFailure(UpstreamError::bad_field);
    }
    out.headers.push_back(HeaderField{field.substr(0, colon), trimOws(field.substr(colon + 1))});
  }
  out.bytes = head;
  out.head_length = head.size();
  result.status = ParseStatus::complete;
  return result;
}

// Trailer names a peer must not take as header fields.
bool forbiddenTrailer(std::string_view lower_name) {
  return lower_name == "content-length" || lower_name == "transfer-encoding" ||
         lower_name == "host";
}

}  // namespace

// ---------------------------------------------------------------------------

RequestFraming checkRequestFraming(const RequestHead& head, bool require_host) {
  RequestFraming out;
  const ConnectionOptions options = connectionOptions(head.headers);
  const bool http11 = head.version_minor == 1;
  out.keep_alive = !options.close && (http11 || options.keep_alive);
  if (http11 && !options.names_expect) {
    for (const HeaderField& field : head.headers) {
      if (equalsIgnoreCase(field.name, "expect") && equalsIgnoreCase(field.value, "100-continue")) {
        out.expect_continue = true;
      }
    }
  }

  if (options.names_framing) {
    out.reason = Reason::bad_framing;
    return out;
  }
  if (options.malformed || options.names_host) {
    out.reason = Reason::bad_request;
    return out;
  }
  BodyFraming body;
  if (Reason r = requestBodyFraming(head, &body); r != Reason::none) {
    out.reason = r;
    return out;
  }
  const HeaderField* host = findField(head.headers, "host");
  if (host == nullptr) {
    if (require_host && http11) {
      out.reason = Reason::bad_request;
      return out;
    }
  } else if (head.target.form == TargetForm::absolute &&
             !hostMatchesTarget(host->value, head.target)) {
    out.reason = Reason::bad_request;
    return out;
  }
  out.body = body;
  return out;
}

// ---------------------------------------------------------------------------

std::string HeadPieces::joined() const {
  std::string out;
  out.reserve(size_);
  for (std::string_view piece : pieces_) {
    out.append(piece);
  }
  return out;
}

void HeadPieces::append(std::string_view piece, std::string_view within) {
  if (piece.empty()) {
    return;
  }
  size_ += piece.size();
  const auto inside = [within](std::string_view part) {
    const auto begin = reinterpret_cast<uintptr_t>(within.data());
    const auto p = reinterpret_cast<uintptr_t>(part.data());
    return !within.empty() && p >= begin && p + part.size() <= begin + within.size();
  };
  if (!pieces_.empty() && inside(piece) && inside(pieces_.back()) &&
      pieces_.back().data() + pieces_.back().size() == piece.data()) {
    pieces_.back() = std::string_view(pieces_.back().data(), pieces_.back().size() + piece.size());
    return;
  }
  pieces_.push_back(piece);
}

bool isHopByHop(std::string_view name) {
  static constexpr std::array<std::string_view, 7> kHopByHop = {
      "connection", "keep-alive",          "proxy-connection",   "te",
      "upgrade",    "proxy-authorization", "proxy-authenticate",
  };
  return std::any_of(kHopByHop.begin(), kHopByHop.end(),
                     [name](std::string_view hop) { return equalsIgnoreCase(name, hop); });
}

bool isIdempotentMethod(std::string_view method) {
  static constexpr std::array<std::string_view, 6> kIdempotent = {
      "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE",
  };
  return std::find(kIdempotent.begin(), kIdempotent.end(), method) != kIdempotent.end();
}

HeadPieces rewriteRequestHead(const RequestHead& head, ConnectionField add) {
  const std::string_view raw(head.method.data(), head.head_length);
  HeadPieces out;
  out.append(raw.substr(0, head.method.size() + 1), raw);  // "PUT "
  std::string_view authority;
  std::string_view path = head.target_text;
  if (head.target.form == TargetForm::absolute) {
    const std::string_view rest = head.target_text.substr(std::string_view("http://").size());
    const size_t authority_end = rest.find_first_of("/?");
    authority = rest.substr(0, authority_end);
    path =
        authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
    if (path.empty() || path[0] == '?') {
      out.append("/");
    }
  }
  out.append(path, raw);
  const size_t target_end =
      static_cast<size_t>(head.target_text.data() - raw.data()) + head.target_text.size();
  // The client's own version goes on: an HTTP/1.0 request must not be
  // answered with chunked framing, which an HTTP/1.0 client cannot read.
  out.append(raw.substr(target_end, 1 + kVersion11.size() + kCrlf.size()), raw);
  appendEndToEndFields(out, raw, head.headers);
  if (!authority.empty() && findField(head.headers, "host") == nullptr) {
    out.append("Host: ");
    out.append(authority, raw);
    out.append(kCrlf);
  }
  appendConnectionField(out, add);
  out.append(raw.substr(raw.size() - kCrlf.size()), raw);
  return out;
}

// ---------------------------------------------------------------------------

const HeaderField* ResponseHead::find(std::string_view name) const {
  return findField(headers, name);
}

std::string_view upstreamErrorName(UpstreamError e) {
  switch (e) {
    case UpstreamError::none:
      return "";
    case UpstreamError::bad_status_line:
      return "bad_status_line";
    case UpstreamError::bad_field:
      return "bad_field";
    case UpstreamError::head_too_large:
      return "head_too_large";
    case UpstreamError::bad_framing:
      return "bad_framing";
  }
  return "";
}

ResponseParseResult parseResponseHead(std::string_view input, const ParseLimits& limits,
                                      size_t checked) {
  const std::string_view window = input.substr(0, std::min(input.size(), limits.max_header_bytes));
  if (checked > window.size()) {
    checked = 0;
  }
  const size_t end = window.find(kHeadEnd, checked >= 3 ? checked - 3 : 0);
  const std::string_view scanned =
      end == std::string_view::npos ? window : window.substr(0, end + kHeadEnd.size());
  if (UpstreamError e = responsePrefixError(scanned, checked); e != UpstreamError::none) {
    return responseFailure(e);
  }
  if (end == std::string_view::npos) {
    if (input.size() > limits.max_header_bytes) {
      return responseFailure(UpstreamError::head_too_large);
    }
    return {};
  }
  return parseWholeResponse(scanned, limits);
}

ResponseFraming checkResponseFraming(std::string_view request_method, const ResponseHead& head) {
  ResponseFraming out;
  const ConnectionOptions options = connectionOptions(head.headers);
  if (options.names_framing || head.status_code == 101) {
    out.error = UpstreamError::bad_framing;
    return out;
  }
  const bool persistent = !options.close && (head.version_minor == 1 || options.keep_alive);
  const int code = head.status_code;
  if (request_method == "HEAD" || code < 200 || code == 204 || code == 304) {
    out.body.kind = BodyKind::none;
    out.reusable = persistent;
    return out;
  }

  bool has_te = false;
  bool chunked_final = false;
  bool chunked_seen = false;
  bool te_valid = true;
  bool has_cl = false;
  bool cl_valid = true;
  uint64_t length = 0;
  for (const HeaderField& field : head.headers) {
    if (equalsIgnoreCase(field.name, "transfer-encoding")) {
      has_te = true;
      forEachElement(field.value, [&](std::string_view coding) {
        const size_t semicolon = coding.find(';');
        const std::string_view name = trimOws(coding.substr(0, semicolon));
        const bool chunked = equalsIgnoreCase(name, "chunked");
        if (!allTokenChars(name) ||
            (chunked && (chunked_seen || semicolon != std::string_view::npos))) {
          te_valid = false;
        }
        chunked_seen = chunked_seen || chunked;
        chunked_final = chunked;
        return te_valid;
      });
    } else if (equalsIgnoreCase(field.name, "content-length")) {
      forEachElement(field.value, [&](std::string_view element) {
        uint64_t value = 0;
        if (!parseLength(element, &value) || (has_cl && value != length)) {
          cl_valid = false;
        }
        has_cl = true;
        length = value;
        return cl_valid;
      });
    }
  }
  if (has_te) {
    if (!te_valid || has_cl || head.version_minor == 0) {
      out.error = UpstreamError::bad_framing;
      return out;
    }
    out.body.kind = chunked_final ? BodyKind::chunked : BodyKind::until_close;
  } else if (has_cl) {
    if (!cl_valid) {
      out.error = UpstreamError::bad_framing;
      return out;
    }
    out.body = {BodyKind::content_length, length};
  } else {
    out.body.kind = BodyKind::until_close;
  }
  out.reusable = persistent && out.body.kind != BodyKind::until_close;
  return out;
}

HeadPieces rewriteResponseHead(const ResponseHead& head, ConnectionField add) {
  const std::string_view raw = head.bytes;
  HeadPieces out;
  const size_t line_end = raw.find(kCrlf) + kCrlf.size();
  if (head.version_minor == 1) {
    out.append(raw.substr(0, line_end), raw);
  } else {
    out.append(kVersion11);
    out.append(raw.substr(kVersion11.size(), line_end - kVersion11.size()), raw);
  }
  appendEndToEndFields(out, raw, head.headers);
  appendConnectionField(out, add);
  out.append(raw.substr(raw.size() - kCrlf.size()), raw);
  return out;
}

// ---------------------------------------------------------------------------

std::string_view bodyErrorName(BodyError e) {
  switch (e) {
    case BodyError::none:
      return "";
    case BodyError::bad_chunk_size:
      return "bad_chunk_size";
    case BodyError::chunk_size_too_large:
      return "chunk_size_too_large";
    case BodyError::chunk_line_too_long:
      return "chunk_line_too_long";
    case BodyError::bad_chunk_extension:
      return "bad_chunk_extension";
    case BodyError::missing_crlf:
      return "missing_crlf";
    case BodyError::bad_line_ending:
      return "bad_line_ending";
    case BodyError::bad_trailer_field:
      return "bad_trailer_field";
    case BodyError::trailers_too_large:
      return "trailers_too_large";
    case BodyError::truncated:
      return "truncated";
  }
  return "";
}

ChunkedResult feedChunked(ChunkedState& state, std::string_view bytes) {
  using Phase = ChunkedState::Phase;
  ChunkedResult result;
  size_t i = 0;
  const auto fail = [&](BodyError error) {
    state.phase = Phase::failed;
    state.error = error;
  };
  while (i < bytes.size() && state.phase != Phase::done && state.phase != Phase::failed) {
    if (state.phase == Phase::data) {
      const uint64_t take = std::min<uint64_t>(state.remaining, bytes.size() - i);
      i += static_cast<size_t>(take);
      state.remaining -= take;
      if (state.remaining == 0) {
        state.phase = Phase::data_cr;
      }
      continue;
    }
    const char c = bytes[i];
    // The size line: size, whitespace, extensions, all bounded together.
    if (state.phase == Phase::size || state.phase == Phase::size_space ||
        state.phase == Phase::extension) {
      if (c != '\r' && ++state.line_bytes > kMaxChunkLine) {
        fail(BodyError::chunk_line_too_long);
        break;
      }
    }
    // Trailer bytes, the final CRLF included.
    if (state.phase >= Phase::trailer_start && state.phase <= Phase::final_lf) {
      if (++state.trailer_bytes > kMaxTrailerBytes) {
        fail(BodyError::trailers_too_large);
        break;
      }
    }
    if (c == '\n' && state.phase != Phase::size_lf && state.phase != Phase::data_lf &&
        state.phase != Phase::trailer_lf && state.phase != Phase::final_lf) {
      fail(BodyError::bad_line_ending);  // a bare LF
      break;
    }
    switch (state.phase) {
      case Phase::size:
        if (is(c, kHexDigit)) {
          const auto digit = static_cast<uint64_t>(hexValue(c));
          if (++state.digits > kMaxChunkDigits || state.remaining > (kMaxLength - digit) / 16) {
            fail(BodyError::chunk_size_too_large);
            break;
          }
          state.remaining = state.remaining * 16 + digit;
        } else if (state.digits == 0) {
          fail(BodyError::bad_chunk_size);
        } else if (c == '\r') {
          state.phase = Phase::size_lf;
        } else if (c == ';') {
          state.phase = Phase::extension;
        } else if (c == ' ' || c == '\t') {
          state.phase = Phase::size_space;
        } else {
          fail(BodyError::bad_chunk_size);
        }
        break;
      case Phase::size_space:
        if (c == ';') {
          state.phase = Phase::extension;
        } else if (c != ' ' && c != '\t') {
          fail(BodyError::bad_chunk_size);
        }
        break;
      case Phase::extension:
        if (c == '\r') {
          state.phase = Phase::size_lf;
        } else if (is(c, kControl) && c != '\t') {
          fail(BodyError::bad_chunk_extension);
        }
        break;
      case Phase::size_lf:
        if (c != '\n') {
          fail(BodyError::bad_line_ending);
          break;
        }
        state.phase = state.remaining == 0 ? Phase::trailer_start : Phase::data;
        state.digits = 0;
        state.line_bytes = 0;
        break;
      case Phase::data_cr:
        if (c != '\r') {
          fail(BodyError::missing_crlf);
          break;
        }
        state.phase = Phase::data_lf;
        break;
      case Phase::data_lf:
        if (c != '\n') {
          fail(BodyError::bad_line_ending);
          break;
        }
        state.phase = Phase::size;
        break;
      case Phase::trailer_start:
        if (c == '\r') {
          state.phase = Phase::final_lf;
        } else if (is(c, kToken)) {
          state.phase = Phase::trailer_name;
          state.name_length = 0;
          state.name[state.name_length++] = lowerAscii(c);
        } else {
          fail(BodyError::bad_trailer_field);  // obs-fold, whitespace, an empty name
        }
        break;
      case Phase::trailer_name:
        if (c == ':') {
          const std::string_view name(state.name, state.name_length);
          if (state.name_length <= sizeof(state.name) && forbiddenTrailer(name)) {
            fail(BodyError::bad_trailer_field);
            break;
          }
          state.phase = Phase::trailer_value;
        } else if (!is(c, kToken)) {
          fail(BodyError::bad_trailer_field);
        } else if (state.name_length < sizeof(state.name)) {
          state.name[state.name_length++] = lowerAscii(c);
        } else {
          state.name_length = sizeof(state.name) + 1;  // longer than any refused name
        }
        break;
      case Phase::trailer_value:
        if (c == '\r') {
          state.phase = Phase::trailer_lf;
        } else if (is(c, kControl) && c != '\t') {
          fail(BodyError::bad_trailer_field);
        }
        break;
      case Phase::trailer_lf:
        if (c != '\n') {
          fail(BodyError::bad_line_ending);
          break;
        }
        state.phase = Phase::trailer_start;
        break;
      case Phase::final_lf:
        if (c != '\n') {
          fail(BodyError::bad_line_ending);
          break;
        }
        state.phase = Phase::done;
        break;
      case Phase::data:
      case Phase::done:
      case Phase::failed:
        break;
    }
    if (state.phase != Phase::failed) {
      ++i;
    }
  }
  result.consumed = i;
  result.done = state.phase == Phase::done;
  result.error = state.error;
  return result;
}

// ---------------------------------------------------------------------------

BodyFramer BodyFramer::none() {
  return BodyFramer(BodyKind::none, 0);
}

BodyFramer BodyFramer::contentLength(uint64_t length) {
  return BodyFramer(BodyKind::content_length, length);
}

BodyFramer BodyFramer::chunked() {
  return BodyFramer(BodyKind::chunked, 0);
}

BodyFramer BodyFramer::untilClose() {
  return BodyFramer(BodyKind::until_close, 0);
}

BodyFramer BodyFramer::forFraming(const BodyFraming& framing) {
  return BodyFramer(framing.kind, framing.kind == BodyKind::content_length ? framing.length : 0);
}

size_t BodyFramer::feed(std::string_view bytes, bool* done, BodyError* error) {
  size_t take = 0;
  if (!done_ && error_ == BodyError::none) {
    switch (kind_) {
      case BodyKind::none:
        break;
      case BodyKind::content_length:
        take = static_cast<size_t>(std::min<uint64_t>(remaining_, bytes.size()));
        remaining_ -= take;
        done_ = remaining_ == 0;
        break;
      case BodyKind::chunked: {
        const ChunkedResult r = feedChunked(chunked_, bytes);
        take = r.consumed;
        done_ = r.done;
        error_ = r.error;
        break;
      }
      case BodyKind::until_close:
        take = bytes.size();
        break;
    }
  }
  body_bytes_ += take;
  if (done != nullptr) {
    *done = done_;
  }
  if (error != nullptr) {
    *error = error_;
  }
  return take;
}

uint64_t BodyFramer::skippable() const {
  if (done_ || error_ != BodyError::none) {
    return 0;
  }
  switch (kind_) {
    case BodyKind::content_length:
      return remaining_;
    case BodyKind::until_close:
      return std::numeric_limits<uint64_t>::max();
    case BodyKind::none:
    case BodyKind::chunked:
      break;
  }
  return 0;
}

void BodyFramer::skip(uint64_t n) {
  n = std::min(n, skippable());
  if (kind_ == BodyKind::content_length) {
    remaining_ -= n;
    done_ = remaining_ == 0;
  }
  body_bytes_ += n;
}

BodyError BodyFramer::atEof() const {
  if (error_ != BodyError::none) {
    return error_;
  }
  return done_ || kind_ == BodyKind::until_close ? BodyError::none : BodyError::truncated;
}

}  // namespace s3gate
