#include "proxy/http_parser.h"

#include <algorithm>
#include <array>
#include <utility>

#include "common/text.h"

// Choices where RFC 9112 lets a server be lenient, taken the strict way because
// a proxy that reads a request differently from the server behind it can be
// used to smuggle one past its rules:
// - line endings are CRLF only: a bare LF or a bare CR anywhere in the head is
//   bad_request, and it is judged as soon as it arrives (a client that ends lines
//   with LF alone would otherwise wait for header_timeout);
// - an empty line before the request line is bad_request, not skipped;
// - the request line is METHOD SP target SP HTTP/1.0 or HTTP/1.1 with single
//   spaces and no HTAB; a method longer than kMaxMethodLength is bad_request;
// - a field line that starts with SP or HTAB (obs-fold, or whitespace before the
//   first field) and whitespace before the colon are bad_request;
// - control characters other than HTAB (in field values) are bad_request
//   anywhere; obs-text (0x80-0xFF) is allowed in field values only;
// - a port is 1 to 65535 in decimal without leading zeros ("0443" is
//   bad_request: a number some peer might read as octal);
// - a path is visible ASCII other than '#', and every '%' starts a valid
//   percent-encoding, so that no component downstream decodes it differently.
// Missing or conflicting framing headers are the forwarder's to judge; the
// parser only records the fields and refuses a second Host.

namespace s3gate {

namespace {

constexpr std::string_view kHeadEnd = "\r\n\r\n";
// No registered method comes near this (the longest is 17 characters); the cap
// keeps the re-scan of an unfinished request line short.
constexpr size_t kMaxMethodLength = 32;
// Five digits hold 65535; more is an error before any arithmetic can overflow.
constexpr size_t kMaxPortDigits = 5;

enum CharClass : uint8_t {
  kToken = 1 << 0,    // tchar (RFC 9110 section 5.6.2)
  kControl = 1 << 1,  // CTL: 0x00-0x1F and 0x7F, HTAB, CR and LF included
  kRegName = 1 << 2,  // what we accept in a host name: letters, digits, '-', '.', '_'
  kIpv6 = 1 << 3,     // inside brackets: hex digits, ':' and '.' (IPv4 tail)
  kPath = 1 << 4,     // visible ASCII but '#'
  kHex = 1 << 5,
};

constexpr std::array<uint8_t, 256> makeClasses() {
  std::array<uint8_t, 256> classes{};
  for (int c = 0; c < 256; ++c) {
    uint8_t bits = 0;
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    const bool hex = digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (alpha || digit ||
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos) {
      bits |= kToken;
    }
    if (c < 0x20 || c == 0x7f) {
      bits |= kControl;
    }
    if (alpha || digit || c == '-' || c == '.' || c == '_') {
      bits |= kRegName;
    }
    if (hex || c == ':' || c == '.') {
      bits |= kIpv6;
    }
    if (c > 0x20 && c < 0x7f && c != '#') {
      bits |= kPath;
    }
    if (hex) {
      bits |= kHex;
    }
    classes[static_cast<size_t>(c)] = bits;
  }
  return classes;
}

constexpr std::array<uint8_t, 256> kClasses = makeClasses();

bool is(char c, uint8_t cls) {
  return (kClasses[static_cast<unsigned char>(c)] & cls) != 0;
}

bool allOf(std::string_view text, uint8_t cls) {
  return std::all_of(text.begin(), text.end(), [cls](char c) { return is(c, cls); });
}

bool startsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equalsIgnoreCase(text.substr(0, prefix.size()), prefix);
}

// The method at the start of `input`, or "" when the input does not start with
// a token and a space. Also what the log line names on an error.
std::string_view leadingMethod(std::string_view input) {
  size_t i = 0;
  const size_t limit = std::min(input.size(), kMaxMethodLength + 1);
  while (i < limit && is(input[i], kToken)) {
    ++i;
  }
  if (i == 0 || i > kMaxMethodLength || i == input.size() || input[i] != ' ') {
    return {};
  }
  return input.substr(0, i);
}

// What can be judged before the head is whole: the request line starts with a
// method and a space; no bare CR, no bare LF, no control character but HTAB.
// Only bytes from `from` on are scanned (the ones before were clean at an
// earlier call); a CR as the very last byte waits for the next one. Every
// failure here is bad_request, and the full parse runs this first, so an
// answer given early is the answer the whole head gets.
bool prefixIsClean(std::string_view window, size_t from) {
  size_t i = 0;
  const size_t method_limit = std::min(window.size(), kMaxMethodLength + 1);
  while (i < method_limit && is(window[i], kToken)) {
    ++i;
  }
  if (i > kMaxMethodLength) {
    return false;
  }
  // Anything but a space after the method (an empty line, a leading space, CR,
  // a byte of a TLS ClientHello) is wrong before the line is finished.
  if (i < window.size() && (i == 0 || window[i] != ' ')) {
    return false;
  }
  // A CR that ended the last scan is checked again, now that its successor is here.
  const size_t start = from > 0 ? from - 1 : 0;
  for (size_t j = start; j < window.size(); ++j) {
    const char c = window[j];
    if (!is(c, kControl)) {
      continue;
    }
    if (c == '\n') {
      if (j == 0 || window[j - 1] != '\r') {
        return false;
      }
    } else if (c == '\r') {
      if (j + 1 < window.size() && window[j + 1] != '\n') {
        return false;
      }
    } else if (c != '\t') {
      return false;
    }
  }
  return true;
}

// 1 to 65535, decimal, no sign, no leading zero.
bool parsePort(std::string_view text, uint16_t* port) {
  if (text.empty() || text.size() > kMaxPortDigits || text[0] == '0') {
    return false;
  }
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) {
    return false;
  }
  *port = static_cast<uint16_t>(value);
  return true;
}

// host[:port] or [v6]:port, the authority of both CONNECT and absolute-form.
// The host is checked before the port.
Reason parseAuthority(std::string_view authority, bool port_required, RequestTarget* out) {
  if (authority.find('@') != std::string_view::npos) {
    return Reason::bad_request;  // userinfo: credentials in a URL are never passed on
  }
  std::string_view host;
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Reason::bad_host;
    }
    host = authority.substr(1, close - 1);
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') {
        return Reason::bad_host;
      }
      port_text = rest.substr(1);
      has_port = true;
    }
    // Only the characters here; acl/ parses the address itself. A zone ("%25eth0")
    // names an interface of ours and is refused.
    if (host.find(':') == std::string_view::npos || !allOf(host, kIpv6)) {
      return Reason::bad_host;
    }
    out->host_is_ipv6_literal = true;
  } else {
    // The last colon: an unbracketed IPv6 address then keeps its colons in the
    // host and is refused as a host, which is what it is.
    const size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
    if (host.empty() || !allOf(host, kRegName)) {
      return Reason::bad_host;
    }
  }
  if (has_port) {
    if (!parsePort(port_text, &out->port)) {
      return Reason::bad_request;
    }
    out->port_given = true;
  } else if (port_required) {
    return Reason::bad_request;
  } else {
    out->port = 80;
  }
  out->host.assign(host);
  return Reason::none;
}

// Path and query of absolute- and origin-form.
bool validPath(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    if (!is(path[i], kPath)) {
      return false;
    }
    if (path[i] == '%') {
      if (i + 2 >= path.size() || !is(path[i + 1], kHex) || !is(path[i + 2], kHex)) {
        return false;
      }
      i += 2;
    }
  }
  return true;
}

Reason parseTargetInto(std::string_view method, std::string_view target, RequestTarget* out) {
  if (target.empty()) {
    return Reason::bad_request;
  }
  if (method == "CONNECT") {
    out->form = TargetForm::authority;
    // A path or a scheme is not authority-form; without this check "http://h:443"
    // would be judged as a strange host.
    if (target.find('/') != std::string_view::npos) {
      return Reason::bad_request;
    }
    return parseAuthority(target, true, out);
  }
  if (target.find('#') != std::string_view::npos) {
    return Reason::bad_request;  // a fragment is never sent (RFC 9110 section 4.2.4)
  }
  if (target[0] == '/') {
    out->form = TargetForm::origin;
    if (!validPath(target)) {
      return Reason::bad_request;
    }
    out->path.assign(target);
    return Reason::none;
  }
  // "https://" comes here too: a client that wants TLS to the server says CONNECT.
  // asterisk-form ("OPTIONS *") addresses a server, not a proxy.
  constexpr std::string_view kScheme = "http://";
  if (!startsWithIgnoreCase(target, kScheme)) {
    return Reason::bad_request;
  }
  out->form = TargetForm::absolute;
  const std::string_view rest = target.substr(kScheme.size());
  const size_t authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  if (Reason r = parseAuthority(authority, false, out); r != Reason::none) {
    return r;
  }
  const std::string_view path =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (!validPath(path)) {
    return Reason::bad_request;
  }
  // The origin-form sent on needs a path: "http://h?q" becomes "/?q".
  if (path.empty() || path[0] == '?') {
    out->path.reserve(path.size() + 1);
    out->path = "/";
  }
  out->path.append(path);
  return Reason::none;
}

ParseResult failure(ParseResult result, Reason reason) {
  result.status = ParseStatus::error;
  result.reason = reason;
  return result;
}

// The whole head, ending with CRLFCRLF, already through prefixIsClean(): every
// line ends with CRLF and holds no control character but HTAB.
ParseResult parseHead(std::string_view head, const ParseLimits& limits) {
  ParseResult result;
  RequestHead& out = result.head;
  out.method = leadingMethod(head);

  const size_t line_end = head.find('\n') - 1;
  const std::string_view line = head.substr(0, line_end);
  if (out.method.empty() || line.find('\t') != std::string_view::npos) {
    return failure(std::move(result), Reason::bad_request);
  }
  const size_t target_start = out.method.size() + 1;
  const size_t target_end = line.find(' ', target_start);
  if (target_end == std::string_view::npos || target_end == target_start) {
    return failure(std::move(result), Reason::bad_request);
  }
  const std::string_view version = line.substr(target_end + 1);
  if (version == "HTTP/1.1") {
    out.version_minor = 1;
  } else if (version == "HTTP/1.0") {
    out.version_minor = 0;
  } else {
    return failure(std::move(result), Reason::bad_request);
  }
  out.target_text = line.substr(target_start, target_end - target_start);
  if (Reason r = parseTargetInto(out.method, out.target_text, &out.target); r != Reason::none) {
    return failure(std::move(result), r);
  }

  // Every LF ends a line; less the request line and the blank line, the rest are
  // fields. Counted first so that the vector is allocated once.
  const size_t fields = static_cast<size_t>(std::count(head.begin(), head.end(), '\n')) - 2;
  if (fields > limits.max_headers) {
    return failure(std::move(result), Reason::header_too_large);
  }
  out.headers.reserve(fields);
  bool host_seen = false;
  size_t pos = line_end + 2;
  while (true) {
    const size_t eol = head.find('\n', pos) - 1;
    if (eol == pos) {
      break;  // the blank line
    }
    const std::string_view field = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (field[0] == ' ' || field[0] == '\t') {
      return failure(std::move(result), Reason::bad_request);  // obs-fold
    }
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0 || !allOf(field.substr(0, colon), kToken)) {
      return failure(std::move(result), Reason::bad_request);
    }
    std::string_view value = field.substr(colon + 1);
    const size_t first = value.find_first_not_of(" \t");
    value = first == std::string_view::npos
                ? std::string_view()
                : value.substr(first, value.find_last_not_of(" \t") - first + 1);
    HeaderField parsed{field.substr(0, colon), value};
    // Two Host fields leave the server and us free to pick different ones.
    if (equalsIgnoreCase(parsed.name, "host")) {
      if (host_seen) {
        return failure(std::move(result), Reason::bad_request);
      }
      host_seen = true;
    }
    out.headers.push_back(parsed);
  }
  out.head_length = head.size();
  result.status = ParseStatus::complete;
  return result;
}

}  // namespace

const HeaderField* RequestHead::find(std::string_view name) const {
  for (const HeaderField& field : headers) {
    if (equalsIgnoreCase(field.name, name)) {
      return &field;
    }
  }
  return nullptr;
}

Reason parseRequestTarget(std::string_view method, std::string_view target, RequestTarget* out) {
  RequestTarget parsed;
  const Reason reason = parseTargetInto(method, target, &parsed);
  *out = reason == Reason::none ? std::move(parsed) : RequestTarget{};
  return reason;
}

ParseResult parseRequestHead(std::string_view input, const ParseLimits& limits, size_t checked) {
  // Nothing past max_header_bytes is looked at: a head must end inside it.
  const std::string_view window = input.substr(0, std::min(input.size(), limits.max_header_bytes));
  if (checked > window.size()) {
    checked = 0;  // not a grown buffer after all: scan it all
  }
  // The end can straddle the previous call's last bytes.
  const size_t end = window.find(kHeadEnd, checked >= 3 ? checked - 3 : 0);
  const std::string_view scanned =
      end == std::string_view::npos ? window : window.substr(0, end + kHeadEnd.size());
  if (!prefixIsClean(scanned, checked)) {
    ParseResult result;
    result.head.method = leadingMethod(window);
    return failure(std::move(result), Reason::bad_request);
  }
  if (end == std::string_view::npos) {
    ParseResult result;
    if (input.size() > limits.max_header_bytes) {
      result.head.method = leadingMethod(window);
      return failure(std::move(result), Reason::header_too_large);
    }
    return result;
  }
  return parseHead(scanned, limits);
}

}  // namespace s3gate
