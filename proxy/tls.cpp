#include "proxy/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace s3gate {

namespace {

constexpr size_t kMaxKeptSessions = 1024;
// With read-ahead OpenSSL reads as much as its buffer holds in one system
// call (several records) instead of a record's header and then its body. But
// a record cut at the buffer's end is completed by a read of exactly its tail,
// so the buffer holds four whole records as a TLS 1.3 AES-GCM sender writes
// them (16,406 bytes each), plus the 3 bytes OpenSSL skips to align the
// payload: a steady stream then takes one read per four records, not two
// (with 64 KiB, every read left the last 91 bytes of a record for a second).
constexpr size_t kTls13RecordBytes = 5 + 16384 + 1 + 16;
constexpr size_t kReadBufferBytes = 4 * kTls13RecordBytes + 3;

// TLS 1.3 suites (both sides) and TLS 1.2 ciphers (forward secret, AEAD only,
// the server side), fastest first.
constexpr const char* kSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kServerCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

void readAhead(SSL_CTX* c) {
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_default_read_buffer_len(c, kReadBufferBytes);
}

void freeSessionStore(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<TlsClientContext::SessionStore*>(ptr);
}

// The SSL_CTX ex_data slot holding a client context's SessionStore.
int sessionStoreIndex() {
  static const int index =
      SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, &freeSessionStore);
  return index;
}

// The host a client SSL was created for (its SNI, also the verified name).
const char* sslHost(SSL* ssl) {
  const char* host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (host == nullptr) {
    host = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
  }
  return host;
}

// A copy of `session` to keep. Not the session itself: OpenSSL marks a
// connection's session not resumable when the SSL is freed without a
// close_notify (ssl_clear_bad_session), which is how pooled and finished HTTP
// connections end; the framing, not TLS, says whether a message was complete.
SslSessionPtr keepable(SSL_SESSION* session) {
  if (session == nullptr || SSL_SESSION_is_resumable(session) != 1) {
    return nullptr;
  }
  return SslSessionPtr(SSL_SESSION_dup(session));
}

// OpenSSL's new-session callback; 0: the reference it passes stays its own.
int onNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* store = static_cast<TlsClientContext::SessionStore*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sessionStoreIndex()));
  const char* host = sslHost(ssl);
  SslSessionPtr copy = keepable(session);
  if (store != nullptr && host != nullptr && copy) {
    store->put(host, std::move(copy));
  }
  return 0;
}

}  // namespace

void TlsClientContext::SessionStore::put(const std::string& host, SslSessionPtr session) {
  std::lock_guard<std::mutex> lock(mu);
  if (sessions.size() >= kMaxKeptSessions && sessions.find(host) == sessions.end()) {
    sessions.erase(sessions.begin());
  }
  sessions[host] = std::move(session);
}

std::string opensslErrors() {
  std::string out;
  while (unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    if (!out.empty()) {
      out += "; ";
    }
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

std::shared_ptr<TlsClientContext> TlsClientContext::create(const std::string& ca_file,
                                                           std::string* error) {
  auto ctx = std::make_shared<TlsClientContext>();
  ctx->ctx_.reset(SSL_CTX_new(TLS_client_method()));
  if (!ctx->ctx_) {
    *error = opensslErrors();
    return nullptr;
  }
  SSL_CTX* c = ctx->ctx_.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  // A peer that closes without close_notify reads as an end that was not
  // clean (Stream::cleanEnd): normal after a framed message, a truncation of
  // a body delimited by the close.
  int loaded = ca_file.empty() ? SSL_CTX_set_default_verify_paths(c)
                               : SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr);
  if (loaded != 1) {
    *error =
        "CA " + (ca_file.empty() ? std::string("system store") : ca_file) + ": " + opensslErrors();
    return nullptr;
  }
  // Sessions are kept by us, per host, for resumption: OpenSSL hands each new
  // one (a TLS 1.2 session after the handshake, every TLS 1.3 ticket) to
  // onNewSession.
  auto* store = new SessionStore();
  if (SSL_CTX_set_ex_data(c, sessionStoreIndex(), store) != 1) {
    delete store;
    *error = "cannot set up the TLS session store: " + opensslErrors();
    return nullptr;
  }
  ctx->store_ = store;
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c, &onNewSession);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  readAhead(c);
  // Offered in the same order as the server side chooses (as browsers do):
  // an upstream that honours the client's order then uses AES-128-GCM.
  if (SSL_CTX_set_ciphersuites(c, kSuites) != 1) {
    *error = "cannot set the TLS cipher suites: " + opensslErrors();
    return nullptr;
  }
  return ctx;
}

SslPtr TlsClientContext::newSsl(int fd, const std::string& host) {
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl) {
    return nullptr;
  }
  if (SSL_set_fd(ssl.get(), fd) != 1 || SSL_set_tlsext_host_name(ssl.get(), host.c_str()) != 1 ||
      SSL_set1_host(ssl.get(), host.c_str()) != 1) {
    return nullptr;
  }
  SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  {
    std::lock_guard<std::mutex> lock(store_->mu);
    auto it = store_->sessions.find(host);
    if (it != store_->sessions.end()) {
      SSL_set_session(ssl.get(), it->second.get());
    }
  }
  SSL_set_connect_state(ssl.get());
  return ssl;
}

void TlsClientContext::saveSession(const std::string& host, SSL* ssl) {
  SslSessionPtr copy = keepable(SSL_get0_session(ssl));
  if (copy) {
    store_->put(host, std::move(copy));
  }
}

std::shared_ptr<TlsServerContext> TlsServerContext::create(const std::string& certificate,
                                                           const std::string& private_key,
                                                           const std::string& client_ca,
                                                           std::string* error) {
  auto ctx = std::make_shared<TlsServerContext>();
  ctx->ctx_.reset(SSL_CTX_new(TLS_server_method()));
  if (!ctx->ctx_) {
    *error = opensslErrors();
    return nullptr;
  }
  SSL_CTX* c = ctx->ctx_.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(
      c, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  readAhead(c);
  // The server chooses, and AES-128-GCM first: it is what S3 itself prefers,
  // and a third faster than AES-256 on every byte this proxy encrypts.
  if (SSL_CTX_set_ciphersuites(c, kSuites) != 1 ||
      SSL_CTX_set_cipher_list(c, kServerCiphers) != 1) {
    *error = "cannot set the TLS cipher suites: " + opensslErrors();
    return nullptr;
  }
  // Resumed sessions must belong to this service (required once client
  // certificates are verified).
  static const unsigned char kSessionContext[] = "s3gate";
  SSL_CTX_set_session_id_context(c, kSessionContext, sizeof(kSessionContext) - 1);
  if (SSL_CTX_use_certificate_chain_file(c, certificate.c_str()) != 1) {
    *error = "certificate " + certificate + ": " + opensslErrors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(c, private_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    *error = "private_key " + private_key + ": " + opensslErrors();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    *error = "private_key " + private_key + " does not match " + certificate;
    return nullptr;
  }
  if (!client_ca.empty()) {
    if (SSL_CTX_load_verify_locations(c, client_ca.c_str(), nullptr) != 1) {
      *error = "client_ca " + client_ca + ": " + opensslErrors();
      return nullptr;
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(client_ca.c_str());
    if (names != nullptr) {
      SSL_CTX_set_client_CA_list(c, names);  // the context owns the list from here
    }
    // A client without a certificate completes the handshake and then gets a
    // 403 client_certificate_required it can read; a bad certificate fails here.
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
    ctx->require_client_cert_ = true;
  }
  return ctx;
}

SslPtr TlsServerContext::newSsl(int fd) {
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    return nullptr;
  }
  SSL_set_accept_state(ssl.get());
  return ssl;
}

SslPtr TlsServerContext::newSsl(int fd, std::string_view prefix) {
  if (prefix.empty()) {
    return newSsl(fd);
  }
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl) {
    return nullptr;
  }
  // Reads go through a buffer BIO preloaded with the prefix, then the socket;
  // writes go straight to the socket.
  BIO* socket_read = BIO_new_socket(fd, BIO_NOCLOSE);
  BIO* buffer = BIO_new(BIO_f_buffer());
  BIO* socket_write = BIO_new_socket(fd, BIO_NOCLOSE);
  if (socket_read == nullptr || buffer == nullptr || socket_write == nullptr ||
      BIO_set_buffer_read_data(buffer, const_cast<char*>(prefix.data()),
                               static_cast<long>(prefix.size())) != 1) {
    BIO_free(socket_read);
    BIO_free(buffer);
    BIO_free(socket_write);
    return nullptr;
  }
  BIO_push(buffer, socket_read);
  SSL_set_bio(ssl.get(), buffer, socket_write);  // the SSL owns both chains now
  SSL_set_accept_state(ssl.get());
  return ssl;
}

void TlsServerContext::offerHttp11Only() {
  SSL_CTX_set_alpn_select_cb(
      ctx_.get(),
      [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
         unsigned int inlen, void*) -> int {
        static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
        unsigned char* chosen = nullptr;
        if (SSL_select_next_proto(&chosen, outlen, kHttp11, sizeof(kHttp11), in, inlen) ==
            OPENSSL_NPN_NEGOTIATED) {
          *out = chosen;
          return SSL_TLSEXT_ERR_OK;
        }
        return SSL_TLSEXT_ERR_NOACK;  // no ALPN: HTTP/1.1 all the same
      },
      nullptr);
}

bool TlsServerContext::covers(std::string_view host) const {
  X509* cert = SSL_CTX_get0_certificate(ctx_.get());
  return cert != nullptr && X509_check_host(cert, host.data(), host.size(),
                                            X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, nullptr) == 1;
}

std::string peerCommonName(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) {
    return {};
  }
  X509_NAME* subject = X509_get_subject_name(cert);
  int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) {
    return {};
  }
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) {
    return {};
  }
  std::string cn(reinterpret_cast<const char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return cn;
}

}  // namespace s3gate
