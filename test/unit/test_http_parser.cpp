// The request-head parser (proxy/http_parser.h, SPEC section 3): every form it
// accepts, every rejection with its exact reason, the limits at and one past
// their edge, and the same answer however the bytes are split.

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "proxy/http_parser.h"

using namespace s3gate;
using namespace std::string_literals;

namespace {

ParseResult parse(std::string_view input, const ParseLimits& limits = {}) {
  return parseRequestHead(input, limits);
}

// Delivers the input one byte more at a time, as a slow client would, and
// returns the first answer that is not incomplete (or the last answer). With
// `resume`, each call passes the length the previous incomplete call saw.
ParseResult feedBytewise(std::string_view input, const ParseLimits& limits, bool resume) {
  ParseResult result;
  size_t checked = 0;
  for (size_t n = 1; n <= input.size(); ++n) {
    result = parseRequestHead(input.substr(0, n), limits, resume ? checked : 0);
    if (result.status != ParseStatus::incomplete) {
      return result;
    }
    checked = n;
  }
  return result;
}

void requireSame(const ParseResult& a, const ParseResult& b) {
  REQUIRE(a.status == b.status);
  REQUIRE(a.reason == b.reason);
  REQUIRE(a.head.method == b.head.method);
  if (a.status != ParseStatus::complete) {
    return;
  }
  REQUIRE(a.head.head_length == b.head.head_length);
  REQUIRE(a.head.target_text == b.head.target_text);
  REQUIRE(a.head.version_minor == b.head.version_minor);
  REQUIRE(a.head.target.form == b.head.target.form);
  REQUIRE(a.head.target.host == b.head.target.host);
  REQUIRE(a.head.target.port == b.head.target.port);
  REQUIRE(a.head.target.port_given == b.head.target.port_given);
  REQUIRE(a.head.target.host_is_ipv6_literal == b.head.target.host_is_ipv6_literal);
  REQUIRE(a.head.target.path == b.head.target.path);
  REQUIRE(a.head.headers.size() == b.head.headers.size());
  for (size_t i = 0; i < a.head.headers.size(); ++i) {
    REQUIRE(a.head.headers[i].name == b.head.headers[i].name);
    REQUIRE(a.head.headers[i].value == b.head.headers[i].value);
  }
}

// One-shot, byte by byte, and byte by byte with resumption: one answer.
void requireSplitInvariant(std::string_view input, const ParseLimits& limits = {}) {
  const ParseResult whole = parse(input, limits);
  requireSame(feedBytewise(input, limits, false), whole);
  requireSame(feedBytewise(input, limits, true), whole);
}

struct Accepted {
  std::string input;
  std::string method;
  TargetForm form;
  std::string host;
  uint16_t port;
  bool port_given;
  bool ipv6;
  std::string path;
  int version_minor;
  size_t fields;
};

const std::vector<Accepted>& acceptedRequests() {
  static const std::vector<Accepted> rows = {
      {"CONNECT s3.us-east-1.amazonaws.com:443 HTTP/1.1\r\n"
       "Host: s3.us-east-1.amazonaws.com:443\r\n\r\n",
       "CONNECT", TargetForm::authority, "s3.us-east-1.amazonaws.com", 443, true, false, "", 1, 1},
      {"CONNECT [::1]:443 HTTP/1.1\r\n\r\n", "CONNECT", TargetForm::authority, "::1", 443, true,
       true, "", 1, 0},
      {"CONNECT [2001:db8::ffff:10.0.0.1]:8443 HTTP/1.0\r\n\r\n", "CONNECT", TargetForm::authority,
       "2001:db8::ffff:10.0.0.1", 8443, true, true, "", 0, 0},
      {"CONNECT 10.0.0.1:65535 HTTP/1.1\r\n\r\n", "CONNECT", TargetForm::authority, "10.0.0.1",
       65535, true, false, "", 1, 0},
      {"CONNECT My_Host.Example-1.:1 HTTP/1.1\r\n\r\n", "CONNECT", TargetForm::authority,
       "My_Host.Example-1.", 1, true, false, "", 1, 0},
      {"GET http://bucket.s3.amazonaws.com/key/a%2Fb?x=1&y HTTP/1.1\r\nHost: x\r\n\r\n", "GET",
       TargetForm::absolute, "bucket.s3.amazonaws.com", 80, false, false, "/key/a%2Fb?x=1&y", 1, 1},
      {"PUT http://host.example:8080/ HTTP/1.1\r\n\r\n", "PUT", TargetForm::absolute,
       "host.example", 8080, true, false, "/", 1, 0},
      {"HEAD http://host.example HTTP/1.1\r\n\r\n", "HEAD", TargetForm::absolute, "host.example",
       80, false, false, "/", 1, 0},
      {"GET http://host.example?list-type=2 HTTP/1.1\r\n\r\n", "GET", TargetForm::absolute,
       "host.example", 80, false, false, "/?list-type=2", 1, 0},
      {"DELETE HtTp://Host.EXAMPLE/Key HTTP/1.1\r\n\r\n", "DELETE", TargetForm::absolute,
       "Host.EXAMPLE", 80, false, false, "/Key", 1, 0},
      {"GET http://[fe80::1]:80/x HTTP/1.1\r\n\r\n", "GET", TargetForm::absolute, "fe80::1", 80,
       true, true, "/x", 1, 0},
      {"GET /ping HTTP/1.1\r\nHost: proxy\r\nUser-Agent: check\r\n\r\n", "GET", TargetForm::origin,
       "", 0, false, false, "/ping", 1, 2},
      {"GET /ping HTTP/1.0\r\n\r\n", "GET", TargetForm::origin, "", 0, false, false, "/ping", 0, 0},
      {"M-SEARCH /x HTTP/1.1\r\n\r\n", "M-SEARCH", TargetForm::origin, "", 0, false, false, "/x", 1,
       0},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF /x HTTP/1.1\r\n\r\n", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF",
       TargetForm::origin, "", 0, false, false, "/x", 1, 0},
      {"POST http://h/upload HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
       "Content-Length: x\r\n\r\n",
       "POST", TargetForm::absolute, "h", 80, false, false, "/upload", 1, 3},
  };
  return rows;
}

struct Rejected {
  std::string what;
  std::string input;
  Reason reason;
};

const std::vector<Rejected>& rejectedRequests() {
  static const std::vector<Rejected> rows = {
      // The request line.
      {"HTTP/1.2", "GET /x HTTP/1.2\r\n\r\n", Reason::bad_request},
      {"HTTP/2.0", "GET /x HTTP/2.0\r\n\r\n", Reason::bad_request},
      {"HTTP/0.9", "GET /x HTTP/0.9\r\n\r\n", Reason::bad_request},
      {"lower-case version", "GET /x http/1.1\r\n\r\n", Reason::bad_request},
      {"no version", "GET /x\r\n\r\n", Reason::bad_request},
      {"method only", "GET\r\n\r\n", Reason::bad_request},
      {"trailing space", "GET /x HTTP/1.1 \r\n\r\n", Reason::bad_request},
      {"two spaces after method", "GET  /x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"two spaces before version", "GET /x  HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"space in target", "GET /x y HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"HTAB as separator", "GET\t/x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"HTAB before version", "GET /x\tHTTP/1.1\r\n\r\n", Reason::bad_request},
      {"HTAB in a CONNECT host", "CONNECT ho\tst:443 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"leading space", " GET /x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"leading empty line", "\r\nGET /x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"only an empty line", "\r\n\r\n", Reason::bad_request},
      {"method not a token", "G(T /x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"method with obs-text", "G\xc3\xa9T /x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"method of 33 characters", "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG /x HTTP/1.1\r\n\r\n",
       Reason::bad_request},
      {"TLS record instead of a request", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s,
       Reason::bad_request},
      // Line endings and control characters.
      {"bare LF after request line", "GET /x HTTP/1.1\nHost: a\r\n\r\n", Reason::bad_request},
      {"bare LF after a field", "GET /x HTTP/1.1\r\nHost: a\n\r\n", Reason::bad_request},
      {"LF-only request", "GET /x HTTP/1.1\nHost: a\n\n", Reason::bad_request},
      {"bare CR in a value", "GET /x HTTP/1.1\r\nX: a\rb\r\n\r\n", Reason::bad_request},
      {"CR CR LF", "GET /x HTTP/1.1\r\r\n\r\n", Reason::bad_request},
      {"NUL in a value", "GET /x HTTP/1.1\r\nX: a\0b\r\n\r\n"s, Reason::bad_request},
      {"NUL in the target", "GET /x\0 HTTP/1.1\r\n\r\n"s, Reason::bad_request},
      {"control character in a value", "GET /x HTTP/1.1\r\nX: a\x01\r\n\r\n", Reason::bad_request},
      {"DEL in a value", "GET /x HTTP/1.1\r\nX: a\x7f\r\n\r\n", Reason::bad_request},
      {"ESC in a name", "GET /x HTTP/1.1\r\nX\x1b: a\r\n\r\n", Reason::bad_request},
      // Field lines.
      {"obs-fold", "GET /x HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Reason::bad_request},
      {"obs-fold with HTAB", "GET /x HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", Reason::bad_request},
      {"space before first field", "GET /x HTTP/1.1\r\n Host: a\r\n\r\n", Reason::bad_request},
      {"space before colon", "GET /x HTTP/1.1\r\nHost : a\r\n\r\n", Reason::bad_request},
      {"HTAB before colon", "GET /x HTTP/1.1\r\nHost\t: a\r\n\r\n", Reason::bad_request},
      {"empty name", "GET /x HTTP/1.1\r\n: a\r\n\r\n", Reason::bad_request},
      {"no colon", "GET /x HTTP/1.1\r\nHost a\r\n\r\n", Reason::bad_request},
      {"name not a token", "GET /x HTTP/1.1\r\nHo(st: a\r\n\r\n", Reason::bad_request},
      {"name with obs-text", "GET /x HTTP/1.1\r\nH\xe9: a\r\n\r\n", Reason::bad_request},
      {"Host twice", "GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Reason::bad_request},
      {"Host twice, any case", "GET http://a/ HTTP/1.1\r\nhost: a\r\nX: y\r\nHOST: b\r\n\r\n",
       Reason::bad_request},
      // CONNECT targets.
      {"CONNECT without port", "CONNECT example.com HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT empty port", "CONNECT example.com: HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port 0", "CONNECT example.com:0 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port 65536", "CONNECT example.com:65536 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port 99999", "CONNECT example.com:99999 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port 443443", "CONNECT example.com:443443 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port leading zero", "CONNECT example.com:0443 HTTP/1.1\r\n\r\n",
       Reason::bad_request},
      {"CONNECT port not digits", "CONNECT example.com:44a HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port with sign", "CONNECT example.com:+443 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT port negative", "CONNECT example.com:-1 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT userinfo", "CONNECT user@example.com:443 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT absolute-form", "CONNECT http://example.com:443 HTTP/1.1\r\n\r\n",
       Reason::bad_request},
      {"CONNECT origin-form", "CONNECT /x HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT asterisk", "CONNECT * HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT IPv6 without port", "CONNECT [::1] HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"CONNECT empty host", "CONNECT :443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT host with '!'", "CONNECT ex!ample.com:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT host percent-encoded", "CONNECT ex%61mple.com:443 HTTP/1.1\r\n\r\n",
       Reason::bad_host},
      {"CONNECT host UTF-8", "CONNECT ex\xc3\xa4mple.com:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT unbracketed IPv6", "CONNECT ::1:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT two colons", "CONNECT a:b:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT unclosed bracket", "CONNECT [::1:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT empty brackets", "CONNECT []:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT IPv6 zone", "CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT IPv6 bad character", "CONNECT [::g]:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT brackets without colon", "CONNECT [example.com]:443 HTTP/1.1\r\n\r\n",
       Reason::bad_host},
      {"CONNECT junk after bracket", "CONNECT [::1]x:443 HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"CONNECT bad host before bad port", "CONNECT ex!ample.com:0 HTTP/1.1\r\n\r\n",
       Reason::bad_host},
      // Other methods' targets.
      {"asterisk-form", "OPTIONS * HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"https scheme", "GET https://example.com/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"ftp scheme", "GET ftp://example.com/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"scheme with one slash", "GET http:/example.com/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"authority-form for GET", "GET example.com:80 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"userinfo", "GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"fragment", "GET http://example.com/x#frag HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"fragment after host", "GET http://example.com#frag HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"fragment in origin-form", "GET /x#frag HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"empty host", "GET http:///x HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"empty host with port", "GET http://:80/x HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"host with space escape", "GET http://ex%20ample.com/ HTTP/1.1\r\n\r\n", Reason::bad_host},
      {"host with backslash", "GET http://example.com\\@evil/ HTTP/1.1\r\n\r\n",
       Reason::bad_request},
      {"host with backslash, no @", "GET http://example.com\\evil/ HTTP/1.1\r\n\r\n",
       Reason::bad_host},
      {"empty port", "GET http://example.com:/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"port 0", "GET http://example.com:0/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"port 65536", "GET http://example.com:65536/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"port leading zero", "GET http://example.com:080/ HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"bad percent-encoding", "GET http://example.com/a%zz HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"truncated percent-encoding", "GET http://example.com/a%2 HTTP/1.1\r\n\r\n",
       Reason::bad_request},
      {"obs-text in path", "GET http://example.com/\xe9 HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"obs-text in origin-form", "GET /\xe9 HTTP/1.1\r\n\r\n", Reason::bad_request},
  };
  return rows;
}

}  // namespace

TEST_CASE("accepted requests: every field", "[http_parser]") {
  for (const Accepted& row : acceptedRequests()) {
    INFO(row.input);
    const ParseResult r = parse(row.input);
    REQUIRE(r.status == ParseStatus::complete);
    REQUIRE(r.reason == Reason::none);
    REQUIRE(r.head.head_length == row.input.size());
    REQUIRE(r.head.method == row.method);
    REQUIRE(r.head.version_minor == row.version_minor);
    REQUIRE(r.head.target.form == row.form);
    REQUIRE(r.head.target.host == row.host);
    REQUIRE(r.head.target.port == row.port);
    REQUIRE(r.head.target.port_given == row.port_given);
    REQUIRE(r.head.target.host_is_ipv6_literal == row.ipv6);
    REQUIRE(r.head.target.path == row.path);
    REQUIRE(r.head.headers.size() == row.fields);
    // The target text is the request line's second word, as written.
    const size_t sp = row.input.find(' ');
    REQUIRE(r.head.target_text == row.input.substr(sp + 1, row.input.find(' ', sp + 1) - sp - 1));
  }
}

TEST_CASE("rejected requests: the exact reason", "[http_parser]") {
  for (const Rejected& row : rejectedRequests()) {
    INFO(row.what);
    const ParseResult r = parse(row.input);
    REQUIRE(r.status == ParseStatus::error);
    REQUIRE(r.reason == row.reason);
  }
}

TEST_CASE("any split gives the one-shot answer", "[http_parser]") {
  for (const Accepted& row : acceptedRequests()) {
    INFO(row.input);
    requireSplitInvariant(row.input);
  }
  for (const Rejected& row : rejectedRequests()) {
    INFO(row.what);
    requireSplitInvariant(row.input);
  }
  SECTION("and with small limits") {
    const ParseLimits tight{40, 1};
    for (const Accepted& row : acceptedRequests()) {
      INFO(row.input);
      requireSplitInvariant(row.input, tight);
    }
    for (const Rejected& row : rejectedRequests()) {
      INFO(row.what);
      requireSplitInvariant(row.input, tight);
    }
  }
}

TEST_CASE("early answers: errors before the end of the head", "[http_parser]") {
  struct Row {
    std::string what;
    std::string input;  // never holds CRLFCRLF
  };
  const Row rows[] = {
      {"bare LF", "GET /x HTTP/1.1\n"},    {"LF-only head", "GET /x HTTP/1.1\nHost: a\n\n"},
      {"bare CR", "GET /x HTTP/1.1\rX"},   {"NUL", "GET /x HTTP/1.1\r\nX: \0"s},
      {"leading empty line", "\r\n"},      {"leading space", " "},
      {"TLS ClientHello", "\x16\x03\x01"}, {"method too long", std::string(33, 'A')},
      {"method then CR", "GET\r"},
  };
  for (const Row& row : rows) {
    INFO(row.what);
    const ParseResult r = parse(row.input);
    REQUIRE(r.status == ParseStatus::error);
    REQUIRE(r.reason == Reason::bad_request);
  }
}

TEST_CASE("incomplete input", "[http_parser]") {
  const std::string inputs[] = {
      "",
      "G",
      "GET",
      "GET ",
      "GET /x HTTP/1.1",
      "GET /x HTTP/1.1\r",
      "GET /x HTTP/1.1\r\n",
      "GET /x HTTP/1.1\r\nHost: a\r\n",
      "GET /x HTTP/1.1\r\nHost: a\r\n\r",
      "CONNECT [::1]:443 HTTP/1.1\r\nX: \xff\t\r\n",
  };
  for (const std::string& input : inputs) {
    INFO(input);
    const ParseResult r = parse(input);
    REQUIRE(r.status == ParseStatus::incomplete);
    REQUIRE(r.reason == Reason::none);
  }
}

TEST_CASE("field values", "[http_parser]") {
  const std::string input =
      "GET http://h/ HTTP/1.1\r\n"
      "Host: h\r\n"
      "X-Padded:  \t v  w \t \r\n"
      "X-Empty:\r\n"
      "X-Blank:   \r\n"
      "X-Tab:a\tb\r\n"
      "X-Obs: \x80\xff\r\n"
      "X-Colons: a:b: c\r\n"
      "\r\n";
  const ParseResult r = parse(input);
  REQUIRE(r.status == ParseStatus::complete);
  REQUIRE(r.head.headers.size() == 7);
  REQUIRE(r.head.headers[1].name == "X-Padded");
  REQUIRE(r.head.headers[1].value == "v  w");
  REQUIRE(r.head.headers[2].value.empty());
  REQUIRE(r.head.headers[3].value.empty());
  REQUIRE(r.head.headers[4].value == "a\tb");
  REQUIRE(r.head.headers[5].value == "\x80\xff");
  REQUIRE(r.head.headers[6].value == "a:b: c");
}

TEST_CASE("find: first field of that name, any case", "[http_parser]") {
  const std::string input = "GET http://h/ HTTP/1.1\r\nhOsT: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
  const ParseResult r = parse(input);
  REQUIRE(r.status == ParseStatus::complete);
  REQUIRE(r.head.find("Host") != nullptr);
  REQUIRE(r.head.find("HOST")->value == "h");
  REQUIRE(r.head.find("x-A")->value == "1");
  REQUIRE(r.head.find("Hos") == nullptr);
  REQUIRE(r.head.find("Hostx") == nullptr);
  REQUIRE(r.head.find("") == nullptr);
  REQUIRE(RequestHead{}.find("Host") == nullptr);
}

TEST_CASE("bytes after the head are left alone", "[http_parser]") {
  const std::string head = "PUT http://h/k HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
  const std::string rest[] = {
      "body",
      "GET http://h/ HTTP/1.1\r\n\r\n",
      "\0\n\r garbage \x16"s,
      "\r\n",
  };
  for (const std::string& after : rest) {
    const std::string input = head + after;
    const ParseResult r = parse(input);
    REQUIRE(r.status == ParseStatus::complete);
    REQUIRE(r.head.head_length == head.size());
    REQUIRE(input.substr(r.head.head_length) == after);
    requireSplitInvariant(input);
  }
  SECTION("the head's views point into the input") {
    const std::string input = head + "body";
    const ParseResult r = parse(input);
    REQUIRE(r.head.method.data() == input.data());
    REQUIRE(r.head.headers[0].value.data() == input.data() + head.find("4"));
  }
}

TEST_CASE("max_header_bytes: at the limit and one past it", "[http_parser]") {
  const std::string head = "GET http://h/ HTTP/1.1\r\nX: abcdef\r\n\r\n";
  SECTION("a whole head") {
    REQUIRE(parse(head, {head.size(), 100}).status == ParseStatus::complete);
    const ParseResult over = parse(head, {head.size() - 1, 100});
    REQUIRE(over.status == ParseStatus::error);
    REQUIRE(over.reason == Reason::header_too_large);
    REQUIRE(over.head.method == "GET");
    // Pipelined bytes after the head do not count.
    REQUIRE(parse(head + "GET", {head.size(), 100}).status == ParseStatus::complete);
  }
  SECTION("an unfinished head") {
    const std::string partial = head.substr(0, head.size() - 2);
    REQUIRE(parse(partial, {partial.size(), 100}).status == ParseStatus::incomplete);
    const ParseResult over = parse(partial, {partial.size() - 1, 100});
    REQUIRE(over.status == ParseStatus::error);
    REQUIRE(over.reason == Reason::header_too_large);
  }
  SECTION("the end of the head straddles the limit") {
    for (size_t cut = 1; cut <= 4; ++cut) {
      const ParseResult r = parse(head, {head.size() - cut, 100});
      REQUIRE(r.status == ParseStatus::error);
      REQUIRE(r.reason == Reason::header_too_large);
      requireSplitInvariant(head, {head.size() - cut, 100});
    }
  }
  SECTION("a syntax error inside the limit is named before the size") {
    const std::string bad = "GET http://h/ HTTP/1.1\nX: abcdef\r\n\r\n";
    REQUIRE(parse(bad, {30, 100}).reason == Reason::bad_request);
    REQUIRE(parse(bad, {20, 100}).reason == Reason::header_too_large);
  }
  SECTION("the default: 64 KiB") {
    const std::string prefix = "GET http://h/ HTTP/1.1\r\nX: ";
    std::string big = prefix + std::string(65536 - prefix.size() - 4, 'a') + "\r\n\r\n";
    REQUIRE(big.size() == 65536);
    REQUIRE(parse(big).status == ParseStatus::complete);
    big.insert(prefix.size(), "a");
    REQUIRE(parse(big).reason == Reason::header_too_large);
  }
}

TEST_CASE("max_headers: at the limit and one past it", "[http_parser]") {
  auto withFields = [](size_t n) {
    std::string input = "GET http://h/ HTTP/1.1\r\n";
    for (size_t i = 0; i < n; ++i) {
      input += "X-" + std::to_string(i) + ": v\r\n";
    }
    return input + "\r\n";
  };
  REQUIRE(parse(withFields(100)).status == ParseStatus::complete);
  REQUIRE(parse(withFields(100)).head.headers.size() == 100);
  const ParseResult over = parse(withFields(101));
  REQUIRE(over.status == ParseStatus::error);
  REQUIRE(over.reason == Reason::header_too_large);
  REQUIRE(parse(withFields(3), {65536, 3}).status == ParseStatus::complete);
  REQUIRE(parse(withFields(4), {65536, 3}).reason == Reason::header_too_large);
  REQUIRE(parse(withFields(0), {65536, 0}).status == ParseStatus::complete);
  REQUIRE(parse(withFields(1), {65536, 0}).reason == Reason::header_too_large);
  requireSplitInvariant(withFields(4), {65536, 3});
}

TEST_CASE("the method is named on errors for the log", "[http_parser]") {
  REQUIRE(parse("CONNECT ex!ample.com:443 HTTP/1.1\r\n\r\n").head.method == "CONNECT");
  REQUIRE(parse("GET /x HTTP/1.1\r\nX: \0\r\n\r\n"s).head.method == "GET");
  REQUIRE(parse("GET /x HTTP/1.1\n").head.method == "GET");
  REQUIRE(parse("G\x01T /x HTTP/1.1\r\n\r\n").head.method.empty());
  REQUIRE(parse(" GET /x HTTP/1.1\r\n\r\n").head.method.empty());
}

TEST_CASE("parseRequestTarget on its own, as explain uses it", "[http_parser]") {
  RequestTarget t;
  REQUIRE(parseRequestTarget("CONNECT", "bucket.s3.us-west-2.amazonaws.com:443", &t) ==
          Reason::none);
  REQUIRE(t.form == TargetForm::authority);
  REQUIRE(t.host == "bucket.s3.us-west-2.amazonaws.com");
  REQUIRE(t.port == 443);
  REQUIRE(t.path.empty());

  REQUIRE(parseRequestTarget("GET", "http://h:8080", &t) == Reason::none);
  REQUIRE(t.form == TargetForm::absolute);
  REQUIRE(t.path == "/");
  REQUIRE(t.port == 8080);

  // On an error the target is left empty, not half filled.
  REQUIRE(parseRequestTarget("GET", "http://h:0/x", &t) == Reason::bad_request);
  REQUIRE(t.host.empty());
  REQUIRE(t.port == 0);
  REQUIRE(parseRequestTarget("CONNECT", "", &t) == Reason::bad_request);
  REQUIRE(parseRequestTarget("GET", "", &t) == Reason::bad_request);
  REQUIRE(parseRequestTarget("CONNECT", "a b:443", &t) == Reason::bad_host);
  REQUIRE(parseRequestTarget("GET", "/a b", &t) == Reason::bad_request);
  REQUIRE(parseRequestTarget("GET", "http://h/a\r\n", &t) == Reason::bad_request);
  // Methods are case-sensitive: "connect" is not CONNECT.
  REQUIRE(parseRequestTarget("connect", "h:443", &t) == Reason::bad_request);
}

TEST_CASE("mutated requests: any split gives the one-shot answer", "[http_parser]") {
  // Deterministic: the same mutations every run.
  std::mt19937 rng(20240601);
  const std::string alphabet = "\r\n :/[]@#%?\t\0\x7f\x80Hh0aG"s;
  std::vector<std::string> seeds;
  for (const Accepted& row : acceptedRequests()) {
    seeds.push_back(row.input);
  }
  for (const Rejected& row : rejectedRequests()) {
    seeds.push_back(row.input);
  }
  const ParseLimits limits[] = {{}, {48, 2}};
  for (int round = 0; round < 3000; ++round) {
    std::string input = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const size_t at = rng() % input.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          input[at] = c;
          break;
        case 1:
          input.insert(input.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          input.erase(at, 1);
          break;
      }
    }
    INFO(input);
    const ParseLimits& l = limits[rng() % 2];
    const ParseResult whole = parse(input, l);
    REQUIRE((whole.status == ParseStatus::error) == (whole.reason != Reason::none));
    if (whole.status == ParseStatus::complete) {
      REQUIRE(whole.head.head_length <= input.size());
      REQUIRE(whole.head.head_length <= l.max_header_bytes);
    }
    requireSplitInvariant(input, l);
  }
}
