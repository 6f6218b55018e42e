#pragma once
// Every metric of SPEC section 5, declared in one place. Label values come from
// bounded sets only (reason constants, kinds, rule names from the configuration).
// All children are created up front or on first use of a rule name and kept,
// so the per-request path only touches atomics (no lock, no map lookup on the
// per-byte path: the relay adds its byte counts when it ends or in large steps).

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "acl/decision.h"
#include "acl/reason.h"

namespace s3gate {

enum class RequestKind { connect, http, inspect, local };
// Verdict comes from acl/decision.h.
enum class Direction { up, down };
enum class UpstreamFailure { refused, timeout, reset, tls, bad_response };
enum class DnsResult { cache_hit, resolved, pinned, failed };
enum class AuthResult { success, cached, failure, missing };

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> registryPtr() { return registry_; }
  // The Prometheus text exposition of everything (what GET /metrics serves).
  std::string serialize() const;

  void countRequest(RequestKind kind, Verdict verdict);
  void countDenied(Reason reason);
  void connectionOpened();
  void connectionClosed();
  void tunnelOpened();
  void tunnelClosed(double duration_seconds);
  void addBytes(Direction direction, uint64_t bytes);
  // Thread-safe; `rule` is a bucket rule's name (never a raw bucket), "-" for none.
  void addBucketBytes(const std::string& rule, Direction direction, uint64_t bytes);
  void observeUpstreamConnect(double seconds);
  void countUpstreamError(UpstreamFailure error);
  void countDnsLookup(DnsResult result);
  void countAuth(AuthResult result);
  // Thread-safe; `quota` is a quota entry's name. reason: client_limit or rate_limited.
  void countQuotaLimited(const std::string& quota, Reason reason);
  void addQuotaPaced(const std::string& quota, Direction direction, double seconds);
  void configReloaded(bool success);
  // s3gate_config_info{sha256}: one series, value 1; a new digest replaces the
  // previous series (SPEC section 5). Called at start-up and after each
  // successful reload.
  void setConfigInfo(const std::string& sha256);
  void setDraining(bool draining);

  // Value readers, for tests.
  double requests(RequestKind kind, Verdict verdict) const;
  double denied(Reason reason) const;
  double connectionsActive() const;
  double tunnelsActive() const;
  double auth(AuthResult result) const;
  double bucketBytes(const std::string& rule, Direction direction) const;  // 0 when unseen
  std::string configSha256() const;  // empty before setConfigInfo()
  double quotaLimited(const std::string& quota, Reason reason) const;      // 0 when unseen
  double quotaPaced(const std::string& quota, Direction direction) const;  // 0 when unseen

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  // Families and pre-created children; see metrics.cpp.
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace s3gate
