#include "proxy/preamble.h"

#include <openssl/bio.h>
#include <sys/socket.h>

#include <cerrno>

#include "proxy/event_ptr.h"
#include "proxy/proxy_protocol.h"

namespace s3gate {

namespace {

SocketAddress unmappedAddress(const SocketAddress& address) {
  return SocketAddress(address.ip().unmapped(), address.port());
}

class PreambleImpl final : public Preamble {
 public:
  PreambleImpl(event_base* base, std::unique_ptr<Stream> client, const ListenerConfig& listener,
               std::shared_ptr<TlsServerContext> tls, const SocketAddress& peer, Done done)
      : base_(base),
        client_(std::move(client)),
        listener_(listener),
        tls_(std::move(tls)),
        peer_(peer),
        done_(std::move(done)) {
    outcome_.origin = originOfPeer(peer);
  }

  bool start(const Config& config) {
    deliver_.reset(event_new(base_, -1, 0, &onDeliver, this));
    if (!deliver_) {
      return false;
    }
    if (listener_.proxy_protocol && !config.trusted_proxies.empty() &&
        !anyContains(config.trusted_proxies, peer_.ip())) {
      fail(Reason::untrusted_proxy, CloseCause::proxy_close, false);
      return true;
    }
    if (listener_.proxy_protocol) {
      // Edge-triggered: a peeked, incomplete header leaves the socket readable,
      // and only new bytes are worth another look.
      read_.reset(event_new(base_, client_->fd(), EV_READ | EV_PERSIST | EV_ET, &onEvent, this));
      if (!read_ || event_add(read_.get(), nullptr) != 0) {
        return false;
      }
      readProxyHeader();  // bytes may be there already
      return true;
    }
    startHandshake();
    return true;
  }

  bool sawBytes() const override {
    if (seen_ > 0) {
      return true;
    }
    return client_ && client_->isTls() && BIO_number_read(SSL_get_rbio(client_->ssl())) > 0;
  }
  const ClientOrigin& origin() const override { return outcome_.origin; }

 private:
  static void onEvent(evutil_socket_t, short what, void* arg) {
    auto* self = static_cast<PreambleImpl*>(arg);
    if (self->finished_) {
      return;
    }
    if (self->handshaking_) {
      self->continueHandshake();
    } else if (what & EV_READ) {
      self->readProxyHeader();
    }
  }

  static void onDeliver(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<PreambleImpl*>(arg);
    Done done = std::move(self->done_);
    done(std::move(self->outcome_));  // may destroy self
  }

  void readProxyHeader() {
    char buf[kMaxProxyV2HeaderBytes];
    ssize_t n = recv(client_->fd(), buf, sizeof(buf), MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      fail(Reason::bad_request, n == 0 ? CloseCause::client_eof : CloseCause::client_error,
           seen_ == 0);
      return;
    }
    if (n < 0) {
      return;
    }
    seen_ = static_cast<size_t>(n);
    ProxyHeaderResult parsed = parseProxyHeader(std::string_view(buf, seen_));
    if (parsed.status == ProxyHeaderStatus::incomplete) {
      return;  // the edge-triggered read fires again when more arrives
    }
    if (parsed.status == ProxyHeaderStatus::invalid) {
      fail(Reason::bad_request, CloseCause::bad_proxy_header, false);
      return;
    }
    const ProxyHeader& header = parsed.header;
    ssize_t consumed = recv(client_->fd(), buf, header.length, 0);
    if (consumed != static_cast<ssize_t>(header.length)) {
      fail(Reason::bad_request, CloseCause::client_error, false);
      return;
    }
    read_.reset();
    ClientOrigin& origin = outcome_.origin;
    origin.via = peer_.toString();
    origin.vpce = header.vpce_id;
    if (!header.local && header.source) {
      SocketAddress source = unmappedAddress(*header.source);
      origin.ip = source.ip();
      origin.text = source.toString();
    }
    startHandshake();
  }

  void startHandshake() {
    if (!tls_) {
      succeed();
      return;
    }
    UniqueFd fd = client_->releaseFd();
    SslPtr ssl = tls_->newSsl(fd.get());
    if (!ssl) {
      fail(Reason::bad_request, CloseCause::tls_handshake_failed, false);
      return;
    }
    client_ = Stream::tls(std::move(fd), std::move(ssl));
    handshaking_ = true;
    read_.reset(event_new(base_, client_->fd(), EV_READ | EV_PERSIST, &onEvent, this));
    write_.reset(event_new(base_, client_->fd(), EV_WRITE | EV_PERSIST, &onEvent, this));
    if (!read_ || !write_) {
      fail(Reason::bad_request, CloseCause::error, false);
      return;
    }
    continueHandshake();
  }

  void continueHandshake() {
    Stream::Result r = client_->handshake();
    if (r.status == Stream::Io::would_block) {
      short wants = client_->wantEvents();
      (wants & EV_READ) ? event_add(read_.get(), nullptr) : event_del(read_.get());
      (wants & EV_WRITE) ? event_add(write_.get(), nullptr) : event_del(write_.get());
      return;
    }
    read_.reset();
    write_.reset();
    if (r.status != Stream::Io::ok) {
      // A bare TCP probe (an NLB health check) sent nothing: no line for it.
      bool silent = !sawBytes();
      bool bad_certificate =
          tls_->requiresClientCertificate() && SSL_get_verify_result(client_->ssl()) != X509_V_OK;
      fail(bad_certificate ? Reason::client_certificate_required : Reason::bad_request,
           CloseCause::tls_handshake_failed, silent);
      return;
    }
    if (tls_->requiresClientCertificate()) {
      outcome_.origin.identity = peerCommonName(client_->ssl());
      if (outcome_.origin.identity.empty()) {
        // Answered in HTTP over the established TLS: the session writes it.
        outcome_.error = Reason::client_certificate_required;
        outcome_.close = CloseCause::proxy_close;
      }
    }
    succeed();
  }

  void succeed() {
    outcome_.stream = std::move(client_);
    finish();
  }

  void fail(Reason reason, CloseCause close, bool silent) {
    outcome_.error = reason;
    outcome_.close = close;
    outcome_.silent = silent;
    outcome_.stream = std::move(client_);
    finish();
  }

  void finish() {
    finished_ = true;
    read_.reset();
    write_.reset();
    event_active(deliver_.get(), EV_TIMEOUT, 0);
  }

  event_base* base_;
  std::unique_ptr<Stream> client_;
  ListenerConfig listener_;
  std::shared_ptr<TlsServerContext> tls_;
  SocketAddress peer_;
  Done done_;
  PreambleOutcome outcome_;
  size_t seen_ = 0;  // PROXY header bytes seen at the last peek
  bool handshaking_ = false;
  bool finished_ = false;
  EventPtr read_;
  EventPtr write_;
  EventPtr deliver_;
};

}  // namespace

ClientOrigin originOfPeer(const SocketAddress& peer) {
  ClientOrigin origin;
  SocketAddress address = unmappedAddress(peer);
  origin.ip = address.ip();
  origin.text = address.toString();
  return origin;
}

std::unique_ptr<Preamble> Preamble::start(event_base* base, std::unique_ptr<Stream> client,
                                          const ListenerConfig& listener, const Config& config,
                                          std::shared_ptr<TlsServerContext> tls,
                                          const SocketAddress& peer, Done done) {
  auto preamble = std::make_unique<PreambleImpl>(base, std::move(client), listener, std::move(tls),
                                                 peer, std::move(done));
  if (!preamble->start(config)) {
    return nullptr;
  }
  return preamble;
}

}  // namespace s3gate
