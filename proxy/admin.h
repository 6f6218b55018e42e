#pragma once
// The admin endpoints (SPEC section 5 and `admin.address`): GET /metrics (the
// Prometheus text exposition) and GET /ping (200 "OK", or 503 "draining").
// Served on an event_base of the caller's choosing, apart from the proxy
// workers, so that it keeps answering while they are saturated.
//
// The admin port may be reachable from more hosts than should ever hurt the
// proxy (the packaged configuration binds 0.0.0.0), so what it can take is
// bounded by construction:
// - at most kMaxConnections connections; one more is closed as soon as it is
//   accepted;
// - each request has kHeadTimeout from accept (or from the end of the previous
//   response) for its whole head, and its response kWriteTimeout to be taken:
//   deadlines, not idle timers that every byte would push back;
// - no connection is accepted when the process is within kDescriptorReserve
//   descriptors of RLIMIT_NOFILE: those are the proxy's;
// - a head is at most kMaxHeadBytes; bodies are not read (a request with one
//   is answered, then the connection closes).
// Responses carry Content-Length; a connection is kept alive after an
// HTTP/1.1 request without a body or "Connection: close".

#include <event2/event.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>

#include "common/net.h"
#include "metrics/metrics.h"
#include "proxy/event_ptr.h"
#include "proxy/socket.h"

namespace s3gate {

class AdminServer {
 public:
  static constexpr size_t kMaxConnections = 64;
  static constexpr std::chrono::seconds kHeadTimeout{10};
  static constexpr std::chrono::seconds kWriteTimeout{10};
  static constexpr size_t kDescriptorReserve = 256;
  static constexpr size_t kMaxHeadBytes = 8192;

  // Binds `address` (SO_REUSEADDR) and serves on `base`, which must outlive the
  // server. `is_draining` is called on the base's thread for every /ping.
  // Returns nullptr and sets *error when the address cannot be bound.
  static std::unique_ptr<AdminServer> create(event_base* base, const SocketAddress& address,
                                             Metrics& metrics, std::function<bool()> is_draining,
                                             std::string* error);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // The address actually bound (its port is the kernel's choice when asked for 0).
  const SocketAddress& boundAddress() const { return bound_; }
  uint16_t port() const { return bound_.port(); }
  // Connections open now.
  size_t connections() const { return connections_.size(); }

 private:
  struct Connection;
  using Connections = std::list<std::unique_ptr<Connection>>;

  AdminServer(event_base* base, Metrics& metrics, std::function<bool()> is_draining);
  static void onAcceptable(evutil_socket_t fd, short what, void* arg);
  static void onAcceptRetry(evutil_socket_t fd, short what, void* arg);
  static void onSocket(evutil_socket_t fd, short what, void* arg);
  static void onDeadline(evutil_socket_t fd, short what, void* arg);
  static void onReap(evutil_socket_t fd, short what, void* arg);
  void acceptAll();
  bool descriptorsLow(int accepted_fd) const;
  void open(UniqueFd fd);
  void service(Connection& c);
  bool readHead(Connection& c);
  void answer(Connection& c);
  std::string respond(Connection& c, std::string_view method, std::string_view path);
  bool writeOut(Connection& c);
  void startLinger(Connection& c);
  void arm(Connection& c, std::chrono::milliseconds after);
  void close(Connection& c);

  event_base* base_;
  Metrics& metrics_;
  std::function<bool()> is_draining_;
  UniqueFd listener_;
  EventPtr accept_event_;
  EventPtr accept_retry_;  // after EMFILE/ENFILE: accepting again a little later
  Connections connections_;
  Connections retired_;  // closed, freed from the loop (never inside their own callback)
  EventPtr reap_;        // frees retired_
  SocketAddress bound_;
};

}  // namespace s3gate
