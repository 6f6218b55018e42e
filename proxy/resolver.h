#pragma once
// DNS through c-ares, driven by one worker's event loop: c-ares sockets are
// libevent events, one timer is re-armed from ares_timeout(). A per-worker
// cache (TTL clamped to [min_ttl, max_ttl], failures kept for negative_ttl),
// concurrent lookups of one name coalesced into one query, and a lookup handle
// whose destruction cancels the callback. No blocking call anywhere.
//
// Pins and the address rules are not applied here (acl/ does that): the
// resolver answers what DNS says.

#include <event2/event.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "acl/reason.h"
#include "common/duration.h"
#include "common/net.h"

namespace s3gate {

struct DnsAnswer {
  enum class Source { resolved, cache_hit };
  Reason error = Reason::none;  // none, dns_failed or dns_timeout
  // A and AAAA records, in c-ares' RFC 6724 order (destinations this host can
  // reach first); empty unless error is none.
  std::vector<IpAddress> addresses;
  Source source = Source::resolved;
};

// What the resolver takes from `dns` (SPEC section 2); pins and the address
// rules are the decision's, not the resolver's.
struct ResolverSettings {
  std::vector<SocketAddress> servers;         // empty: /etc/resolv.conf
  Duration timeout{std::chrono::seconds(2)};  // per try
  int attempts = 2;                           // tries per server
  Duration min_ttl{std::chrono::seconds(5)};
  Duration max_ttl{std::chrono::seconds(300)};
  Duration negative_ttl{std::chrono::seconds(5)};
  bool operator==(const ResolverSettings&) const = default;
};

class Resolver {
 public:
  using Callback = std::function<void(const DnsAnswer&)>;

  // Cancels its lookup when destroyed; the callback is then never called.
  class Lookup {
   public:
    virtual ~Lookup() = default;
  };

  // Creates the c-ares channel from `dns` (servers, timeout, attempts).
  // Returns nullptr and sets *error when c-ares cannot be set up.
  static std::unique_ptr<Resolver> create(event_base* base, const ResolverSettings& dns,
                                          std::string* error);
  virtual ~Resolver() = default;

  // Starts a lookup of `host` (a normalised DNS name, not an IP literal).
  // The callback runs later from the event loop, never from inside resolve(),
  // even for a cache hit. Keep the handle alive as long as the answer is wanted.
  // The callback may destroy any lookup, start new ones, or destroy the
  // resolver; it must not throw (the process terminates).
  [[nodiscard]] virtual std::unique_ptr<Lookup> resolve(const std::string& host, Callback cb) = 0;

  // Number of names in the cache (for tests).
  virtual size_t cacheSize() const = 0;
  // Lookups whose callback has not run yet: a resolver replaced by a reload
  // is kept until this is 0.
  virtual size_t pendingLookups() const = 0;
};

}  // namespace s3gate
