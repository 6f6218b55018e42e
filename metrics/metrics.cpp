#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

#include <utility>
#include <vector>

namespace s3gate {

namespace {

constexpr std::array<RequestKind, 4> kKinds = {RequestKind::connect, RequestKind::http,
                                               RequestKind::inspect, RequestKind::local};
constexpr std::array<Verdict, 3> kVerdicts = {Verdict::allow, Verdict::deny, Verdict::report};
constexpr std::array<Direction, 2> kDirections = {Direction::up, Direction::down};
constexpr std::array<UpstreamFailure, 5> kUpstreamErrors = {
    UpstreamFailure::refused, UpstreamFailure::timeout, UpstreamFailure::reset,
    UpstreamFailure::tls, UpstreamFailure::bad_response};
constexpr std::array<DnsResult, 4> kDnsResults = {DnsResult::cache_hit, DnsResult::resolved,
                                                  DnsResult::pinned, DnsResult::failed};
constexpr std::array<AuthResult, 4> kAuthResults = {AuthResult::success, AuthResult::cached,
                                                    AuthResult::failure, AuthResult::missing};

const char* kindLabel(RequestKind kind) {
  switch (kind) {
    case RequestKind::connect:
      return "connect";
    case RequestKind::http:
      return "http";
    case RequestKind::inspect:
      return "inspect";
    case RequestKind::local:
      return "local";
  }
  return "unknown";
}

// verdictName() returns string literals, so the label is NUL-terminated.
const char* verdictLabel(Verdict verdict) {
  return verdictName(verdict).data();
}

const char* directionLabel(Direction direction) {
  return direction == Direction::up ? "up" : "down";
}

const char* upstreamErrorLabel(UpstreamFailure error) {
  switch (error) {
    case UpstreamFailure::refused:
      return "refused";
    case UpstreamFailure::timeout:
      return "timeout";
    case UpstreamFailure::reset:
      return "reset";
    case UpstreamFailure::tls:
      return "tls";
    case UpstreamFailure::bad_response:
      return "bad_response";
  }
  return "unknown";
}

const char* dnsResultLabel(DnsResult result) {
  switch (result) {
    case DnsResult::cache_hit:
      return "cache_hit";
    case DnsResult::resolved:
      return "resolved";
    case DnsResult::pinned:
      return "pinned";
    case DnsResult::failed:
      return "failed";
  }
  return "unknown";
}

const char* authResultLabel(AuthResult result) {
  switch (result) {
    case AuthResult::success:
      return "success";
    case AuthResult::cached:
      return "cached";
    case AuthResult::failure:
      return "failure";
    case AuthResult::missing:
      return "missing";
  }
  return "unknown";
}

// From a fast loopback connect to the slowest connect timeout worth waiting for.
const prometheus::Histogram::BucketBoundaries kConnectBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
// From a one-shot GET to a long-lived bulk transfer (8 h).
const prometheus::Histogram::BucketBoundaries kTunnelBuckets = {
    1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800};

template <typename E>
size_t index(E value) {
  return static_cast<size_t>(value);
}

}  // namespace

struct Metrics::Impl {
  // Every pointer below is a child owned by its family in the registry; the
  // registry outlives Impl (Metrics holds both), so they stay valid.
  std::array<std::array<prometheus::Counter*, kVerdicts.size()>, kKinds.size()> requests{};
  std::array<prometheus::Counter*, kReasonCount> denied{};  // [none] stays null
  prometheus::Gauge* connections_active = nullptr;
  prometheus::Gauge* tunnels_active = nullptr;
  std::array<prometheus::Counter*, kDirections.size()> bytes{};
  prometheus::Family<prometheus::Counter>* bucket_bytes_family = nullptr;
  prometheus::Histogram* upstream_connect = nullptr;
  std::array<prometheus::Counter*, kUpstreamErrors.size()> upstream_errors{};
  std::array<prometheus::Counter*, kDnsResults.size()> dns_lookups{};
  std::array<prometheus::Counter*, kAuthResults.size()> auth{};
  prometheus::Histogram* tunnel_duration = nullptr;
  std::array<prometheus::Counter*, 2> reloads{};  // [0] failure, [1] success
  prometheus::Gauge* last_reload_successful = nullptr;
  prometheus::Gauge* draining = nullptr;

  // The one s3gate_config_info series, replaced when the digest changes.
  mutable std::mutex config_info_mu;
  prometheus::Family<prometheus::Gauge>* config_info_family = nullptr;
  prometheus::Gauge* config_info = nullptr;
  std::string config_sha256;

  // Bucket rules are bounded by the configuration; their children are created
  // on first use and never removed (a reload keeps the old rule's totals).
  std::mutex bucket_mu;
  std::unordered_map<std::string, std::array<prometheus::Counter*, kDirections.size()>>
      bucket_bytes;

  // Quota entries are bounded by the configuration, like bucket rules.
  prometheus::Family<prometheus::Counter>* quota_limited_family = nullptr;
  prometheus::Family<prometheus::Counter>* quota_paced_family = nullptr;
  struct QuotaCounters {
    prometheus::Counter* client_limit = nullptr;
    prometheus::Counter* rate_limited = nullptr;
    std::array<prometheus::Counter*, kDirections.size()> paced{};
  };
  std::mutex quota_mu;
  std::unordered_map<std::string, QuotaCounters> quotas;

  // Under quota_mu.
  QuotaCounters& quota(const std::string& name) {
    auto it = quotas.find(name);
    if (it == quotas.end()) {
      QuotaCounters c;
      c.client_limit = &quota_limited_family->Add({{"quota", name}, {"reason", "client_limit"}});
      c.rate_limited = &quota_limited_family->Add({{"quota", name}, {"reason", "rate_limited"}});
      for (auto d : kDirections) {
        c.paced[index(d)] =
            &quota_paced_family->Add({{"quota", name}, {"direction", directionLabel(d)}});
      }
      it = quotas.emplace(name, c).first;
    }
    return it->second;
  }
};

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()), impl_(std::make_unique<Impl>()) {
  auto& registry = *registry_;
  auto& impl = *impl_;

  auto& requests = prometheus::BuildCounter()
                       .Name("s3gate_requests_total")
                       .Help("Requests and tunnels decided, by kind and decision.")
                       .Register(registry);
  for (auto kind : kKinds) {
    for (auto verdict : kVerdicts) {
      impl.requests[index(kind)][index(verdict)] =
          &requests.Add({{"kind", kindLabel(kind)}, {"decision", verdictLabel(verdict)}});
    }
  }

  auto& denied = prometheus::BuildCounter()
                     .Name("s3gate_denied_total")
                     .Help("Denials (report-mode would-be denials included), by reason.")
                     .Register(registry);
  for (int i = 1; i < kReasonCount; ++i) {
    auto reason = static_cast<Reason>(i);
    impl.denied[static_cast<size_t>(i)] =
        &denied.Add({{"reason", std::string(reasonName(reason))}});
  }

  impl.connections_active = &prometheus::BuildGauge()
                                 .Name("s3gate_connections_active")
                                 .Help("Client connections open on the proxy listeners.")
                                 .Register(registry)
                                 .Add({});
  impl.tunnels_active = &prometheus::BuildGauge()
                             .Name("s3gate_tunnels_active")
                             .Help("Tunnels currently relaying.")
                             .Register(registry)
                             .Add({});

  auto& bytes = prometheus::BuildCounter()
                    .Name("s3gate_bytes_total")
                    .Help("Bytes relayed, by direction (up: client to upstream).")
                    .Register(registry);
  for (auto direction : kDirections) {
    impl.bytes[index(direction)] = &bytes.Add({{"direction", directionLabel(direction)}});
  }

  impl.bucket_bytes_family = &prometheus::BuildCounter()
                                  .Name("s3gate_bucket_bytes_total")
                                  .Help("Bytes relayed, by bucket rule and direction.")
                                  .Register(registry);

  impl.quota_limited_family = &prometheus::BuildCounter()
                                   .Name("s3gate_quota_limited_total")
                                   .Help("Connections and requests refused by a quota, by reason.")
                                   .Register(registry);
  impl.quota_paced_family =
      &prometheus::BuildCounter()
           .Name("s3gate_quota_paced_seconds_total")
           .Help("Time transfers waited for their quota's bandwidth budget, by direction.")
           .Register(registry);

  impl.upstream_connect = &prometheus::BuildHistogram()
                               .Name("s3gate_upstream_connect_duration_seconds")
                               .Help("Time to establish the upstream TCP connection.")
                               .Register(registry)
                               .Add({}, kConnectBuckets);

  auto& upstream_errors = prometheus::BuildCounter()
                              .Name("s3gate_upstream_errors_total")
                              .Help("Upstream failures of allowed requests, by reason.")
                              .Register(registry);
  for (auto error : kUpstreamErrors) {
    impl.upstream_errors[index(error)] =
        &upstream_errors.Add({{"reason", upstreamErrorLabel(error)}});
  }

  auto& dns = prometheus::BuildCounter()
                  .Name("s3gate_dns_lookups_total")
                  .Help("DNS lookups, by result.")
                  .Register(registry);
  for (auto result : kDnsResults) {
    impl.dns_lookups[index(result)] = &dns.Add({{"result", dnsResultLabel(result)}});
  }

  auto& auth = prometheus::BuildCounter()
                   .Name("s3gate_auth_total")
                   .Help(
                       "Proxy authentications, by result: success (a password hashed and "
                       "verified), cached, failure (unknown user or wrong password), missing "
                       "(no or malformed credentials).")
                   .Register(registry);
  for (auto result : kAuthResults) {
    impl.auth[index(result)] = &auth.Add({{"result", authResultLabel(result)}});
  }

  impl.tunnel_duration = &prometheus::BuildHistogram()
                              .Name("s3gate_tunnel_duration_seconds")
                              .Help("Lifetime of finished tunnels.")
                              .Register(registry)
                              .Add({}, kTunnelBuckets);

  auto& reloads = prometheus::BuildCounter()
                      .Name("s3gate_config_reloads_total")
                      .Help("Configuration reloads, by result.")
                      .Register(registry);
  impl.reloads[0] = &reloads.Add({{"result", "failure"}});
  impl.reloads[1] = &reloads.Add({{"result", "success"}});

  impl.last_reload_successful = &prometheus::BuildGauge()
                                     .Name("s3gate_config_last_reload_successful")
                                     .Help("1 if the last configuration reload succeeded.")
                                     .Register(registry)
                                     .Add({});
  impl.last_reload_successful->Set(1);

  impl.draining = &prometheus::BuildGauge()
                       .Name("s3gate_draining")
                       .Help("1 while shutting down (draining connections).")
                       .Register(registry)
                       .Add({});

  prometheus::BuildGauge()
      .Name("s3gate_build_info")
      .Help("Build information; the value is always 1.")
      .Register(registry)
      .Add({{"version", S3GATE_VERSION}})
      .Set(1);

  impl.config_info_family =
      &prometheus::BuildGauge()
           .Name("s3gate_config_info")
           .Help(
               "The configuration loaded; sha256 is the digest of its file's bytes. "
               "The value is always 1.")
           .Register(registry);
}

Metrics::~Metrics() = default;

std::string Metrics::serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void Metrics::countRequest(RequestKind kind, Verdict verdict) {
  impl_->requests[index(kind)][index(verdict)]->Increment();
}

void Metrics::countDenied(Reason reason) {
  auto i = index(reason);
  if (i < impl_->denied.size() && impl_->denied[i] != nullptr) {
    impl_->denied[i]->Increment();
  }
}

void Metrics::connectionOpened() {
  impl_->connections_active->Increment();
}
void Metrics::connectionClosed() {
  impl_->connections_active->Decrement();
}
void Metrics::tunnelOpened() {
  impl_->tunnels_active->Increment();
}

void Metrics::tunnelClosed(double duration_seconds) {
  impl_->tunnels_active->Decrement();
  impl_->tunnel_duration->Observe(duration_seconds);
}

void Metrics::addBytes(Direction direction, uint64_t bytes) {
  impl_->bytes[index(direction)]->Increment(static_cast<double>(bytes));
}

void Metrics::addBucketBytes(const std::string& rule, Direction direction, uint64_t bytes) {
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard lock(impl_->bucket_mu);
    auto it = impl_->bucket_bytes.find(rule);
    if (it == impl_->bucket_bytes.end()) {
      std::array<prometheus::Counter*, kDirections.size()> pair{};
      for (auto d : kDirections) {
        pair[index(d)] =
            &impl_->bucket_bytes_family->Add({{"rule", rule}, {"direction", directionLabel(d)}});
      }
      it = impl_->bucket_bytes.emplace(rule, pair).first;
    }
    counter = it->second[index(direction)];
  }
  counter->Increment(static_cast<double>(bytes));
}

void Metrics::countQuotaLimited(const std::string& quota, Reason reason) {
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard lock(impl_->quota_mu);
    auto& c = impl_->quota(quota);
    counter = reason == Reason::client_limit ? c.client_limit : c.rate_limited;
  }
  counter->Increment();
}

void Metrics::addQuotaPaced(const std::string& quota, Direction direction, double seconds) {
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard lock(impl_->quota_mu);
    counter = impl_->quota(quota).paced[index(direction)];
  }
  counter->Increment(seconds);
}

double Metrics::quotaLimited(const std::string& quota, Reason reason) const {
  std::lock_guard lock(impl_->quota_mu);
  auto it = impl_->quotas.find(quota);
  if (it == impl_->quotas.end()) {
    return 0;
  }
  return (reason == Reason::client_limit ? it->second.client_limit : it->second.rate_limited)
      ->Value();
}

double Metrics::quotaPaced(const std::string& quota, Direction direction) const {
  std::lock_guard lock(impl_->quota_mu);
  auto it = impl_->quotas.find(quota);
  return it == impl_->quotas.end() ? 0 : it->second.paced[index(direction)]->Value();
}

void Metrics::observeUpstreamConnect(double seconds) {
  impl_->upstream_connect->Observe(seconds);
}

void Metrics::countUpstreamError(UpstreamFailure error) {
  impl_->upstream_errors[index(error)]->Increment();
}

void Metrics::countDnsLookup(DnsResult result) {
  impl_->dns_lookups[index(result)]->Increment();
}

void Metrics::countAuth(AuthResult result) {
  impl_->auth[index(result)]->Increment();
}

void Metrics::configReloaded(bool success) {
  impl_->reloads[success ? 1 : 0]->Increment();
  impl_->last_reload_successful->Set(success ? 1 : 0);
}

void Metrics::setConfigInfo(const std::string& sha256) {
  std::lock_guard lock(impl_->config_info_mu);
  if (impl_->config_info != nullptr && impl_->config_sha256 == sha256) {
    return;
  }
  if (impl_->config_info != nullptr) {
    impl_->config_info_family->Remove(impl_->config_info);
  }
  impl_->config_info = &impl_->config_info_family->Add({{"sha256", sha256}});
  impl_->config_info->Set(1);
  impl_->config_sha256 = sha256;
}

void Metrics::setDraining(bool draining) {
  impl_->draining->Set(draining ? 1 : 0);
}

double Metrics::requests(RequestKind kind, Verdict verdict) const {
  return impl_->requests[index(kind)][index(verdict)]->Value();
}

double Metrics::denied(Reason reason) const {
  auto i = index(reason);
  if (i < impl_->denied.size() && impl_->denied[i] != nullptr) {
    return impl_->denied[i]->Value();
  }
  return 0;
}

double Metrics::connectionsActive() const {
  return impl_->connections_active->Value();
}
double Metrics::tunnelsActive() const {
  return impl_->tunnels_active->Value();
}

double Metrics::auth(AuthResult result) const {
  return impl_->auth[index(result)]->Value();
}

double Metrics::bucketBytes(const std::string& rule, Direction direction) const {
  std::lock_guard lock(impl_->bucket_mu);
  auto it = impl_->bucket_bytes.find(rule);
  return it == impl_->bucket_bytes.end() ? 0 : it->second[index(direction)]->Value();
}

std::string Metrics::configSha256() const {
  std::lock_guard lock(impl_->config_info_mu);
  return impl_->config_sha256;
}

}  // namespace s3gate
