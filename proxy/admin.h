#pragma once
// The admin endpoints (SPEC section 5 and `admin.address`): GET /metrics (the
// Prometheus text exposition) and GET /ping (200 "OK", or 503 "draining").
// Served by libevent's evhttp on an event_base of its own choosing, apart from
// the proxy workers, so that it keeps answering while they are saturated.

#include <event2/event.h>
#include <event2/http.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/net.h"
#include "metrics/metrics.h"

namespace s3gate {

class AdminServer {
 public:
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

 private:
  struct HttpDeleter {
    void operator()(evhttp* http) const { evhttp_free(http); }
  };

  AdminServer(Metrics& metrics, std::function<bool()> is_draining);
  static void onRequest(evhttp_request* request, void* arg);
  void handle(evhttp_request* request);

  Metrics& metrics_;
  std::function<bool()> is_draining_;
  std::unique_ptr<evhttp, HttpDeleter> http_;  // owns the listener and its connections
  SocketAddress bound_;
};

}  // namespace s3gate
