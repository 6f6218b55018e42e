// TLS streams over a socket pair: records gathered into one read, ciphertext
// that the socket does not take held back until the write is retried, and the
// end of the stream after everything written.

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "proxy/socket.h"
#include "proxy/stream.h"
#include "proxy/tls.h"

namespace s3gate {
namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct FileDeleter {
  void operator()(FILE* f) const { std::fclose(f); }
};

// A self-signed certificate for "localhost" and its key, in a temporary directory.
class TestCertificate {
 public:
  TestCertificate() {
    char templ[] = "/tmp/s3gate-stream-XXXXXX";
    REQUIRE(mkdtemp(templ) != nullptr);
    dir_ = templ;
    cert_path = dir_ + "/cert.pem";
    key_path = dir_ + "/key.pem";
    std::unique_ptr<EVP_PKEY, PkeyDeleter> key(EVP_EC_gen("P-256"));
    REQUIRE(key);
    std::unique_ptr<X509, X509Deleter> cert(X509_new());
    REQUIRE(cert);
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);
    X509_set_pubkey(cert.get(), key.get());
    REQUIRE(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);
    std::unique_ptr<FILE, FileDeleter> c(std::fopen(cert_path.c_str(), "w"));
    std::unique_ptr<FILE, FileDeleter> k(std::fopen(key_path.c_str(), "w"));
    REQUIRE((c && k));
    REQUIRE(PEM_write_X509(c.get(), cert.get()) == 1);
    REQUIRE(PEM_write_PrivateKey(k.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1);
  }
  ~TestCertificate() {
    std::remove(cert_path.c_str());
    std::remove(key_path.c_str());
    rmdir(dir_.c_str());
  }
  std::string cert_path;
  std::string key_path;

 private:
  std::string dir_;
};

// A client and a server TLS stream over a non-blocking socket pair, handshake done.
struct TlsPair {
  explicit TlsPair(int send_buffer = 0) {
    std::string error;
    server_ctx = TlsServerContext::create(cert.cert_path, cert.key_path, "", &error);
    REQUIRE(server_ctx);
    client_ctx = TlsClientContext::create(cert.cert_path, &error);
    REQUIRE(client_ctx);
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    UniqueFd a(fds[0]);
    UniqueFd b(fds[1]);
    if (send_buffer > 0) {
      setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(send_buffer));
    }
    SslPtr client_ssl = client_ctx->newSsl(a.get(), "localhost");
    SslPtr server_ssl = server_ctx->newSsl(b.get());
    REQUIRE((client_ssl && server_ssl));
    client = Stream::tls(std::move(a), std::move(client_ssl));
    server = Stream::tls(std::move(b), std::move(server_ssl));
    bool client_done = false;
    bool server_done = false;
    for (int i = 0; i < 100 && !(client_done && server_done); ++i) {
      if (!client_done) {
        Stream::Result r = client->handshake();
        REQUIRE(r.status != Stream::Io::error);
        client_done = r.status == Stream::Io::ok;
      }
      if (!server_done) {
        Stream::Result r = server->handshake();
        REQUIRE(r.status != Stream::Io::error);
        server_done = r.status == Stream::Io::ok;
      }
    }
    REQUIRE(client_done);
    REQUIRE(server_done);
  }

  // Reads what `from` has now, up to `max` bytes, appending to `out`.
  static size_t drain(Stream& from, std::string* out, size_t max = 1 << 20) {
    char buf[256 * 1024];
    size_t total = 0;
    while (total < max) {
      Stream::Result r = from.read(buf, std::min(sizeof(buf), max - total));
      if (r.status != Stream::Io::ok || r.bytes == 0) {
        break;
      }
      out->append(buf, r.bytes);
      total += r.bytes;
    }
    return total;
  }

  TestCertificate cert;
  std::shared_ptr<TlsServerContext> server_ctx;
  std::shared_ptr<TlsClientContext> client_ctx;
  std::unique_ptr<Stream> client;
  std::unique_ptr<Stream> server;
};

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  }
  return s;
}

TEST_CASE("a TLS read returns several records at once") {
  TlsPair pair;
  const std::string data = pattern(64 * 1024);  // four full records
  Stream::Result w = pair.client->write(data.data(), data.size());
  REQUIRE(w.status == Stream::Io::ok);
  REQUIRE(w.bytes == data.size());
  std::string got(128 * 1024, '\0');
  Stream::Result r = pair.server->read(got.data(), got.size());
  REQUIRE(r.status == Stream::Io::ok);
  // One record is 16 KiB: more than that in one call means records were gathered.
  CHECK(r.bytes == data.size());
  got.resize(r.bytes);
  CHECK(got == data.substr(0, r.bytes));
  CHECK_FALSE(pair.server->hasBufferedInput());
}

// Counts the system calls a TLS stream's socket BIO makes to read.
long countReads(BIO* bio, int oper, const char*, size_t, int, long, int ret, size_t*) {
  if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
    ++*reinterpret_cast<int*>(BIO_get_callback_arg(bio));
  }
  return ret;
}

TEST_CASE("a steady stream of full TLS records is read four records per system call") {
  TlsPair pair;
  int reads = 0;
  BIO* rbio = SSL_get_rbio(pair.server->ssl());
  BIO_set_callback_arg(rbio, reinterpret_cast<char*>(&reads));
  BIO_set_callback_ex(rbio, &countReads);
  const std::string chunk = pattern(64 * 1024);  // four full records per write
  std::string got;
  const int kWrites = 16;
  for (int i = 0; i < kWrites; ++i) {
    REQUIRE(pair.client->write(chunk.data(), chunk.size()).bytes == chunk.size());
    TlsPair::drain(*pair.server, &got);
  }
  BIO_set_callback_ex(rbio, nullptr);
  REQUIRE(got.size() == chunk.size() * kWrites);
  // One read per write, plus the one per drain that finds the socket empty. A
  // read buffer that does not end on a record boundary needs a second read
  // for the cut record's tail each time (three per write).
  CHECK(reads <= 2 * kWrites);
}

TEST_CASE("a TLS read bounded by its buffer leaves the rest announced as buffered") {
  TlsPair pair;
  const std::string data = pattern(48 * 1024);
  REQUIRE(pair.client->write(data.data(), data.size()).bytes == data.size());
  std::string got;
  char buf[1000];
  Stream::Result r = pair.server->read(buf, sizeof(buf));
  REQUIRE(r.status == Stream::Io::ok);
  got.append(buf, r.bytes);
  // No socket event will say so: the stream must.
  CHECK(pair.server->hasBufferedInput());
  TlsPair::drain(*pair.server, &got);
  CHECK(got == data);
  CHECK_FALSE(pair.server->hasBufferedInput());
}

TEST_CASE("a TLS write the socket cannot take is held, retried and never duplicated") {
  TlsPair pair(16 * 1024);
  const std::string data = pattern(4 * 1024 * 1024);
  std::string received;
  size_t sent = 0;
  int blocked = 0;
  for (int round = 0; round < 100000 && sent < data.size(); ++round) {
    Stream::Result w = pair.client->write(data.data() + sent, data.size() - sent);
    REQUIRE(w.status != Stream::Io::error);
    REQUIRE(w.status != Stream::Io::eof);
    if (w.status == Stream::Io::ok) {
      REQUIRE(w.bytes > 0);
      sent += w.bytes;
      continue;
    }
    // Blocked: what it waits for is the socket becoming writable.
    REQUIRE(pair.client->wantEvents() == EV_WRITE);
    ++blocked;
    TlsPair::drain(*pair.server, &received, 32 * 1024);
  }
  REQUIRE(sent == data.size());
  CHECK(blocked > 0);
  for (int round = 0; round < 1000 && received.size() < data.size(); ++round) {
    TlsPair::drain(*pair.server, &received);
  }
  REQUIRE(received.size() == data.size());
  CHECK(received == data);
}

TEST_CASE("a TLS stream's end comes after everything written before it") {
  TlsPair pair;
  const std::string data = pattern(100 * 1000);
  size_t sent = 0;
  std::string received;
  for (int round = 0; round < 1000 && sent < data.size(); ++round) {
    Stream::Result w = pair.client->write(data.data() + sent, data.size() - sent);
    REQUIRE(w.status != Stream::Io::error);
    sent += w.status == Stream::Io::ok ? w.bytes : 0;
    TlsPair::drain(*pair.server, &received);
  }
  REQUIRE(sent == data.size());
  pair.client->shutdownWrite();
  char buf[64 * 1024];
  Stream::Result r{Stream::Io::ok, 0};
  for (int round = 0; round < 1000; ++round) {
    r = pair.server->read(buf, sizeof(buf));
    if (r.status == Stream::Io::ok) {
      received.append(buf, r.bytes);
      continue;
    }
    if (r.status != Stream::Io::would_block) {
      break;
    }
  }
  CHECK(r.status == Stream::Io::eof);
  CHECK(received == data);
}

}  // namespace
}  // namespace s3gate
