#pragma once
// The connector: from an allowed decision to a connected socket. Pins, else one
// DNS lookup; the address rules applied once to what came back; then each
// checked address in turn (connect_timeout each) until one connects. It
// answers with a value, as the resolver does, and never from inside connect().
//
// The session owns the attempt: destroying it cancels the lookup or the
// connect, and the callback is then never called.

#include <event2/event.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "acl/decision.h"
#include "acl/reason.h"
#include "common/net.h"
#include "config/config.h"
#include "proxy/socket.h"

namespace s3gate {

class Metrics;
class Resolver;

struct ConnectTarget {
  std::string host;  // the normalised name (or an IP literal's text)
  uint16_t port = 0;
  bool ip_literal = false;  // let through by report mode: held to the address rules
  IpAddress literal;
};

struct ConnectResult {
  Reason error = Reason::none;  // dns_failed, dns_timeout, dns_pin_violation,
                                // connect_failed, connect_timeout
  std::string detail;           // one line for the error body
  UniqueFd fd;                  // connected, non-blocking
  SocketAddress address;        // the address it connected to
};

class Connector {
 public:
  class Attempt {
   public:
    virtual ~Attempt() = default;
  };
  using Callback = std::function<void(ConnectResult)>;

  virtual ~Connector() = default;
  // `config` supplies pins, the address rules and connect_timeout; it is kept
  // for the attempt's life. The callback runs later from the event loop.
  [[nodiscard]] virtual std::unique_ptr<Attempt> connect(ConfigPtr config, ConnectTarget target,
                                                         Callback cb) = 0;
};

// The real one: c-ares through `resolver()` (asked at each connect, so that a
// resolver replaced by a reload is used from then on), metrics counted.
std::unique_ptr<Connector> makeNetConnector(event_base* base, std::function<Resolver&()> resolver,
                                            Metrics& metrics);

}  // namespace s3gate
