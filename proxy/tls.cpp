#include "proxy/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace s3gate {

namespace {

constexpr size_t kMaxKeptSessions = 1024;

}  // namespace

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
  // A peer that closes without close_notify after a framed message is normal
  // for HTTP; the framing, not TLS, says whether anything was cut short.
  SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF);
  int loaded = ca_file.empty() ? SSL_CTX_set_default_verify_paths(c)
                               : SSL_CTX_load_verify_locations(c, ca_file.c_str(), nullptr);
  if (loaded != 1) {
    *error = "CA " + (ca_file.empty() ? std::string("system store") : ca_file) + ": " +
             opensslErrors();
    return nullptr;
  }
  // Sessions are kept by us, per host, for resumption.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
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
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(host);
  if (it != sessions_.end()) {
    SSL_set_session(ssl.get(), it->second.get());
  }
  SSL_set_connect_state(ssl.get());
  return ssl;
}

void TlsClientContext::saveSession(const std::string& host, SSL* ssl) {
  SslSessionPtr session(SSL_get1_session(ssl));
  if (!session || SSL_SESSION_is_resumable(session.get()) != 1) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (sessions_.size() >= kMaxKeptSessions && sessions_.find(host) == sessions_.end()) {
    sessions_.erase(sessions_.begin());
  }
  sessions_[host] = std::move(session);
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
  SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
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
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
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
