#pragma once
// The configuration model: a typed, immutable snapshot of SPEC section 2.
// A Config is built once by the loader and then only read, shared by
// std::shared_ptr<const Config>: a session keeps the snapshot it started with.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/duration.h"
#include "common/net.h"

namespace s3gate {

struct ListenerTls {
  std::string certificate;
  std::string private_key;
  std::string client_ca;  // empty: no client certificate asked for
};

enum class ListenerMode { forward, sni };

struct ListenerConfig {
  SocketAddress address;
  ListenerMode mode = ListenerMode::forward;
  bool proxy_protocol = false;
  std::optional<ListenerTls> tls;
};

struct DnsPin {
  std::string host;  // exact name, or "*." + suffix; normalised to lower case
  std::vector<IpAddress> addresses;
};

struct DnsConfig {
  std::vector<SocketAddress> servers;  // port 53 where none was written; empty: /etc/resolv.conf
  Duration timeout{std::chrono::seconds(2)};  // per try
  int attempts = 2;                           // tries per server
  Duration min_ttl{std::chrono::seconds(5)};
  Duration max_ttl{std::chrono::seconds(300)};
  Duration negative_ttl{std::chrono::seconds(5)};
  std::vector<DnsPin> pins;
  std::vector<Network> allowed_networks;
};

enum class PathStyle { allow, deny };

struct S3Config {
  std::vector<std::string> regions{"*"};  // "*" = any
  PathStyle path_style = PathStyle::deny;
};

enum class Access { read_only, read_write };

struct BucketRule {
  std::string name;  // exact, or a glob with * and ?
  Access access = Access::read_write;
  std::vector<Network> clients;         // empty: any client allowed by `clients`
  std::vector<std::string> identities;  // empty: any identity
};

struct HostRule {
  std::string name;  // normalised to lower case
  std::vector<uint16_t> ports{443};
};

struct HttpConfig {
  bool upstream_tls = true;
  std::string ca_file;  // empty: the system store
};

// An S3 name the inspection certificate does not cover (a dotted bucket under a
// wildcard): refused with inspect_not_covered, or relayed blind.
enum class InspectUncovered { deny, blind };

struct TunnelConfig {
  bool verify_sni = true;
  bool inspect = false;
  std::string inspect_certificate;
  std::string inspect_private_key;
  InspectUncovered inspect_uncovered = InspectUncovered::deny;
};

struct Limits {
  uint64_t max_connections = 20000;
  uint64_t max_header_bytes = 65536;
  uint64_t max_headers = 100;
  Duration header_timeout{std::chrono::seconds(30)};
  Duration connect_timeout{std::chrono::seconds(10)};
  Duration idle_timeout{std::chrono::seconds(300)};
  Duration tcp_keepalive{std::chrono::seconds(60)};
  Duration shutdown_delay{std::chrono::seconds(0)};
  Duration drain_timeout{std::chrono::seconds(30)};
};

// Proxy authentication (Proxy-Authorization: Basic) on forward listeners
// without tls.client_ca. The users file itself is read into the runtime
// snapshot (proxy/runtime.h), so that --check, start-up and reload check it.
struct AuthConfig {
  std::string users_file;        // lines "name:hash" (bcrypt, yescrypt or SHA-512 crypt)
  bool required = true;          // false: credentials are checked when sent, optional otherwise
  std::string realm = "s3gate";  // sent in Proxy-Authenticate
  Duration cache_ttl{std::chrono::minutes(5)};  // 0: every request is hashed
};

enum class PolicyMode { enforce, report };

// Who shares one quota budget.
enum class QuotaPer {
  address,   // each client address
  identity,  // each identity; a client without one counts by its address
  quota,     // everyone the entry matches, together
};

struct QuotaRule {
  std::string name;                     // unique; labels the quota metrics
  std::vector<Network> clients;         // empty: any client
  std::vector<std::string> identities;  // empty: any identity (or none)
  QuotaPer per = QuotaPer::address;
  uint64_t max_connections = 0;      // open client connections per budget; 0: no limit
  uint64_t requests_per_second = 0;  // new tunnels + requests per budget; 0: no limit
  uint64_t bandwidth_bits = 0;       // bits per second per budget, each direction; 0: none
};

// "500Mbit", "1.5Gbit", "0": a bandwidth in bits per second with an SI prefix
// (k, M, G, T; powers of 1000). Nothing on an error, with *why saying what was wrong.
std::optional<uint64_t> parseBandwidth(std::string_view text, std::string* why);

struct Config {
  int version = 1;
  std::vector<ListenerConfig> listeners;  // at least one
  SocketAddress admin;                    // default 127.0.0.1:9464
  int workers = 0;                        // 0: one per CPU
  std::vector<Network> clients;
  std::vector<Network> trusted_proxies;  // empty: any peer
  std::optional<AuthConfig> auth;        // absent: no proxy authentication
  PolicyMode mode = PolicyMode::enforce;
  DnsConfig dns;
  S3Config s3;
  std::vector<BucketRule> buckets;  // left out: no bucket allowed
  std::vector<HostRule> hosts;
  std::vector<uint16_t> ports{443};
  HttpConfig http;
  TunnelConfig tunnel;
  Limits limits;
  std::vector<QuotaRule> quotas;      // the first entry that matches a client applies
  std::string access_log = "stdout";  // "stdout", "off" or a file path

  std::string source;  // the file name as given, or "<default>"
  // SHA-256 of the bytes loaded (the file's, or the embedded default's YAML
  // text), lower-case hex: s3gate_config_info{sha256} (SPEC section 5).
  std::string sha256;
};

using ConfigPtr = std::shared_ptr<const Config>;

// Either a configuration or the list of errors, each formatted as
// "FILE:LINE:COLUMN: KEY.PATH: message" (SPEC section 1).
struct ConfigLoadResult {
  ConfigPtr config;
  std::vector<std::string> errors;
  bool ok() const { return config != nullptr; }
};

// `source_name` is used in error messages and Config::source; Config::sha256
// is the digest of `yaml` exactly as given.
ConfigLoadResult loadConfigFromString(std::string_view yaml, const std::string& source_name);
ConfigLoadResult loadConfigFromFile(const std::string& path);

// The embedded default (SPEC section 1): YAML text, and the loaded form.
std::string_view defaultConfigYaml();
ConfigLoadResult loadDefaultConfig();

// SHA-256 of `bytes`, 64 lower-case hex digits.
std::string sha256Hex(std::string_view bytes);

}  // namespace s3gate
