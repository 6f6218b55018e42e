#pragma once
// What comes before the first request on a connection: the PROXY header (when
// the listener asks for one) and the TLS handshake of an HTTPS listener. Its
// outcome is the client's origin (address, load balancer, VPC endpoint,
// certificate identity) and the stream to read requests from.
//
// The PROXY header is peeked, then exactly its bytes are consumed, so what
// follows stays in the socket for TLS. While a header is incomplete the
// preamble waits for new bytes (an edge-triggered read), never polls.
// The callback runs once, from the loop; destroying the preamble cancels it.

#include <event2/event.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "acl/reason.h"
#include "common/net.h"
#include "config/config.h"
#include "proxy/access_log.h"
#include "proxy/stream.h"
#include "proxy/tls.h"

namespace s3gate {

struct ClientOrigin {
  IpAddress ip;                     // for decisions: the PROXY source, else the peer
  std::string text;                 // the same with its port, for the log
  std::optional<std::string> via;   // the TCP peer that sent a PROXY header
  std::optional<std::string> vpce;  // the AWS TLV of that header
  std::string identity;             // the client certificate's CN, when there is one
};

// The client as the TCP peer shows it; an IPv4-mapped IPv6 address is the IPv4
// address (as for a PROXY header's source).
ClientOrigin originOfPeer(const SocketAddress& peer);

struct PreambleOutcome {
  Reason error = Reason::none;  // bad_request, untrusted_proxy, client_certificate_required
  CloseCause close = CloseCause::none;
  bool silent = false;  // nothing was sent (a health check): no log line
  std::unique_ptr<Stream> stream;
  ClientOrigin origin;
};

class Preamble {
 public:
  using Done = std::function<void(PreambleOutcome)>;

  // `tls` null: no handshake. The stream is plain and its socket connected.
  static std::unique_ptr<Preamble> start(event_base* base, std::unique_ptr<Stream> client,
                                         const ListenerConfig& listener, const Config& config,
                                         std::shared_ptr<TlsServerContext> tls,
                                         const SocketAddress& peer, Done done);
  virtual ~Preamble() = default;
  // Whether any byte has arrived (a timeout of a silent connection leaves no line).
  virtual bool sawBytes() const = 0;
  // The origin known so far (the PROXY source once read), for a timeout's log line.
  virtual const ClientOrigin& origin() const = 0;
};

}  // namespace s3gate
