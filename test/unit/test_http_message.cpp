// Message framing, head rewrites, the response-head parser and the body framers
// (proxy/http_message.h, SPEC section 3, plain HTTP): every framing rule with
// its exact reason, field lines passed on byte for byte, and the same answer
// however the bytes are split.

#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "proxy/http_message.h"

using namespace s3gate;
using namespace std::string_literals;

namespace {

// The rows' strings are static: the parsed heads point into them.
RequestHead parseRequest(const std::string& input) {
  ParseResult r = parseRequestHead(input, ParseLimits{});
  INFO(input);
  REQUIRE(r.status == ParseStatus::complete);
  return std::move(r.head);
}

ResponseHead parseResponse(const std::string& input) {
  ResponseParseResult r = parseResponseHead(input, ParseLimits{});
  INFO(input);
  REQUIRE(r.status == ParseStatus::complete);
  return std::move(r.head);
}

bool inside(std::string_view part, std::string_view whole) {
  const auto p = reinterpret_cast<uintptr_t>(part.data());
  const auto w = reinterpret_cast<uintptr_t>(whole.data());
  return p >= w && p + part.size() <= w + whole.size();
}

// ---------------------------------------------------------------------------
// Request framing

struct FramingRow {
  std::string what;
  std::string input;
  Reason reason;
  BodyKind kind = BodyKind::none;
  uint64_t length = 0;
  bool require_host = true;
};

const std::vector<FramingRow>& requestFramingRows() {
  static const std::string kGet = "GET http://h/k HTTP/1.1\r\nHost: h\r\n";
  static const std::string kPut = "PUT http://h/k HTTP/1.1\r\nHost: h\r\n";
  static const std::vector<FramingRow> rows = {
      // Accepted framings.
      {"no body", kGet + "\r\n", Reason::none},
      {"Content-Length", kPut + "Content-Length: 5\r\n\r\n", Reason::none, BodyKind::content_length,
       5},
      {"Content-Length 0", kPut + "Content-Length: 0\r\n\r\n", Reason::none,
       BodyKind::content_length, 0},
      {"Content-Length with OWS", kPut + "content-length: \t 7 \t\r\n\r\n", Reason::none,
       BodyKind::content_length, 7},
      {"Content-Length leading zeros", kPut + "Content-Length: 007\r\n\r\n", Reason::none,
       BodyKind::content_length, 7},
      {"Content-Length 2^63-1", kPut + "Content-Length: 9223372036854775807\r\n\r\n", Reason::none,
       BodyKind::content_length, 9223372036854775807ull},
      {"chunked", kPut + "Transfer-Encoding: chunked\r\n\r\n", Reason::none, BodyKind::chunked},
      {"Chunked, any case", kPut + "TRANSFER-ENCODING: ChUnKeD\r\n\r\n", Reason::none,
       BodyKind::chunked},
      // Content-Length refused.
      {"Content-Length twice, equal", kPut + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n",
       Reason::bad_framing},
      {"Content-Length twice, differing", kPut + "Content-Length: 5\r\ncontent-length: 6\r\n\r\n",
       Reason::bad_framing},
      {"Content-Length list", kPut + "Content-Length: 5, 5\r\n\r\n", Reason::bad_framing},
      {"Content-Length list, no space", kPut + "Content-Length: 5,5\r\n\r\n", Reason::bad_framing},
      {"Content-Length empty", kPut + "Content-Length:\r\n\r\n", Reason::bad_framing},
      {"Content-Length not digits", kPut + "Content-Length: abc\r\n\r\n", Reason::bad_framing},
      {"Content-Length hex", kPut + "Content-Length: 0x10\r\n\r\n", Reason::bad_framing},
      {"Content-Length negative", kPut + "Content-Length: -1\r\n\r\n", Reason::bad_framing},
      {"Content-Length with sign", kPut + "Content-Length: +5\r\n\r\n", Reason::bad_framing},
      {"Content-Length space inside", kPut + "Content-Length: 5 5\r\n\r\n", Reason::bad_framing},
      {"Content-Length 2^63", kPut + "Content-Length: 9223372036854775808\r\n\r\n",
       Reason::bad_framing},
      {"Content-Length 2^64", kPut + "Content-Length: 18446744073709551616\r\n\r\n",
       Reason::bad_framing},
      {"Content-Length huge", kPut + "Content-Length: 99999999999999999999999\r\n\r\n",
       Reason::bad_framing},
      // Transfer-Encoding refused.
      {"both, CL first", kPut + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
       Reason::bad_framing},
      {"both, TE first", kPut + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
       Reason::bad_framing},
      {"gzip, chunked", kPut + "Transfer-Encoding: gzip, chunked\r\n\r\n", Reason::bad_framing},
      {"chunked, gzip", kPut + "Transfer-Encoding: chunked, gzip\r\n\r\n", Reason::bad_framing},
      {"identity", kPut + "Transfer-Encoding: identity\r\n\r\n", Reason::bad_framing},
      {"chunked, chunked", kPut + "Transfer-Encoding: chunked, chunked\r\n\r\n",
       Reason::bad_framing},
      {"chunked in two fields",
       kPut + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
       Reason::bad_framing},
      {"xchunked", kPut + "Transfer-Encoding: xchunked\r\n\r\n", Reason::bad_framing},
      {"chunkedx", kPut + "Transfer-Encoding: chunkedx\r\n\r\n", Reason::bad_framing},
      {"chunked with a parameter", kPut + "Transfer-Encoding: chunked;q=1\r\n\r\n",
       Reason::bad_framing},
      {"empty Transfer-Encoding", kPut + "Transfer-Encoding:\r\n\r\n", Reason::bad_framing},
      {"chunked on HTTP/1.0",
       "PUT http://h/k HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
       Reason::bad_framing},
      // Connection options that would drop the framing or the target.
      {"Connection names Content-Length",
       kPut + "Content-Length: 5\r\nConnection: content-length\r\n\r\n", Reason::bad_framing},
      {"Connection names Transfer-Encoding",
       kPut + "Transfer-Encoding: chunked\r\nConnection: close, Transfer-Encoding\r\n\r\n",
       Reason::bad_framing},
      {"Connection names Host", kGet + "Connection: HOST\r\n\r\n", Reason::bad_request},
      {"Connection option not a token", kGet + "Connection: a b\r\n\r\n", Reason::bad_request},
      {"Connection with empty elements", kGet + "Connection: , close,,\r\n\r\n", Reason::none},
      // Host against the target.
      {"Host with default port", "GET http://h/k HTTP/1.1\r\nHost: h:80\r\n\r\n", Reason::none},
      {"target with default port", "GET http://h:80/k HTTP/1.1\r\nHost: h\r\n\r\n", Reason::none},
      {"Host, other case",
       "GET http://Media.S3.us-west-2.amazonaws.com/k HTTP/1.1\r\n"
       "Host: media.s3.US-WEST-2.amazonaws.com\r\n\r\n",
       Reason::none},
      {"Host and target port 8080", "GET http://h:8080/k HTTP/1.1\r\nHost: h:8080\r\n\r\n",
       Reason::none},
      {"IPv6 Host", "GET http://[::1]/k HTTP/1.1\r\nHost: [::1]\r\n\r\n", Reason::none},
      {"IPv6 Host with port", "GET http://[::1]/k HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
       Reason::none},
      {"Host differs", "GET http://h/k HTTP/1.1\r\nHost: other\r\n\r\n", Reason::bad_request},
      {"Host suffix", "GET http://h/k HTTP/1.1\r\nHost: hh\r\n\r\n", Reason::bad_request},
      {"Host trailing dot", "GET http://h/k HTTP/1.1\r\nHost: h.\r\n\r\n", Reason::bad_request},
      {"Host port differs", "GET http://h/k HTTP/1.1\r\nHost: h:8080\r\n\r\n", Reason::bad_request},
      {"target port differs", "GET http://h:8080/k HTTP/1.1\r\nHost: h\r\n\r\n",
       Reason::bad_request},
      {"Host empty port", "GET http://h/k HTTP/1.1\r\nHost: h:\r\n\r\n", Reason::bad_request},
      {"Host port 0", "GET http://h/k HTTP/1.1\r\nHost: h:0\r\n\r\n", Reason::bad_request},
      {"Host port leading zero", "GET http://h/k HTTP/1.1\r\nHost: h:080\r\n\r\n",
       Reason::bad_request},
      {"Host port too big", "GET http://h/k HTTP/1.1\r\nHost: h:65616\r\n\r\n",
       Reason::bad_request},
      {"Host empty", "GET http://h/k HTTP/1.1\r\nHost:\r\n\r\n", Reason::bad_request},
      {"Host with userinfo", "GET http://h/k HTTP/1.1\r\nHost: u@h\r\n\r\n", Reason::bad_request},
      {"IPv6 Host unbracketed", "GET http://[::1]/k HTTP/1.1\r\nHost: ::1\r\n\r\n",
       Reason::bad_request},
      {"IPv6 Host unclosed", "GET http://[::1]/k HTTP/1.1\r\nHost: [::1\r\n\r\n",
       Reason::bad_request},
      {"bracketed name", "GET http://h/k HTTP/1.1\r\nHost: [h]\r\n\r\n", Reason::bad_request},
      {"no Host, HTTP/1.1", "GET http://h/k HTTP/1.1\r\n\r\n", Reason::bad_request},
      {"no Host, HTTP/1.1, not required", "GET http://h/k HTTP/1.1\r\n\r\n", Reason::none,
       BodyKind::none, 0, false},
      {"no Host, HTTP/1.0", "GET http://h/k HTTP/1.0\r\n\r\n", Reason::none},
      {"Host differs, HTTP/1.0", "GET http://h/k HTTP/1.0\r\nHost: x\r\n\r\n", Reason::bad_request},
      {"origin-form: Host not compared", "GET /k HTTP/1.1\r\nHost: anything:1\r\n\r\n",
       Reason::none},
      // Framing is judged before the host.
      {"bad framing and bad Host",
       "PUT http://h/k HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", Reason::bad_framing},
  };
  return rows;
}

TEST_CASE("request framing: every rule, the exact reason", "[http_message]") {
  for (const FramingRow& row : requestFramingRows()) {
    INFO(row.what);
    const RequestFraming f = checkRequestFraming(parseRequest(row.input), row.require_host);
    REQUIRE(f.reason == row.reason);
    if (row.reason == Reason::none) {
      REQUIRE(f.body.kind == row.kind);
      REQUIRE(f.body.length == row.length);
    }
  }
}

TEST_CASE("request framing: keep-alive and 100-continue", "[http_message]") {
  struct Row {
    std::string input;
    bool keep_alive;
    bool expect_continue;
  };
  static const std::vector<Row> rows = {
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", true, false},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false, false},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\nconnection: CLOSE\r\n\r\n", false, false},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", false, false},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: x-a\r\nConnection: close\r\n\r\n", false,
       false},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n", false, false},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", true, false},
      {"GET http://h/ HTTP/1.0\r\n\r\n", false, false},
      {"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, false},
      {"GET http://h/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true, false},
      {"GET http://h/ HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n", true, false},
      {"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\nProxy-Connection: close\r\n\r\n", false,
       false},
      {"PUT http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", true, true},
      {"PUT http://h/ HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\n\r\n", true, true},
      {"PUT http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
       false, true},
      // HTTP/1.0 expectations are ignored (RFC 9110 section 10.1.1).
      {"PUT http://h/ HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", false, false},
      {"PUT http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continuex\r\n\r\n", true, false},
      {"PUT http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", true, false},
      // Dropped by the rewrite, so never seen upstream.
      {"PUT http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nConnection: expect\r\n\r\n",
       true, false},
  };
  for (const Row& row : rows) {
    INFO(row.input);
    const RequestFraming f = checkRequestFraming(parseRequest(row.input), true);
    REQUIRE(f.reason == Reason::none);
    REQUIRE(f.keep_alive == row.keep_alive);
    REQUIRE(f.expect_continue == row.expect_continue);
  }
}

TEST_CASE("request framing: keep-alive is set on refusal too", "[http_message]") {
  static const std::string input =
      "PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\nConnection: close\r\n\r\n";
  const RequestFraming f = checkRequestFraming(parseRequest(input), true);
  REQUIRE(f.reason == Reason::bad_framing);
  REQUIRE_FALSE(f.keep_alive);
}

// ---------------------------------------------------------------------------
// Request rewrite

TEST_CASE("request rewrite: origin-form, hop-by-hop dropped, the rest byte for byte",
          "[http_message]") {
  static const std::string input =
      "PUT http://media.s3.us-west-2.amazonaws.com/shot/010.exr?x-id=PutObject HTTP/1.1\r\n"
      "Host:   media.s3.us-west-2.amazonaws.com  \r\n"
      "Authorization: AWS4-HMAC-SHA256 "
      "Credential=AKIDEXAMPLE/20240101/us-west-2/s3/aws4_request, "
      "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0123abcd\r\n"
      "x-amz-date:20240101T000000Z\r\n"
      "X-Amz-Content-Sha256: \tUNSIGNED-PAYLOAD\r\n"
      "Proxy-Connection: Keep-Alive\r\n"
      "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
      "Content-Length: 5\r\n"
      "Connection: keep-alive, X-Hop\r\n"
      "x-hop: secret\r\n"
      "Keep-Alive: timeout=5\r\n"
      "TE: trailers\r\n"
      "Upgrade: h2c\r\n"
      "Trailer: x-amz-checksum-crc32\r\n"
      "x-amz-meta-note:\tcaf\xc3\xa9\t\r\n"
      "X-Empty:\r\n"
      "\r\n";
  const RequestHead head = parseRequest(input);
  REQUIRE(checkRequestFraming(head, true).reason == Reason::none);
  const HeadPieces out = rewriteRequestHead(head);
  const std::string expected =
      "PUT /shot/010.exr?x-id=PutObject HTTP/1.1\r\n"
      "Host:   media.s3.us-west-2.amazonaws.com  \r\n"
      "Authorization: AWS4-HMAC-SHA256 "
      "Credential=AKIDEXAMPLE/20240101/us-west-2/s3/aws4_request, "
      "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0123abcd\r\n"
      "x-amz-date:20240101T000000Z\r\n"
      "X-Amz-Content-Sha256: \tUNSIGNED-PAYLOAD\r\n"
      "Content-Length: 5\r\n"
      "Trailer: x-amz-checksum-crc32\r\n"
      "x-amz-meta-note:\tcaf\xc3\xa9\t\r\n"
      "X-Empty:\r\n"
      "\r\n";
  REQUIRE(out.joined() == expected);
  REQUIRE(out.size() == expected.size());
  // Zero copy: every piece is a slice of the received head.
  for (std::string_view piece : out.pieces()) {
    REQUIRE(inside(piece, input));
  }
  // What goes upstream is itself a valid request.
  const ParseResult again = parseRequestHead(expected, ParseLimits{});
  REQUIRE(again.status == ParseStatus::complete);
  REQUIRE(again.head.headers.size() == 8);
}

TEST_CASE("request rewrite: adjacent kept lines are one piece", "[http_message]") {
  static const std::string absolute =
      "GET http://h:80/k?a=b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
  const HeadPieces a = rewriteRequestHead(parseRequest(absolute));
  REQUIRE(a.joined() == "GET /k?a=b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\n\r\n");
  REQUIRE(a.pieces().size() == 2);  // "GET ", then the rest of the head

  static const std::string origin = "GET /k HTTP/1.1\r\nHost: h\r\n\r\n";
  const HeadPieces o = rewriteRequestHead(parseRequest(origin));
  REQUIRE(o.joined() == origin);
  REQUIRE(o.pieces().size() == 1);
  REQUIRE(o.pieces()[0].data() == origin.data());

  static const std::string dropped = "GET /k HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nX-A: 1\r\n\r\n";
  const HeadPieces d = rewriteRequestHead(parseRequest(dropped));
  REQUIRE(d.joined() == "GET /k HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n");
  REQUIRE(d.pieces().size() == 2);
}

TEST_CASE("request rewrite: request lines", "[http_message]") {
  struct Row {
    std::string input;
    std::string expected;
  };
  static const std::vector<Row> rows = {
      {"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"GET http://h?list-type=2 HTTP/1.1\r\nHost: h\r\n\r\n",
       "GET /?list-type=2 HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"DELETE HTTP://H:80/a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n",
       "DELETE /a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n"},
      {"GET http://[::1]:8080/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
       "GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"},
      // HTTP/1.0 goes on as HTTP/1.0 (so no chunked answer comes back that the
      // client could not read), its keep-alive dropped.
      {"GET http://h/x HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
       "GET /x HTTP/1.0\r\nHost: h\r\n\r\n"},
      // No Host (HTTP/1.0): one made from the target's authority, as written.
      {"GET http://H.example:8080/x HTTP/1.0\r\nUser-Agent: a\r\n\r\n",
       "GET /x HTTP/1.0\r\nUser-Agent: a\r\nHost: H.example:8080\r\n\r\n"},
      {"GET http://h HTTP/1.0\r\n\r\n", "GET / HTTP/1.0\r\nHost: h\r\n\r\n"},
      // Origin-form (inside an inspected tunnel): no Host made up.
      {"GET /x HTTP/1.0\r\n\r\n", "GET /x HTTP/1.0\r\n\r\n"},
  };
  for (const Row& row : rows) {
    INFO(row.input);
    REQUIRE(rewriteRequestHead(parseRequest(row.input)).joined() == row.expected);
  }
}

TEST_CASE("request rewrite: Connection options, any case", "[http_message]") {
  static const std::string input =
      "GET http://h/ HTTP/1.1\r\n"
      "Host: h\r\n"
      "CONNECTION: X-Foo , ,x-BAR\r\n"
      "x-foo: 1\r\n"
      "X-Keep: 1\r\n"
      "X-FOO: 2\r\n"
      "connection: X-Baz\r\n"
      "x-bar: 3\r\n"
      "X-Baz: 4\r\n"
      "kEeP-aLiVe: timeout=1\r\n"
      "PROXY-AUTHORIZATION: Basic x\r\n"
      "proxy-authenticate: Basic\r\n"
      "Te: trailers\r\n"
      "UPGRADE: websocket\r\n"
      "\r\n";
  REQUIRE(rewriteRequestHead(parseRequest(input)).joined() ==
          "GET / HTTP/1.1\r\nHost: h\r\nX-Keep: 1\r\n\r\n");
}

TEST_CASE("request rewrite: framing fields and Host are never dropped", "[http_message]") {
  // checkRequestFraming() refuses these; the rewrite still keeps the fields.
  static const std::string input =
      "PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
      "Connection: host, content-length, transfer-encoding\r\n\r\n";
  REQUIRE(rewriteRequestHead(parseRequest(input)).joined() ==
          "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n");
  REQUIRE_FALSE(isHopByHop("Content-Length"));
  REQUIRE_FALSE(isHopByHop("Transfer-Encoding"));
  REQUIRE_FALSE(isHopByHop("Host"));
  REQUIRE_FALSE(isHopByHop("Trailer"));
  REQUIRE(isHopByHop("Proxy-Authenticate"));
  REQUIRE(isHopByHop("tE"));
}

TEST_CASE("rewrites: thousands of Connection options and the fields they name", "[http_message]") {
  // Every field is looked up among the options once (not every option asked of
  // every field): a head listing thousands of options stays linear-ish. What
  // is asserted here is the result; the cost was measured by hand.
  constexpr int kOptions = 4000;
  std::string list_a;
  std::string list_b;
  for (int i = 0; i < kOptions; ++i) {
    // Options in upper case, fields in lower case; half in each Connection field.
    std::string& list = i % 2 == 0 ? list_a : list_b;
    list += (list.empty() ? "" : " , ") + std::string("X-OPT-") + std::to_string(i);
  }
  std::string fields;
  std::string kept;
  for (int i = 0; i < kOptions; i += 2) {
    fields += "x-opt-" + std::to_string(i) + ": named\r\n";  // dropped
    const std::string line = "x-keep-" + std::to_string(i) + ": not named\r\n";
    fields += line;
    kept += line;
  }
  // A name that is a prefix or an extension of an option is not named by it.
  fields += "x-opt: prefix\r\nx-opt-40000: longer\r\n";
  kept += "x-opt: prefix\r\nx-opt-40000: longer\r\n";
  const ParseLimits limits{1 << 20, 3 * kOptions};

  static std::string request;
  request = "GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: " + list_a + "\r\n" + fields +
            "Connection: " + list_b + "\r\nContent-Length: 0\r\n\r\n";
  ParseResult parsed = parseRequestHead(request, limits);
  REQUIRE(parsed.status == ParseStatus::complete);
  REQUIRE(checkRequestFraming(parsed.head, true).reason == Reason::none);
  CHECK(rewriteRequestHead(parsed.head).joined() ==
        "GET / HTTP/1.1\r\nHost: h\r\n" + kept + "Content-Length: 0\r\n\r\n");

  static std::string response;
  response = "HTTP/1.1 200 OK\r\nConnection: " + list_a + "\r\n" + fields +
             "Connection: " + list_b + "\r\nContent-Length: 0\r\n\r\n";
  ResponseParseResult parsed_response = parseResponseHead(response, limits);
  REQUIRE(parsed_response.status == ParseStatus::complete);
  CHECK(rewriteResponseHead(parsed_response.head).joined() ==
        "HTTP/1.1 200 OK\r\n" + kept + "Content-Length: 0\r\n\r\n");
}

TEST_CASE("isIdempotentMethod: the methods that may be sent twice", "[http_message]") {
  for (const char* method : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"}) {
    CAPTURE(method);
    CHECK(isIdempotentMethod(method));
  }
  for (const char* method : {"POST", "PATCH", "CONNECT", "get", "Put", "", "GETX", "GE"}) {
    CAPTURE(method);
    CHECK_FALSE(isIdempotentMethod(method));
  }
}

TEST_CASE("request rewrite: a Connection field added at the end", "[http_message]") {
  static const std::string input = "GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  const RequestHead head = parseRequest(input);
  REQUIRE(rewriteRequestHead(head, ConnectionField::close).joined() ==
          "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
  REQUIRE(rewriteRequestHead(head, ConnectionField::keep_alive).joined() ==
          "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n");
  REQUIRE(rewriteRequestHead(head).joined() == "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
}

// ---------------------------------------------------------------------------
// Response heads

struct AcceptedResponse {
  std::string input;
  int version_minor;
  int status_code;
  std::string reason_phrase;
  size_t fields;
};

const std::vector<AcceptedResponse>& acceptedResponses() {
  static const std::vector<AcceptedResponse> rows = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, 200, "OK", 1},
      {"HTTP/1.0 404 Not Found\r\n\r\n", 0, 404, "Not Found", 0},
      {"HTTP/1.1 204\r\n\r\n", 1, 204, "", 0},
      {"HTTP/1.1 204 \r\n\r\n", 1, 204, "", 0},
      {"HTTP/1.1 100 Continue\r\n\r\n", 1, 100, "Continue", 0},
      {"HTTP/1.1 599 a\tb  c\xff\r\n\r\n", 1, 599, "a\tb  c\xff", 0},
      {"HTTP/1.1 200 OK\r\nx-amz-id-2: a/b+c=\r\nx-amz-request-id: 0A\r\n"
       "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nETag: \"abc\"\r\nX-Empty:\r\n"
       "x-amz-meta-n: caf\xc3\xa9\r\n\r\n",
       1, 200, "OK", 6},
  };
  return rows;
}

struct RejectedResponse {
  std::string what;
  std::string input;
  UpstreamError error;
};

const std::vector<RejectedResponse>& rejectedResponses() {
  static const std::vector<RejectedResponse> rows = {
      {"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"HTTP/2", "HTTP/2 200\r\n\r\n", UpstreamError::bad_status_line},
      {"HTTP/1.10", "HTTP/1.10 200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"lower-case version", "http/1.1 200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"leading space", " HTTP/1.1 200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"leading empty line", "\r\nHTTP/1.1 200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"a request", "GET / HTTP/1.1\r\n\r\n", UpstreamError::bad_status_line},
      {"two digits", "HTTP/1.1 20 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"four digits", "HTTP/1.1 2000 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"no status", "HTTP/1.1\r\n\r\n", UpstreamError::bad_status_line},
      {"no status, space", "HTTP/1.1 \r\n\r\n", UpstreamError::bad_status_line},
      {"status 099", "HTTP/1.1 099 x\r\n\r\n", UpstreamError::bad_status_line},
      {"status 600", "HTTP/1.1 600 x\r\n\r\n", UpstreamError::bad_status_line},
      {"status with sign", "HTTP/1.1 +20 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"status not digits", "HTTP/1.1 2x0 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"two spaces", "HTTP/1.1  200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"no space before reason", "HTTP/1.1 200OK\r\n\r\n", UpstreamError::bad_status_line},
      {"HTAB separator", "HTTP/1.1\t200 OK\r\n\r\n", UpstreamError::bad_status_line},
      {"bare LF after status line", "HTTP/1.1 200 OK\nX: y\r\n\r\n", UpstreamError::bad_field},
      {"LF-only head", "HTTP/1.1 200 OK\nX: y\n\n", UpstreamError::bad_field},
      {"bare CR in a value", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", UpstreamError::bad_field},
      {"NUL in a value", "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"s, UpstreamError::bad_field},
      {"NUL in the reason", "HTTP/1.1 200 O\0K\r\n\r\n"s, UpstreamError::bad_field},
      {"DEL in a value", "HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n", UpstreamError::bad_field},
      {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", UpstreamError::bad_field},
      {"obs-fold with HTAB", "HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n", UpstreamError::bad_field},
      {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
       UpstreamError::bad_field},
      {"empty name", "HTTP/1.1 200 OK\r\n: a\r\n\r\n", UpstreamError::bad_field},
      {"no colon", "HTTP/1.1 200 OK\r\nX a\r\n\r\n", UpstreamError::bad_field},
      {"name not a token", "HTTP/1.1 200 OK\r\nX(y): a\r\n\r\n", UpstreamError::bad_field},
      {"name with obs-text", "HTTP/1.1 200 OK\r\nX\xe9: a\r\n\r\n", UpstreamError::bad_field},
  };
  return rows;
}

ResponseParseResult feedResponseBytewise(std::string_view input, const ParseLimits& limits,
                                         bool resume) {
  ResponseParseResult result;
  size_t checked = 0;
  for (size_t n = 1; n <= input.size(); ++n) {
    result = parseResponseHead(input.substr(0, n), limits, resume ? checked : 0);
    if (result.status != ParseStatus::incomplete) {
      return result;
    }
    checked = n;
  }
  return result;
}

void requireSameResponse(const ResponseParseResult& a, const ResponseParseResult& b) {
  REQUIRE(a.status == b.status);
  REQUIRE(a.error == b.error);
  if (a.status != ParseStatus::complete) {
    return;
  }
  REQUIRE(a.head.head_length == b.head.head_length);
  REQUIRE(a.head.status_code == b.head.status_code);
  REQUIRE(a.head.version_minor == b.head.version_minor);
  REQUIRE(a.head.reason_phrase == b.head.reason_phrase);
  REQUIRE(a.head.headers.size() == b.head.headers.size());
  for (size_t i = 0; i < a.head.headers.size(); ++i) {
    REQUIRE(a.head.headers[i].name == b.head.headers[i].name);
    REQUIRE(a.head.headers[i].value == b.head.headers[i].value);
  }
}

void requireResponseSplitInvariant(std::string_view input, const ParseLimits& limits = {}) {
  const ResponseParseResult whole = parseResponseHead(input, limits);
  requireSameResponse(feedResponseBytewise(input, limits, false), whole);
  requireSameResponse(feedResponseBytewise(input, limits, true), whole);
}

TEST_CASE("response heads: accepted, every part", "[http_message]") {
  for (const AcceptedResponse& row : acceptedResponses()) {
    INFO(row.input);
    // Body bytes after the head are left alone.
    const std::string with_body = row.input + "body";
    const ResponseParseResult r = parseResponseHead(with_body, ParseLimits{});
    REQUIRE(r.status == ParseStatus::complete);
    REQUIRE(r.error == UpstreamError::none);
    REQUIRE(r.head.head_length == row.input.size());
    REQUIRE(r.head.bytes == row.input);
    REQUIRE(r.head.version_minor == row.version_minor);
    REQUIRE(r.head.status_code == row.status_code);
    REQUIRE(r.head.reason_phrase == row.reason_phrase);
    REQUIRE(r.head.headers.size() == row.fields);
  }
  static const std::string sample = acceptedResponses()[6].input;
  const ResponseHead head = parseResponse(sample);
  REQUIRE(head.find("X-AMZ-REQUEST-ID") != nullptr);
  REQUIRE(head.find("x-amz-request-id")->value == "0A");
  REQUIRE(head.find("etag")->value == "\"abc\"");
  REQUIRE(head.find("X-Empty")->value.empty());
  REQUIRE(head.find("Content-Length") == nullptr);
}

TEST_CASE("response heads: rejected, the exact error", "[http_message]") {
  for (const RejectedResponse& row : rejectedResponses()) {
    INFO(row.what);
    const ResponseParseResult r = parseResponseHead(row.input, ParseLimits{});
    REQUIRE(r.status == ParseStatus::error);
    REQUIRE(r.error == row.error);
    REQUIRE(upstreamErrorName(r.error) != "");
  }
}

TEST_CASE("response heads: limits", "[http_message]") {
  const ParseLimits limits{64, 2};
  REQUIRE(parseResponseHead("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", limits).status ==
          ParseStatus::complete);
  const ResponseParseResult many =
      parseResponseHead("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits);
  REQUIRE(many.status == ParseStatus::error);
  REQUIRE(many.error == UpstreamError::head_too_large);

  const std::string at_limit = "HTTP/1.1 200 OK\r\nX: " + std::string(64 - 24, 'a') + "\r\n\r\n";
  REQUIRE(at_limit.size() == 64);
  REQUIRE(parseResponseHead(at_limit, limits).status == ParseStatus::complete);
  const std::string over = "HTTP/1.1 200 OK\r\nX: " + std::string(64 - 23, 'a') + "\r\n\r\n";
  const ResponseParseResult big = parseResponseHead(over, limits);
  REQUIRE(big.status == ParseStatus::error);
  REQUIRE(big.error == UpstreamError::head_too_large);
  // Incomplete and already too long.
  const ResponseParseResult partial = parseResponseHead(over.substr(0, 65), limits);
  REQUIRE(partial.error == UpstreamError::head_too_large);
  REQUIRE(parseResponseHead(over.substr(0, 64), limits).status == ParseStatus::incomplete);
}

TEST_CASE("response heads: incomplete input", "[http_message]") {
  for (std::string_view input :
       {"", "H", "HTTP/1.", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK\r", "HTTP/1.1 200 OK\r\n",
        "HTTP/1.1 200 OK\r\nX: y\r\n", "HTTP/1.1 200 OK\r\nX: y\r\n\r"}) {
    INFO(input);
    const ResponseParseResult r = parseResponseHead(input, ParseLimits{});
    REQUIRE(r.status == ParseStatus::incomplete);
    REQUIRE(r.error == UpstreamError::none);
  }
  // Errors judged before the head is whole.
  for (std::string_view input : {"X", "HTTP/2", "HTTP/1.1 200 OK\n", "HTTP/1.1 200 OK\r\nX\x01"}) {
    INFO(input);
    REQUIRE(parseResponseHead(input, ParseLimits{}).status == ParseStatus::error);
  }
}

TEST_CASE("response heads: any split gives the one-shot answer", "[http_message]") {
  for (const AcceptedResponse& row : acceptedResponses()) {
    INFO(row.input);
    requireResponseSplitInvariant(row.input);
    requireResponseSplitInvariant(row.input, ParseLimits{30, 1});
  }
  for (const RejectedResponse& row : rejectedResponses()) {
    INFO(row.what);
    requireResponseSplitInvariant(row.input);
    requireResponseSplitInvariant(row.input, ParseLimits{30, 1});
  }
}

TEST_CASE("response heads: 100 Continue, then the final response", "[http_message]") {
  static const std::string stream =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 100 Continue\r\nX-Note: again\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"e\"\r\n\r\n"
      "ok"
      "HTTP/1.1 204 No Content\r\n\r\n";
  std::string_view rest = stream;
  std::vector<int> codes;
  while (!rest.empty()) {
    const ResponseParseResult r = parseResponseHead(rest, ParseLimits{});
    REQUIRE(r.status == ParseStatus::complete);
    codes.push_back(r.head.status_code);
    const ResponseFraming framing = checkResponseFraming("PUT", r.head);
    REQUIRE(framing.error == UpstreamError::none);
    // The interim head is relayed as it is, and has no body.
    REQUIRE(rewriteResponseHead(r.head).joined() == r.head.bytes);
    rest.remove_prefix(r.head.head_length);
    if (r.head.interim()) {
      REQUIRE(framing.body.kind == BodyKind::none);
      continue;
    }
    BodyFramer body = BodyFramer::forFraming(framing.body);
    bool done = false;
    BodyError error = BodyError::none;
    rest.remove_prefix(body.feed(rest, &done, &error));
    REQUIRE(done);
    REQUIRE(error == BodyError::none);
  }
  REQUIRE(codes == std::vector<int>{100, 100, 200, 204});
}

// ---------------------------------------------------------------------------
// Response framing

struct ResponseFramingRow {
  std::string what;
  std::string method;
  std::string input;
  UpstreamError error;
  BodyKind kind = BodyKind::none;
  uint64_t length = 0;
  bool reusable = false;
};

TEST_CASE("response framing: RFC 9112 section 6.3, the exact answer", "[http_message]") {
  using E = UpstreamError;
  using K = BodyKind;
  static const std::vector<ResponseFramingRow> rows = {
      {"Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", E::none,
       K::content_length, 10, true},
      {"Content-Length 0", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", E::none,
       K::content_length, 0, true},
      {"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", E::none, K::none, 0, true},
      {"HEAD, chunked", "HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", E::none,
       K::none, 0, true},
      {"HEAD, no framing", "HEAD", "HTTP/1.1 404 Not Found\r\n\r\n", E::none, K::none, 0, true},
      {"204", "DELETE", "HTTP/1.1 204 No Content\r\n\r\n", E::none, K::none, 0, true},
      {"204 with a bad length ignored", "DELETE", "HTTP/1.1 204 x\r\nContent-Length: x\r\n\r\n",
       E::none, K::none, 0, true},
      {"304", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", E::none, K::none, 0,
       true},
      {"100", "PUT", "HTTP/1.1 100 Continue\r\n\r\n", E::none, K::none, 0, true},
      {"103", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", E::none, K::none, 0, true},
      {"101", "GET", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", E::bad_framing},
      {"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", E::none,
       K::chunked, 0, true},
      {"Chunked, any case", "GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n", E::none,
       K::chunked, 0, true},
      {"gzip, chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
       E::none, K::chunked, 0, true},
      {"gzip then chunked fields", "GET",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", E::none,
       K::chunked, 0, true},
      {"gzip only", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", E::none,
       K::until_close, 0, false},
      {"chunked, gzip", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
       E::none, K::until_close, 0, false},
      {"chunked twice", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
       E::bad_framing},
      {"chunked in two fields", "GET",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
       E::bad_framing},
      {"chunked with a parameter", "GET",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", E::bad_framing},
      {"empty coding", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip,,chunked\r\n\r\n",
       E::bad_framing},
      {"empty Transfer-Encoding", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
       E::bad_framing},
      {"TE and CL", "GET",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
       E::bad_framing},
      {"CL and TE", "GET",
       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
       E::bad_framing},
      {"TE on HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
       E::bad_framing},
      {"CL list, equal", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", E::none,
       K::content_length, 5, true},
      {"CL fields, equal", "GET",
       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", E::none,
       K::content_length, 5, true},
      {"CL list, differing", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
       E::bad_framing},
      {"CL fields, differing", "GET",
       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", E::bad_framing},
      {"CL list, empty element", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n",
       E::bad_framing},
      {"CL not digits", "GET", "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", E::bad_framing},
      {"CL negative", "GET", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", E::bad_framing},
      {"CL empty", "GET", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", E::bad_framing},
      {"CL 2^63", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n",
       E::bad_framing},
      {"no framing", "GET", "HTTP/1.1 200 OK\r\n\r\n", E::none, K::until_close, 0, false},
      {"Connection: close", "GET",
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", E::none,
       K::content_length, 1, false},
      {"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", E::none,
       K::content_length, 1, false},
      {"HTTP/1.0 keep-alive", "GET",
       "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive\r\n\r\n", E::none,
       K::content_length, 1, true},
      {"HTTP/1.0 keep-alive, no framing", "GET",
       "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", E::none, K::until_close, 0, false},
      {"Connection names Content-Length", "GET",
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: Content-Length\r\n\r\n",
       E::bad_framing},
      {"Connection names Transfer-Encoding", "GET",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n",
       E::bad_framing},
  };
  for (const ResponseFramingRow& row : rows) {
    INFO(row.what);
    const ResponseFraming f = checkResponseFraming(row.method, parseResponse(row.input));
    REQUIRE(f.error == row.error);
    if (row.error == UpstreamError::none) {
      REQUIRE(f.body.kind == row.kind);
      REQUIRE(f.body.length == row.length);
      REQUIRE(f.reusable == row.reusable);
    } else {
      REQUIRE_FALSE(f.reusable);
    }
  }
}

TEST_CASE("response rewrite: hop-by-hop dropped, our version", "[http_message]") {
  struct Row {
    std::string input;
    ConnectionField add;
    std::string expected;
  };
  static const std::vector<Row> rows = {
      {"HTTP/1.1 200 OK\r\nx-amz-request-id: A\r\nConnection: keep-alive, X-Secret\r\n"
       "Keep-Alive: timeout=5\r\nx-secret: 1\r\nProxy-Authenticate: Basic\r\n"
       "Content-Length:  2 \r\n\r\n",
       ConnectionField::none,
       "HTTP/1.1 200 OK\r\nx-amz-request-id: A\r\nContent-Length:  2 \r\n\r\n"},
      {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", ConnectionField::close,
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"},
      {"HTTP/1.0 204\r\n\r\n", ConnectionField::none, "HTTP/1.1 204\r\n\r\n"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-amz-checksum-crc32\r\n\r\n",
       ConnectionField::keep_alive,
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-amz-checksum-crc32\r\n"
       "Connection: keep-alive\r\n\r\n"},
      {"HTTP/1.1 100 Continue\r\nConnection: x\r\n\r\n", ConnectionField::none,
       "HTTP/1.1 100 Continue\r\n\r\n"},
  };
  for (const Row& row : rows) {
    INFO(row.input);
    const HeadPieces out = rewriteResponseHead(parseResponse(row.input), row.add);
    REQUIRE(out.joined() == row.expected);
    REQUIRE(out.size() == row.expected.size());
  }
  static const std::string plain = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: \"x\"\r\n\r\n";
  const HeadPieces out = rewriteResponseHead(parseResponse(plain));
  REQUIRE(out.pieces().size() == 1);
  REQUIRE(out.pieces()[0].data() == plain.data());
}

// ---------------------------------------------------------------------------
// Chunked bodies

struct ValidChunked {
  std::string what;
  std::string body;
};

const std::vector<ValidChunked>& validChunked() {
  static const std::vector<ValidChunked> rows = {
      {"last chunk only", "0\r\n\r\n"},
      {"one chunk", "5\r\nhello\r\n0\r\n\r\n"},
      {"two chunks", "5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"},
      {"upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n"},
      {"lower-case hex", "a\r\n0123456789\r\n0\r\n\r\n"},
      {"leading zeros", "0005\r\nhello\r\n000\r\n\r\n"},
      {"16 digits", "0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n"},
      {"data holding CRLF", "4\r\n\r\n\r\n\r\n0\r\n\r\n"},
      {"extension", "5;name=value\r\nhello\r\n0\r\n\r\n"},
      {"extensions, quoted", "5;a=\"b c;d\";e\r\nhello\r\n0;x\r\n\r\n"},
      {"whitespace before extension", "5 \t;ext\r\nhello\r\n0\r\n\r\n"},
      {"aws-chunked signature",
       "5;chunk-signature=0123456789abcdef\r\nhello\r\n0;chunk-signature=fedcba\r\n\r\n"},
      {"trailer", "0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"},
      {"trailers", "3\r\nabc\r\n0\r\nA: 1\r\nB:\r\nC:\t x \r\n\r\n"},
      {"long trailer name", "0\r\ncontent-length-is-not-this: 1\r\n\r\n"},
      {"extension line at the limit",
       "5;" + std::string(kMaxChunkLine - 2, 'a') + "\r\nhello\r\n0\r\n\r\n"},
      {"trailers at the limit", "0\r\nX: " + std::string(kMaxTrailerBytes - 7, 'v') + "\r\n\r\n"},
      {"binary data", "3\r\n\0\r\xff\r\n0\r\n\r\n"s},
      {"large chunk", "1000\r\n" + std::string(4096, 'd') + "\r\n0\r\n\r\n"},
  };
  return rows;
}

struct InvalidChunked {
  std::string what;
  std::string input;
  BodyError error;
  size_t at;  // offset of the offending byte
};

const std::vector<InvalidChunked>& invalidChunked() {
  static const std::vector<InvalidChunked> rows = {
      {"not hex", "x\r\n", BodyError::bad_chunk_size, 0},
      {"empty size", "\r\n", BodyError::bad_chunk_size, 0},
      {"negative", "-5\r\n", BodyError::bad_chunk_size, 0},
      {"sign", "+5\r\n", BodyError::bad_chunk_size, 0},
      {"leading space", " 5\r\n", BodyError::bad_chunk_size, 0},
      {"0x prefix", "0x5\r\n", BodyError::bad_chunk_size, 1},
      {"hex then junk", "5g\r\n", BodyError::bad_chunk_size, 1},
      {"trailing space", "5 \r\nhello\r\n", BodyError::bad_chunk_size, 2},
      {"space inside", "5 5\r\n", BodyError::bad_chunk_size, 2},
      {"empty size before extension", ";x\r\n", BodyError::bad_chunk_size, 0},
      {"17 digits", "00000000000000005\r\n", BodyError::chunk_size_too_large, 16},
      {"2^63", "8000000000000000\r\n", BodyError::chunk_size_too_large, 15},
      {"2^64 - 1", "ffffffffffffffff\r\n", BodyError::chunk_size_too_large, 15},
      {"size line LF only", "5\nhello\n", BodyError::bad_line_ending, 1},
      {"size line CR CR", "5\r\rhello", BodyError::bad_line_ending, 2},
      {"extension LF only", "5;a\nhello", BodyError::bad_line_ending, 3},
      {"extension control character", "5;a\x01\r\n", BodyError::bad_chunk_extension, 3},
      {"extension NUL", "5;a=\0\r\n"s, BodyError::bad_chunk_extension, 4},
      {"extension line too long", "5;" + std::string(kMaxChunkLine - 1, 'a') + "\r\n",
       BodyError::chunk_line_too_long, kMaxChunkLine},
      {"data longer than the size", "5\r\nhelloX\r\n", BodyError::missing_crlf, 8},
      {"data shorter than the size", "5\r\nhell\r\n0\r\n\r\n", BodyError::bad_line_ending, 8},
      {"data then LF", "5\r\nhello\n0\r\n\r\n", BodyError::bad_line_ending, 8},
      {"data then CR", "5\r\nhello\rX", BodyError::bad_line_ending, 9},
      {"last chunk then LF", "5\r\nhello\r\n0\r\n\n", BodyError::bad_line_ending, 13},
      {"last chunk, CR then junk", "0\r\n\rX", BodyError::bad_line_ending, 4},
      {"trailer obs-fold", "0\r\n X: y\r\n\r\n", BodyError::bad_trailer_field, 3},
      {"trailer continuation", "0\r\nA: 1\r\n\tmore\r\n\r\n", BodyError::bad_trailer_field, 9},
      {"trailer without colon", "0\r\nXy\r\n\r\n", BodyError::bad_trailer_field, 5},
      {"trailer space before colon", "0\r\nX : y\r\n\r\n", BodyError::bad_trailer_field, 4},
      {"trailer empty name", "0\r\n: y\r\n\r\n", BodyError::bad_trailer_field, 3},
      {"trailer control character", "0\r\nX: a\x02\r\n\r\n", BodyError::bad_trailer_field, 7},
      {"trailer LF only", "0\r\nX: y\n\r\n", BodyError::bad_line_ending, 7},
      {"trailer CR then junk", "0\r\nX: y\rZ", BodyError::bad_line_ending, 8},
      {"trailer Content-Length", "0\r\nContent-Length: 5\r\n\r\n", BodyError::bad_trailer_field,
       17},
      {"trailer Transfer-Encoding", "0\r\ntransfer-encoding: chunked\r\n\r\n",
       BodyError::bad_trailer_field, 20},
      {"trailer Host", "0\r\nHOST: x\r\n\r\n", BodyError::bad_trailer_field, 7},
      {"trailers too large", "0\r\nX: " + std::string(kMaxTrailerBytes, 'v') + "\r\n\r\n",
       BodyError::trailers_too_large, 3 + kMaxTrailerBytes},
  };
  return rows;
}

// Feeds `input` in the given piece sizes (the last piece takes the rest) and
// returns the total consumed and the final answer.
ChunkedResult feedInPieces(std::string_view input, const std::vector<size_t>& sizes) {
  ChunkedState state;
  ChunkedResult total;
  size_t pos = 0;
  size_t k = 0;
  while (pos < input.size()) {
    const size_t n = k < sizes.size() ? std::min(sizes[k], input.size() - pos) : input.size() - pos;
    ++k;
    const ChunkedResult r = feedChunked(state, input.substr(pos, n));
    REQUIRE(r.consumed <= n);
    total.consumed += r.consumed;
    total.done = r.done;
    total.error = r.error;
    if (r.done || r.error != BodyError::none) {
      // Nothing more is taken once the body has ended or failed.
      const ChunkedResult after = feedChunked(state, input.substr(pos + r.consumed));
      REQUIRE(after.consumed == 0);
      REQUIRE(after.done == r.done);
      REQUIRE(after.error == r.error);
      break;
    }
    REQUIRE(r.consumed == n);  // not done: everything given belongs to the body
    pos += n;
  }
  return total;
}

void requireSameChunked(const ChunkedResult& a, const ChunkedResult& b) {
  REQUIRE(a.consumed == b.consumed);
  REQUIRE(a.done == b.done);
  REQUIRE(a.error == b.error);
}

void requireChunkedSplitInvariant(std::string_view input, std::mt19937& rng) {
  ChunkedState one;
  const ChunkedResult whole = feedChunked(one, input);
  requireSameChunked(feedInPieces(input, std::vector<size_t>(input.size(), 1)), whole);
  for (int round = 0; round < 20; ++round) {
    std::vector<size_t> sizes;
    std::uniform_int_distribution<size_t> piece(0, 9);
    for (size_t covered = 0; covered < input.size();) {
      sizes.push_back(piece(rng));
      covered += sizes.back();
    }
    requireSameChunked(feedInPieces(input, sizes), whole);
  }
}

}  // namespace

TEST_CASE("chunked: valid bodies end exactly at their end", "[http_message]") {
  // Bytes after the body (a pipelined request) are not consumed.
  const std::string next = "GET /next HTTP/1.1\r\n\r\n";
  for (const ValidChunked& row : validChunked()) {
    INFO(row.what);
    ChunkedState state;
    const ChunkedResult r = feedChunked(state, row.body + next);
    REQUIRE(r.error == BodyError::none);
    REQUIRE(r.done);
    REQUIRE(r.consumed == row.body.size());
    // Without its last byte, the body is not over.
    ChunkedState partial;
    const ChunkedResult p =
        feedChunked(partial, std::string_view(row.body).substr(0, row.body.size() - 1));
    REQUIRE_FALSE(p.done);
    REQUIRE(p.error == BodyError::none);
    REQUIRE(p.consumed == row.body.size() - 1);
  }
}

TEST_CASE("chunked: rejections, the exact error and where", "[http_message]") {
  for (const InvalidChunked& row : invalidChunked()) {
    INFO(row.what);
    ChunkedState state;
    const ChunkedResult r = feedChunked(state, row.input);
    REQUIRE(r.error == row.error);
    REQUIRE_FALSE(r.done);
    REQUIRE(r.consumed == row.at);
    REQUIRE(state.phase == ChunkedState::Phase::failed);
    REQUIRE(bodyErrorName(r.error) != "");
  }
}

TEST_CASE("chunked: one byte at a time and random splits give the one-shot answer",
          "[http_message]") {
  std::mt19937 rng(20240101);
  const std::string next = "PUT /next HTTP/1.1\r\n";
  for (const ValidChunked& row : validChunked()) {
    INFO(row.what);
    requireChunkedSplitInvariant(row.body, rng);
    requireChunkedSplitInvariant(row.body + next, rng);
  }
  for (const InvalidChunked& row : invalidChunked()) {
    INFO(row.what);
    requireChunkedSplitInvariant(row.input, rng);
  }
}

TEST_CASE("chunked: the largest size is accepted", "[http_message]") {
  ChunkedState state;
  const ChunkedResult r = feedChunked(state, "7fffffffffffffff;x\r\nabc");
  REQUIRE(r.error == BodyError::none);
  REQUIRE_FALSE(r.done);
  REQUIRE(r.consumed == 23);
  REQUIRE(state.remaining == 0x7fffffffffffffffull - 3);
}

TEST_CASE("body framer: one interface over every framing", "[http_message]") {
  bool done = true;
  BodyError error = BodyError::truncated;

  SECTION("none") {
    BodyFramer f = BodyFramer::none();
    REQUIRE(f.done());
    REQUIRE(f.feed("GET / HTTP/1.1", &done, &error) == 0);
    REQUIRE(done);
    REQUIRE(error == BodyError::none);
    REQUIRE(f.atEof() == BodyError::none);
  }
  SECTION("content length 0") {
    BodyFramer f = BodyFramer::contentLength(0);
    REQUIRE(f.done());
    REQUIRE(f.feed("x", &done, &error) == 0);
    REQUIRE(done);
  }
  SECTION("content length") {
    BodyFramer f = BodyFramer::contentLength(5);
    REQUIRE_FALSE(f.done());
    REQUIRE(f.feed("", &done, &error) == 0);
    REQUIRE_FALSE(done);
    REQUIRE(f.feed("hel", &done, &error) == 3);
    REQUIRE_FALSE(done);
    REQUIRE(f.atEof() == BodyError::truncated);
    REQUIRE(f.feed("loGET /", &done, &error) == 2);
    REQUIRE(done);
    REQUIRE(error == BodyError::none);
    REQUIRE(f.feed("x", &done, &error) == 0);
    REQUIRE(done);
    REQUIRE(f.bodyBytes() == 5);
    REQUIRE(f.atEof() == BodyError::none);
  }
  SECTION("a length beyond size_t pieces") {
    BodyFramer f = BodyFramer::forFraming({BodyKind::content_length, 9223372036854775807ull});
    REQUIRE(f.kind() == BodyKind::content_length);
    REQUIRE(f.feed(std::string(1000, 'x'), &done, &error) == 1000);
    REQUIRE_FALSE(done);
  }
  SECTION("until close") {
    BodyFramer f = BodyFramer::untilClose();
    REQUIRE(f.feed("anything", &done, &error) == 8);
    REQUIRE_FALSE(done);
    REQUIRE(f.feed("more", &done, &error) == 4);
    REQUIRE(f.bodyBytes() == 12);
    REQUIRE(f.atEof() == BodyError::none);
  }
  SECTION("chunked") {
    BodyFramer f = BodyFramer::forFraming({BodyKind::chunked, 0});
    REQUIRE(f.kind() == BodyKind::chunked);
    REQUIRE(f.feed("5\r\nhel", &done, &error) == 6);
    REQUIRE_FALSE(done);
    REQUIRE(f.atEof() == BodyError::truncated);
    REQUIRE(f.feed("lo\r\n0\r\n\r\nGET", &done, &error) == 9);
    REQUIRE(done);
    REQUIRE(error == BodyError::none);
    REQUIRE(f.bodyBytes() == 15);
    REQUIRE(f.atEof() == BodyError::none);
  }
  SECTION("skipping bytes moved without a look (splice)") {
    BodyFramer f = BodyFramer::contentLength(10);
    REQUIRE(f.skippable() == 10);
    f.skip(4);
    REQUIRE(f.skippable() == 6);
    REQUIRE_FALSE(f.done());
    REQUIRE(f.atEof() == BodyError::truncated);
    REQUIRE(f.feed("ab", &done, &error) == 2);
    f.skip(100);  // never past the body's end
    REQUIRE(f.done());
    REQUIRE(f.skippable() == 0);
    REQUIRE(f.bodyBytes() == 10);
    REQUIRE(f.atEof() == BodyError::none);

    BodyFramer close = BodyFramer::untilClose();
    REQUIRE(close.skippable() == UINT64_MAX);
    close.skip(1 << 20);
    REQUIRE_FALSE(close.done());
    REQUIRE(close.bodyBytes() == 1 << 20);

    REQUIRE(BodyFramer::chunked().skippable() == 0);  // chunk framing must be read
    REQUIRE(BodyFramer::none().skippable() == 0);
    REQUIRE(BodyFramer::contentLength(0).skippable() == 0);
  }
  SECTION("chunked, malformed") {
    BodyFramer f = BodyFramer::chunked();
    REQUIRE(f.feed("5\r\nhelloXX", &done, &error) == 8);
    REQUIRE_FALSE(done);
    REQUIRE(error == BodyError::missing_crlf);
    REQUIRE(f.feed("\r\n", &done, &error) == 0);
    REQUIRE(error == BodyError::missing_crlf);
    REQUIRE(f.atEof() == BodyError::missing_crlf);
  }
  SECTION("null out-parameters") {
    BodyFramer f = BodyFramer::contentLength(2);
    REQUIRE(f.feed("abc", nullptr, nullptr) == 2);
    REQUIRE(f.done());
  }
}
