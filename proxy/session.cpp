#include "proxy/session.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "common/text.h"
#include "metrics/metrics.h"
#include "proxy/scratch.h"
#include "proxy/socket.h"
#include "proxy/tls_peek.h"
#include "proxy/upstream_pool.h"

namespace s3gate {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 16 * 1024;
static_assert(kReadChunk <= kScratchBytes, "a request head is read into the thread scratch");
constexpr size_t kMaxLingerBytes = 256 * 1024;
constexpr Duration kLingerTime{std::chrono::seconds(2)};
constexpr size_t kMaxClientHelloBytes = 16384 + 5 + 1024;
constexpr size_t kMaxUserAgentBytes = 256;  // and of a copy source that does not parse
constexpr std::string_view kConnectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";

int64_t nowMillisSinceEpoch() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t millisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

CloseCause closeOfRelay(RelayClose close) {
  switch (close) {
    case RelayClose::client_eof:
      return CloseCause::client_eof;
    case RelayClose::upstream_eof:
      return CloseCause::upstream_eof;
    case RelayClose::idle_timeout:
      return CloseCause::idle_timeout;
    case RelayClose::client_error:
      return CloseCause::client_error;
    case RelayClose::upstream_error:
      return CloseCause::upstream_error;
    case RelayClose::inspect_denied:
      return CloseCause::sni_mismatch;
    case RelayClose::shutdown:
      return CloseCause::shutdown;
  }
  return CloseCause::error;
}

}  // namespace

std::string_view Session::stateName(State state) {
  switch (state) {
    case State::preamble:
      return "preamble";
    case State::reading_head:
      return "reading_head";
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
    case State::inspect_handshake:
      return "inspect_handshake";
    case State::discarding:
      return "discarding";
    case State::closed:
      return "closed";
  }
  return "unknown";
}

Session::Session(SessionOwner& owner, const ListenerConfig& listener, size_t listener_index,
                 UniqueFd client, const SocketAddress& peer, bool overloaded)
    : owner_(owner),
      listener_(listener),
      listener_index_(listener_index),
      peer_(peer),
      origin_(originOfPeer(peer)),
      client_(Stream::plain(std::move(client))),
      overloaded_(overloaded) {
  beginRequest();
  if (listener_.proxy_protocol || request_.runtime->listenerTls(listener_index_)) {
    state_ = State::preamble;
  }
  owner_.metrics().connectionOpened();
}

Session::~Session() {
  // Members close their fds and free their events; the relay closes its own.
  owner_.metrics().connectionClosed();
}

void Session::beginRequest() {
  request_ = Request{};
  request_.runtime = owner_.runtime();
  request_.started = Clock::now();
  AccessRecord& r = request_.record;
  r.client = origin_.text;
  r.via = origin_.via;
  r.vpce = origin_.vpce;
  if (!origin_.identity.empty()) {
    r.identity = origin_.identity;
  }
  r.kind = listener_.mode == ListenerMode::sni ? RecordKind::sni : RecordKind::connect;
  if (inspecting_) {
    r.kind = RecordKind::inspect;
    r.host = tunnel_host_;
    r.port = tunnel_port_;
    // The user who opened the tunnel is who asks inside it.
    request_.identity = tunnel_identity_;
    if (!tunnel_identity_.empty()) {
      r.identity = tunnel_identity_;
    }
  }
}

void Session::transitionTo(State next) {
  // The legal moves of the diagram in session.h; anything else is a bug.
  auto legal = [&] {
    switch (state_) {
      case State::preamble:
        return next == State::reading_head || next == State::responding || next == State::closed;
      case State::reading_head:
        return next == State::connecting || next == State::forwarding ||
               next == State::responding || next == State::inspect_handshake ||
               next == State::closed;
      case State::connecting:
        return next == State::relaying || next == State::forwarding || next == State::responding ||
               next == State::closed;
      case State::relaying:
        return next == State::closed;
      case State::forwarding:
        // connecting: a request sent again on a new connection (onForwardDone)
        return next == State::reading_head || next == State::connecting ||
               next == State::responding || next == State::closed;
      case State::responding:
        // reading_head, discarding: a denial inside an inspected tunnel
        return next == State::lingering || next == State::reading_head ||
               next == State::discarding || next == State::closed;
      case State::inspect_handshake:
        return next == State::reading_head || next == State::closed;
      case State::discarding:
        return next == State::reading_head || next == State::closed;
      case State::lingering:
        return next == State::closed;
      case State::closed:
        return false;
    }
    return false;
  }();
  if (!legal) {
    fprintf(stderr, "s3gate: session %s: illegal move %s -> %s\n", origin_.text.c_str(),
            std::string(stateName(state_)).c_str(), std::string(stateName(next)).c_str());
    std::abort();
  }
  state_ = next;
}

void Session::start() {
  event_base* base = owner_.base();
  int fd = client_->fd();
  client_read_.reset(event_new(base, fd, EV_READ | EV_PERSIST, &onClientEvent, this));
  client_write_.reset(event_new(base, fd, EV_WRITE | EV_PERSIST, &onClientEvent, this));
  timer_.reset(evtimer_new(base, &onTimer, this));
  kick_.reset(event_new(base, -1, 0, &onKick, this));
  if (!client_read_ || !client_write_ || !timer_ || !kick_) {
    finish(CloseCause::error);
    return;
  }
  armTimer(config().limits.header_timeout);
  if (overloaded_) {
    if (state_ == State::preamble) {
      transitionTo(State::reading_head);
    }
    fail(Reason::overloaded, "the proxy is at max_connections");
    return;
  }
  if (state_ != State::preamble) {
    acceptClient();
    return;
  }
  preamble_ = Preamble::start(
      base, std::move(client_), listener_, config(), request_.runtime->listenerTls(listener_index_),
      peer_, [this](PreambleOutcome outcome) { onPreambleDone(std::move(outcome)); });
  if (!preamble_) {
    finish(CloseCause::error);
  }
}

void Session::onPreambleDone(PreambleOutcome outcome) {
  if (state_ == State::closed) {
    return;  // a drain or the header timeout ended the session while it ran
  }
  // The preamble is inside its own callback: it is freed later, not here.
  client_ = std::move(outcome.stream);
  origin_ = std::move(outcome.origin);
  beginRequest();  // the record now names the real client
  AccessRecord& r = request_.record;
  if (outcome.silent) {
    request_.logged = true;  // a bare TCP probe (a health check) leaves no line
    finish(outcome.close);
    return;
  }
  if (outcome.error == Reason::untrusted_proxy ||
      (outcome.error == Reason::client_certificate_required &&
       outcome.close == CloseCause::proxy_close)) {
    // The connection can carry an HTTP answer.
    transitionTo(State::reading_head);
    fail(outcome.error, outcome.error == Reason::untrusted_proxy
                            ? "peer " + peer_.ip().toString() + " is not in trusted_proxies"
                            : "this listener requires a client certificate");
    return;
  }
  if (outcome.error != Reason::none) {
    // Before any request there is nobody to answer in HTTP: log, count, close.
    r.reason = outcome.error;
    owner_.metrics().countDenied(outcome.error);
    finish(outcome.close);
    return;
  }
  // A TLS stream is over the same socket: client_read_ and client_write_ serve it.
  transitionTo(State::reading_head);
  acceptClient();
}

void Session::acceptClient() {
  // SPEC section 3: the client is checked as soon as its address is known.
  const Config& c = config();
  if (c.mode == PolicyMode::enforce && !anyContains(c.clients, origin_.ip)) {
    fail(Reason::client_not_allowed, "client " + origin_.ip.toString() + " is not in clients");
    return;
  }
  if (!admitQuota(false)) {
    return;
  }
  event_add(client_read_.get(), nullptr);
  if (client_->hasBufferedInput()) {
    onReadable();  // TLS: bytes decrypted during the handshake announce themselves by no event
  }
}

void Session::closeIfIdle() {
  if (state_ == State::preamble || (state_ == State::reading_head && in_.empty())) {
    request_.logged = true;  // nothing was asked: no request to log
    finish(CloseCause::draining);
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
    if (state_ == State::connecting && request_.decided) {
      countDecision(request_.record.decision);  // decided, not yet counted: once
    }
    finish(CloseCause::shutdown);
  }
}

void Session::onClientEvent(evutil_socket_t, short what, void* arg) {
  auto* self = static_cast<Session*>(arg);
  if (self->state_ == State::inspect_handshake) {
    self->continueInspectHandshake();
    return;
  }
  if (what & EV_READ) {
    self->onReadable();
  }
  if ((what & EV_WRITE) && self->state_ != State::closed) {
    self->onWritable();
  }
}

void Session::onTimer(evutil_socket_t, short, void* arg) {
  static_cast<Session*>(arg)->onTimeout();
}

void Session::onKick(evutil_socket_t, short, void* arg) {
  static_cast<Session*>(arg)->nextRequest();
}

void Session::armTimer(Duration after) {
  timeval tv = toTimeval(after);
  evtimer_add(timer_.get(), &tv);
}

void Session::readLinger() {
  char sink[16 * 1024];
  Stream::Result r = client_->read(sink, sizeof(sink));
  if (r.status == Stream::Io::ok) {
    lingered_ += r.bytes;
    if (lingered_ > kMaxLingerBytes) {
      finish(request_.record.close);
    }
    return;
  }
  if (r.status != Stream::Io::would_block) {
    finish(request_.record.close);
  }
}

void Session::onReadable() {
  if (waitingOffClient()) {
    watchWaitingClient();
    return;
  }
  if (state_ == State::lingering) {
    readLinger();
    return;
  }
  if (state_ == State::discarding) {
    discardBody();
    return;
  }
  if (state_ != State::reading_head) {
    // Bytes after a complete head wait in the socket until they are wanted.
    event_del(client_read_.get());
    return;
  }
  const Limits& limits = config().limits;
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
    CloseCause close =
        r.status == Stream::Io::eof ? CloseCause::client_eof : CloseCause::client_error;
    if (old == 0) {
      // A connection that never said anything (a health check, or a kept-alive
      // connection closed between requests) leaves no line.
      request_.logged = true;
    } else {
      request_.record.reason = Reason::bad_request;
      owner_.metrics().countDenied(Reason::bad_request);
    }
    finish(close);
    return;
  }
  in_.append(scratch, r.bytes);
  if (waiting_first_byte_) {
    // A kept-alive connection waited up to idle_timeout; the head itself now
    // has header_timeout to arrive.
    waiting_first_byte_ = false;
    request_.started = Clock::now();
    armTimer(limits.header_timeout);
  }
  if (sni) {
    onClientHello();
    return;
  }
  parseBuffered();
}

// The request waits for something off the client connection: its password
// being verified (auth_), or its upstream being resolved and connected.
bool Session::waitingOffClient() const {
  return auth_ != nullptr || state_ == State::connecting;
}

// client_read_ fired while the request waits. It looks without consuming
// (MSG_PEEK): bytes the client sent ahead (a ClientHello right after CONNECT,
// a request body, the next request) stay in the socket for the relay or the
// forwarder, and over TLS the raw socket is looked at, never the TLS stream.
//
// No busy loop with the level-triggered client_read_: each wake-up either
// finds bytes (the watch ends: event_del until the wait is over, and
// connectUpstream() does not start it again for this request), or ends the
// session (EOF or an error), or finds the socket empty (a spurious wake-up:
// an empty socket is not reported again until something arrives).
//
// A bare FIN while it waits is the client giving up, for CONNECT and plain
// HTTP alike. For a tunnel nobody is left to send the 200 to. For plain HTTP a
// half-close after a complete request is legal, but nginx (a 499 unless
// proxy_ignore_client_abort) and Squid (unless half_closed_clients) treat it
// as an abort by default, HAProxy does with option abortonclose, and clients
// that mean to read the answer keep their side open; one rule is simpler to
// predict. A FIN behind bytes sent ahead is not seen here (the peek
// finds the bytes first): that request goes on as before, and the relay or the
// forwarder meets the FIN. A reset is always the client gone.
void Session::watchWaitingClient() {
  char byte = 0;
  ssize_t n = recv(client_->fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) {
    request_.sent_ahead = true;
    event_del(client_read_.get());
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    return;
  }
  onClientGone(n == 0 ? CloseCause::client_eof : CloseCause::client_error);
}

// The client left while its request waited: the wait is cancelled (the
// attempt's and the verification's destructors cancel their callbacks, which
// then never run), the connection slot and the quota lease go now, and the
// line says how the client left. Nothing was answered: status 0. A decided
// request keeps its decision and is counted once, as an allowed tunnel closed
// before its first byte is; a request whose password was still being verified
// was never decided: no verdict, no identity (the user was not verified), not
// in s3gate_requests_total.
void Session::onClientGone(CloseCause close) {
  auth_.reset();
  attempt_.reset();
  AccessRecord& r = request_.record;
  r.status = 0;
  r.close = close;
  if (request_.decided) {
    countDecision(r.decision);
  }
  finish(close);
}

void Session::onClientHello() {
  ClientHelloInfo hello = peekClientHello(in_, kMaxClientHelloBytes);
  if (hello.status == ClientHelloStatus::incomplete) {
    return;
  }
  std::string name;
  if (hello.status != ClientHelloStatus::ok || !normalizeHostName(hello.server_name, &name)) {
    request_.record.host = hello.server_name.empty() ? "-" : hello.server_name;
    fail(Reason::bad_host, "no TLS server name");
    return;
  }
  // client_read_ stays registered: it is dropped if it fires before the
  // relay takes the socket over (onReadable), and a handover within one
  // callback costs no epoll_ctl.
  evtimer_del(timer_.get());
  request_.runtime = owner_.runtime();  // decided with the snapshot in force now
  request_.head_length = 0;             // every byte read goes to the upstream unchanged
  DecisionInput input;
  input.client = origin_.ip;
  input.kind = RequestKindForDecision::connect;
  input.method = "CONNECT";
  input.host = name;
  input.port = 443;
  input.port_given = true;
  input.identity = origin_.identity;
  request_.decision = s3gate::decide(config(), input);
  request_.record.port = 443;
  decide(RequestKindForDecision::connect);
}

void Session::parseBuffered() {
  const Limits& limits = config().limits;
  ParseLimits parse_limits{static_cast<size_t>(limits.max_header_bytes),
                           static_cast<size_t>(limits.max_headers)};
  ParseResult parsed = parseRequestHead(in_, parse_limits, request_.parse_checked);
  if (parsed.status == ParseStatus::incomplete) {
    request_.parse_checked = in_.size();  // the next call scans only what arrives after this
    return;
  }
  AccessRecord& r = request_.record;
  if (parsed.status == ParseStatus::error) {
    if (!parsed.head.method.empty()) {
      r.method = std::string(parsed.head.method);
      r.kind = parsed.head.method == "CONNECT" ? RecordKind::connect : RecordKind::http;
    }
    fail(parsed.reason);
    return;
  }
  // client_read_ stays registered: it is dropped if it fires before the
  // relay or the forwarder takes the socket over (onReadable), and a handover
  // within one callback costs no epoll_ctl.
  evtimer_del(timer_.get());
  request_.head_length = parsed.head.head_length;
  request_.head = std::move(parsed.head);
  // SPEC section 3: decided against the configuration in force now that the
  // head has arrived, on a new or a kept-alive connection alike.
  request_.runtime = owner_.runtime();
  onHead();
}

void Session::onHead() {
  const RequestHead& head = request_.head;
  AccessRecord& r = request_.record;
  r.method = std::string(head.method);
  r.kind = head.target.form == TargetForm::authority ? RecordKind::connect : RecordKind::http;
  if (const HeaderField* agent = head.find("User-Agent")) {
    r.user_agent = std::string(agent->value.substr(0, kMaxUserAgentBytes));
  }
  if (owner_.listenersClosed()) {
    // Draining: the listeners are closed and this request came too late.
    fail(Reason::draining, "this instance is shutting down; retry on another");
    return;
  }
  if (inspecting_) {
    r.kind = RecordKind::inspect;
    if (head.target.form == TargetForm::authority) {
      fail(Reason::bad_request, "CONNECT inside an inspected tunnel");
      return;
    }
    onInspectedRequest();
    return;
  }
  if (head.target.form != TargetForm::origin) {
    // What was asked for, as written, for the lines of requests that end
    // before the name is decided (a 407); the decision puts its normalised name.
    r.host = std::string(head.target.host);
    r.port = head.target.port;
    // SPEC section 3, step 1a (proxy/auth.h): a hash is verified off the loop.
    AuthOutcome now;
    auth_ = authenticateHead(*request_.runtime, listener_, head, in_, origin_.ip.toString(),
                             owner_.base(), owner_.metrics(), &now,
                             [this](AuthOutcome outcome) { onAuthDone(std::move(outcome)); });
    if (auth_) {
      // Nothing more is read until it is decided; client_read_ stays
      // registered to notice a client that gives up (watchWaitingClient()).
      return;
    }
    if (!applyAuth(now)) {
      return;
    }
  }
  dispatchHead();
}

void Session::onAuthDone(AuthOutcome outcome) {
  auth_.reset();  // its callback has returned control to us; freeing it here is safe
  if (state_ == State::reading_head && applyAuth(outcome)) {
    dispatchHead();
  }
}

// The identity for this request, or its 407 (in every mode).
bool Session::applyAuth(const AuthOutcome& outcome) {
  if (!outcome.user.empty()) {
    request_.record.identity = outcome.user;  // tried or verified; never the password
  }
  if (outcome.status == AuthStatus::none || outcome.status == AuthStatus::ok) {
    request_.identity = outcome.user;
    return true;
  }
  request_.decided = true;  // step 1a decided it: counted as a denial
  fail(outcome.status == AuthStatus::missing ? Reason::auth_required : Reason::auth_failed,
       outcome.detail);
  return false;
}

void Session::dispatchHead() {
  const RequestHead& head = request_.head;
  switch (head.target.form) {
    case TargetForm::authority:
      onConnect();
      return;
    case TargetForm::absolute:
      onPlainHttp();
      return;
    case TargetForm::origin:
      onLocal();
      return;
  }
}

void Session::onLocal() {
  const RequestHead& head = request_.head;
  AccessRecord& r = request_.record;
  r.kind = RecordKind::local;
  if ((head.method == "GET" || head.method == "HEAD") && head.target.path == "/ping") {
    r.decision = Verdict::allow;
    owner_.metrics().countRequest(RequestKind::local, Verdict::allow);
    request_.counted = true;
    bool draining = owner_.draining();
    std::string_view body = draining ? "draining\n" : "OK";
    respond(draining ? 503 : 200, draining ? "Service Unavailable" : "OK",
            head.method == "HEAD" ? "" : body, false, Reason::none);
    return;
  }
  r.kind = RecordKind::http;
  fail(Reason::bad_request, "this is a proxy: send absolute-form or CONNECT requests");
}

// What decide() is asked about the head in hand.
DecisionInput Session::decisionInput(RequestKindForDecision kind) const {
  const RequestHead& head = request_.head;
  DecisionInput input;
  input.client = origin_.ip;
  input.identity = request_.identity.empty() ? origin_.identity : request_.identity;
  input.kind = kind;
  input.method = head.method;
  input.host = head.target.host;
  input.host_is_ipv6_literal = head.target.host_is_ipv6_literal;
  input.port = head.target.port;
  input.port_given = head.target.port_given;
  if (kind != RequestKindForDecision::connect) {
    input.path = head.target.path;
  }
  return input;
}

// Decides the head and records what the log needs of it.
void Session::decideHead(const DecisionInput& input) {
  const RequestHead& head = request_.head;
  request_.decision = s3gate::decide(config(), input);
  request_.record.port = head.target.port;
  if (request_.decision.host.empty()) {
    request_.record.host = std::string(head.target.host);
  }
  if (request_.decision.copy_source) {
    request_.record.copy_source = request_.decision.copy_source->logText();
  }
  decide(input.kind);
}

void Session::onConnect() {
  decideHead(decisionInput(RequestKindForDecision::connect));
}

void Session::onPlainHttp() {
  const RequestHead& head = request_.head;
  request_.plain_http = true;
  request_.framing = checkRequestFraming(head, /*require_host=*/true);
  if (request_.framing.reason != Reason::none) {
    // Bad framing is bad input: refused before any policy, nothing forwarded.
    fail(request_.framing.reason, "the request's framing is ambiguous or malformed");
    return;
  }
  DecisionInput input = decisionInput(RequestKindForDecision::http);
  if (!readCopySource(input)) {
    return;
  }
  decideHead(input);
}

// SPEC section 3, step 7: CopyObject and UploadPartCopy name a source bucket.
// False when the request was refused (two of them).
bool Session::readCopySource(DecisionInput& input) {
  const HeaderField* copy_source = nullptr;
  for (const HeaderField& field : request_.head.headers) {
    if (equalsIgnoreCase(field.name, "x-amz-copy-source")) {
      if (copy_source != nullptr) {
        fail(Reason::bad_request, "more than one x-amz-copy-source");
        return false;
      }
      copy_source = &field;
    }
  }
  if (copy_source != nullptr) {
    input.copy_source = copy_source->value;
    request_.record.copy_source = std::string(copy_source->value.substr(0, kMaxUserAgentBytes));
  }
  return true;
}

// The decision made: recorded, and either refused or carried out.
void Session::decide(RequestKindForDecision kind) {
  const Decision& d = request_.decision;
  AccessRecord& r = request_.record;
  request_.decided = true;
  if (!d.host.empty()) {
    r.host = d.host;
  }
  r.rule = d.rule;
  if (!d.name.bucket.empty()) {
    r.bucket = d.name.bucket;
  }
  if (!admitQuota(true)) {
    return;  // SPEC section 3, step 1b: before any policy step
  }
  if (d.verdict == Verdict::deny && d.reason == Reason::path_style_denied && inspectionWanted(d)) {
    // Inspected, a path-style tunnel is decided bucket by bucket inside.
    request_.decision.verdict = Verdict::allow;
    request_.decision.reason = Reason::none;
  }
  if (d.verdict == Verdict::deny) {
    fail(d.reason, d.detail);
    return;
  }
  r.decision = d.verdict;
  if (d.verdict == Verdict::report) {
    r.reason = d.reason;
    owner_.metrics().countDenied(d.reason);  // a would-be denial
  }
  if (kind == RequestKindForDecision::connect) {
    request_.upstream_port = d.port;
    if (inspectionWanted(d)) {
      startInspection();
      return;
    }
    connectUpstream();
    return;
  }
  if (kind == RequestKindForDecision::inspect) {
    request_.upstream_tls = true;  // inside a tunnel to port P: TLS to P
    request_.upstream_port = tunnel_port_;
  } else {
    request_.upstream_tls = config().http.upstream_tls;
    request_.upstream_port = request_.upstream_tls ? 443 : d.port;
  }
  request_.pool_key = UpstreamPool::key(d.host, request_.upstream_port, request_.upstream_tls);
  std::string pooled_peer;
  EventPtr idle_watch;
  if (auto pooled = owner_.pool().take(request_.pool_key, &pooled_peer, &idle_watch)) {
    r.upstream = std::move(pooled_peer);
    request_.upstream_reused = true;
    countDecision(d.verdict);
    startForward(std::move(pooled));
    idle_watch.reset();  // after the forwarder watches the socket (see take())
    return;
  }
  connectUpstream();
}

// SPEC section 3, step 1b, in every mode: the connection (request false) or
// one more request or tunnel. False when refused (the response is under way).
bool Session::admitQuota(bool request) {
  QuotaTable* table = owner_.quotas();
  const Config& c = config();
  if (table == nullptr || (c.quotas.empty() && !quota_lease_.held())) {
    return true;
  }
  QuotaTable::Admission admission =
      table->admit(c.quotas, origin_.ip, origin_.identity, request, quota_lease_, Clock::now());
  if (admission.rule == nullptr) {
    return true;
  }
  const QuotaRule& rule = *admission.rule;
  request_.record.quota = rule.name;
  if (admission.reason == Reason::none) {
    return true;
  }
  owner_.metrics().countQuotaLimited(rule.name, admission.reason);
  if (admission.reason == Reason::rate_limited) {
    request_.extra_headers = "Retry-After: " + std::to_string(admission.retry_after) + "\r\n";
    fail(Reason::rate_limited,
         "quota " + rule.name + " allows " + std::to_string(rule.requests_per_second) +
             " requests per second; retry after " + std::to_string(admission.retry_after) + "s");
  } else {
    fail(Reason::client_limit,
         "quota " + rule.name + " allows " + std::to_string(rule.max_connections) + " connections");
  }
  return false;
}

// The connection's bandwidth quota for a tunnel or an exchange: a pacer over
// its budget that counts the waits in s3gate_quota_paced_seconds_total, or
// nullptr when its quota has no bandwidth (or there is none).
std::shared_ptr<BandwidthPacer> Session::quotaPacer() {
  return QuotaTable::pacer(
      quota_lease_, [metrics = &owner_.metrics(), quota = quota_lease_.quota()](
                        PaceDirection direction, double seconds) {
        metrics->addQuotaPaced(
            quota, direction == PaceDirection::up ? Direction::up : Direction::down, seconds);
      });
}

// s3gate_requests_total counts the final decision, the one the log line has.
void Session::countDecision(Verdict verdict) {
  if (request_.counted) {
    return;
  }
  request_.counted = true;
  RequestKind kind = RequestKind::connect;
  if (request_.record.kind == RecordKind::http) {
    kind = RequestKind::http;
  } else if (request_.record.kind == RecordKind::local) {
    kind = RequestKind::local;
  } else if (request_.record.kind == RecordKind::inspect) {
    kind = RequestKind::inspect;
  }
  owner_.metrics().countRequest(kind, verdict);
}

void Session::connectUpstream() {
  transitionTo(State::connecting);
  if (!request_.sent_ahead) {
    // Watched while it waits (watchWaitingClient()); after a forward the
    // forwarder had the socket, and from reading_head this costs nothing.
    event_add(client_read_.get(), nullptr);
  }
  const Decision& d = request_.decision;
  ConnectTarget target;
  target.host = d.host;
  target.port = request_.upstream_port;
  target.ip_literal = d.ip_literal;
  target.literal = d.literal;
  attempt_ =
      owner_.connector().connect(request_.runtime->config, std::move(target),
                                 [this](ConnectResult result) { onConnected(std::move(result)); });
}

void Session::onConnected(ConnectResult result) {
  if (state_ != State::connecting) {
    return;
  }
  if (result.error == Reason::dns_pin_violation) {
    // The address rules overrule the policy: the final decision is a denial.
    request_.record.decision = Verdict::deny;
    fail(result.error, result.detail);
    return;
  }
  if (result.error != Reason::none) {
    fail(result.error, result.detail);
    return;
  }
  setTcpOptions(result.fd.get(), config().limits.tcp_keepalive);
  request_.record.upstream = result.address.toString();
  request_.upstream_reused = false;
  if (!request_.plain_http) {
    startTunnel(std::move(result.fd));
    return;
  }
  countDecision(request_.decision.verdict);
  std::unique_ptr<Stream> upstream;
  if (request_.upstream_tls) {
    const auto& tls = request_.runtime->upstream_tls;
    SslPtr ssl = tls ? tls->newSsl(result.fd.get(), request_.decision.host) : nullptr;
    if (!ssl) {
      fail(Reason::upstream_tls_failed, "cannot set up TLS to " + request_.decision.host);
      return;
    }
    upstream = Stream::tls(std::move(result.fd), std::move(ssl));
  } else {
    upstream = Stream::plain(std::move(result.fd));
  }
  startForward(std::move(upstream));
}

void Session::startTunnel(UniqueFd upstream) {
  request_.record.status = 200;
  transitionTo(State::relaying);
  tunnel_open_ = true;
  tunnel_started_ = Clock::now();
  owner_.metrics().tunnelOpened();

  bool sni = listener_.mode == ListenerMode::sni;
  FirstBytesInspector inspector;
  if (config().tunnel.verify_sni && !sni) {
    inspector = sniInspector(request_.decision.host);
  } else {
    countDecision(request_.decision.verdict);  // nothing left that could overrule it
  }
  RelayOptions options;
  options.idle_timeout = config().limits.idle_timeout;
  options.pacer = quotaPacer();
  std::string prefix_up = in_.substr(std::min(in_.size(), request_.head_length));
  in_.clear();
  in_.shrink_to_fit();
  request_.head = RequestHead{};
  relay_ = Relay::start(
      owner_.base(), std::move(client_), Stream::plain(std::move(upstream)), std::move(prefix_up),
      sni ? std::string() : std::string(kConnectEstablished), options, std::move(inspector),
      [this](const RelayResult& result) { onRelayDone(result); });
  // The relay has events of its own (added before these go, so that the
  // socket's interest never drops): an idle tunnel keeps none of these.
  client_read_.reset();
  client_write_.reset();
  timer_.reset();
  kick_.reset();
  attempt_.reset();
  preamble_.reset();
  if (!relay_) {
    finish(CloseCause::error);
  }
}

void Session::onRelayDone(const RelayResult& result) {
  AccessRecord& r = request_.record;
  r.bytes_up = result.bytes_up;
  r.bytes_down = result.bytes_down;
  r.close = closeOfRelay(result.close);
  if (result.close == RelayClose::upstream_error) {
    owner_.metrics().countUpstreamError(UpstreamFailure::reset);
  }
  if (result.close == RelayClose::inspect_denied) {
    r.decision = Verdict::deny;
    r.reason = Reason::sni_mismatch;
    owner_.metrics().countDenied(Reason::sni_mismatch);
  }
  countDecision(r.decision);
  finish(r.close);
}

void Session::flushBytes() {
  if (state_ == State::relaying && relay_) {
    RelayResult now = relay_->progress();
    if (now.bytes_up > 0) {
      // Client bytes went upstream: the first ones passed the SNI check.
      countDecision(request_.record.decision);
    }
    countBytes(now.bytes_up, now.bytes_down);
  } else if (state_ == State::forwarding && forwarder_) {
    auto [up, down] = forwarder_->progress();
    countBytes(up, down);
  }
}

void Session::countBytes(uint64_t up, uint64_t down) {
  Metrics& metrics = owner_.metrics();
  const std::string& rule = request_.record.rule;
  if (up > request_.counted_up) {
    metrics.addBytes(Direction::up, up - request_.counted_up);
    metrics.addBucketBytes(rule, Direction::up, up - request_.counted_up);
    request_.counted_up = up;
  }
  if (down > request_.counted_down) {
    metrics.addBytes(Direction::down, down - request_.counted_down);
    metrics.addBucketBytes(rule, Direction::down, down - request_.counted_down);
    request_.counted_down = down;
  }
}

void Session::startForward(std::unique_ptr<Stream> upstream) {
  transitionTo(State::forwarding);
  request_.counted_up = request_.counted_down = 0;  // a new exchange counts from its first byte
  evtimer_del(timer_.get());
  const Limits& limits = config().limits;
  ForwardOptions options;
  options.idle_timeout = limits.idle_timeout;
  options.max_header_bytes = limits.max_header_bytes;
  options.max_headers = limits.max_headers;
  options.allow_client_keep_alive = !owner_.draining();
  options.pacer = quotaPacer();
  std::string_view after_head =
      std::string_view(in_).substr(std::min(in_.size(), request_.head_length));
  forwarder_ = Forwarder::start(owner_.base(), *client_, std::move(upstream), request_.head,
                                request_.framing, after_head, options,
                                [this](ForwardResult result) { onForwardDone(std::move(result)); });
  // Deleted after the forwarder added its own events for the socket: the
  // socket's interest never drops, so the handover costs no epoll_ctl.
  event_del(client_read_.get());
  event_del(client_write_.get());
  if (!forwarder_) {
    finish(CloseCause::error);
  }
}

void Session::onForwardDone(ForwardResult result) {
  // The forwarder is inside its own callback: it is freed on the next pass.
  retired_forwarder_ = std::move(forwarder_);
  Metrics& metrics = owner_.metrics();
  if (result.upstream_tls_error) {
    metrics.countUpstreamError(UpstreamFailure::tls);
  } else if (result.upstream_bad_response) {
    metrics.countUpstreamError(UpstreamFailure::bad_response);
  } else if (result.upstream_reset) {
    metrics.countUpstreamError(UpstreamFailure::reset);
  }
  AccessRecord& r = request_.record;
  r.bytes_up = result.bytes_up;
  r.bytes_down = result.bytes_down;
  countBytes(result.bytes_up, result.bytes_down);
  const RequestFraming& framing = request_.framing;
  bool no_body = framing.body.kind == BodyKind::none ||
                 (framing.body.kind == BodyKind::content_length && framing.body.length == 0);
  if (result.error != Reason::none && result.upstream_silent && request_.upstream_reused &&
      no_body && isIdempotentMethod(request_.head.method) && !request_.resent) {
    // A kept-alive connection the upstream closed as the request went out
    // (it had closed it while idle, the close still on its way): the request
    // may be sent twice (RFC 9110 9.2.2) and had no body, so it goes once
    // more on a new connection. In `in_` it is still whole.
    request_.resent = true;
    connectUpstream();
    return;
  }
  if (result.error != Reason::none) {
    // Nothing of the response reached the client: it gets an error instead.
    r.close = result.close;
    transitionTo(State::responding);
    fail(result.error, result.error_detail);
    return;
  }
  r.status = result.status;
  r.close = result.close;
  if (result.upstream) {
    owner_.pool().put(request_.pool_key, std::move(result.upstream), r.upstream.value_or(""));
  }
  if (result.truncated) {
    setResetOnClose(client_->fd());
    finish(r.close);
    return;
  }
  if (!result.client_reusable || owner_.draining()) {
    if (result.client_reusable) {
      r.close = CloseCause::draining;
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
  in_ = std::move(result.leftover);
  transitionTo(State::reading_head);
  // Watched again in the callback where the forwarder let go of it: no epoll_ctl.
  event_add(client_read_.get(), nullptr);
  event_active(kick_.get(), EV_TIMEOUT, 0);
}

void Session::nextRequest() {
  retired_forwarder_.reset();
  attempt_.reset();
  if (state_ != State::reading_head) {
    return;
  }
  beginRequest();
  waiting_first_byte_ = in_.empty();
  const Limits& limits = config().limits;
  event_add(client_read_.get(), nullptr);
  armTimer(waiting_first_byte_ ? limits.idle_timeout : limits.header_timeout);
  if (!in_.empty()) {
    parseBuffered();
  } else if (client_->hasBufferedInput()) {
    // TLS: bytes OpenSSL already decrypted announce themselves by no event.
    onReadable();
  }
}

void Session::fail(Reason reason, const std::string& detail) {
  AccessRecord& r = request_.record;
  r.reason = reason;
  if (isUpstreamFailure(reason)) {
    // An allowed request that failed upstream keeps its verdict (SPEC section 4).
    if (r.decision != Verdict::report) {
      r.decision = Verdict::allow;
    }
  } else {
    r.decision = Verdict::deny;
    owner_.metrics().countDenied(reason);
  }
  if (request_.decided) {
    countDecision(r.decision);  // a decision was made: count its final form
  }
  if (inspecting_ && state_ == State::reading_head && isPolicyDenial(reason)) {
    // SPEC: a policy denial inside an inspected tunnel keeps the tunnel for
    // the next request, once the denied request's body has been dropped. A
    // chunked body or a client waiting for 100-continue is not worth the
    // trouble: that tunnel closes.
    const BodyFraming& body = request_.framing.body;
    const HeaderField* expect = request_.head.find("Expect");
    keep_after_response_ = body.kind != BodyKind::chunked && expect == nullptr;
  }
  if (listener_.mode == ListenerMode::sni || !client_) {
    // The client speaks TLS to what it thinks is S3: no HTTP answer, a close.
    r.status = 0;
    finish(CloseCause::proxy_close);
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
  respond(reasonStatus(reason), reasonStatusText(reason), body, true, reason, keep_after_response_);
}

void Session::respond(int status, std::string_view status_text, std::string_view body,
                      bool with_proxy_status, Reason reason, bool keep_alive) {
  if (state_ != State::responding) {
    transitionTo(State::responding);
  }
  attempt_.reset();
  request_.record.status = status;
  out_ = "HTTP/1.1 " + std::to_string(status) + " " + std::string(status_text) + "\r\n";
  if (with_proxy_status) {
    out_ += "Proxy-Status: s3gate; error=";
    out_ += proxyStatusError(reason);
    out_ += "; details=\"";
    out_ += reasonName(reason);
    out_ += "\"\r\n";
  }
  if ((reason == Reason::auth_required || reason == Reason::auth_failed) && config().auth) {
    out_ += "Proxy-Authenticate: " + proxyAuthenticateValue(config().auth->realm) + "\r\n";
  }
  out_ += request_.extra_headers;
  out_ += "Content-Type: text/plain\r\n";
  out_ += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out_ += keep_alive ? "\r\n" : "Connection: close\r\n\r\n";
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
    finish(CloseCause::client_error);
    return;
  }
  event_del(client_write_.get());
  if (keep_after_response_) {
    afterKeptResponse();
    return;
  }
  startLinger();
}

void Session::startLinger() {
  transitionTo(State::lingering);
  if (request_.record.close == CloseCause::none) {
    request_.record.close = CloseCause::proxy_close;
  }
  client_->shutdownWrite();
  event_add(client_read_.get(), nullptr);
  armTimer(kLingerTime);
}

void Session::onTimeout() {
  AccessRecord& r = request_.record;
  switch (state_) {
    case State::preamble:
      if (preamble_) {
        origin_ = preamble_->origin();
        r.client = origin_.text;
        r.via = origin_.via;
        r.vpce = origin_.vpce;
        request_.logged = !preamble_->sawBytes();  // nothing was ever sent: no line
      }
      if (!request_.logged) {
        r.reason = Reason::header_timeout;
        owner_.metrics().countDenied(Reason::header_timeout);
      }
      finish(CloseCause::header_timeout);
      return;
    case State::reading_head:
      if (in_.empty()) {
        // Nothing was sent (a new or kept-alive connection): close quietly, as
        // Squid does with idle clients.
        request_.logged = true;
        finish(waiting_first_byte_ ? CloseCause::idle_timeout : CloseCause::header_timeout);
        return;
      }
      r.close = CloseCause::header_timeout;
      fail(Reason::header_timeout);
      return;
    case State::responding:
      finish(CloseCause::client_stalled);
      return;
    case State::inspect_handshake:
      finish(CloseCause::header_timeout);
      return;
    case State::discarding:
      finish(CloseCause::idle_timeout);
      return;
    case State::lingering:
      finish(r.close);
      return;
    default:
      return;
  }
}

void Session::finish(CloseCause close) {
  if (state_ == State::closed) {
    return;
  }
  AccessRecord& r = request_.record;
  if (r.close == CloseCause::none) {
    r.close = close;
  }
  transitionTo(State::closed);
  quota_lease_.release();  // the budget's connection count drops now, not at the reap
  attempt_.reset();
  auth_.reset();  // its callback is never called now
  client_read_.reset();
  client_write_.reset();
  timer_.reset();
  kick_.reset();
  if (tunnel_open_) {
    auto seconds = std::chrono::duration<double>(Clock::now() - tunnel_started_).count();
    owner_.metrics().tunnelClosed(seconds);
    countBytes(r.bytes_up, r.bytes_down);
  }
  logRequest();
  if (!tunnel_logged_) {
    // The inspected tunnel's own line, after the requests inside it.
    tunnel_logged_ = true;
    if (tunnel_record_.close == CloseCause::none) {
      tunnel_record_.close = r.close;
    }
    tunnel_record_.time_ms = nowMillisSinceEpoch();
    tunnel_record_.duration_ms = millisSince(tunnel_started_);
    if (const auto& log = request_.runtime->access_log) {
      log->write(tunnel_record_);
    }
  }
  // The client stream goes last: a forwarder being torn down may still hold it.
  owner_.reap(this);
}

// ---- inspection ----

bool Session::inspectionWanted(const Decision& d) const {
  const Runtime& rt = *request_.runtime;
  return rt.config->tunnel.inspect && rt.inspect_tls && !inspecting_ &&
         listener_.mode == ListenerMode::forward && !d.ip_literal &&
         isBucketEndpoint(d.name.kind) &&
         (rt.inspect_tls->covers(d.host) ||
          rt.config->tunnel.inspect_uncovered == InspectUncovered::deny);
}

void Session::startInspection() {
  const Decision& d = request_.decision;
  if (!request_.runtime->inspect_tls->covers(d.host)) {
    // inspect_uncovered: deny (blind names never get here).
    fail(Reason::inspect_not_covered,
         "the inspection certificate does not cover " + d.host + " (inspect_uncovered: deny)");
    return;
  }
  AccessRecord& r = request_.record;
  r.status = 200;
  inspecting_ = true;
  tunnel_identity_ = request_.identity;
  tunnel_host_ = d.host;
  tunnel_port_ = d.port;
  tunnel_open_ = true;
  tunnel_started_ = Clock::now();
  owner_.metrics().tunnelOpened();
  // Client bytes after the CONNECT head (a ClientHello sent at once) belong to TLS.
  std::string prefix = in_.substr(std::min(in_.size(), request_.head_length));
  in_.clear();
  size_t written = 0;
  while (written < kConnectEstablished.size()) {
    Stream::Result w =
        client_->write(kConnectEstablished.data() + written, kConnectEstablished.size() - written);
    if (w.status != Stream::Io::ok) {
      // 39 bytes on a new connection do not block; a client that makes them is gone.
      finish(CloseCause::client_error);
      return;
    }
    written += w.bytes;
  }
  UniqueFd fd = client_->releaseFd();
  SslPtr ssl = request_.runtime->inspect_tls->newSsl(fd.get(), prefix);
  if (!ssl) {
    client_ = Stream::plain(std::move(fd));
    finish(CloseCause::error);
    return;
  }
  client_ = Stream::tls(std::move(fd), std::move(ssl));
  tunnel_record_ = r;  // the CONNECT's line is the tunnel's, written at its end
  tunnel_logged_ = false;
  request_.logged = true;
  transitionTo(State::inspect_handshake);
  armTimer(config().limits.header_timeout);
  continueInspectHandshake();
}

void Session::continueInspectHandshake() {
  Stream::Result r = client_->handshake();
  if (r.status == Stream::Io::would_block) {
    short wants = client_->wantEvents();
    (wants & EV_READ) ? event_add(client_read_.get(), nullptr) : event_del(client_read_.get());
    (wants & EV_WRITE) ? event_add(client_write_.get(), nullptr) : event_del(client_write_.get());
    return;
  }
  event_del(client_write_.get());
  if (r.status != Stream::Io::ok) {
    // Most often a client that does not trust the inspection CA (its alert
    // ends the handshake): the tunnel's line says so.
    countDecision(tunnel_record_.decision);
    tunnel_record_.close = CloseCause::tls_handshake_failed;
    finish(CloseCause::tls_handshake_failed);
    return;
  }
  const char* sni = SSL_get_servername(client_->ssl(), TLSEXT_NAMETYPE_host_name);
  std::string name;
  if (sni == nullptr || !normalizeHostName(sni, &name) || name != tunnel_host_) {
    tunnel_record_.decision = Verdict::deny;
    tunnel_record_.reason = Reason::sni_mismatch;
    owner_.metrics().countDenied(Reason::sni_mismatch);
    countDecision(Verdict::deny);
    tunnel_record_.close = CloseCause::sni_mismatch;
    finish(CloseCause::sni_mismatch);
    return;
  }
  countDecision(tunnel_record_.decision);
  transitionTo(State::reading_head);
  event_add(client_read_.get(), nullptr);
  event_active(kick_.get(), EV_TIMEOUT, 0);  // nextRequest(): the first request inside
}

void Session::onInspectedRequest() {
  const RequestHead& head = request_.head;
  request_.plain_http = true;
  request_.framing = checkRequestFraming(head, /*require_host=*/true);
  if (request_.framing.reason != Reason::none) {
    fail(request_.framing.reason, "the request's framing is ambiguous or malformed");
    return;
  }
  // The bucket comes from the Host a request names (or its path), whatever
  // name the tunnel was opened to.
  const HeaderField* host = head.find("Host");
  std::string authority(host != nullptr ? host->value : std::string_view());
  if (authority.find(':') == std::string::npos || authority.back() == ']') {
    authority += ":" + std::to_string(tunnel_port_);
  }
  RequestTarget target;
  if (parseRequestTarget("CONNECT", authority, &target) != Reason::none) {
    request_.record.host = std::string(host != nullptr ? host->value : "-");
    fail(Reason::bad_host, "the Host field is not a host name");
    return;
  }
  if (target.port != tunnel_port_) {
    fail(Reason::bad_request, "the Host field names another port than the tunnel's");
    return;
  }
  DecisionInput input = decisionInput(RequestKindForDecision::inspect);
  input.host = target.host;
  input.host_is_ipv6_literal = target.host_is_ipv6_literal;
  input.port = tunnel_port_;
  input.port_given = true;
  if (!readCopySource(input)) {
    return;
  }
  decideHead(input);
}

void Session::afterKeptResponse() {
  keep_after_response_ = false;
  logRequest();
  const BodyFraming& body = request_.framing.body;
  uint64_t length = body.kind == BodyKind::content_length ? body.length : 0;
  size_t after_head = std::min(in_.size(), request_.head_length);
  size_t here = static_cast<size_t>(std::min<uint64_t>(length, in_.size() - after_head));
  in_.erase(0, after_head + here);  // what follows is the next request
  discard_left_ = length - here;
  if (discard_left_ > 0) {
    transitionTo(State::discarding);
    event_add(client_read_.get(), nullptr);
    armTimer(config().limits.idle_timeout);
    if (client_->hasBufferedInput()) {
      discardBody();
    }
    return;
  }
  transitionTo(State::reading_head);
  event_add(client_read_.get(), nullptr);
  event_active(kick_.get(), EV_TIMEOUT, 0);
}

void Session::discardBody() {
  char* scratch = threadScratch().data();
  while (discard_left_ > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(discard_left_, kScratchBytes));
    Stream::Result r = client_->read(scratch, want);
    if (r.status == Stream::Io::would_block) {
      return;
    }
    if (r.status != Stream::Io::ok) {
      finish(r.status == Stream::Io::eof ? CloseCause::client_eof : CloseCause::client_error);
      return;
    }
    discard_left_ -= r.bytes;
    armTimer(config().limits.idle_timeout);
  }
  transitionTo(State::reading_head);
  event_active(kick_.get(), EV_TIMEOUT, 0);
}

void Session::logRequest() {
  if (request_.logged) {
    return;
  }
  request_.logged = true;
  AccessRecord& r = request_.record;
  r.time_ms = nowMillisSinceEpoch();
  r.duration_ms = millisSince(request_.started);
  if (inspecting_ && r.kind == RecordKind::inspect) {
    tunnel_record_.bytes_up += r.bytes_up;
    tunnel_record_.bytes_down += r.bytes_down;
  }
  if (const auto& log = request_.runtime->access_log) {
    log->write(r);
  }
}

}  // namespace s3gate
