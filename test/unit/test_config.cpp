#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace s3gate {
namespace {

std::string readText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> readLines(const fs::path& path) {
  std::vector<std::string> lines;
  std::istringstream in(readText(path));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) {
      lines.push_back(line);
    }
  }
  return lines;
}

std::string join(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i > 0 ? ", " : "") + items[i];
  }
  return out + "]";
}

template <typename T, typename F>
std::string joinWith(const std::vector<T>& items, F show) {
  std::vector<std::string> shown;
  for (const T& item : items) {
    shown.push_back(show(item));
  }
  return join(shown);
}

std::string show(const Network& n) {
  return n.toString();
}
std::string show(const SocketAddress& a) {
  return a.toString();
}
std::string show(const IpAddress& a) {
  return a.toString();
}
std::string show(Duration d) {
  return std::to_string(d.count()) + "ms";
}
std::string show(bool b) {
  return b ? "true" : "false";
}
std::string show(uint16_t port) {
  return std::to_string(port);
}
std::string show(const std::string& s) {
  return "\"" + s + "\"";
}

std::string showAll(const auto& items) {
  return joinWith(items, [](const auto& item) { return show(item); });
}

// Every field but `source`, one per line: two configurations are the same when
// these are equal, and a difference shows up as a readable line in the diff.
std::string describe(const Config& c) {
  std::ostringstream o;
  o << "version " << c.version << "\n";
  for (const ListenerConfig& l : c.listeners) {
    o << "listener " << show(l.address) << " mode "
      << (l.mode == ListenerMode::forward ? "forward" : "sni") << " proxy_protocol "
      << show(l.proxy_protocol);
    if (l.tls) {
      o << " tls " << l.tls->certificate << " " << l.tls->private_key << " ca " << l.tls->client_ca;
    }
    o << "\n";
  }
  o << "admin " << show(c.admin) << "\n";
  o << "workers " << c.workers << "\n";
  o << "clients " << showAll(c.clients) << "\n";
  o << "trusted_proxies " << showAll(c.trusted_proxies) << "\n";
  o << "mode " << (c.mode == PolicyMode::enforce ? "enforce" : "report") << "\n";
  o << "dns.servers " << showAll(c.dns.servers) << "\n";
  o << "dns.timeout " << show(c.dns.timeout) << "\n";
  o << "dns.attempts " << c.dns.attempts << "\n";
  o << "dns.ttl " << show(c.dns.min_ttl) << " " << show(c.dns.max_ttl) << " "
    << show(c.dns.negative_ttl) << "\n";
  for (const DnsPin& pin : c.dns.pins) {
    o << "dns.pin " << pin.host << " " << showAll(pin.addresses) << "\n";
  }
  o << "dns.allowed_networks " << showAll(c.dns.allowed_networks) << "\n";
  o << "s3.regions " << showAll(c.s3.regions) << "\n";
  o << "s3.path_style " << (c.s3.path_style == PathStyle::allow ? "allow" : "deny") << "\n";
  for (const BucketRule& b : c.buckets) {
    o << "bucket " << b.name << " " << (b.access == Access::read_only ? "read-only" : "read-write")
      << " clients " << showAll(b.clients) << " identities " << showAll(b.identities) << "\n";
  }
  for (const HostRule& h : c.hosts) {
    o << "host " << h.name << " " << showAll(h.ports) << "\n";
  }
  o << "ports " << showAll(c.ports) << "\n";
  o << "http " << show(c.http.upstream_tls) << " " << show(c.http.ca_file) << "\n";
  o << "tunnel " << show(c.tunnel.verify_sni) << " " << show(c.tunnel.inspect) << " "
    << show(c.tunnel.inspect_certificate) << " " << show(c.tunnel.inspect_private_key) << "\n";
  const Limits& m = c.limits;
  o << "limits " << m.max_connections << " " << m.max_header_bytes << " " << m.max_headers << " "
    << show(m.header_timeout) << " " << show(m.connect_timeout) << " " << show(m.idle_timeout)
    << " " << show(m.tcp_keepalive) << " " << show(m.shutdown_delay) << " " << show(m.drain_timeout)
    << "\n";
  for (const QuotaRule& q : c.quotas) {
    const char* per = q.per == QuotaPer::address    ? "address"
                      : q.per == QuotaPer::identity ? "identity"
                                                    : "quota";
    o << "quota " << q.name << " clients " << showAll(q.clients) << " identities "
      << showAll(q.identities) << " per " << per << " max_connections " << q.max_connections
      << " rps " << q.requests_per_second << " bandwidth " << q.bandwidth_bits << "\n";
  }
  o << "access_log " << c.access_log << "\n";
  return o.str();
}

SocketAddress address(std::string_view text) {
  auto parsed = SocketAddress::parse(text);
  REQUIRE(parsed);
  return *parsed;
}

Network network(std::string_view text) {
  auto parsed = Network::parse(text);
  REQUIRE(parsed);
  return *parsed;
}

IpAddress ip(std::string_view text) {
  auto parsed = IpAddress::parse(text);
  REQUIRE(parsed);
  return *parsed;
}

// The values SPEC section 2 documents for a file that leaves every key out.
Config documentedDefaults() {
  Config c;
  ListenerConfig listener;
  listener.address = address("127.0.0.1:3128");
  c.listeners.push_back(listener);
  c.admin = address("127.0.0.1:9464");
  c.clients = {network("127.0.0.0/8"), network("::1/128")};
  return c;
}

ConfigPtr loadGood(std::string_view yaml, const std::string& name = "test.yaml") {
  ConfigLoadResult result = loadConfigFromString(yaml, name);
  INFO(join(result.errors));
  REQUIRE(result.ok());
  REQUIRE(result.errors.empty());
  return result.config;
}

std::vector<std::string> loadBad(std::string_view yaml) {
  ConfigLoadResult result = loadConfigFromString(yaml, "bad.yaml");
  CHECK_FALSE(result.ok());
  CHECK(result.config == nullptr);
  return result.errors;
}

const fs::path kData = S3GATE_TEST_DATA;

bool isPositiveNumber(std::string_view text) {
  return !text.empty() && text[0] != '0' &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "FILE:LINE:COLUMN: KEY.PATH: message", LINE and COLUMN from 1.
bool isWellFormed(std::string_view error, std::string_view file) {
  if (error.substr(0, file.size() + 1) != std::string(file) + ":") {
    return false;
  }
  error.remove_prefix(file.size() + 1);
  size_t colon = error.find(':');
  if (colon == std::string_view::npos || !isPositiveNumber(error.substr(0, colon))) {
    return false;
  }
  error.remove_prefix(colon + 1);
  colon = error.find(": ");
  if (colon == std::string_view::npos || !isPositiveNumber(error.substr(0, colon))) {
    return false;
  }
  error.remove_prefix(colon + 2);
  size_t path_end = error.find(": ");
  return path_end != std::string_view::npos && path_end > 0 &&
         error.substr(0, path_end).find(' ') == std::string_view::npos &&
         path_end + 2 < error.size();
}

}  // namespace

TEST_CASE("parseDuration reads a number and a unit", "[config]") {
  struct Case {
    std::string_view text;
    std::optional<Duration> expected;
  };
  const Case cases[] = {
      {"500ms", 500ms},
      {"30s", 30s},
      {"5m", 5min},
      {"1h", 1h},
      {"0s", 0ms},
      {"1m30s", 90s},
      {"2h5m10s250ms", 2h + 5min + 10s + 250ms},
      {"300s", 300s},
      {"", std::nullopt},
      {"30", std::nullopt},
      {"0", std::nullopt},
      {"s", std::nullopt},
      {"-5s", std::nullopt},
      {"1.5s", std::nullopt},
      {"5 s", std::nullopt},
      {" 5s", std::nullopt},
      {"5S", std::nullopt},
      {"5d", std::nullopt},
      {"5us", std::nullopt},
      {"5s10", std::nullopt},
      {"99999999999999999999s", std::nullopt},
      {"9999999999h", std::nullopt},
  };
  for (const Case& c : cases) {
    INFO("text: \"" << c.text << "\"");
    CHECK(parseDuration(c.text) == c.expected);
  }
}

TEST_CASE("the embedded default is the documented default", "[config][default]") {
  ConfigLoadResult loaded = loadDefaultConfig();
  INFO(join(loaded.errors));
  REQUIRE(loaded.ok());
  CHECK(loaded.config->source == "<default>");

  Config expected = documentedDefaults();
  BucketRule any;
  any.name = "*";
  expected.buckets.push_back(any);
  CHECK(describe(*loaded.config) == describe(expected));

  SECTION("the printed text loads to the same configuration") {
    ConfigPtr printed = loadGood(defaultConfigYaml(), "printed.yaml");
    CHECK(printed->source == "printed.yaml");
    CHECK(describe(*printed) == describe(*loaded.config));
  }

  SECTION("key defaults as SPEC section 2 states them") {
    const Config& c = *loaded.config;
    CHECK(c.version == 1);
    REQUIRE(c.listeners.size() == 1);
    CHECK(c.listeners[0].address.toString() == "127.0.0.1:3128");
    CHECK(c.listeners[0].mode == ListenerMode::forward);
    CHECK_FALSE(c.listeners[0].proxy_protocol);
    CHECK_FALSE(c.listeners[0].tls);
    CHECK(c.admin.toString() == "127.0.0.1:9464");
    CHECK(c.workers == 0);
    CHECK(showAll(c.clients) == "[127.0.0.0/8, ::1/128]");
    CHECK(c.trusted_proxies.empty());
    CHECK(c.mode == PolicyMode::enforce);
    CHECK(c.dns.servers.empty());
    CHECK(c.dns.timeout == 2s);
    CHECK(c.dns.attempts == 2);
    CHECK(c.dns.min_ttl == 5s);
    CHECK(c.dns.max_ttl == 300s);
    CHECK(c.dns.negative_ttl == 5s);
    CHECK(c.dns.pins.empty());
    CHECK(c.dns.allowed_networks.empty());
    CHECK(c.s3.regions == std::vector<std::string>{"*"});
    CHECK(c.s3.path_style == PathStyle::deny);
    REQUIRE(c.buckets.size() == 1);
    CHECK(c.buckets[0].name == "*");
    CHECK(c.buckets[0].access == Access::read_write);
    CHECK(c.buckets[0].clients.empty());
    CHECK(c.buckets[0].identities.empty());
    CHECK(c.hosts.empty());
    CHECK(c.ports == std::vector<uint16_t>{443});
    CHECK(c.http.upstream_tls);
    CHECK(c.http.ca_file.empty());
    CHECK(c.tunnel.verify_sni);
    CHECK_FALSE(c.tunnel.inspect);
    CHECK(c.tunnel.inspect_certificate.empty());
    CHECK(c.tunnel.inspect_private_key.empty());
    CHECK(c.limits.max_connections == 20000);
    CHECK(c.limits.max_header_bytes == 65536);
    CHECK(c.limits.max_headers == 100);
    CHECK(c.limits.header_timeout == 30s);
    CHECK(c.limits.connect_timeout == 10s);
    CHECK(c.limits.idle_timeout == 300s);
    CHECK(c.limits.tcp_keepalive == 60s);
    CHECK(c.limits.shutdown_delay == 0s);
    CHECK(c.limits.drain_timeout == 30s);
    CHECK(c.access_log == "stdout");
  }
}

TEST_CASE("keys left out take the documented defaults", "[config]") {
  SECTION("an empty file allows no bucket") {
    ConfigPtr c = loadGood("");
    CHECK(describe(*c) == describe(documentedDefaults()));
    CHECK(c->buckets.empty());
  }
  SECTION("a file of comments only") {
    ConfigPtr c = loadGood("# nothing here\n");
    CHECK(describe(*c) == describe(documentedDefaults()));
  }
  SECTION("an empty map") {
    ConfigPtr c = loadGood("{}\n");
    CHECK(describe(*c) == describe(documentedDefaults()));
  }
  SECTION("the SPEC example is the default with its own examples") {
    ConfigPtr c =
        loadConfigFromFile((kData / "good-configs" / "spec-example.yaml").string()).config;
    REQUIRE(c);
    Config expected = documentedDefaults();
    ListenerTls tls;
    tls.certificate = "/etc/s3gate/tls/proxy.pem";
    tls.private_key = "/etc/s3gate/tls/proxy.key";
    tls.client_ca = "/etc/s3gate/tls/clients.pem";
    expected.listeners[0].tls = tls;
    DnsPin pin;
    pin.host = "*.s3.us-west-2.amazonaws.com";
    pin.addresses = {ip("10.0.1.10"), ip("10.0.2.10")};
    expected.dns.pins.push_back(pin);
    BucketRule bucket;
    bucket.name = "studio-media";
    expected.buckets.push_back(bucket);
    HostRule host;
    host.name = "sts.us-west-2.amazonaws.com";
    expected.hosts.push_back(host);
    QuotaRule quota;
    quota.name = "render-farm";
    quota.clients = {network("10.30.0.0/16")};
    quota.per = QuotaPer::address;
    quota.max_connections = 200;
    quota.requests_per_second = 100;
    quota.bandwidth_bits = 2000000000;
    expected.quotas.push_back(quota);
    CHECK(describe(*c) == describe(expected));
  }
}

TEST_CASE("good configuration files load", "[config][files]") {
  size_t count = 0;
  for (const auto& entry : fs::directory_iterator(kData / "good-configs")) {
    if (entry.path().extension() != ".yaml") {
      continue;
    }
    ++count;
    ConfigLoadResult result = loadConfigFromFile(entry.path().string());
    INFO(entry.path().filename().string() << ": " << join(result.errors));
    CHECK(result.ok());
    if (result.ok()) {
      CHECK(result.config->source == entry.path().string());
    }
  }
  CHECK(count >= 4);
}

TEST_CASE("every value can be set", "[config]") {
  ConfigPtr loaded =
      loadConfigFromFile((kData / "good-configs" / "full-custom.yaml").string()).config;
  REQUIRE(loaded);
  const Config& c = *loaded;
  REQUIRE(c.listeners.size() == 3);
  CHECK(c.listeners[0].address.toString() == "0.0.0.0:3128");
  CHECK(c.listeners[0].proxy_protocol);
  CHECK(c.listeners[1].address.toString() == "[::]:3129");
  REQUIRE(c.listeners[1].tls);
  CHECK(c.listeners[1].tls->certificate == "/etc/s3gate/tls/proxy.pem");
  CHECK(c.listeners[1].tls->private_key == "/etc/s3gate/tls/proxy.key");
  CHECK(c.listeners[1].tls->client_ca.empty());
  CHECK(c.listeners[2].mode == ListenerMode::sni);
  CHECK(c.admin.toString() == "[::1]:9465");
  CHECK(c.workers == 4);
  CHECK(showAll(c.clients) == "[10.0.0.0/8, fd00::/8, 192.168.1.7/32]");
  CHECK(showAll(c.trusted_proxies) == "[10.0.0.0/24]");
  CHECK(c.mode == PolicyMode::report);
  CHECK(showAll(c.dns.servers) == "[10.0.0.2:53, 10.0.0.3:5353, [fd00::53]:53, [fd00::54]:5353]");
  CHECK(c.dns.timeout == 500ms);
  CHECK(c.dns.attempts == 3);
  CHECK(c.dns.min_ttl == 1s);
  CHECK(c.dns.max_ttl == 1h);
  CHECK(c.dns.negative_ttl == 0s);
  REQUIRE(c.dns.pins.size() == 1);
  // Lower case and one trailing dot removed: the form names are compared in.
  CHECK(c.dns.pins[0].host == "*.s3.us-west-2.amazonaws.com");
  CHECK(showAll(c.dns.pins[0].addresses) == "[10.0.1.10, fd00::10]");
  CHECK(showAll(c.dns.allowed_networks) == "[52.218.0.0/17, 3.5.76.0/22]");
  CHECK(c.s3.regions == std::vector<std::string>{"us-west-2", "us-gov-west-1", "cn-north-1"});
  CHECK(c.s3.path_style == PathStyle::allow);
  REQUIRE(c.buckets.size() == 2);
  CHECK(c.buckets[0].name == "media-*");
  CHECK(c.buckets[0].access == Access::read_only);
  CHECK(showAll(c.buckets[0].clients) == "[10.1.0.0/16]");
  // Certificate CNs are compared as written.
  CHECK(c.buckets[0].identities == std::vector<std::string>{"render-farm", "Artist-01"});
  CHECK(c.buckets[1].name == "scratch-??");
  CHECK(c.buckets[1].access == Access::read_write);
  REQUIRE(c.hosts.size() == 1);
  CHECK(c.hosts[0].name == "sts.us-west-2.amazonaws.com");
  CHECK(c.hosts[0].ports == std::vector<uint16_t>{443, 80});
  CHECK(c.ports == std::vector<uint16_t>{443, 8443});
  CHECK_FALSE(c.http.upstream_tls);
  CHECK(c.http.ca_file == "/etc/ssl/certs/ca.pem");
  CHECK_FALSE(c.tunnel.verify_sni);
  CHECK(c.tunnel.inspect);
  CHECK(c.tunnel.inspect_certificate == "/etc/s3gate/tls/inspect.pem");
  CHECK(c.tunnel.inspect_private_key == "/etc/s3gate/tls/inspect.key");
  CHECK(c.limits.max_connections == 50000);
  CHECK(c.limits.max_header_bytes == 16384);
  CHECK(c.limits.max_headers == 50);
  CHECK(c.limits.header_timeout == 90s);
  CHECK(c.limits.connect_timeout == 5s);
  CHECK(c.limits.idle_timeout == 10min);
  CHECK(c.limits.tcp_keepalive == 30s);
  CHECK(c.limits.shutdown_delay == 20s);
  CHECK(c.limits.drain_timeout == 2min);
  CHECK(c.access_log == "off");
}

TEST_CASE("small files", "[config]") {
  SECTION("a bucket name is lower-cased") {
    ConfigPtr c = loadGood("buckets:\n  - name: \"Studio-Media\"\n");
    REQUIRE(c->buckets.size() == 1);
    CHECK(c->buckets[0].name == "studio-media");
    CHECK(c->listeners.size() == 1);
  }
  SECTION("access_log: off, bare, quoted or as a YAML 1.1 boolean") {
    CHECK(loadGood("access_log: off\n")->access_log == "off");
    CHECK(loadGood("access_log: \"off\"\n")->access_log == "off");
    CHECK(loadGood("access_log: false\n")->access_log == "off");
    CHECK(loadGood("access_log: stdout\n")->access_log == "stdout");
    CHECK(loadGood("access_log: /var/log/s3gate.log\n")->access_log == "/var/log/s3gate.log");
  }
  SECTION("booleans in the spellings YAML allows") {
    CHECK(loadGood("tunnel: {verify_sni: no}\n")->tunnel.verify_sni == false);
    CHECK(loadGood("tunnel: {verify_sni: True}\n")->tunnel.verify_sni == true);
  }
  SECTION("flow style") {
    ConfigPtr c =
        loadGood("listeners: [{address: \"[::1]:3128\", mode: sni}]\nbuckets: [{name: \"*\"}]\n");
    REQUIRE(c->listeners.size() == 1);
    CHECK(c->listeners[0].address.toString() == "[::1]:3128");
    CHECK(c->listeners[0].mode == ListenerMode::sni);
  }
  SECTION("a quoted version is still version 1") {
    CHECK(loadGood("version: \"1\"\n")->version == 1);
  }
  SECTION("a dns server may name no port") {
    ConfigPtr c = loadGood("dns: {servers: [\"10.0.0.2\", \"::1\"]}\n");
    CHECK(showAll(c->dns.servers) == "[10.0.0.2:53, [::1]:53]");
  }
  SECTION("a tls client_ca is optional and a sni listener may use the PROXY protocol") {
    ConfigPtr c = loadGood(
        "listeners:\n"
        "  - address: \"0.0.0.0:3129\"\n"
        "    tls: {certificate: a.pem, private_key: a.key}\n"
        "  - address: \"0.0.0.0:443\"\n"
        "    mode: sni\n"
        "    proxy_protocol: true\n");
    REQUIRE(c->listeners.size() == 2);
    REQUIRE(c->listeners[0].tls);
    CHECK(c->listeners[0].tls->client_ca.empty());
    CHECK(c->listeners[1].proxy_protocol);
  }
  SECTION("min_ttl may equal max_ttl") {
    ConfigPtr c = loadGood("dns: {min_ttl: 1m, max_ttl: 60s}\n");
    CHECK(c->dns.min_ttl == c->dns.max_ttl);
  }
  SECTION("the admin address may move so that a listener can take its port") {
    ConfigPtr c = loadGood(
        "admin: {address: \"127.0.0.1:9000\"}\nlisteners: [{address: \"127.0.0.1:9464\"}]\n");
    CHECK(c->admin.port() == 9000);
  }
}

TEST_CASE("the configuration's digest is the SHA-256 of its bytes as loaded", "[config][sha256]") {
  SECTION("known vectors (FIPS 180-2)") {
    CHECK(sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }
  SECTION("a file: its bytes, line ends and comments included") {
    fs::path path =
        fs::temp_directory_path() / ("s3gate-sha256-" + std::to_string(::getpid()) + ".yaml");
    {
      std::ofstream out(path, std::ios::binary);
      out << "mode: report\r\n# comment\r\n";
    }
    ConfigLoadResult loaded = loadConfigFromFile(path.string());
    fs::remove(path);
    REQUIRE(loaded.ok());
    // python3 -c 'import hashlib; print(hashlib.sha256(b"mode: report\r\n#
    // comment\r\n").hexdigest())'
    CHECK(loaded.config->sha256 ==
          "8fa8757398e49f9a66c010b688544cca48d01cd940019f9efd599983059e4294");
  }
  SECTION("the same settings in different bytes are a different digest") {
    ConfigPtr a = loadGood("mode: report\n");
    ConfigPtr b = loadGood("mode: report\n# edited\n");
    CHECK(a->mode == b->mode);
    CHECK(a->sha256 == sha256Hex("mode: report\n"));
    CHECK(b->sha256 == sha256Hex("mode: report\n# edited\n"));
    CHECK(a->sha256 != b->sha256);
  }
  SECTION("the embedded default: the digest of its YAML text") {
    ConfigLoadResult loaded = loadDefaultConfig();
    REQUIRE(loaded.ok());
    CHECK(loaded.config->sha256.size() == 64);
    CHECK(loaded.config->sha256 == sha256Hex(defaultConfigYaml()));
  }
}

TEST_CASE("auth: left out is off; set, its keys take their defaults", "[config][auth]") {
  CHECK_FALSE(loadGood("")->auth.has_value());
  SECTION("only users_file") {
    ConfigPtr c = loadGood("auth:\n  users_file: /etc/s3gate/users\n");
    REQUIRE(c->auth.has_value());
    CHECK(c->auth->users_file == "/etc/s3gate/users");
    CHECK(c->auth->required);
    CHECK(c->auth->realm == "s3gate");
    CHECK(c->auth->cache_ttl == Duration(5min));
  }
  SECTION("every key") {
    ConfigPtr c = loadGood(
        "auth: {users_file: users.txt, required: false, realm: \"Studio proxy\", "
        "cache_ttl: 0s}\n");
    REQUIRE(c->auth.has_value());
    CHECK(c->auth->users_file == "users.txt");
    CHECK_FALSE(c->auth->required);
    CHECK(c->auth->realm == "Studio proxy");
    CHECK(c->auth->cache_ttl == Duration(0));
  }
  SECTION("errors") {
    CHECK(loadBad("auth: {users_file: \"\"}\n") ==
          std::vector<std::string>{"bad.yaml:1:8: auth.users_file: must not be empty"});
    CHECK(loadBad("auth: {users_file: u, realm: \"\"}\n") ==
          std::vector<std::string>{"bad.yaml:1:23: auth.realm: must not be empty"});
    CHECK(loadBad("auth: [u]\n").size() == 1);
  }
}

TEST_CASE("quotas", "[config][quota]") {
  SECTION("every key") {
    ConfigPtr c = loadGood(
        "quotas:\n"
        "  - name: artists\n"
        "    identities: [alice, bob]\n"
        "    per: identity\n"
        "    max_connections: 50\n"
        "    requests_per_second: 20\n"
        "    bandwidth: 500Mbit\n"
        "  - name: farm\n"
        "    clients: [\"10.30.0.0/16\"]\n"
        "    per: quota\n"
        "    bandwidth: \"1.5Gbit\"\n"
        "  - name: rest\n");
    REQUIRE(c->quotas.size() == 3);
    CHECK(c->quotas[0].name == "artists");
    CHECK(c->quotas[0].identities == std::vector<std::string>{"alice", "bob"});
    CHECK(c->quotas[0].clients.empty());
    CHECK(c->quotas[0].per == QuotaPer::identity);
    CHECK(c->quotas[0].max_connections == 50);
    CHECK(c->quotas[0].requests_per_second == 20);
    CHECK(c->quotas[0].bandwidth_bits == 500000000);
    CHECK(showAll(c->quotas[1].clients) == "[10.30.0.0/16]");
    CHECK(c->quotas[1].per == QuotaPer::quota);
    CHECK(c->quotas[1].bandwidth_bits == 1500000000);
    // Keys left out are no limit.
    CHECK(c->quotas[2].per == QuotaPer::address);
    CHECK(c->quotas[2].max_connections == 0);
    CHECK(c->quotas[2].requests_per_second == 0);
    CHECK(c->quotas[2].bandwidth_bits == 0);
  }
  SECTION("no quotas by default") {
    CHECK(loadGood("")->quotas.empty());
  }
}

TEST_CASE("parseBandwidth", "[config][quota]") {
  struct Row {
    std::string_view text;
    std::optional<uint64_t> bits;
    std::string_view why;  // a part of the message, for errors
  };
  const Row rows[] = {
      {"0", 0, ""},
      {"500Mbit", 500000000, ""},
      {"1Gbit", 1000000000, ""},
      {"2Gbit", 2000000000, ""},
      {"40Mbit", 40000000, ""},
      {"1.5Gbit", 1500000000, ""},
      {"64kbit", 64000, ""},
      {"64Kbit", 64000, ""},
      {"8bit", 8, ""},
      {"1Tbit", 1000000000000, ""},
      {"", std::nullopt, "expected a bandwidth"},
      {"100", std::nullopt, "expected a bandwidth"},
      {"Mbit", std::nullopt, "expected a bandwidth"},
      {"1..5Gbit", std::nullopt, "expected a bandwidth"},
      {"-1Gbit", std::nullopt, "expected a bandwidth"},
      {"1Gbps", std::nullopt, "unit written out"},
      {"50MB", std::nullopt, "unit written out"},
      {"1 Gbit", std::nullopt, "expected a bandwidth"},
      {"1gbit", std::nullopt, "units bit, kbit"},
      {"1Pbit", std::nullopt, "units bit, kbit"},
      {"4bit", std::nullopt, "at least 8bit"},
      {"2000Tbit", std::nullopt, "at most 1000Tbit"},
  };
  for (const Row& row : rows) {
    INFO(row.text);
    std::string why;
    auto bits = parseBandwidth(row.text, &why);
    CHECK(bits == row.bits);
    if (!row.bits) {
      CHECK(why.find(row.why) != std::string::npos);
    }
  }
}

TEST_CASE("errors name the file, line, column and key", "[config][errors]") {
  SECTION("the SPEC's example") {
    std::vector<std::string> errors = loadBad(
        "buckets:\n"
        "  - name: a\n"
        "  - name: b\n"
        "  - name: c\n"
        "    access: rw\n");
    CHECK(errors ==
          std::vector<std::string>{
              "bad.yaml:5:5: buckets[2].access: expected read-only or read-write, got \"rw\""});
  }
  SECTION("every error is reported, in the order of the file") {
    std::vector<std::string> errors = loadBad(
        "limits: {max_headers: 0}\n"
        "workers: -1\n"
        "dns: {timeout: 5}\n"
        "clients: [\"300.0.0.0/8\"]\n");
    REQUIRE(errors.size() == 4);
    CHECK(errors[0].rfind("bad.yaml:1:10: limits.max_headers: ", 0) == 0);
    CHECK(errors[1].rfind("bad.yaml:2:1: workers: ", 0) == 0);
    CHECK(errors[2].rfind("bad.yaml:3:7: dns.timeout: a duration needs a unit", 0) == 0);
    CHECK(errors[3].rfind("bad.yaml:4:11: clients[0]: ", 0) == 0);
  }
  SECTION("a file that cannot be read") {
    ConfigLoadResult result = loadConfigFromFile("/nonexistent/s3gate.yaml");
    CHECK_FALSE(result.ok());
    CHECK(result.errors ==
          std::vector<std::string>{"/nonexistent/s3gate.yaml:1:1: (file): cannot be read: No such "
                                   "file or directory"});
  }
  SECTION("a directory is not an empty file") {
    ConfigLoadResult result = loadConfigFromFile(kData.string());
    CHECK(result.errors == std::vector<std::string>{
                               kData.string() + ":1:1: (file): cannot be read: it is a directory"});
  }
  SECTION("the file name is used as given") {
    ConfigLoadResult result =
        loadConfigFromFile((kData / "bad-configs" / "unsupported-version.yaml").string());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0] == (kData / "bad-configs" / "unsupported-version.yaml").string() +
                                  ":1:1: version: unsupported version 2; the only version is 1");
  }
  SECTION("a key may not be a list") {
    std::vector<std::string> errors = loadBad("dns:\n  [a]: 1\n");
    CHECK(errors ==
          std::vector<std::string>{"bad.yaml:2:3: dns: a key must be a plain name, got a list"});
  }
  SECTION("a value may not be left empty") {
    std::vector<std::string> errors = loadBad("dns:\n  timeout:\n");
    CHECK(errors == std::vector<std::string>{
                        "bad.yaml:2:3: dns.timeout: expected a duration such as 500ms, 30s, 5m "
                        "or 1h, got nothing"});
  }
}

// Each test/data/bad-configs/NAME.yaml is loaded under the name NAME.yaml; its
// errors must be exactly the lines of NAME.expected, in order.
TEST_CASE("broken configuration files give the expected errors", "[config][files][errors]") {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kData / "bad-configs")) {
    if (entry.path().extension() == ".yaml") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  CHECK(files.size() >= 20);
  for (const fs::path& file : files) {
    fs::path expected_file = file;
    expected_file.replace_extension(".expected");
    INFO("file: " << file.filename().string());
    REQUIRE(fs::exists(expected_file));
    std::vector<std::string> expected = readLines(expected_file);
    CHECK_FALSE(expected.empty());
    ConfigLoadResult result = loadConfigFromString(readText(file), file.filename().string());
    CHECK_FALSE(result.ok());
    CHECK(result.errors == expected);
    for (const std::string& error : result.errors) {
      CHECK(isWellFormed(error, file.filename().string()));
    }
  }
}

// Whatever the text, the loader returns (never throws) either a configuration
// or errors in the one format.
TEST_CASE("every prefix of a good file loads or fails cleanly", "[config][errors]") {
  const std::string text = readText(kData / "good-configs" / "full-custom.yaml");
  REQUIRE(text.size() > 100);
  size_t failures = 0;
  for (size_t length = 0; length <= text.size(); ++length) {
    ConfigLoadResult result;
    REQUIRE_NOTHROW(result = loadConfigFromString(text.substr(0, length), "test.yaml"));
    CHECK(result.ok() == result.errors.empty());
    if (!result.ok()) {
      ++failures;
    }
    for (const std::string& error : result.errors) {
      INFO("prefix length " << length);
      CHECK(isWellFormed(error, "test.yaml"));
    }
  }
  CHECK(failures > 0);
}

}  // namespace s3gate
