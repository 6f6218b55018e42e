// ClientHello parsing against real ClientHellos: made by OpenSSL here, and captured
// from curl and openssl s_client (test/data/clienthello/).

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "proxy/tls_peek.h"

using namespace s3gate;

namespace {

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};

// The bytes a TLS client sends first, with `server_name` as SNI (none if empty).
std::string clientHello(const std::string& server_name, int max_version = TLS1_3_VERSION) {
  std::unique_ptr<SSL_CTX, SslCtxDeleter> ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(ctx);
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  std::unique_ptr<SSL, SslDeleter> ssl(SSL_new(ctx.get()));
  REQUIRE(ssl);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), rbio, wbio);  // the SSL owns both BIOs from here
  if (!server_name.empty()) {
    SSL_set_tlsext_host_name(ssl.get(), server_name.c_str());
  }
  SSL_set_connect_state(ssl.get());
  REQUIRE(SSL_do_handshake(ssl.get()) <= 0);  // waits for the server
  char* data = nullptr;
  long len = BIO_get_mem_data(wbio, &data);
  REQUIRE(len > 0);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

TEST_CASE("peekClientHello finds the server name of TLS 1.3 and 1.2 hellos") {
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    std::string hello = clientHello("media.s3.us-west-2.amazonaws.com", version);
    ClientHelloInfo info = peekClientHello(hello);
    CHECK(info.status == ClientHelloStatus::ok);
    CHECK(info.server_name == "media.s3.us-west-2.amazonaws.com");
  }
}

TEST_CASE("peekClientHello says incomplete for every proper prefix") {
  std::string hello = clientHello("a.example");
  for (size_t n = 1; n < hello.size(); ++n) {
    ClientHelloInfo info = peekClientHello(std::string_view(hello).substr(0, n));
    INFO("prefix " << n);
    REQUIRE(info.status == ClientHelloStatus::incomplete);
  }
  CHECK(peekClientHello("").status == ClientHelloStatus::incomplete);
}

TEST_CASE("peekClientHello tells a hello without SNI from bytes that are not TLS") {
  CHECK(peekClientHello(clientHello("")).status == ClientHelloStatus::no_sni);
  CHECK(peekClientHello("GET / HTTP/1.1\r\n\r\n").status == ClientHelloStatus::not_tls);
  CHECK(peekClientHello("G").status == ClientHelloStatus::not_tls);
  // An SSH banner: not TLS.
  CHECK(peekClientHello("SSH-2.0-x\r\n").status == ClientHelloStatus::not_tls);
}

TEST_CASE("peekClientHello: whatever a TLS server could take for a hello is TLS", "[tls_peek]") {
  const std::string hello = clientHello("c.example");
  struct Row {
    const char* what;
    std::string bytes;
    ClientHelloStatus status;
    std::string server_name;
  };
  auto with_version = [&](uint8_t major, uint8_t minor) {
    std::string r = hello;
    r[1] = static_cast<char>(major);
    r[2] = static_cast<char>(minor);
    return r;
  };
  // An SSLv2-format ClientHello (RFC 6101 appendix E.2): a two-byte header
  // with the high bit set, msg_type 1, version, three lengths, cipher specs,
  // challenge. OpenSSL still reads it (to negotiate TLS); it has no extensions.
  const std::string v2_body = std::string("\x01\x03\x01\x00\x03\x00\x00\x00\x10", 9) +
                              std::string("\x00\x00\x2f", 3) + std::string(16, '\x42');
  const std::string v2 = std::string(1, static_cast<char>(0x80)) +
                         std::string(1, static_cast<char>(v2_body.size())) + v2_body;
  const std::vector<Row> rows = {
      // A handshake record is TLS whatever its version says: the hello is read.
      {"record version 2.0", with_version(2, 0), ClientHelloStatus::ok, "c.example"},
      {"record version 0.0", with_version(0, 0), ClientHelloStatus::ok, "c.example"},
      {"record version ff.ff", with_version(0xff, 0xff), ClientHelloStatus::ok, "c.example"},
      {"record version 2.0, not a hello", std::string("\x16\x02\x00\x00\x04\x02\x00\x00\x00", 9),
       ClientHelloStatus::malformed, ""},
      {"record version 2.0, a prefix", with_version(2, 0).substr(0, 9),
       ClientHelloStatus::incomplete, ""},
      {"SSLv2 hello", v2, ClientHelloStatus::no_sni, ""},
      {"SSLv2 hello, 3 bytes", v2.substr(0, 3), ClientHelloStatus::no_sni, ""},
      {"SSLv2 hello, 2 bytes", v2.substr(0, 2), ClientHelloStatus::incomplete, ""},
      {"SSLv2 hello, 1 byte", v2.substr(0, 1), ClientHelloStatus::incomplete, ""},
      {"high bit, not a hello", std::string("\x80\x10\x04rest", 7), ClientHelloStatus::not_tls, ""},
      // Another TLS record before the hello (OpenSSL skips warning alerts).
      {"alert, then the hello", std::string("\x15\x03\x03\x00\x02\x01\x5a", 7) + hello,
       ClientHelloStatus::malformed, ""},
      {"change_cipher_spec", std::string("\x14\x03\x03\x00\x01\x01", 6),
       ClientHelloStatus::malformed, ""},
      {"application data", std::string("\x17\x03\x03\x00\x01x", 6), ClientHelloStatus::malformed,
       ""},
      {"alert type, 1 byte", std::string("\x15", 1), ClientHelloStatus::incomplete, ""},
      {"alert type, no TLS version", std::string("\x15\x41rest", 6), ClientHelloStatus::not_tls,
       ""},
      // Plain text stays plain.
      {"HTTP", "GET / HTTP/1.1\r\nHost: c.example\r\n\r\n", ClientHelloStatus::not_tls, ""},
      {"HTTP, 1 byte", "G", ClientHelloStatus::not_tls, ""},
      {"SSH", "SSH-2.0-OpenSSH_9.2\r\n", ClientHelloStatus::not_tls, ""},
  };
  for (const Row& row : rows) {
    CAPTURE(row.what);
    ClientHelloInfo info = peekClientHello(row.bytes);
    CHECK(info.status == row.status);
    CHECK(info.server_name == row.server_name);
  }
}

TEST_CASE("inspectSni: a tunnel's hello must name the CONNECT host", "[tls_peek]") {
  const std::string expected = "media.s3.us-west-2.amazonaws.com";
  const std::string right = clientHello(expected);
  const std::string upper = clientHello("MEDIA.s3.us-west-2.amazonaws.com.");
  const std::string other = clientHello("other.s3.us-west-2.amazonaws.com");
  std::string other_v2 = other;  // a record version a server might let pass
  other_v2[1] = 2;
  const std::string v2_hello("\x80\x0c\x01\x03\x01\x00\x03\x00\x00\x00\x00\x00\x00\x2f", 14);
  struct Row {
    const char* what;
    std::string bytes;
    InspectVerdict verdict;
  };
  const std::vector<Row> rows = {
      {"the CONNECT host", right, InspectVerdict::pass},
      {"the CONNECT host, other case and a final dot", upper, InspectVerdict::pass},
      {"the CONNECT host and more bytes", right + "\x17\x03\x03", InspectVerdict::pass},
      {"another host", other, InspectVerdict::deny},
      {"another host, record version 2", other_v2, InspectVerdict::deny},
      {"no server name", clientHello(""), InspectVerdict::deny},
      {"SSLv2-format hello", v2_hello, InspectVerdict::deny},
      {"alert first", std::string("\x15\x03\x03\x00\x02\x01\x5a", 7) + right, InspectVerdict::deny},
      {"half a hello", right.substr(0, right.size() / 2), InspectVerdict::need_more},
      {"one byte", right.substr(0, 1), InspectVerdict::need_more},
      {"plain HTTP", "GET / HTTP/1.1\r\n\r\n", InspectVerdict::pass},
  };
  const FirstBytesInspector inspector = sniInspector(expected);
  for (const Row& row : rows) {
    CAPTURE(row.what);
    CHECK(inspectSni(row.bytes, expected) == row.verdict);
    CHECK(inspector(row.bytes) == row.verdict);
  }
}

TEST_CASE("peekClientHello rejects malformed handshakes") {
  std::string hello = clientHello("b.example");
  // A record length of zero.
  std::string zero = hello.substr(0, 3) + std::string("\x00\x00", 2);
  CHECK(peekClientHello(zero).status == ClientHelloStatus::malformed);
  // A handshake message that is not a ClientHello (ServerHello = 2).
  std::string wrong_type = hello;
  wrong_type[5] = 2;
  CHECK(peekClientHello(wrong_type).status == ClientHelloStatus::malformed);
  // Extensions length pointing past the message.
  std::string truncated = hello;
  truncated[hello.size() - 1] ^= 0x55;
  ClientHelloInfo info = peekClientHello(truncated);
  CHECK(info.status != ClientHelloStatus::incomplete);
}

TEST_CASE("peekClientHello reads a hello split over two records") {
  std::string hello = clientHello("split.example");
  std::string body = hello.substr(5);
  size_t half = body.size() / 2;
  auto record = [](std::string_view part) {
    std::string r("\x16\x03\x01", 3);
    r += static_cast<char>(part.size() >> 8);
    r += static_cast<char>(part.size() & 0xff);
    r += part;
    return r;
  };
  std::string two =
      record(std::string_view(body).substr(0, half)) + record(std::string_view(body).substr(half));
  ClientHelloInfo info = peekClientHello(two);
  CHECK(info.status == ClientHelloStatus::ok);
  CHECK(info.server_name == "split.example");
}

// Real ClientHellos captured from curl and openssl s_client by
// test/data/clienthello/capture.py (see there for the command lines).
namespace {

std::string readCapture(const std::string& name) {
  const std::string path = std::string(S3GATE_TEST_DATA) + "/clienthello/" + name;
  std::ifstream in(path, std::ios::binary);
  INFO("test data file " << path);
  REQUIRE(in.good());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string data = bytes.str();
  REQUIRE(data.size() > 5);
  REQUIRE(data[0] == '\x16');  // a handshake record
  return data;
}

// The handshake bytes of `hello` (one or more records) framed again as two records,
// the first holding `first` bytes of it.
std::string reframe(const std::string& hello, size_t first) {
  std::string body;
  size_t at = 0;
  while (at + 5 <= hello.size()) {  // bounded: every pass consumes a record header
    const size_t len = (static_cast<unsigned char>(hello[at + 3]) << 8) |
                       static_cast<unsigned char>(hello[at + 4]);
    body += hello.substr(at + 5, len);
    at += 5 + len;
  }
  auto record = [&hello](std::string_view part) {
    std::string r = hello.substr(0, 3);  // content type and the client's record version
    r += static_cast<char>(part.size() >> 8);
    r += static_cast<char>(part.size() & 0xff);
    r += part;
    return r;
  };
  return record(std::string_view(body).substr(0, first)) +
         record(std::string_view(body).substr(first));
}

struct Capture {
  const char* file;
  ClientHelloStatus status;
  const char* server_name;
};

const Capture kCaptures[] = {
    {"curl.bin", ClientHelloStatus::ok, "media.s3.us-west-2.amazonaws.com"},
    {"openssl-s_client.bin", ClientHelloStatus::ok, "media.s3.us-west-2.amazonaws.com"},
    {"openssl-s_client-nosni.bin", ClientHelloStatus::no_sni, ""},
};

}  // namespace

TEST_CASE("peekClientHello reads the captured curl and openssl ClientHellos", "[tls_peek]") {
  for (const auto& capture : kCaptures) {
    CAPTURE(capture.file);
    const std::string hello = readCapture(capture.file);
    const ClientHelloInfo info = peekClientHello(hello);
    CHECK(info.status == capture.status);
    CHECK(info.server_name == capture.server_name);
    // Bytes the client sends after its hello do not change the answer.
    const ClientHelloInfo more = peekClientHello(hello + std::string(64, '\x17'));
    CHECK(more.status == capture.status);
    CHECK(more.server_name == capture.server_name);
  }
}

TEST_CASE("captured ClientHellos: every prefix is incomplete", "[tls_peek]") {
  for (const auto& capture : kCaptures) {
    CAPTURE(capture.file);
    const std::string hello = readCapture(capture.file);
    // As a relay sees them: the bytes so far, one more each time.
    for (size_t n = 0; n < hello.size(); ++n) {
      INFO("first " << n << " of " << hello.size() << " bytes");
      REQUIRE(peekClientHello(std::string_view(hello).substr(0, n)).status ==
              ClientHelloStatus::incomplete);
    }
    CHECK(peekClientHello(hello).status == capture.status);
  }
}

TEST_CASE("captured ClientHellos: split over two records at every byte", "[tls_peek]") {
  for (const auto& capture : kCaptures) {
    CAPTURE(capture.file);
    const std::string hello = readCapture(capture.file);
    const size_t body = hello.size() - 5;  // the captures are one record each
    REQUIRE(static_cast<size_t>((static_cast<unsigned char>(hello[3]) << 8) |
                                static_cast<unsigned char>(hello[4])) == body);
    for (size_t first = 1; first < body; ++first) {
      INFO("first record holds " << first << " of " << body << " bytes");
      const std::string two = reframe(hello, first);
      REQUIRE(two.size() == hello.size() + 5);
      const ClientHelloInfo info = peekClientHello(two);
      REQUIRE(info.status == capture.status);
      REQUIRE(info.server_name == capture.server_name);
      // ...and each prefix of the two records is still incomplete.
      for (size_t n : {first + 4, first + 5, first + 9, two.size() - 1}) {
        REQUIRE(peekClientHello(std::string_view(two).substr(0, n)).status ==
                ClientHelloStatus::incomplete);
      }
    }
  }
}
