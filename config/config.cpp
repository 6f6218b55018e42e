#include "config/config.h"

#include "acl/s3name.h"
#include "common/host_name.h"
#include "common/text.h"
#include "config/yaml_reader.h"

#include <openssl/evp.h>
#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace s3gate {
namespace {

using namespace yaml;

bool isBucketPattern(std::string_view name) {
  // Underscores and upper case survive in legacy us-east-1 bucket names; the
  // rule is compared in lower case like the names it matches.
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return isLowerAlnum(c) || c == '.' || c == '-' || c == '_' || c == '*' || c == '?';
  });
}

SocketAddress defaultAddress(std::string_view text) {
  return SocketAddress::parse(text).value_or(SocketAddress());
}

class ConfigReader {
 public:
  ConfigReader(Reader& loader, Config& config) : l_(loader), c_(config) {}

  void read(const YAML::Node& root) {
    Item top{root, root.Mark(), ""};
    if (!root.IsNull() && !root.IsMap()) {
      l_.fail(root.Mark(), kFilePath,
              "expected a map of settings such as \"listeners:\" at the top level, got " +
                  describe(root));
      return;
    }
    MapView map(l_, top,
                {"version", "listeners", "admin", "workers", "clients", "trusted_proxies", "auth",
                 "mode", "dns", "s3", "buckets", "hosts", "ports", "http", "tunnel", "limits",
                 "quotas", "access_log"});
    if (auto item = map.get("version")) {
      if (auto version =
              l_.integer(*item, std::numeric_limits<int>::min(), std::numeric_limits<int>::max())) {
        if (*version != 1) {
          l_.fail(*item,
                  "unsupported version " + std::to_string(*version) + "; the only version is 1");
        }
      }
    }
    // The admin address first, so that a listener on it is the one reported.
    readAdmin(map);
    readListeners(map);
    assign(map, "workers", &c_.workers, [&](const Item& i) { return l_.integer(i, 0, 1024); });
    for (std::string_view loopback : {"127.0.0.0/8", "::1/128"}) {
      if (auto network = Network::parse(loopback)) {
        c_.clients.push_back(*network);
      }
    }
    assign(map, "clients", &c_.clients, [&](const Item& i) { return l_.networks(i); });
    assign(map, "trusted_proxies", &c_.trusted_proxies,
           [&](const Item& i) { return l_.networks(i); });
    if (auto item = map.get("auth")) {
      readAuth(*item);
    }
    assign(map, "mode", &c_.mode, [&](const Item& i) {
      return l_.choice<PolicyMode>(
          i, {{"enforce", PolicyMode::enforce}, {"report", PolicyMode::report}});
    });
    if (auto item = map.get("dns")) {
      readDns(*item);
    }
    if (auto item = map.get("s3")) {
      readS3(*item);
    }
    if (auto item = map.get("buckets")) {
      readBuckets(*item);
    }
    if (auto item = map.get("hosts")) {
      readHosts(*item);
    }
    assign(map, "ports", &c_.ports, [&](const Item& i) { return l_.ports(i); });
    if (auto item = map.get("http")) {
      MapView http(l_, *item, {"upstream_tls", "ca_file"});
      assign(http, "upstream_tls", &c_.http.upstream_tls,
             [&](const Item& i) { return l_.boolean(i); });
      assign(http, "ca_file", &c_.http.ca_file, [&](const Item& i) { return l_.string(i); });
    }
    if (auto item = map.get("tunnel")) {
      readTunnel(*item);
    }
    if (auto item = map.get("limits")) {
      readLimits(*item);
    }
    if (auto item = map.get("quotas")) {
      readQuotas(*item);
    }
    if (auto item = map.get("access_log")) {
      readAccessLog(*item);
    }
  }

 private:
  void readListeners(const MapView& top) {
    auto item = top.get("listeners");
    if (!item) {
      ListenerConfig listener;
      listener.address = defaultAddress("127.0.0.1:3128");
      c_.listeners.push_back(std::move(listener));
      return;
    }
    auto items = l_.list(*item);
    if (!items) {
      return;
    }
    if (items->empty()) {
      l_.fail(*item, "at least one listener is required");
      return;
    }
    std::vector<Item> address_items;
    for (const Item& entry : *items) {
      MapView map(l_, entry, {"address", "mode", "proxy_protocol", "tls"});
      if (!map.valid()) {
        continue;
      }
      ListenerConfig listener;
      if (auto address = map.get("address")) {
        if (auto value = l_.socketAddress(*address)) {
          listener.address = *value;
          checkAddressUnique(*address, *value);
        }
      } else {
        l_.fail(map.missing("address"),
                "missing; a listener needs an address such as \"0.0.0.0:3128\"");
      }
      assign(map, "mode", &listener.mode, [&](const Item& i) {
        return l_.choice<ListenerMode>(
            i, {{"forward", ListenerMode::forward}, {"sni", ListenerMode::sni}});
      });
      assign(map, "proxy_protocol", &listener.proxy_protocol,
             [&](const Item& i) { return l_.boolean(i); });
      if (auto tls = map.get("tls")) {
        if (listener.mode == ListenerMode::sni) {
          l_.fail(*tls,
                  "tls is for forward listeners only; an sni listener relays the client's TLS "
                  "unchanged");
        } else {
          listener.tls = readListenerTls(*tls);
        }
      }
      c_.listeners.push_back(std::move(listener));
    }
  }

  std::optional<ListenerTls> readListenerTls(const Item& item) {
    MapView map(l_, item, {"certificate", "private_key", "client_ca"});
    if (!map.valid()) {
      return std::nullopt;
    }
    ListenerTls tls;
    for (auto [key, out] :
         {std::pair{"certificate", &tls.certificate}, std::pair{"private_key", &tls.private_key}}) {
      if (map.get(key)) {
        assign(map, key, out, [&](const Item& i) { return l_.nonEmptyString(i); });
      } else {
        l_.fail(map.missing(key), "missing; tls needs a certificate and a private_key");
      }
    }
    assign(map, "client_ca", &tls.client_ca, [&](const Item& i) { return l_.string(i); });
    return tls;
  }

  void readAuth(const Item& item) {
    MapView map(l_, item, {"users_file", "required", "realm", "cache_ttl"});
    if (!map.valid()) {
      return;
    }
    AuthConfig auth;
    if (map.get("users_file")) {
      assign(map, "users_file", &auth.users_file,
             [&](const Item& i) { return l_.nonEmptyString(i); });
    } else {
      l_.fail(map.missing("users_file"),
              "missing; auth needs a users_file of \"name:hash\" lines (htpasswd -B, or "
              "mkpasswd -m yescrypt)");
    }
    assign(map, "required", &auth.required, [&](const Item& i) { return l_.boolean(i); });
    if (auto realm = map.get("realm")) {
      if (auto text = l_.nonEmptyString(*realm)) {
        // The realm is sent inside a quoted string: printable ASCII, no quote
        // or backslash, so that it needs no escaping.
        bool printable = std::all_of(text->begin(), text->end(), [](char c) {
          return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        });
        if (printable && text->size() <= 128) {
          auth.realm = *text;
        } else {
          l_.fail(*realm,
                  "expected at most 128 printable ASCII characters without '\"' or '\\', got " +
                      quoteText(*text));
        }
      }
    }
    assign(map, "cache_ttl", &auth.cache_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    c_.auth = std::move(auth);
  }

  void readAdmin(const MapView& top) {
    c_.admin = defaultAddress("127.0.0.1:9464");
    if (auto item = top.get("admin")) {
      MapView admin(l_, *item, {"address"});
      if (auto address = admin.get("address")) {
        if (auto value = l_.socketAddress(*address)) {
          c_.admin = *value;
          checkAddressUnique(*address, *value);
        }
        return;
      }
    }
    bound_.emplace_back("the admin endpoint (admin.address is left out)", c_.admin);
  }

  // Two sockets on one address cannot both bind; say which entries collide
  // rather than leave it to a bind error at start.
  void checkAddressUnique(const Item& item, const SocketAddress& address) {
    for (const auto& [owner, seen] : bound_) {
      if (seen == address) {
        l_.fail(item, address.toString() + " is already used by " + owner);
        return;
      }
    }
    bound_.emplace_back(item.path.substr(0, item.path.rfind('.')), address);
  }

  void readDns(const Item& item) {
    MapView map(l_, item,
                {"servers", "timeout", "attempts", "min_ttl", "max_ttl", "negative_ttl", "pins",
                 "allowed_networks"});
    DnsConfig& dns = c_.dns;
    assign(map, "servers", &dns.servers, [&](const Item& i) {
      return l_.listOf<SocketAddress>(
          i, [&](const Item& server) { return l_.socketAddress(server, uint16_t{53}); });
    });
    assign(map, "timeout", &dns.timeout,
           [&](const Item& i) { return l_.duration(i, Duration(1)); });
    assign(map, "attempts", &dns.attempts, [&](const Item& i) { return l_.integer(i, 1, 100); });
    assign(map, "min_ttl", &dns.min_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    assign(map, "max_ttl", &dns.max_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    assign(map, "negative_ttl", &dns.negative_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    if (dns.min_ttl > dns.max_ttl) {
      auto at = map.get("min_ttl");
      Item where = at ? *at : *map.get("max_ttl");
      l_.fail(where, "min_ttl (" + formatDuration(dns.min_ttl) + ") is greater than max_ttl (" +
                         formatDuration(dns.max_ttl) + ")");
    }
    assign(map, "pins", &dns.pins, [&](const Item& i) {
      return l_.listOf<DnsPin>(i, [&](const Item& pin) { return readPin(pin); });
    });
    assign(map, "allowed_networks", &dns.allowed_networks,
           [&](const Item& i) { return l_.networks(i); });
  }

  std::optional<DnsPin> readPin(const Item& item) {
    MapView map(l_, item, {"host", "addresses"});
    if (!map.valid()) {
      return std::nullopt;
    }
    DnsPin pin;
    bool good = true;
    if (auto host = map.get("host")) {
      if (auto text = l_.string(*host)) {
        std::string_view name = *text;
        bool wildcard = name.substr(0, 2) == "*.";
        if (wildcard) {
          name.remove_prefix(2);
        }
        std::string normalized;
        if (normalizeHostName(name, &normalized)) {
          pin.host = (wildcard ? "*." : "") + normalized;
        } else {
          l_.fail(*host, "expected a host name, or \"*.\" and a domain, got " + quoteText(*text));
          good = false;
        }
      } else {
        good = false;
      }
    } else {
      l_.fail(map.missing("host"), "missing; a pin needs a host (exact, or \"*.\" + suffix)");
      good = false;
    }
    if (auto addresses = map.get("addresses")) {
      auto values =
          l_.listOf<IpAddress>(*addresses, [&](const Item& i) { return l_.ipAddress(i); });
      if (values && values->empty()) {
        l_.fail(*addresses, "at least one address is required");
        good = false;
      } else if (values) {
        pin.addresses = std::move(*values);
      } else {
        good = false;
      }
    } else {
      l_.fail(map.missing("addresses"), "missing; a pin needs a list of addresses");
      good = false;
    }
    if (!good) {
      return std::nullopt;
    }
    return pin;
  }

  void readS3(const Item& item) {
    MapView map(l_, item, {"regions", "path_style"});
    if (auto regions = map.get("regions")) {
      auto values =
          l_.listOf<std::string>(*regions, [&](const Item& i) -> std::optional<std::string> {
            auto text = l_.scalar(i, "a region such as us-west-2, or \"*\"");
            if (text && *text != "*" && !isRegionName(*text)) {
              l_.fail(i, "expected \"*\" or a region such as us-west-2, got " + quoteText(*text));
              return std::nullopt;
            }
            return text;
          });
      if (values && values->empty()) {
        l_.fail(*regions, "at least one region is required; \"*\" allows any");
      } else if (values) {
        c_.s3.regions = std::move(*values);
      }
    }
    assign(map, "path_style", &c_.s3.path_style, [&](const Item& i) {
      return l_.choice<PathStyle>(i, {{"allow", PathStyle::allow}, {"deny", PathStyle::deny}});
    });
  }

  void readBuckets(const Item& item) {
    auto rules = l_.listOf<BucketRule>(item, [&](const Item& entry) -> std::optional<BucketRule> {
      MapView map(l_, entry, {"name", "access", "clients", "identities"});
      if (!map.valid()) {
        return std::nullopt;
      }
      BucketRule rule;
      if (auto name = map.get("name")) {
        if (auto text = l_.string(*name)) {
          rule.name = toLowerAscii(*text);
          if (!isBucketPattern(rule.name)) {
            l_.fail(*name,
                    "expected a bucket name or a glob with * and ?, got " + quoteText(*text));
          }
        }
      } else {
        l_.fail(map.missing("name"),
                "missing; a bucket rule needs a name (exact, or a glob such as \"media-*\")");
      }
      assign(map, "access", &rule.access, [&](const Item& i) {
        return l_.choice<Access>(
            i, {{"read-only", Access::read_only}, {"read-write", Access::read_write}});
      });
      assign(map, "clients", &rule.clients, [&](const Item& i) { return l_.networks(i); });
      assign(map, "identities", &rule.identities, [&](const Item& i) {
        return l_.listOf<std::string>(i, [&](const Item& s) { return l_.nonEmptyString(s); });
      });
      return rule;
    });
    if (rules) {
      c_.buckets = std::move(*rules);
    }
  }

  void readHosts(const Item& item) {
    auto rules = l_.listOf<HostRule>(item, [&](const Item& entry) -> std::optional<HostRule> {
      MapView map(l_, entry, {"name", "ports"});
      if (!map.valid()) {
        return std::nullopt;
      }
      HostRule rule;
      if (auto name = map.get("name")) {
        if (auto text = l_.string(*name)) {
          rule.name = toLowerAscii(*text);
          if (rule.name.size() > 1 && rule.name.back() == '.') {
            rule.name.pop_back();
          }
          std::string why;
          if (!isValidHostPattern(rule.name, &why)) {
            // Compared label by label; a label "*" alone stands for any one label.
            l_.fail(*name,
                    "expected a host name such as sts.us-west-2.amazonaws.com, where a label may "
                    "be \"*\" alone (sts.*.amazonaws.com): " +
                        why + ", got " + quoteText(*text));
          }
        }
      } else {
        l_.fail(map.missing("name"), "missing; a hosts entry needs a name");
      }
      assign(map, "ports", &rule.ports, [&](const Item& i) { return l_.ports(i); });
      return rule;
    });
    if (rules) {
      c_.hosts = std::move(*rules);
    }
  }

  void readTunnel(const Item& item) {
    MapView map(l_, item,
                {"verify_sni", "inspect", "inspect_certificate", "inspect_private_key",
                 "inspect_uncovered"});
    TunnelConfig& tunnel = c_.tunnel;
    assign(map, "verify_sni", &tunnel.verify_sni, [&](const Item& i) { return l_.boolean(i); });
    assign(map, "inspect", &tunnel.inspect, [&](const Item& i) { return l_.boolean(i); });
    assign(map, "inspect_certificate", &tunnel.inspect_certificate,
           [&](const Item& i) { return l_.string(i); });
    assign(map, "inspect_uncovered", &tunnel.inspect_uncovered, [&](const Item& i) {
      return l_.choice<InspectUncovered>(
          i, {{"deny", InspectUncovered::deny}, {"blind", InspectUncovered::blind}});
    });
    assign(map, "inspect_private_key", &tunnel.inspect_private_key,
           [&](const Item& i) { return l_.string(i); });
    if (tunnel.inspect &&
        (tunnel.inspect_certificate.empty() || tunnel.inspect_private_key.empty())) {
      l_.fail(*map.get("inspect"),
              "inspect: true needs inspect_certificate and inspect_private_key");
    }
  }

  void readLimits(const Item& item) {
    MapView map(
        l_, item,
        {"max_connections", "max_header_bytes", "max_headers", "header_timeout", "connect_timeout",
         "idle_timeout", "tcp_keepalive", "shutdown_delay", "drain_timeout"});
    Limits& limits = c_.limits;
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    assign(map, "max_connections", &limits.max_connections,
           [&](const Item& i) { return l_.integer(i, 1, kMax); });
    // Below 1 KiB not even an ordinary S3 request head with a SigV4 signature fits.
    assign(map, "max_header_bytes", &limits.max_header_bytes,
           [&](const Item& i) { return l_.integer(i, 1024, 64 * 1024 * 1024); });
    assign(map, "max_headers", &limits.max_headers,
           [&](const Item& i) { return l_.integer(i, 1, 10000); });
    for (auto [key, out] : {std::pair{"header_timeout", &limits.header_timeout},
                            std::pair{"connect_timeout", &limits.connect_timeout},
                            std::pair{"idle_timeout", &limits.idle_timeout}}) {
      assign(map, key, out, [&](const Item& i) { return l_.duration(i, Duration(1)); });
    }
    // Keepalive intervals are whole seconds in the kernel.
    assign(map, "tcp_keepalive", &limits.tcp_keepalive,
           [&](const Item& i) { return l_.duration(i, std::chrono::seconds(1)); });
    assign(map, "shutdown_delay", &limits.shutdown_delay,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    assign(map, "drain_timeout", &limits.drain_timeout,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
  }

  void readQuotas(const Item& item) {
    std::vector<std::pair<std::string, int>> names;  // name, line (1-based)
    auto rules = l_.listOf<QuotaRule>(item, [&](const Item& entry) -> std::optional<QuotaRule> {
      MapView map(l_, entry,
                  {"name", "clients", "identities", "per", "max_connections", "requests_per_second",
                   "bandwidth"});
      if (!map.valid()) {
        return std::nullopt;
      }
      QuotaRule rule;
      if (auto name = map.get("name")) {
        if (auto text = l_.nonEmptyString(*name)) {
          rule.name = *text;
          auto seen = std::find_if(names.begin(), names.end(),
                                   [&](const auto& n) { return n.first == rule.name; });
          if (seen != names.end()) {
            l_.fail(*name, "quota " + quoteText(rule.name) + " is already defined at line " +
                               std::to_string(seen->second) + "; names must be unique");
          } else {
            names.emplace_back(rule.name, name->mark.line + 1);
          }
        }
      } else {
        l_.fail(map.missing("name"),
                "missing; a quota needs a name (it labels the quota's metrics)");
      }
      assign(map, "clients", &rule.clients, [&](const Item& i) { return l_.networks(i); });
      assign(map, "identities", &rule.identities, [&](const Item& i) {
        return l_.listOf<std::string>(i, [&](const Item& s) { return l_.nonEmptyString(s); });
      });
      assign(map, "per", &rule.per, [&](const Item& i) {
        return l_.choice<QuotaPer>(i, {{"address", QuotaPer::address},
                                       {"identity", QuotaPer::identity},
                                       {"quota", QuotaPer::quota}});
      });
      constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
      assign(map, "max_connections", &rule.max_connections,
             [&](const Item& i) { return l_.integer(i, 0, kMax); });
      assign(map, "requests_per_second", &rule.requests_per_second,
             [&](const Item& i) { return l_.integer(i, 0, 1000000000); });
      assign(map, "bandwidth", &rule.bandwidth_bits, [&](const Item& i) -> std::optional<uint64_t> {
        auto text = l_.scalar(i, "a bandwidth such as \"500Mbit\" or \"1Gbit\"");
        if (!text) {
          return std::nullopt;
        }
        std::string why;
        auto bits = parseBandwidth(*text, &why);
        if (!bits) {
          l_.fail(i, why);
        }
        return bits;
      });
      return rule;
    });
    if (rules) {
      c_.quotas = std::move(*rules);
    }
  }

  void readAccessLog(const Item& item) {
    // A bare `off` is the string "off" to yaml-cpp; `false` is accepted for
    // readers who think of YAML 1.1 booleans.
    auto text = l_.scalar(item, "stdout, off or a file path");
    if (!text) {
      return;
    }
    if (*text == "false") {
      c_.access_log = "off";
    } else if (text->empty()) {
      l_.fail(item, "expected stdout, off or a file path, got \"\"");
    } else {
      c_.access_log = *text;
    }
  }

  Reader& l_;
  Config& c_;
  std::vector<std::pair<std::string, SocketAddress>> bound_;
};

// Where each YAML document starts, without building them. yaml-cpp 0.7's
// LoadAll() never returns on some malformed input (a lone ",": it yields the
// same empty document forever, allocating as it goes), so the documents are
// counted with a bound: two are enough to refuse, and one that starts where
// the previous one did means the parser is stuck.
class DocumentStarts final : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

constexpr size_t kStuck = static_cast<size_t>(-1);

// 0, 1 or 2 (meaning "more than one", *at = the second's start), or kStuck
// (*at = where). Throws YAML::Exception on a syntax error.
size_t countDocuments(const std::string& text, YAML::Mark* at) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts handler;
  while (handler.starts.size() < 2 && parser.HandleNextDocument(handler)) {
    size_t n = handler.starts.size();
    if (n >= 2 && handler.starts[n - 1].pos == handler.starts[n - 2].pos) {
      *at = handler.starts[n - 1];
      return kStuck;
    }
  }
  if (handler.starts.size() == 2) {
    *at = handler.starts[1];
    if (handler.starts[1].pos == handler.starts[0].pos) {
      return kStuck;
    }
  }
  return handler.starts.size();
}

}  // namespace

std::optional<uint64_t> parseBandwidth(std::string_view text, std::string* why) {
  auto bad = [&](const std::string& what) -> std::optional<uint64_t> {
    *why = what + ", got " + quoteText(text);
    return std::nullopt;
  };
  const std::string kExpected =
      "expected a bandwidth in bits per second such as \"500Mbit\", \"1Gbit\" or \"0\" (none)";
  if (text == "0") {
    return 0;
  }
  size_t digits = 0;
  while (digits < text.size() &&
         ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.')) {
    ++digits;
  }
  std::string_view number = text.substr(0, digits);
  std::string_view unit = text.substr(digits);
  if (number.empty() || unit.empty()) {
    return bad(kExpected);
  }
  double value = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc() || end != number.data() + number.size()) {
    return bad(kExpected);
  }
  double scale = 0;
  for (auto [name, factor] :
       {std::pair{"bit", 1.0}, std::pair{"kbit", 1e3}, std::pair{"Kbit", 1e3},
        std::pair{"Mbit", 1e6}, std::pair{"Gbit", 1e9}, std::pair{"Tbit", 1e12}}) {
    if (unit == name) {
      scale = factor;
    }
  }
  if (scale == 0) {
    std::string lower = toLowerAscii(unit);
    if (lower.size() >= 1 && (lower.back() == 'b' || lower.find("byte") != std::string::npos ||
                              lower.ends_with("bps"))) {
      return bad(
          "expected bits per second with the unit written out: \"400Mbit\" for 50 "
          "megabytes per second (units bit, kbit, Mbit, Gbit, Tbit)");
    }
    return bad(kExpected + " (units bit, kbit, Mbit, Gbit, Tbit)");
  }
  double bits = value * scale;
  if (bits > 1e15) {
    return bad("expected at most 1000Tbit");
  }
  if (bits < 8 && bits != 0) {
    return bad("expected 0 (none) or at least 8bit (one byte per second)");
  }
  return static_cast<uint64_t>(bits + 0.5);
}

ConfigLoadResult loadConfigFromString(std::string_view yaml, const std::string& source_name) {
  Reader loader(source_name);
  auto config = std::make_shared<Config>();
  config->source = source_name;
  try {
    config->sha256 = sha256Hex(yaml);
    std::string text(yaml);
    YAML::Mark stuck;
    size_t documents = countDocuments(text, &stuck);
    if (documents == kStuck) {
      loader.fail(stuck, kFilePath, "YAML syntax error: the parser cannot get past this point");
    } else {
      if (documents > 1) {
        loader.fail(stuck, kFilePath,
                    "only one YAML document is allowed; remove the second \"---\"");
      }
      YAML::Node root = documents == 0 ? YAML::Node() : YAML::Load(text);
      ConfigReader(loader, *config).read(root);
    }
  } catch (const YAML::Exception& e) {
    loader.fail(e.mark, kFilePath, "YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    loader.fail(YAML::Mark::null_mark(), kFilePath, std::string("cannot be loaded: ") + e.what());
  }
  ConfigLoadResult result;
  if (loader.hasErrors()) {
    result.errors = loader.takeErrors();
  } else {
    result.config = std::move(config);
  }
  return result;
}

ConfigLoadResult loadConfigFromFile(const std::string& path) {
  // A directory opens as an empty stream; it must not read as an empty file.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    ConfigLoadResult result;
    result.errors.push_back(path + ":1:1: " + std::string(kFilePath) +
                            ": cannot be read: it is a directory");
    return result;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int saved = errno;
    ConfigLoadResult result;
    result.errors.push_back(path + ":1:1: " + std::string(kFilePath) +
                            ": cannot be read: " + std::strerror(saved));
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    ConfigLoadResult result;
    result.errors.push_back(path + ":1:1: " + std::string(kFilePath) + ": cannot be read");
    return result;
  }
  return loadConfigFromString(text.str(), path);
}

std::string sha256Hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 digest failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(static_cast<size_t>(length) * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0x0f];
  }
  return hex;
}

ConfigLoadResult loadDefaultConfig() {
  return loadConfigFromString(defaultConfigYaml(), "<default>");
}

}  // namespace s3gate
