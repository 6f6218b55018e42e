#include "proxy/session.h"

#include <openssl/bio.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "metrics/metrics.h"
#include "proxy/proxy_protocol.h"
#include "proxy/scratch.h"
#include "proxy/server.h"
#include "proxy/tls_peek.h"
#include "proxy/upstream_pool.h"

namespace s3gate {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 16 * 1024;
static_assert(kReadChunk <= kScratchBytes, "a request head is read into the thread scratch");
constexpr size_t kMaxLingerBytes = 256 * 1024;
constexpr Duration kLingerTime{std::chrono::seconds(2)};
constexpr Duration kPeekRetry{std::chrono::milliseconds(5)};
constexpr size_t kMaxClientHelloBytes = 16384 + 5 + 1024;
constexpr std::string_view kConnectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";

int64_t nowMillisSinceEpoch() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t millisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

UpstreamFailure upstreamFailureFor(int err, bool timed_out) {
  if (timed_out) {
    return UpstreamFailure::timeout;
  }
  if (err == ECONNRESET || err == EPIPE) {
    return UpstreamFailure::reset;
  }
  return UpstreamFailure::refused;
}

}  // namespace

std::string_view Session::stateName(State state) {
  switch (state) {
    case State::reading_proxy_header:
      return "reading_proxy_header";
    case State::handshaking:
      return "handshaking";
    case State::reading_head:
      return "reading_head";
    case State::resolving:
      return "resolving";
    case State::connecting:
      return "connecting";
    case State::relaying:
      return "relaying";
    case State::forwarding:
      return "forwarding";
    case State::responding:
      return "responding";
    case State::lingering:
      return "lingering";
    case State::closed:
      return "closed";
  }
  return "unknown";
}

Session::Session(Worker& worker, ConfigPtr config, const ListenerConfig& listener,
                 std::shared_ptr<TlsServerContext> tls, UniqueFd client, const SocketAddress& peer,
                 bool overloaded)
    : worker_(worker),
      config_(std::move(config)),
      client_(Stream::plain(std::move(client))),
      listener_(listener),
      tls_(std::move(tls)),
      peer_(peer),
      client_ip_(peer.ip()),
      client_text_(peer.toString()),
      overloaded_(overloaded),
      started_(Clock::now()) {
  if (listener_.proxy_protocol) {
    state_ = State::reading_proxy_header;
  } else if (tls_) {
    state_ = State::handshaking;
  }
  resetRecord();
  worker_.metrics().connectionOpened();
}

Session::~Session() {
  // Members close their fds and free their events; the relay closes its own.
  worker_.metrics().connectionClosed();
  worker_.server().removeConnection();
}

void Session::resetRecord() {
  record_ = AccessRecord{};
  record_.client = client_text_;
  record_.via = via_;
  record_.vpce = vpce_;
  if (!identity_.empty()) {
    record_.identity = identity_;
  }
  bool sni = listener_.mode == ListenerMode::sni;
  record_.kind = sni ? "sni" : "connect";
  record_.method = "-";
  record_.host = "-";
  record_.decision = "deny";
  logged_ = false;
}

void Session::transitionTo(State next) {
  // The legal moves of the diagram in session.h; anything else is a bug.
  auto legal = [&] {
    switch (state_) {
      case State::reading_proxy_header:
        return next == State::handshaking || next == State::reading_head ||
               next == State::responding || next == State::closed;
      case State::handshaking:
        return next == State::reading_head || next == State::responding || next == State::closed;
      case State::reading_head:
        return next == State::resolving || next == State::forwarding || next == State::responding ||
               next == State::closed;
      case State::resolving:
        return next == State::connecting || next == State::responding || next == State::closed;
      case State::connecting:
        return next == State::relaying || next == State::forwarding || next == State::responding ||
               next == State::closed;
      case State::relaying:
        return next == State::closed;
      case State::forwarding:
        // resolving: a request sent again on a new connection (onForwardDone)
        return next == State::reading_head || next == State::resolving ||
               next == State::responding || next == State::closed;
      case State::responding:
        return next == State::lingering || next == State::closed;
      case State::lingering:
        return next == State::closed;
      case State::closed:
        return false;
    }
    return false;
  }();
  if (!legal) {
    fprintf(stderr, "s3gate: session %s: illegal move %s -> %s\n", record_.client.c_str(),
            std::string(stateName(state_)).c_str(), std::string(stateName(next)).c_str());
    std::abort();
  }
  state_ = next;
}

void Session::start() {
  event_base* base = worker_.base();
  int fd = client_->fd();
  client_read_.reset(event_new(base, fd, EV_READ | EV_PERSIST, &onClientEvent, this));
  client_write_.reset(event_new(base, fd, EV_WRITE | EV_PERSIST, &onClientEvent, this));
  timer_.reset(evtimer_new(base, &onTimer, this));
  kick_.reset(event_new(base, -1, 0, &onKick, this));
  peek_retry_.reset(evtimer_new(base, &onPeekRetry, this));
  if (!client_read_ || !client_write_ || !timer_ || !kick_ || !peek_retry_) {
    finish("error");
    return;
  }
  armTimer(config_->limits.header_timeout);
  if (overloaded_) {
    fail(Reason::overloaded, "the proxy is at max_connections");
    return;
  }
  if (listener_.proxy_protocol && !config_->trusted_proxies.empty() &&
      !anyContains(config_->trusted_proxies, peer_.ip())) {
    fail(Reason::untrusted_proxy, "peer " + peer_.ip().toString() + " is not in trusted_proxies");
    return;
  }
  if (state_ == State::handshaking) {
    startHandshake();
    return;
  }
  event_add(client_read_.get(), nullptr);
}

void Session::readProxyHeader() {
  // Peek, so that exactly the header is consumed and the bytes after it stay
  // in the socket (for TLS listeners OpenSSL reads them from there).
  char buf[kMaxProxyV2HeaderBytes];
  ssize_t n = recv(client_->fd(), buf, sizeof(buf), MSG_PEEK);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    logged_ = last_peek_ == 0;  // a bare TCP health check leaves no line
    badPreamble(Reason::bad_request, n == 0 ? "client_eof" : "client_error");
    return;
  }
  if (n < 0) {
    return;
  }
  ProxyHeaderResult parsed = parseProxyHeader(std::string_view(buf, static_cast<size_t>(n)));
  if (parsed.status == ProxyHeaderStatus::incomplete) {
    if (static_cast<size_t>(n) == last_peek_) {
      // Nothing new: wait a moment rather than spin on a readable socket.
      event_del(client_read_.get());
      timeval tv = toTimeval(kPeekRetry);
      evtimer_add(peek_retry_.get(), &tv);
    }
    last_peek_ = static_cast<size_t>(n);
    return;
  }
  if (parsed.status == ProxyHeaderStatus::invalid) {
    badPreamble(Reason::bad_request, "bad_proxy_header: " + parsed.error);
    return;
  }
  const ProxyHeader& header = parsed.header;
  ssize_t consumed = recv(client_->fd(), buf, header.length, 0);
  if (consumed != static_cast<ssize_t>(header.length)) {
    badPreamble(Reason::bad_request, "client_error");
    return;
  }
  via_ = peer_.toString();
  vpce_ = header.vpce_id;
  if (!header.local && header.source) {
    client_ip_ = header.source->ip();
    client_text_ = header.source->toString();
  }
  resetRecord();
  if (tls_) {
    startHandshake();
    return;
  }
  transitionTo(State::reading_head);
}

void Session::onPeekRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (self->state_ == State::reading_proxy_header) {
    event_add(self->client_read_.get(), nullptr);
  }
}

void Session::startHandshake() {
  UniqueFd fd = client_->releaseFd();
  SslPtr ssl = tls_->newSsl(fd.get());
  if (!ssl) {
    badPreamble(Reason::bad_request, "tls_setup_failed");
    return;
  }
  client_ = Stream::tls(std::move(fd), std::move(ssl));
  if (state_ != State::handshaking) {
    transitionTo(State::handshaking);
  }
  continueHandshake();
}

void Session::continueHandshake() {
  Stream::Result r = client_->handshake();
  if (r.status == Stream::Io::would_block) {
    short wants = client_->wantEvents();
    (wants & EV_READ) ? event_add(client_read_.get(), nullptr) : event_del(client_read_.get());
    (wants & EV_WRITE) ? event_add(client_write_.get(), nullptr) : event_del(client_write_.get());
    return;
  }
  event_del(client_write_.get());
  if (r.status != Stream::Io::ok) {
    // A bare TCP probe (an NLB health check) sent nothing: no line for it.
    logged_ = BIO_number_read(SSL_get_rbio(client_->ssl())) == 0;
    bool bad_certificate =
        tls_->requiresClientCertificate() && SSL_get_verify_result(client_->ssl()) != X509_V_OK;
    badPreamble(bad_certificate ? Reason::client_certificate_required : Reason::bad_request,
                "tls_handshake_failed");
    return;
  }
  if (tls_->requiresClientCertificate()) {
    identity_ = peerCommonName(client_->ssl());
    if (identity_.empty()) {
      transitionTo(State::reading_head);
      fail(Reason::client_certificate_required, "this listener requires a client certificate");
      return;
    }
    resetRecord();
  }
  transitionTo(State::reading_head);
  event_add(client_read_.get(), nullptr);
}

void Session::badPreamble(Reason reason, const std::string& close) {
  // Before any request there is nobody to answer in HTTP: log, count, close.
  record_.decision = "deny";
  record_.reason = std::string(reasonName(reason));
  record_.status = 0;
  if (!logged_) {
    worker_.metrics().countDenied(reason);
  }
  finish(close);
}

void Session::closeIfIdle() {
  bool preamble = state_ == State::reading_proxy_header || state_ == State::handshaking;
  if (preamble || (state_ == State::reading_head && in_.empty())) {
    logged_ = true;  // nothing was asked: no request to log
    finish("draining");
  }
}

void Session::abort() {
  if (state_ == State::relaying && relay_) {
    relay_->stop();  // onRelayDone finishes the session
    return;
  }
  if (state_ == State::forwarding && forwarder_) {
    forwarder_->stop();  // onForwardDone finishes the session
    return;
  }
  if (state_ != State::closed) {
    finish("shutdown");
  }
}

void Session::onClientEvent(evutil_socket_t, short what, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (what & EV_READ) {
    self->onReadable();
  }
  if ((what & EV_WRITE) && self->state_ == State::handshaking) {
    self->continueHandshake();
  } else if ((what & EV_WRITE) && self->state_ != State::closed) {
    self->onWritable();
  }
}

void Session::onTimer(evutil_socket_t, short, void* arg) {
  static_cast<Session*>(arg)->onTimeout();
}

void Session::onKick(evutil_socket_t, short, void* arg) {
  static_cast<Session*>(arg)->nextRequest();
}

void Session::onUpstreamEvent(evutil_socket_t, short what, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (what & EV_TIMEOUT) {
    self->connectFailed(ETIMEDOUT, true);
  } else {
    self->onUpstreamReady();
  }
}

void Session::armTimer(Duration after) {
  timeval tv = toTimeval(after);
  evtimer_add(timer_.get(), &tv);
}

void Session::onReadable() {
  if (state_ == State::reading_proxy_header) {
    readProxyHeader();
    return;
  }
  if (state_ == State::handshaking) {
    continueHandshake();
    return;
  }
  if (state_ == State::lingering) {
    char sink[16 * 1024];
    Stream::Result r = client_->read(sink, sizeof(sink));
    if (r.status == Stream::Io::ok) {
      lingered_ += r.bytes;
      if (lingered_ > kMaxLingerBytes) {
        finish(record_.close);
      }
      return;
    }
    if (r.status != Stream::Io::would_block) {
      finish(record_.close);
    }
    return;
  }
  if (state_ != State::reading_head) {
    // Bytes after a complete head wait in the socket until they are wanted.
    event_del(client_read_.get());
    return;
  }
  const Limits& limits = config_->limits;
  bool sni = listener_.mode == ListenerMode::sni;
  size_t cap = sni ? kMaxClientHelloBytes : limits.max_header_bytes + 1;
  size_t want = std::min(kReadChunk, cap - std::min(cap, in_.size()));
  if (want == 0) {
    fail(sni ? Reason::bad_host : Reason::header_too_large);
    return;
  }
  size_t old = in_.size();
  // Read into the thread's scratch buffer, so that the head takes only the
  // memory its bytes need.
  char* scratch = threadScratch().data();
  Stream::Result r = client_->read(scratch, want);
  if (r.status != Stream::Io::ok) {
    if (r.status == Stream::Io::would_block) {
      return;
    }
    // The client went away before finishing its request: nothing to answer.
    record_.close = r.status == Stream::Io::eof ? "client_eof" : "client_error";
    if (old == 0) {
      // A connection that never said anything (a health check, or a kept-alive
      // connection closed between requests) leaves no line.
      logged_ = true;
    } else {
      record_.status = 0;
      record_.reason = std::string(reasonName(Reason::bad_request));
      worker_.metrics().countDenied(Reason::bad_request);
    }
    finish(record_.close);
    return;
  }
  in_.append(scratch, r.bytes);
  if (waiting_first_byte_) {
    // A kept-alive connection waited up to idle_timeout; the head itself now
    // has header_timeout to arrive.
    waiting_first_byte_ = false;
    started_ = Clock::now();
    armTimer(limits.header_timeout);
  }
  if (sni) {
    onClientHello();
    return;
  }
  parseBuffered();
}

void Session::onClientHello() {
  ClientHelloInfo hello = peekClientHello(in_, kMaxClientHelloBytes);
  if (hello.status == ClientHelloStatus::incomplete) {
    return;
  }
  std::string name;
  if (hello.status != ClientHelloStatus::ok || !normalizeHostName(hello.server_name, &name)) {
    record_.host = hello.server_name.empty() ? "-" : hello.server_name;
    fail(Reason::bad_host, "no TLS server name");
    return;
  }
  // client_read_ stays registered: it is dropped if it fires before the
  // relay or the forwarder takes the socket over (onReadable), and a handover
  // within one callback costs no epoll_ctl.
  evtimer_del(timer_.get());
  head_length_ = 0;  // every byte read goes to the upstream unchanged
  plain_http_ = false;
  DecisionInput input;
  input.client = client_ip_;
  input.kind = RequestKindForDecision::connect;
  input.method = "CONNECT";
  input.host = name;
  input.port = 443;
  input.port_given = true;
  input.identity = identity_;
  decision_ = decide(*config_, input);
  recordDecision(decision_, RequestKind::connect, 443);
  if (decision_.verdict == Verdict::deny) {
    fail(decision_.reason, decision_.detail);
    return;
  }
  upstream_port_ = 443;
  transitionTo(State::resolving);
  resolveTarget();
}

void Session::parseBuffered() {
  const Limits& limits = config_->limits;
  ParseLimits parse_limits{static_cast<size_t>(limits.max_header_bytes),
                           static_cast<size_t>(limits.max_headers)};
  ParseResult parsed = parseRequestHead(in_, parse_limits, parse_checked_);
  if (parsed.status == ParseStatus::incomplete) {
    parse_checked_ = in_.size();  // the next call scans only what arrives after this
    return;
  }
  if (parsed.status == ParseStatus::error) {
    if (!parsed.head.method.empty()) {
      record_.method = std::string(parsed.head.method);
      record_.kind = parsed.head.method == "CONNECT" ? "connect" : "http";
    }
    fail(parsed.reason);
    return;
  }
  // client_read_ stays registered: it is dropped if it fires before the
  // relay or the forwarder takes the socket over (onReadable), and a handover
  // within one callback costs no epoll_ctl.
  evtimer_del(timer_.get());
  head_length_ = parsed.head.head_length;
  head_ = std::move(parsed.head);
  if (worker_.listenersClosed()) {
    // Draining: the listeners are closed and this request came too late.
    record_.method = std::string(head_.method);
    record_.kind = head_.target.form == TargetForm::authority ? "connect" : "http";
    fail(Reason::draining, "this instance is shutting down; retry on another");
    return;
  }
  onHead(head_);
}

void Session::onHead(const RequestHead& head) {
  record_.method = std::string(head.method);
  switch (head.target.form) {
    case TargetForm::authority:
      onConnect(head);
      return;
    case TargetForm::absolute:
      onPlainHttp(head);
      return;
    case TargetForm::origin:
      onLocal(head);
      return;
  }
}

void Session::onLocal(const RequestHead& head) {
  record_.kind = "local";
  record_.host = "-";
  if ((head.method == "GET" || head.method == "HEAD") && head.target.path == "/ping") {
    record_.decision = "allow";
    worker_.metrics().countRequest(RequestKind::local, Verdict::allow);
    bool draining = worker_.server().draining();
    std::string_view body = draining ? "draining\n" : "OK";
    respond(draining ? 503 : 200, draining ? "Service Unavailable" : "OK",
            "Content-Type: text/plain\r\n", head.method == "HEAD" ? "" : body, false, Reason::none);
    return;
  }
  record_.kind = "http";
  fail(Reason::bad_request, "this is a proxy: send absolute-form or CONNECT requests");
}

Decision Session::decideFor(const RequestHead& head, RequestKindForDecision kind) {
  DecisionInput input;
  input.client = client_ip_;
  input.identity = identity_;
  input.kind = kind;
  input.method = head.method;
  input.host = head.target.host;
  input.host_is_ipv6_literal = head.target.host_is_ipv6_literal;
  input.port = head.target.port;
  input.port_given = head.target.port_given;
  input.path = head.target.path;
  Decision d = decide(*config_, input);
  if (d.host.empty()) {
    record_.host = std::string(head.target.host);
  }
  recordDecision(d,
                 kind == RequestKindForDecision::connect ? RequestKind::connect : RequestKind::http,
                 head.target.port);
  return d;
}

void Session::recordDecision(const Decision& d, RequestKind kind, uint16_t port) {
  if (!d.host.empty()) {
    record_.host = d.host;
  }
  record_.port = port;
  record_.rule = d.rule;
  if (!d.name.bucket.empty()) {
    record_.bucket = d.name.bucket;
  }
  worker_.metrics().countRequest(kind, d.verdict);
  if (d.verdict == Verdict::report) {
    worker_.metrics().countDenied(d.reason);  // a would-be denial
  }
  if (d.verdict != Verdict::deny) {
    record_.decision = std::string(verdictName(d.verdict));
    if (d.reason != Reason::none) {
      record_.reason = std::string(reasonName(d.reason));
    }
  }
}

void Session::onPlainHttp(const RequestHead& head) {
  record_.kind = "http";
  plain_http_ = true;
  framing_ = checkRequestFraming(head, /*require_host=*/true);
  if (framing_.reason != Reason::none) {
    // Bad framing is bad input: refused before any policy, nothing forwarded.
    fail(framing_.reason, "the request's framing is ambiguous or malformed");
    return;
  }
  decision_ = decideFor(head, RequestKindForDecision::http);
  if (decision_.verdict == Verdict::deny) {
    fail(decision_.reason, decision_.detail);
    return;
  }
  upstream_tls_ = config_->http.upstream_tls;
  upstream_port_ = upstream_tls_ ? 443 : decision_.port;
  pool_key_ = UpstreamPool::key(decision_.host, upstream_port_, upstream_tls_);
  std::string pooled_peer;
  EventPtr idle_watch;
  if (auto pooled = worker_.pool().take(pool_key_, &pooled_peer, &idle_watch)) {
    record_.upstream = std::move(pooled_peer);
    upstream_reused_ = true;
    startForward(std::move(pooled));
    idle_watch.reset();  // after the forwarder watches the socket (see take())
    return;
  }
  transitionTo(State::resolving);
  resolveTarget();
}

void Session::onConnect(const RequestHead& head) {
  record_.kind = "connect";
  plain_http_ = false;
  decision_ = decideFor(head, RequestKindForDecision::connect);
  if (decision_.verdict == Verdict::deny) {
    fail(decision_.reason, decision_.detail);
    return;
  }
  upstream_port_ = decision_.port;
  transitionTo(State::resolving);
  resolveTarget();
}

void Session::resolveTarget() {
  if (decision_.ip_literal) {
    // Let through by report mode: held to the address rules like a DNS answer.
    useAddresses(filterResolvedAddresses(*config_, {decision_.literal}));
    return;
  }
  if (const DnsPin* pin = findPin(*config_, decision_.host)) {
    worker_.metrics().countDnsLookup(DnsResult::pinned);
    useAddresses(pin->addresses);
    return;
  }
  lookup_ = worker_.resolver().resolve(decision_.host,
                                       [this](const DnsAnswer& answer) { onResolved(answer); });
}

void Session::onResolved(const DnsAnswer& answer) {
  if (state_ != State::resolving) {
    return;
  }
  if (answer.error != Reason::none) {
    worker_.metrics().countDnsLookup(DnsResult::failed);
    fail(answer.error, "no usable answer for " + decision_.host);
    return;
  }
  worker_.metrics().countDnsLookup(
      answer.source == DnsAnswer::Source::cache_hit ? DnsResult::cache_hit : DnsResult::resolved);
  useAddresses(filterResolvedAddresses(*config_, answer.addresses));
}

void Session::useAddresses(const std::vector<IpAddress>& addresses) {
  if (addresses.empty()) {
    fail(Reason::dns_pin_violation, "no address of " + decision_.host + " may be connected to");
    return;
  }
  addresses_ = addresses;
  next_address_ = 0;
  transitionTo(State::connecting);
  connectNext();
}

void Session::connectNext() {
  while (next_address_ < addresses_.size()) {
    upstream_address_ = SocketAddress(addresses_[next_address_++], upstream_port_);
    bool in_progress = false;
    int err = 0;
    connect_started_ = Clock::now();
    upstream_ = startConnect(upstream_address_, &in_progress, &err);
    if (!upstream_) {
      worker_.metrics().countUpstreamError(upstreamFailureFor(err, false));
      last_connect_failure_ = Reason::connect_failed;
      continue;
    }
    if (!in_progress) {
      onConnected();
      return;
    }
    upstream_event_.reset(
        event_new(worker_.base(), upstream_.get(), EV_WRITE, &onUpstreamEvent, this));
    timeval tv = toTimeval(config_->limits.connect_timeout);
    event_add(upstream_event_.get(), &tv);
    return;
  }
  fail(last_connect_failure_, "could not connect to " + decision_.host);
}

void Session::onUpstreamReady() {
  int err = socketError(upstream_.get());
  if (err != 0) {
    connectFailed(err, false);
    return;
  }
  upstream_event_.reset();
  onConnected();
}

void Session::connectFailed(int err, bool timed_out) {
  upstream_event_.reset();
  upstream_.reset();
  worker_.metrics().countUpstreamError(upstreamFailureFor(err, timed_out));
  last_connect_failure_ = timed_out ? Reason::connect_timeout : Reason::connect_failed;
  connectNext();
}

void Session::onConnected() {
  double seconds = std::chrono::duration<double>(Clock::now() - connect_started_).count();
  worker_.metrics().observeUpstreamConnect(seconds);
  setTcpOptions(upstream_.get(), config_->limits.tcp_keepalive);
  record_.upstream = upstream_address_.toString();
  upstream_reused_ = false;
  if (!plain_http_) {
    startTunnel();
    return;
  }
  std::unique_ptr<Stream> upstream;
  if (upstream_tls_) {
    auto tls = worker_.server().tlsClient();
    SslPtr ssl = tls ? tls->newSsl(upstream_.get(), decision_.host) : nullptr;
    if (!ssl) {
      fail(Reason::upstream_tls_failed, "cannot set up TLS to " + decision_.host);
      return;
    }
    upstream = Stream::tls(std::move(upstream_), std::move(ssl));
  } else {
    upstream = Stream::plain(std::move(upstream_));
  }
  startForward(std::move(upstream));
}

void Session::startTunnel() {
  record_.status = 200;
  transitionTo(State::relaying);
  tunnel_open_ = true;
  tunnel_started_ = Clock::now();
  worker_.metrics().tunnelOpened();

  bool sni = listener_.mode == ListenerMode::sni;
  FirstBytesInspector inspector;
  if (config_->tunnel.verify_sni && !sni) {
    inspector = sniInspector(decision_.host);
  }
  RelayOptions options;
  options.idle_timeout = config_->limits.idle_timeout;
  std::string prefix_up = in_.substr(std::min(in_.size(), head_length_));
  in_.clear();
  in_.shrink_to_fit();
  head_ = RequestHead{};
  relay_ = Relay::start(
      worker_.base(), std::move(client_), Stream::plain(std::move(upstream_)), std::move(prefix_up),
      sni ? std::string() : std::string(kConnectEstablished), options, std::move(inspector),
      [this](const RelayResult& result) { onRelayDone(result); });
  // The relay has events of its own (added before these go, so that the
  // socket's interest never drops): an idle tunnel keeps none of these.
  client_read_.reset();
  client_write_.reset();
  timer_.reset();
  kick_.reset();
  peek_retry_.reset();
  if (!relay_) {
    finish("error");
  }
}

void Session::onRelayDone(const RelayResult& result) {
  record_.bytes_up = result.bytes_up;
  record_.bytes_down = result.bytes_down;
  record_.close = std::string(relayCloseName(result.close));
  if (result.close == RelayClose::upstream_error) {
    worker_.metrics().countUpstreamError(UpstreamFailure::reset);
  }
  if (result.close == RelayClose::inspect_denied) {
    record_.decision = "deny";
    record_.reason = std::string(reasonName(Reason::sni_mismatch));
    record_.close = "sni_mismatch";
    worker_.metrics().countDenied(Reason::sni_mismatch);
  }
  finish(record_.close);
}

void Session::flushBytes() {
  if (state_ == State::relaying && relay_) {
    RelayResult now = relay_->progress();
    countBytes(now.bytes_up, now.bytes_down);
  } else if (state_ == State::forwarding && forwarder_) {
    auto [up, down] = forwarder_->progress();
    countBytes(up, down);
  }
}

void Session::countBytes(uint64_t up, uint64_t down) {
  Metrics& metrics = worker_.metrics();
  if (up > counted_up_) {
    metrics.addBytes(Direction::up, up - counted_up_);
    metrics.addBucketBytes(record_.rule, Direction::up, up - counted_up_);
    counted_up_ = up;
  }
  if (down > counted_down_) {
    metrics.addBytes(Direction::down, down - counted_down_);
    metrics.addBucketBytes(record_.rule, Direction::down, down - counted_down_);
    counted_down_ = down;
  }
}

void Session::startForward(std::unique_ptr<Stream> upstream) {
  transitionTo(State::forwarding);
  counted_up_ = counted_down_ = 0;  // a new exchange counts from its first byte
  evtimer_del(timer_.get());
  ForwardOptions options;
  options.idle_timeout = config_->limits.idle_timeout;
  options.max_header_bytes = config_->limits.max_header_bytes;
  options.max_headers = config_->limits.max_headers;
  options.allow_client_keep_alive = !worker_.server().draining();
  std::string_view after_head = std::string_view(in_).substr(std::min(in_.size(), head_length_));
  forwarder_ =
      Forwarder::start(worker_.base(), *client_, std::move(upstream), head_, framing_, after_head,
                       options, [this](ForwardResult result) { onForwardDone(std::move(result)); });
  // Deleted after the forwarder added its own events for the socket: the
  // socket's interest never drops, so the handover costs no epoll_ctl.
  event_del(client_read_.get());
  event_del(client_write_.get());
  if (!forwarder_) {
    finish("error");
  }
}

void Session::onForwardDone(ForwardResult result) {
  // The forwarder is inside its own callback: it is freed on the next pass.
  retired_forwarder_ = std::move(forwarder_);
  if (result.upstream_tls_error) {
    worker_.metrics().countUpstreamError(UpstreamFailure::tls);
  } else if (result.upstream_reset) {
    worker_.metrics().countUpstreamError(UpstreamFailure::reset);
  }
  record_.bytes_up = result.bytes_up;
  record_.bytes_down = result.bytes_down;
  countBytes(result.bytes_up, result.bytes_down);
  bool no_body = framing_.body.kind == BodyKind::none ||
                 (framing_.body.kind == BodyKind::content_length && framing_.body.length == 0);
  if (result.error != Reason::none && result.upstream_silent && upstream_reused_ && no_body &&
      isIdempotentMethod(head_.method) && !resent_) {
    // A kept-alive connection the upstream closed as the request went out
    // (it had closed it while idle, the close still on its way): the request
    // had no body and is idempotent, so it goes once more on a new connection. In `in_` it is
    // still whole.
    resent_ = true;
    transitionTo(State::resolving);
    resolveTarget();
    return;
  }
  if (result.error != Reason::none) {
    // Nothing of the response reached the client: it gets an error instead.
    transitionTo(State::responding);
    fail(result.error, result.error_detail);
    return;
  }
  record_.status = result.status;
  record_.close = result.close;
  if (result.upstream) {
    worker_.pool().put(pool_key_, std::move(result.upstream), record_.upstream.value_or(""));
  }
  if (!result.client_reusable || worker_.server().draining()) {
    if (result.client_reusable) {
      record_.close = "draining";
    }
    logRequest();
    // Unread request bytes (an upload answered early) would turn an immediate
    // close into a reset that can destroy the response: linger instead.
    transitionTo(State::responding);
    startLinger();
    return;
  }
  logRequest();
  // The next request on this connection: bytes already here are parsed first.
  std::string leftover = std::move(result.leftover);
  in_ = std::move(leftover);
  transitionTo(State::reading_head);
  // Watched again in the callback where the forwarder let go of it: no epoll_ctl.
  event_add(client_read_.get(), nullptr);
  event_active(kick_.get(), EV_TIMEOUT, 0);
}

void Session::nextRequest() {
  retired_forwarder_.reset();
  if (state_ != State::reading_head) {
    return;
  }
  head_ = RequestHead{};
  head_length_ = 0;
  parse_checked_ = 0;
  resent_ = false;
  decision_ = Decision{};
  addresses_.clear();
  resetRecord();
  started_ = Clock::now();
  waiting_first_byte_ = in_.empty();
  event_add(client_read_.get(), nullptr);
  armTimer(waiting_first_byte_ ? config_->limits.idle_timeout : config_->limits.header_timeout);
  if (!in_.empty()) {
    parseBuffered();
  } else if (client_->hasBufferedInput()) {
    // TLS: bytes OpenSSL already decrypted announce themselves by no event.
    onReadable();
  }
}

void Session::fail(Reason reason, const std::string& detail) {
  record_.reason = std::string(reasonName(reason));
  if (isUpstreamFailure(reason)) {
    // An allowed request that failed upstream keeps its verdict (SPEC section 4).
    if (record_.decision != "report") {
      record_.decision = "allow";
    }
  } else {
    record_.decision = "deny";
    worker_.metrics().countDenied(reason);
  }
  if (listener_.mode == ListenerMode::sni) {
    // The client speaks TLS to what it thinks is S3: no HTTP answer, a close.
    record_.status = 0;
    finish("proxy_close");
    return;
  }
  std::string body = "s3gate: ";
  body += reasonName(reason);
  if (!detail.empty()) {
    body += ": ";
    for (char c : detail) {
      body += (c == '\r' || c == '\n') ? ' ' : c;
    }
  }
  body += "\n";
  respond(reasonStatus(reason), reasonStatusText(reason), "Content-Type: text/plain\r\n", body,
          true, reason);
}

void Session::respond(int status, std::string_view status_text, std::string_view extra_headers,
                      std::string_view body, bool with_proxy_status, Reason reason) {
  if (state_ != State::responding) {
    transitionTo(State::responding);
  }
  lookup_.reset();
  upstream_event_.reset();
  upstream_.reset();
  record_.status = status;
  out_ = "HTTP/1.1 " + std::to_string(status) + " " + std::string(status_text) + "\r\n";
  if (with_proxy_status) {
    out_ += "Proxy-Status: s3gate; error=";
    out_ += proxyStatusError(reason);
    out_ += "; details=\"";
    out_ += reasonName(reason);
    out_ += "\"\r\n";
  }
  out_ += extra_headers;
  out_ += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out_ += "Connection: close\r\n\r\n";
  out_ += body;
  out_pos_ = 0;
  event_del(client_read_.get());
  evtimer_del(timer_.get());
  // A response that cannot be written within the linger time is given up.
  armTimer(kLingerTime);
  onWritable();
}

void Session::onWritable() {
  if (state_ != State::responding) {
    event_del(client_write_.get());
    return;
  }
  while (out_pos_ < out_.size()) {
    Stream::Result r = client_->write(out_.data() + out_pos_, out_.size() - out_pos_);
    if (r.status == Stream::Io::ok) {
      out_pos_ += r.bytes;
      continue;
    }
    if (r.status == Stream::Io::would_block) {
      event_add(client_write_.get(), nullptr);
      return;
    }
    finish("client_error");
    return;
  }
  event_del(client_write_.get());
  startLinger();
}

void Session::startLinger() {
  transitionTo(State::lingering);
  if (record_.close.empty()) {
    record_.close = "proxy_close";
  }
  client_->shutdownWrite();
  event_add(client_read_.get(), nullptr);
  armTimer(kLingerTime);
}

void Session::onTimeout() {
  switch (state_) {
    case State::reading_proxy_header:
      logged_ = last_peek_ == 0;  // nothing was ever sent: no line
      badPreamble(Reason::header_timeout, "header_timeout");
      return;
    case State::handshaking:
      logged_ = BIO_number_read(SSL_get_rbio(client_->ssl())) == 0;
      badPreamble(Reason::header_timeout, "header_timeout");
      return;
    case State::reading_head:
      if (in_.empty()) {
        // Nothing was sent (a new or kept-alive connection): close quietly, as
        // Squid does with idle clients.
        logged_ = true;
        finish(waiting_first_byte_ ? "idle_timeout" : "header_timeout");
        return;
      }
      record_.close = "header_timeout";
      fail(Reason::header_timeout);
      return;
    case State::responding:
      finish("client_stalled");
      return;
    case State::lingering:
      finish(record_.close);
      return;
    default:
      return;
  }
}

void Session::finish(const std::string& close) {
  if (state_ == State::closed) {
    return;
  }
  if (record_.close.empty()) {
    record_.close = close;
  }
  transitionTo(State::closed);
  lookup_.reset();
  upstream_event_.reset();
  client_read_.reset();
  client_write_.reset();
  timer_.reset();
  kick_.reset();
  peek_retry_.reset();
  upstream_.reset();
  if (tunnel_open_) {
    auto seconds = std::chrono::duration<double>(Clock::now() - tunnel_started_).count();
    worker_.metrics().tunnelClosed(seconds);
    countBytes(record_.bytes_up, record_.bytes_down);
  }
  logRequest();
  // The client stream goes last: a forwarder being torn down may still hold it.
  worker_.reap(this);
}

void Session::logRequest() {
  if (logged_) {
    return;
  }
  logged_ = true;
  record_.time_ms = nowMillisSinceEpoch();
  record_.duration_ms = millisSince(started_);
  worker_.accessLog().write(record_);
}

}  // namespace s3gate
