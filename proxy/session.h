#pragma once
// One client connection's life, as a state machine you can read:
//
//   preamble -> reading_head            (the PROXY header and TLS handshake: preamble.h)
//   reading_head -> connecting -> relaying (CONNECT) -> closed
//                              -> forwarding (plain HTTP)
//   reading_head -> forwarding          (a pooled upstream connection)
//   forwarding   -> reading_head        (keep-alive: the next request) | connecting (resend) |
//   closed any but relaying -> responding -> lingering -> closed
//
// A connection without a PROXY header or TLS starts at reading_head; an sni
// listener's reading_head reads a TLS ClientHello instead of an HTTP head.
//
// preamble:     the Preamble finds the client's origin; it is then checked
//               against `clients` at once, before any request head.
// reading_head: a request head arrives (header_timeout, size limits); it is
//               decided against the runtime snapshot in force at that moment.
// connecting:   the Connector turns the decision into a connected socket.
// relaying:     CONNECT: the Relay owns both sockets until the tunnel ends.
// forwarding:   plain HTTP: the Forwarder carries one request and its response.
// responding:   an error or local response is written.
// lingering:    after the response, the client's remaining bytes are read and
//               dropped for a short while so the close does not turn into a
//               reset that destroys the response before the client reads it.
//
// While a request waits off the client connection (its password verified on
// the Authenticator's threads, or connecting), the client's socket is still
// watched, without consuming anything: a client that closes or resets ends the
// wait and the session at once (watchWaitingClient()).
//
// Everything about the current request lives in one Request value, reset
// whole for the next one. libevent callbacks only dispatch to the on*()
// methods. A session never destroys itself: its owner reaps it.

#include <event2/event.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "acl/decision.h"
#include "proxy/access_log.h"
#include "proxy/auth.h"
#include "proxy/connector.h"
#include "proxy/event_ptr.h"
#include "proxy/forwarder.h"
#include "proxy/http_message.h"
#include "proxy/http_parser.h"
#include "proxy/preamble.h"
#include "proxy/quota.h"
#include "proxy/relay.h"
#include "proxy/runtime.h"
#include "proxy/session_owner.h"
#include "proxy/stream.h"

namespace s3gate {

class Session {
 public:
  enum class State {
    preamble,
    reading_head,
    connecting,
    relaying,
    forwarding,
    responding,
    lingering,
    inspect_handshake,
    discarding,
    closed
  };
  static std::string_view stateName(State state);

  // `overloaded`: the connection limit was reached; answer 503 and close.
  Session(SessionOwner& owner, const ListenerConfig& listener, size_t listener_index,
          UniqueFd client, const SocketAddress& peer, bool overloaded);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  // Drain: a session waiting for a request head is closed now.
  void closeIfIdle();
  // Drain deadline: whatever it is doing, it ends now.
  void abort();
  // Adds the bytes relayed or forwarded since the last call to the byte
  // counters, so that a long transfer shows in them while it runs.
  void flushBytes();
  State state() const { return state_; }

 private:
  using Clock = std::chrono::steady_clock;

  // The request in hand: reset whole when the next one begins.
  struct Request {
    RuntimePtr runtime;  // the snapshot this request is decided with
    RequestHead head;    // its views point into in_
    size_t head_length = 0;
    size_t parse_checked = 0;  // bytes of in_ the parser has already found incomplete
    RequestFraming framing;
    bool plain_http = false;
    Decision decision;
    std::string identity;          // the authenticated user (step 1a); empty: none
    bool decided = false;          // decide() ran: the request is counted once
    bool counted = false;          // in s3gate_requests_total
    bool upstream_reused = false;  // the forwarder's upstream came from the pool
    bool resent = false;           // sent again on a new connection
    bool sent_ahead = false;       // the client sent bytes while it waited: no longer watched
    uint64_t counted_up = 0;       // of the current tunnel or exchange, in the byte counters
    uint64_t counted_down = 0;
    uint16_t upstream_port = 0;
    bool upstream_tls = false;
    std::string pool_key;
    AccessRecord record;
    std::string extra_headers;  // for an error response (Retry-After), each ending in CRLF
    Clock::time_point started;
    bool logged = false;
  };

  void transitionTo(State next);

  static void onClientEvent(evutil_socket_t fd, short what, void* arg);
  static void onTimer(evutil_socket_t fd, short what, void* arg);
  static void onKick(evutil_socket_t fd, short what, void* arg);

  void onPreambleDone(PreambleOutcome outcome);
  void acceptClient();
  void onReadable();
  bool waitingOffClient() const;
  void watchWaitingClient();
  void onClientGone(CloseCause close);
  void readLinger();
  void onWritable();
  void onTimeout();
  void parseBuffered();
  void onClientHello();
  void onHead();
  void onAuthDone(AuthOutcome outcome);
  bool applyAuth(const AuthOutcome& outcome);
  void dispatchHead();
  void onConnect();
  void onPlainHttp();
  void onLocal();
  DecisionInput decisionInput(RequestKindForDecision kind) const;
  void decideHead(const DecisionInput& input);
  void decide(RequestKindForDecision kind);
  bool readCopySource(DecisionInput& input);
  // Inspection (tunnel.inspect): see the diagram above.
  bool inspectionWanted(const Decision& d) const;
  void startInspection();
  void continueInspectHandshake();
  void onInspectedRequest();
  void afterKeptResponse();
  void discardBody();
  void countDecision(Verdict verdict);
  bool admitQuota(bool request);
  std::shared_ptr<BandwidthPacer> quotaPacer();
  void connectUpstream();
  void onConnected(ConnectResult result);
  void startTunnel(UniqueFd upstream);
  void onRelayDone(const RelayResult& result);
  void countBytes(uint64_t up, uint64_t down);
  void startForward(std::unique_ptr<Stream> upstream);
  void onForwardDone(ForwardResult result);
  void nextRequest();
  void beginRequest();

  void fail(Reason reason, const std::string& detail = {});
  void respond(int status, std::string_view status_text, std::string_view body,
               bool with_proxy_status, Reason reason, bool keep_alive = false);
  void startLinger();
  void finish(CloseCause close);
  void armTimer(Duration after);
  void logRequest();
  const Config& config() const { return *request_.runtime->config; }

  SessionOwner& owner_;
  ListenerConfig listener_;
  size_t listener_index_;
  SocketAddress peer_;  // the TCP peer (the load balancer behind PROXY headers)
  ClientOrigin origin_;
  std::unique_ptr<Stream> client_;
  std::unique_ptr<Preamble> preamble_;
  State state_ = State::reading_head;
  bool overloaded_ = false;
  bool tunnel_open_ = false;
  bool waiting_first_byte_ = true;  // between requests: idle, not yet a head

  EventPtr client_read_;
  EventPtr client_write_;
  EventPtr timer_;
  EventPtr kick_;  // runs nextRequest() from the loop after a forward ends

  std::string in_;      // the request head as it arrives, then any bytes after it
  std::string out_;     // a response being written
  size_t out_pos_ = 0;  // bytes of out_ already written
  size_t lingered_ = 0;

  Request request_;
  // An inspected tunnel: its name and port, and its own log line (written at
  // its end, with the decrypted bytes of every request inside).
  bool inspecting_ = false;
  std::string tunnel_host_;
  std::string tunnel_identity_;  // an authenticated user's name (Proxy-Authorization at CONNECT)
  uint16_t tunnel_port_ = 0;
  AccessRecord tunnel_record_;
  bool tunnel_logged_ = true;
  bool keep_after_response_ = false;  // a denial inside a tunnel: the tunnel goes on
  uint64_t discard_left_ = 0;         // body bytes of a denied request still to drop
  std::unique_ptr<Connector::Attempt> attempt_;
  std::unique_ptr<Authenticator::Pending> auth_;  // a password being verified off the loop
  QuotaLease quota_lease_;                        // this connection, counted in its quota's budget
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<Forwarder> forwarder_;
  std::unique_ptr<Forwarder> retired_forwarder_;  // freed outside its own callback
  Clock::time_point tunnel_started_;
};

}  // namespace s3gate
