#pragma once
// OpenSSL contexts and owned handles. A client context verifies upstreams
// (system store or a CA file, hostname checked, TLS 1.2 minimum, sessions kept
// per host for resumption); a server context serves a certificate (HTTPS
// listeners, inspected tunnels), optionally asking for client certificates.

#include <openssl/ssl.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace s3gate {

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
struct SslSessionDeleter {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using SslPtr = std::unique_ptr<SSL, SslDeleter>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, SslSessionDeleter>;

// The last OpenSSL error queue as one line (and the queue cleared).
std::string opensslErrors();

class TlsClientContext {
 public:
  // ca_file empty: the system store. Returns nullptr and sets *error on failure.
  static std::shared_ptr<TlsClientContext> create(const std::string& ca_file, std::string* error);

  // A client SSL for `host` on `fd`: SNI set, hostname verification on, a kept
  // session for the host offered for resumption.
  SslPtr newSsl(int fd, const std::string& host);
  // After a handshake: keep the session for the next connection to `host`.
  // Sessions are also kept without it, as OpenSSL announces them (TLS 1.3
  // tickets come after the handshake), for the name the SSL was created for.
  void saveSession(const std::string& host, SSL* ssl);

  // The kept sessions, per host. Owned by the SSL_CTX (its ex_data), so that a
  // ticket arriving on a connection that outlives this object (a reload swapped
  // the context) still has somewhere to go.
  struct SessionStore {
    std::mutex mu;  // shared by the workers
    std::unordered_map<std::string, SslSessionPtr> sessions;
    void put(const std::string& host, SslSessionPtr session);
  };

 private:
  SslCtxPtr ctx_;
  SessionStore* store_ = nullptr;  // owned by ctx_
};

class TlsServerContext {
 public:
  // client_ca non-empty: a client certificate signed by it is required.
  static std::shared_ptr<TlsServerContext> create(const std::string& certificate,
                                                  const std::string& private_key,
                                                  const std::string& client_ca, std::string* error);
  SslPtr newSsl(int fd);
  // The same, with `prefix` (bytes already read from the socket: a ClientHello
  // that came with the CONNECT) read before anything from the socket.
  SslPtr newSsl(int fd, std::string_view prefix);
  bool requiresClientCertificate() const { return require_client_cert_; }
  // ALPN: choose http/1.1 when offered, never anything else (inspection
  // speaks HTTP/1.1 to the client).
  void offerHttp11Only();
  // Whether the certificate names `host` (a wildcard covers one label only).
  bool covers(std::string_view host) const;

 private:
  SslCtxPtr ctx_;
  bool require_client_cert_ = false;
};

// The subject CN of the peer's verified certificate, or "" when there is none.
std::string peerCommonName(SSL* ssl);

}  // namespace s3gate
