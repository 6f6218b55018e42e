#pragma once
// One client connection's life, as a state machine you can read:
//
//   accepted -> reading_proxy_header -> handshaking (TLS listeners) -> reading_head
//   (a listener without PROXY headers or TLS starts at reading_head; an sni
//   listener's reading_head reads a TLS ClientHello instead of an HTTP head)
//   reading_head -> resolving -> connecting -> relaying (CONNECT) -> closed
//                                           -> forwarding (plain HTTP)
//   reading_head -> forwarding (a pooled upstream connection)
//   forwarding   -> reading_head (keep-alive: the next request) | closed
//   reading_head, resolving, connecting, forwarding -> responding -> lingering -> closed
//
// reading_proxy_header: the PROXY v1/v2 header, read exactly (peeked, then
//               consumed), so what follows is untouched for TLS.
// handshaking:  the TLS handshake of an HTTPS listener (client certificates).
// reading_head: a request head arrives (header_timeout, size limits).
// resolving:    pins, else one DNS lookup; the answer is checked once.
// connecting:   each checked address in turn, connect_timeout each.
// relaying:     CONNECT: the Relay owns both sockets until the tunnel ends.
// forwarding:   plain HTTP: the Forwarder carries one request and its response;
//               a kept-alive connection then reads the next head.
// responding:   an error or local response is written.
// lingering:    after the response, the client's remaining bytes are read and
//               dropped for a short while so the close does not turn into a
//               reset that destroys the response before the client reads it.
//
// libevent callbacks only dispatch to the on*() methods. A session never
// destroys itself: it asks its worker to reap it after the callback returns.

#include <event2/event.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "acl/config.h"
#include "acl/decision.h"
#include "metrics/metrics.h"
#include "proxy/access_log.h"
#include "proxy/event_ptr.h"
#include "proxy/forwarder.h"
#include "proxy/http_message.h"
#include "proxy/http_parser.h"
#include "proxy/relay.h"
#include "proxy/resolver.h"
#include "proxy/socket.h"
#include "proxy/stream.h"
#include "proxy/tls.h"

namespace s3gate {

class Worker;

class Session {
 public:
  enum class State {
    reading_proxy_header,
    handshaking,
    reading_head,
    resolving,
    connecting,
    relaying,
    forwarding,
    responding,
    lingering,
    closed
  };
  static std::string_view stateName(State state);

  // `overloaded`: the connection limit was reached; answer 503 and close.
  Session(Worker& worker, ConfigPtr config, const ListenerConfig& listener,
          std::shared_ptr<TlsServerContext> tls, UniqueFd client, const SocketAddress& peer,
          bool overloaded);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  // Drain: a session waiting for a request head is closed now.
  void closeIfIdle();
  // Drain deadline: whatever it is doing, it ends now.
  void abort();
  // Adds the bytes relayed or forwarded since the last call to the byte
  // counters, so that a long transfer shows in them while it runs (the worker
  // calls this every second).
  void flushBytes();
  State state() const { return state_; }

 private:
  void transitionTo(State next);

  static void onClientEvent(evutil_socket_t fd, short what, void* arg);
  static void onTimer(evutil_socket_t fd, short what, void* arg);
  static void onUpstreamEvent(evutil_socket_t fd, short what, void* arg);
  static void onKick(evutil_socket_t fd, short what, void* arg);

  void onReadable();
  void readProxyHeader();
  static void onPeekRetry(evutil_socket_t fd, short what, void* arg);
  void startHandshake();
  void continueHandshake();
  void badPreamble(Reason reason, const std::string& close);
  void onClientHello();
  void recordDecision(const Decision& d, RequestKind kind, uint16_t port);
  void onWritable();
  void onTimeout();
  void parseBuffered();
  void onHead(const RequestHead& head);
  void onConnect(const RequestHead& head);
  void onPlainHttp(const RequestHead& head);
  void onLocal(const RequestHead& head);
  Decision decideFor(const RequestHead& head, RequestKindForDecision kind);
  void resolveTarget();
  void onResolved(const DnsAnswer& answer);
  void useAddresses(const std::vector<IpAddress>& addresses);
  void connectNext();
  void onUpstreamReady();
  void connectFailed(int err, bool timed_out);
  void onConnected();
  void startTunnel();
  void onRelayDone(const RelayResult& result);
  // Counts what the current tunnel or exchange has moved up to these totals.
  void countBytes(uint64_t up, uint64_t down);
  void startForward(std::unique_ptr<Stream> upstream);
  void onForwardDone(ForwardResult result);
  void nextRequest();

  void fail(Reason reason, const std::string& detail = {});
  void respond(int status, std::string_view status_text, std::string_view extra_headers,
               std::string_view body, bool with_proxy_status, Reason reason);
  void startLinger();
  void finish(const std::string& close);
  void armTimer(Duration after);
  void logRequest();
  void resetRecord();

  Worker& worker_;
  ConfigPtr config_;
  std::unique_ptr<Stream> client_;
  ListenerConfig listener_;
  std::shared_ptr<TlsServerContext> tls_;  // HTTPS listeners only
  SocketAddress peer_;                     // the TCP peer (the load balancer behind PROXY headers)
  IpAddress client_ip_;      // the client for decisions: the PROXY source, else the peer
  std::string client_text_;  // the same with its port, for the log
  std::string identity_;     // the client certificate's CN, when there is one
  std::optional<std::string> via_;
  std::optional<std::string> vpce_;
  size_t last_peek_ = 0;  // PROXY header bytes seen at the last peek
  State state_ = State::reading_head;
  bool overloaded_ = false;
  bool tunnel_open_ = false;
  bool waiting_first_byte_ = true;  // between requests: idle, not yet a head

  EventPtr client_read_;
  EventPtr client_write_;
  EventPtr timer_;
  EventPtr upstream_event_;
  EventPtr kick_;        // runs nextRequest() from the loop after a forward ends
  EventPtr peek_retry_;  // re-reads an incomplete PROXY header a moment later

  std::string in_;  // the request head as it arrives, then any bytes after it
  size_t head_length_ = 0;
  size_t parse_checked_ = 0;  // bytes of in_ the parser has already found incomplete
  std::string out_;           // a response being written
  size_t out_pos_ = 0;        // bytes of out_ already written
  size_t lingered_ = 0;

  RequestHead head_;  // the current request; its views point into in_
  RequestFraming framing_;
  bool plain_http_ = false;
  bool upstream_reused_ = false;  // the forwarder's upstream came from the pool
  bool resent_ = false;           // this request was sent again on a new connection
  uint64_t counted_up_ = 0;       // of the current tunnel or exchange, in the byte counters
  uint64_t counted_down_ = 0;
  uint16_t upstream_port_ = 0;
  bool upstream_tls_ = false;
  std::string pool_key_;

  Decision decision_;
  std::unique_ptr<Resolver::Lookup> lookup_;
  std::vector<IpAddress> addresses_;
  size_t next_address_ = 0;
  UniqueFd upstream_;
  SocketAddress upstream_address_;
  std::chrono::steady_clock::time_point connect_started_;
  Reason last_connect_failure_ = Reason::connect_failed;
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<Forwarder> forwarder_;
  std::unique_ptr<Forwarder> retired_forwarder_;  // freed outside its own callback

  AccessRecord record_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point tunnel_started_;
  bool logged_ = false;
};

}  // namespace s3gate
