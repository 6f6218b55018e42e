#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/admin.h"
#include "proxy/socket.h"

using namespace s3gate;

namespace {

// The value of the sample whose name and labels (as serialized: labels sorted
// by name) are exactly `series`, or nullopt.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

bool hasLine(const std::string& text, const std::string& wanted) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line == wanted) {
      return true;
    }
  }
  return false;
}

const std::vector<std::string> kReasonNames = {
    "bad_request",
    "bad_host",
    "bad_framing",
    "client_not_allowed",
    "host_not_allowed",
    "region_not_allowed",
    "bucket_not_allowed",
    "port_not_allowed",
    "ip_literal_denied",
    "path_style_denied",
    "method_not_allowed",
    "untrusted_proxy",
    "client_certificate_required",
    "dns_pin_violation",
    "sni_mismatch",
    "header_too_large",
    "dns_failed",
    "connect_failed",
    "upstream_tls_failed",
    "upstream_bad_response",
    "copy_source_not_allowed",
    "inspect_not_covered",
    "auth_required",
    "auth_failed",
    "client_limit",
    "rate_limited",
    "dns_timeout",
    "connect_timeout",
    "overloaded",
    "draining",
    "header_timeout",
};

struct MetricSpec {
  const char* name;
  const char* type;
};

const std::vector<MetricSpec> kSpecMetrics = {
    {"s3gate_requests_total", "counter"},
    {"s3gate_denied_total", "counter"},
    {"s3gate_connections_active", "gauge"},
    {"s3gate_tunnels_active", "gauge"},
    {"s3gate_bytes_total", "counter"},
    {"s3gate_bucket_bytes_total", "counter"},
    {"s3gate_upstream_connect_duration_seconds", "histogram"},
    {"s3gate_upstream_errors_total", "counter"},
    {"s3gate_dns_lookups_total", "counter"},
    {"s3gate_tunnel_duration_seconds", "histogram"},
    {"s3gate_config_reloads_total", "counter"},
    {"s3gate_config_last_reload_successful", "gauge"},
    {"s3gate_draining", "gauge"},
    {"s3gate_build_info", "gauge"},
    {"s3gate_config_info", "gauge"},
    {"s3gate_auth_total", "counter"},
    {"s3gate_quota_limited_total", "counter"},
    {"s3gate_quota_paced_seconds_total", "counter"},
};

}  // namespace

TEST_CASE("every metric of the SPEC is declared with its type and help") {
  Metrics metrics;
  // The families without fixed children (their labels come from the configuration).
  metrics.addBucketBytes("media", Direction::up, 1);
  metrics.setConfigInfo(std::string(64, 'a'));
  metrics.countQuotaLimited("farm", Reason::client_limit);
  std::string text = metrics.serialize();
  for (const auto& spec : kSpecMetrics) {
    INFO(spec.name);
    CHECK(hasLine(text, std::string("# TYPE ") + spec.name + " " + spec.type));
    CHECK(text.find(std::string("# HELP ") + spec.name + " ") != std::string::npos);
  }
  // Nothing else is exported.
  std::istringstream lines(text);
  std::string line;
  int families = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      ++families;
    }
  }
  CHECK(families == static_cast<int>(kSpecMetrics.size()));
}

TEST_CASE("bounded label sets are present at zero before any traffic") {
  Metrics metrics;
  std::string text = metrics.serialize();
  for (const char* kind : {"connect", "http", "inspect", "local"}) {
    for (const char* decision : {"allow", "deny", "report"}) {
      INFO(kind << " " << decision);
      CHECK(sample(text, std::string("s3gate_requests_total{decision=\"") + decision +
                             "\",kind=\"" + kind + "\"}") == 0.0);
    }
  }
  REQUIRE(static_cast<int>(kReasonNames.size()) == kReasonCount - 1);
  for (const auto& reason : kReasonNames) {
    INFO(reason);
    CHECK(sample(text, "s3gate_denied_total{reason=\"" + reason + "\"}") == 0.0);
  }
  CHECK(text.find("s3gate_denied_total{reason=\"\"}") == std::string::npos);
  for (const char* direction : {"up", "down"}) {
    CHECK(sample(text, std::string("s3gate_bytes_total{direction=\"") + direction + "\"}") == 0.0);
  }
  for (const char* reason : {"refused", "timeout", "reset", "tls", "bad_response"}) {
    CHECK(sample(text, std::string("s3gate_upstream_errors_total{reason=\"") + reason + "\"}") ==
          0.0);
  }
  for (const char* result : {"cache_hit", "resolved", "pinned", "failed"}) {
    CHECK(sample(text, std::string("s3gate_dns_lookups_total{result=\"") + result + "\"}") == 0.0);
  }
  for (const char* result : {"success", "failure"}) {
    CHECK(sample(text, std::string("s3gate_config_reloads_total{result=\"") + result + "\"}") ==
          0.0);
  }
  CHECK(sample(text, "s3gate_config_last_reload_successful") == 1.0);
  CHECK(sample(text, "s3gate_draining") == 0.0);
  CHECK(sample(text, "s3gate_connections_active") == 0.0);
  CHECK(sample(text, "s3gate_tunnels_active") == 0.0);
  CHECK(sample(text, std::string("s3gate_build_info{version=\"") + S3GATE_VERSION + "\"}") == 1.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_count") == 0.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_bucket{le=\"0.0005\"}") == 0.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_bucket{le=\"30\"}") == 0.0);
  CHECK(sample(text, "s3gate_tunnel_duration_seconds_bucket{le=\"1\"}") == 0.0);
  CHECK(sample(text, "s3gate_tunnel_duration_seconds_bucket{le=\"+Inf\"}") == 0.0);
}

TEST_CASE("counts land on the right labels") {
  Metrics metrics;
  metrics.countRequest(RequestKind::connect, Verdict::allow);
  metrics.countRequest(RequestKind::connect, Verdict::allow);
  metrics.countRequest(RequestKind::http, Verdict::deny);
  metrics.countRequest(RequestKind::inspect, Verdict::report);
  metrics.countRequest(RequestKind::local, Verdict::allow);
  metrics.countDenied(Reason::bucket_not_allowed);
  metrics.countDenied(Reason::sni_mismatch);
  metrics.countDenied(Reason::sni_mismatch);
  metrics.countDenied(Reason::none);  // ignored
  metrics.connectionOpened();
  metrics.connectionOpened();
  metrics.connectionClosed();
  metrics.tunnelOpened();
  metrics.tunnelOpened();
  metrics.tunnelClosed(42.0);
  metrics.addBytes(Direction::up, 1000);
  metrics.addBytes(Direction::down, 5);
  metrics.addBytes(Direction::down, 7);
  metrics.addBucketBytes("media", Direction::up, 100);
  metrics.addBucketBytes("media", Direction::down, 200);
  metrics.addBucketBytes("-", Direction::up, 3);
  metrics.observeUpstreamConnect(0.002);
  metrics.observeUpstreamConnect(45.0);
  metrics.countUpstreamError(UpstreamFailure::timeout);
  metrics.countUpstreamError(UpstreamFailure::tls);
  metrics.countUpstreamError(UpstreamFailure::tls);
  metrics.countDnsLookup(DnsResult::cache_hit);
  metrics.countDnsLookup(DnsResult::pinned);
  metrics.countDnsLookup(DnsResult::pinned);
  metrics.countDnsLookup(DnsResult::pinned);

  CHECK(metrics.requests(RequestKind::connect, Verdict::allow) == 2);
  CHECK(metrics.requests(RequestKind::connect, Verdict::deny) == 0);
  CHECK(metrics.requests(RequestKind::http, Verdict::deny) == 1);
  CHECK(metrics.requests(RequestKind::inspect, Verdict::report) == 1);
  CHECK(metrics.requests(RequestKind::local, Verdict::allow) == 1);
  CHECK(metrics.denied(Reason::bucket_not_allowed) == 1);
  CHECK(metrics.denied(Reason::sni_mismatch) == 2);
  CHECK(metrics.denied(Reason::host_not_allowed) == 0);
  CHECK(metrics.denied(Reason::none) == 0);
  CHECK(metrics.connectionsActive() == 1);
  CHECK(metrics.tunnelsActive() == 1);
  CHECK(metrics.bucketBytes("media", Direction::up) == 100);
  CHECK(metrics.bucketBytes("media", Direction::down) == 200);
  CHECK(metrics.bucketBytes("-", Direction::up) == 3);
  CHECK(metrics.bucketBytes("unseen", Direction::up) == 0);

  std::string text = metrics.serialize();
  CHECK(sample(text, "s3gate_requests_total{decision=\"allow\",kind=\"connect\"}") == 2.0);
  CHECK(sample(text, "s3gate_requests_total{decision=\"deny\",kind=\"http\"}") == 1.0);
  CHECK(sample(text, "s3gate_requests_total{decision=\"report\",kind=\"inspect\"}") == 1.0);
  CHECK(sample(text, "s3gate_requests_total{decision=\"allow\",kind=\"local\"}") == 1.0);
  CHECK(sample(text, "s3gate_denied_total{reason=\"bucket_not_allowed\"}") == 1.0);
  CHECK(sample(text, "s3gate_denied_total{reason=\"sni_mismatch\"}") == 2.0);
  CHECK(sample(text, "s3gate_connections_active") == 1.0);
  CHECK(sample(text, "s3gate_tunnels_active") == 1.0);
  CHECK(sample(text, "s3gate_tunnel_duration_seconds_count") == 1.0);
  CHECK(sample(text, "s3gate_tunnel_duration_seconds_sum") == 42.0);
  CHECK(sample(text, "s3gate_tunnel_duration_seconds_bucket{le=\"30\"}") == 0.0);
  CHECK(sample(text, "s3gate_tunnel_duration_seconds_bucket{le=\"60\"}") == 1.0);
  CHECK(sample(text, "s3gate_bytes_total{direction=\"up\"}") == 1000.0);
  CHECK(sample(text, "s3gate_bytes_total{direction=\"down\"}") == 12.0);
  CHECK(sample(text, "s3gate_bucket_bytes_total{direction=\"up\",rule=\"media\"}") == 100.0);
  CHECK(sample(text, "s3gate_bucket_bytes_total{direction=\"down\",rule=\"media\"}") == 200.0);
  CHECK(sample(text, "s3gate_bucket_bytes_total{direction=\"up\",rule=\"-\"}") == 3.0);
  CHECK(sample(text, "s3gate_bucket_bytes_total{direction=\"down\",rule=\"-\"}") == 0.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_bucket{le=\"0.001\"}") == 0.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_bucket{le=\"0.0025\"}") == 1.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_bucket{le=\"30\"}") == 1.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_bucket{le=\"+Inf\"}") == 2.0);
  CHECK(sample(text, "s3gate_upstream_connect_duration_seconds_count") == 2.0);
  CHECK(sample(text, "s3gate_upstream_errors_total{reason=\"timeout\"}") == 1.0);
  CHECK(sample(text, "s3gate_upstream_errors_total{reason=\"tls\"}") == 2.0);
  CHECK(sample(text, "s3gate_upstream_errors_total{reason=\"refused\"}") == 0.0);
  CHECK(sample(text, "s3gate_dns_lookups_total{result=\"cache_hit\"}") == 1.0);
  CHECK(sample(text, "s3gate_dns_lookups_total{result=\"pinned\"}") == 3.0);
  CHECK(sample(text, "s3gate_dns_lookups_total{result=\"failed\"}") == 0.0);
}

TEST_CASE("quota metrics: limited by reason, paced seconds by direction") {
  Metrics metrics;
  CHECK(metrics.serialize().find("s3gate_quota") == std::string::npos);  // no quota, no series
  metrics.countQuotaLimited("farm", Reason::client_limit);
  metrics.countQuotaLimited("farm", Reason::rate_limited);
  metrics.countQuotaLimited("farm", Reason::rate_limited);
  metrics.addQuotaPaced("farm", Direction::down, 1.5);
  metrics.addQuotaPaced("farm", Direction::down, 0.25);
  metrics.addQuotaPaced("artists", Direction::up, 2);
  std::string text = metrics.serialize();
  CHECK(sample(text, "s3gate_quota_limited_total{quota=\"farm\",reason=\"client_limit\"}") == 1.0);
  CHECK(sample(text, "s3gate_quota_limited_total{quota=\"farm\",reason=\"rate_limited\"}") == 2.0);
  // An entry's series are all there from its first use, at zero.
  CHECK(sample(text, "s3gate_quota_limited_total{quota=\"artists\",reason=\"client_limit\"}") ==
        0.0);
  CHECK(sample(text, "s3gate_quota_paced_seconds_total{direction=\"down\",quota=\"farm\"}") ==
        1.75);
  CHECK(sample(text, "s3gate_quota_paced_seconds_total{direction=\"up\",quota=\"farm\"}") == 0.0);
  CHECK(sample(text, "s3gate_quota_paced_seconds_total{direction=\"up\",quota=\"artists\"}") ==
        2.0);
  CHECK(metrics.quotaLimited("farm", Reason::rate_limited) == 2.0);
  CHECK(metrics.quotaPaced("farm", Direction::down) == 1.75);
  CHECK(metrics.quotaPaced("nobody", Direction::down) == 0.0);
}

TEST_CASE("reloads and draining") {
  Metrics metrics;
  metrics.configReloaded(false);
  std::string text = metrics.serialize();
  CHECK(sample(text, "s3gate_config_reloads_total{result=\"failure\"}") == 1.0);
  CHECK(sample(text, "s3gate_config_last_reload_successful") == 0.0);
  metrics.configReloaded(true);
  metrics.setDraining(true);
  text = metrics.serialize();
  CHECK(sample(text, "s3gate_config_reloads_total{result=\"success\"}") == 1.0);
  CHECK(sample(text, "s3gate_config_reloads_total{result=\"failure\"}") == 1.0);
  CHECK(sample(text, "s3gate_config_last_reload_successful") == 1.0);
  CHECK(sample(text, "s3gate_draining") == 1.0);
  metrics.setDraining(false);
  CHECK(sample(metrics.serialize(), "s3gate_draining") == 0.0);
}

TEST_CASE("config_info is one series, replaced by each new digest") {
  const std::string first(64, 'a');
  const std::string second(64, 'b');
  auto series = [](const std::string& text) {
    std::istringstream lines(text);
    std::string line;
    std::vector<std::string> found;
    while (std::getline(lines, line)) {
      if (line.rfind("s3gate_config_info{", 0) == 0) {
        found.push_back(line);
      }
    }
    return found;
  };
  Metrics metrics;
  CHECK(metrics.configSha256().empty());
  metrics.setConfigInfo(first);
  std::string text = metrics.serialize();
  CHECK(series(text).size() == 1);
  CHECK(sample(text, "s3gate_config_info{sha256=\"" + first + "\"}") == 1.0);
  CHECK(metrics.configSha256() == first);

  metrics.setConfigInfo(second);
  text = metrics.serialize();
  CHECK(series(text).size() == 1);
  CHECK(sample(text, "s3gate_config_info{sha256=\"" + second + "\"}") == 1.0);
  CHECK_FALSE(sample(text, "s3gate_config_info{sha256=\"" + first + "\"}"));
  CHECK(metrics.configSha256() == second);

  // The same digest again (a reload of identical bytes) keeps the one series.
  metrics.setConfigInfo(second);
  text = metrics.serialize();
  CHECK(series(text).size() == 1);
  CHECK(sample(text, "s3gate_config_info{sha256=\"" + second + "\"}") == 1.0);

  // A failed reload does not touch it.
  metrics.configReloaded(false);
  CHECK(series(metrics.serialize()).size() == 1);
  CHECK(metrics.configSha256() == second);
}

TEST_CASE("counters are safe to update from several threads") {
  Metrics metrics;
  constexpr int kThreads = 4;
  constexpr int kRounds = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < kRounds; ++i) {
        metrics.countRequest(RequestKind::connect, Verdict::allow);
        metrics.addBucketBytes("rule" + std::to_string((t + i) % 3), Direction::up, 1);
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  CHECK(metrics.requests(RequestKind::connect, Verdict::allow) == kThreads * kRounds);
  double total = metrics.bucketBytes("rule0", Direction::up) +
                 metrics.bucketBytes("rule1", Direction::up) +
                 metrics.bucketBytes("rule2", Direction::up);
  CHECK(total == kThreads * kRounds);
}

TEST_CASE("the exposition passes promtool check metrics") {
  // promtool from PATH; without it the check is skipped, with a warning.
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    WARN("SKIPPED: promtool is not on PATH (Debian package `prometheus`)");
    return;
  }
  const std::string promtool = "promtool";
  Metrics metrics;
  metrics.countRequest(RequestKind::connect, Verdict::allow);
  metrics.countDenied(Reason::bucket_not_allowed);
  metrics.addBucketBytes("media", Direction::up, 10);
  metrics.observeUpstreamConnect(0.01);
  metrics.tunnelOpened();
  metrics.tunnelClosed(3);
  metrics.setConfigInfo(std::string(64, 'a'));
  metrics.setConfigInfo("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

  auto dir =
      std::filesystem::temp_directory_path() / ("s3gate-promtool-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto input = dir / "metrics.txt";
  auto output = dir / "promtool.out";
  {
    std::ofstream out(input);
    out << metrics.serialize();
  }
  std::string command =
      promtool + " check metrics < " + input.string() + " > " + output.string() + " 2>&1";
  int status = std::system(command.c_str());
  std::ifstream in(output);
  std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  INFO("promtool said: " << report);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(report.empty());
}

// ---- the admin server ----

namespace {

// 127.0.0.1, port 0: the kernel picks a free port.
const SocketAddress kLoopbackAnyPort(IpAddress::v4(0x7f000001), 0);

struct BaseDeleter {
  void operator()(event_base* base) const { event_base_free(base); }
};
struct EventDeleter {
  void operator()(event* ev) const { event_free(ev); }
};

// One HTTP exchange over a fresh connection: sends `request` and reads until
// the server closes (or 5 s pass).
std::string httpExchange(uint16_t port, const std::string& request) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return "socket failed";
  }
  timeval timeout{5, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    return "connect failed";
  }
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      break;
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buffer[4096];
  for (;;) {
    ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n <= 0) {
      break;
    }
    response.append(buffer, static_cast<size_t>(n));
  }
  return response;
}

std::string requestFor(const std::string& method, const std::string& path) {
  return method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
}

struct Response {
  int status = 0;
  std::string head;
  std::string body;
};

Response parseResponse(const std::string& raw) {
  Response response;
  auto end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || end == std::string::npos) {
    response.head = raw;
    return response;
  }
  response.status = std::atoi(raw.c_str() + 9);
  response.head = raw.substr(0, end + 2);
  response.body = raw.substr(end + 4);
  return response;
}

bool headHas(const Response& response, const std::string& header_line) {
  return response.head.find("\r\n" + header_line + "\r\n") != std::string::npos;
}

// Runs `base` until `client` (run on its own thread) has finished, at most 10 s.
template <typename T>
T runWithClient(event_base* base, std::function<T()> client) {
  auto future = std::async(std::launch::async, std::move(client));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  struct Poll {
    std::future<T>* future;
    std::chrono::steady_clock::time_point deadline;
    event_base* base;
  } poll{&future, deadline, base};
  std::unique_ptr<event, EventDeleter> timer(event_new(
      base, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* arg) {
        auto* p = static_cast<Poll*>(arg);
        if (p->future->wait_for(std::chrono::seconds(0)) == std::future_status::ready ||
            std::chrono::steady_clock::now() > p->deadline) {
          event_base_loopbreak(p->base);
        }
      },
      &poll));
  timeval tick{0, 5000};
  event_add(timer.get(), &tick);
  event_base_dispatch(base);
  REQUIRE(future.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  return future.get();
}

}  // namespace

TEST_CASE("admin server answers /metrics, /ping and 404") {
  std::unique_ptr<event_base, BaseDeleter> base(event_base_new());
  REQUIRE(base);
  Metrics metrics;
  metrics.countRequest(RequestKind::connect, Verdict::allow);
  std::atomic<bool> draining{false};
  std::string error;
  auto server = AdminServer::create(
      base.get(), kLoopbackAnyPort, metrics, [&draining] { return draining.load(); }, &error);
  INFO(error);
  REQUIRE(server);
  uint16_t port = server->port();
  REQUIRE(port != 0);
  CHECK(server->boundAddress().toString() == "127.0.0.1:" + std::to_string(port));

  using Responses = std::vector<Response>;
  auto responses = runWithClient<Responses>(base.get(), [port] {
    Responses out;
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/metrics"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("HEAD", "/metrics"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/ping"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("HEAD", "/ping"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/nothing"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("POST", "/ping"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("DELETE", "/metrics"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/metrics?name=x"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("PUT", "/elsewhere"))));
    return out;
  });
  REQUIRE(responses.size() == 9);

  const auto& metrics_get = responses[0];
  CHECK(metrics_get.status == 200);
  CHECK(headHas(metrics_get, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  CHECK(sample(metrics_get.body, "s3gate_requests_total{decision=\"allow\",kind=\"connect\"}") ==
        1.0);
  CHECK(metrics_get.body.find("# TYPE s3gate_build_info gauge") != std::string::npos);

  const auto& metrics_head = responses[1];
  CHECK(metrics_head.status == 200);
  CHECK(headHas(metrics_head, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  CHECK(metrics_head.body.empty());

  CHECK(responses[2].status == 200);
  CHECK(responses[2].body == "OK");
  CHECK(responses[3].status == 200);
  CHECK(responses[3].body.empty());
  CHECK(responses[4].status == 404);
  CHECK(responses[5].status == 405);
  CHECK(headHas(responses[5], "Allow: GET, HEAD"));
  CHECK(responses[6].status == 405);
  CHECK(responses[7].status == 200);
  CHECK(responses[8].status == 404);

  draining = true;
  auto drained = runWithClient<Responses>(base.get(), [port] {
    Responses out;
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/ping"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("HEAD", "/ping"))));
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/metrics"))));
    return out;
  });
  REQUIRE(drained.size() == 3);
  CHECK(drained[0].status == 503);
  CHECK(drained[0].body == "draining");
  CHECK(drained[1].status == 503);
  CHECK(drained[1].body.empty());
  CHECK(drained[2].status == 200);
}

TEST_CASE("admin server refuses oversized headers and keeps serving") {
  std::unique_ptr<event_base, BaseDeleter> base(event_base_new());
  REQUIRE(base);
  Metrics metrics;
  std::string error;
  auto server = AdminServer::create(
      base.get(), kLoopbackAnyPort, metrics, [] { return false; }, &error);
  REQUIRE(server);
  uint16_t port = server->port();
  auto responses = runWithClient<std::vector<Response>>(base.get(), [port] {
    std::vector<Response> out;
    std::string huge =
        "GET /ping HTTP/1.1\r\nHost: localhost\r\nX-Filler: " + std::string(64 * 1024, 'a') +
        "\r\nConnection: close\r\n\r\n";
    out.push_back(parseResponse(httpExchange(port, huge)));
    out.push_back(parseResponse(httpExchange(port, requestFor("GET", "/ping"))));
    return out;
  });
  REQUIRE(responses.size() == 2);
  CHECK(responses[0].status != 200);
  CHECK(responses[1].status == 200);
}

TEST_CASE("admin server reports an address it cannot bind") {
  std::unique_ptr<event_base, BaseDeleter> base(event_base_new());
  Metrics metrics;
  std::string error;
  auto first = AdminServer::create(
      base.get(), kLoopbackAnyPort, metrics, [] { return false; }, &error);
  REQUIRE(first);
  auto taken = SocketAddress(IpAddress::v4(0x7f000001), first->port());
  auto second = AdminServer::create(
      base.get(), taken, metrics, [] { return false; }, &error);
  CHECK(second == nullptr);
  CHECK(error.find("admin bind 127.0.0.1:") != std::string::npos);
}
