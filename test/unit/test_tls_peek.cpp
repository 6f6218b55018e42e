// ClientHello parsing against real ClientHellos: made by OpenSSL here, and captured
// from curl and openssl s_client (test/data/clienthello/).

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

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
  // An SSH banner, a TLS alert record: not a handshake.
  CHECK(peekClientHello("SSH-2.0-x\r\n").status == ClientHelloStatus::not_tls);
  CHECK(peekClientHello(std::string("\x15\x03\x03\x00\x02\x02\x28", 7)).status ==
        ClientHelloStatus::not_tls);
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
