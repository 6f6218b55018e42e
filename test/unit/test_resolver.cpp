// The resolver against a tiny DNS server on 127.0.0.1, served from the same
// event_base: real UDP, real c-ares, real (short, bounded) waits.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proxy/event_ptr.h"
#include "proxy/resolver.h"

using namespace s3gate;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint16_t kTypeA = 1;
constexpr uint16_t kTypeAaaa = 28;

// A UDP DNS server answering A and AAAA from a table; unknown names get NXDOMAIN.
class FakeDns {
 public:
  enum class Mode { answer, servfail, nxdomain, silent };
  struct Entry {
    Entry() = default;
    Entry(std::vector<std::string> a_records, std::vector<std::string> aaaa_records,
          uint32_t ttl_seconds)
        : a(std::move(a_records)), aaaa(std::move(aaaa_records)), ttl(ttl_seconds) {}

    std::vector<std::string> a;
    std::vector<std::string> aaaa;
    uint32_t ttl = 60;  // seconds
    Mode mode = Mode::answer;
    std::optional<uint32_t> aaaa_ttl;  // when AAAA records have another TTL
  };

  explicit FakeDns(event_base* base) {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) == 0);
    socklen_t len = sizeof(sin);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
    port_ = ntohs(sin.sin_port);
    event_.reset(event_new(base, fd_, EV_READ | EV_PERSIST, &FakeDns::onReadable, this));
    REQUIRE(event_);
    REQUIRE(event_add(event_.get(), nullptr) == 0);
  }
  ~FakeDns() {
    event_.reset();
    close(fd_);
  }
  FakeDns(const FakeDns&) = delete;
  FakeDns& operator=(const FakeDns&) = delete;

  void set(const std::string& name, Entry entry) { table_[name] = std::move(entry); }
  SocketAddress address() const { return SocketAddress(*IpAddress::parse("127.0.0.1"), port_); }
  int queries(const std::string& name) const {
    int n = 0;
    for (const auto& [key, count] : counts_) {
      if (key.first == name) {
        n += count;
      }
    }
    return n;
  }
  int queries(const std::string& name, uint16_t type) const {
    auto it = counts_.find({name, type});
    return it == counts_.end() ? 0 : it->second;
  }

 private:
  static void onReadable(evutil_socket_t, short, void* arg) { static_cast<FakeDns*>(arg)->serve(); }

  void serve() {
    for (int i = 0; i < 64; ++i) {
      uint8_t buf[1500];
      sockaddr_storage peer{};
      socklen_t peer_len = sizeof(peer);
      ssize_t n = recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&peer), &peer_len);
      if (n < 0) {
        return;
      }
      std::vector<uint8_t> reply = answer(buf, static_cast<size_t>(n));
      if (!reply.empty()) {
        sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&peer), peer_len);
      }
    }
  }

  std::vector<uint8_t> answer(const uint8_t* q, size_t n) {
    if (n < 12) {
      return {};
    }
    size_t pos = 12;
    std::string name;
    while (pos < n && q[pos] != 0) {
      size_t len = q[pos];
      if ((len & 0xC0) != 0 || pos + 1 + len > n) {
        return {};
      }
      if (!name.empty()) {
        name += '.';
      }
      for (size_t i = 0; i < len; ++i) {
        name += static_cast<char>(std::tolower(q[pos + 1 + i]));
      }
      pos += 1 + len;
    }
    if (pos + 5 > n) {
      return {};
    }
    const uint16_t type = static_cast<uint16_t>(q[pos + 1] << 8 | q[pos + 2]);
    const size_t question_end = pos + 5;
    ++counts_[{name, type}];

    auto found = table_.find(name);
    Mode mode = found == table_.end() ? Mode::nxdomain : found->second.mode;
    if (mode == Mode::silent) {
      return {};
    }
    std::vector<std::vector<uint8_t>> rdatas;
    if (mode == Mode::answer) {
      const auto& list = type == kTypeA ? found->second.a : found->second.aaaa;
      for (const std::string& text : list) {
        uint8_t bytes[16];
        int family = type == kTypeA ? AF_INET : AF_INET6;
        REQUIRE(inet_pton(family, text.c_str(), bytes) == 1);
        rdatas.emplace_back(bytes, bytes + (type == kTypeA ? 4 : 16));
      }
      if (type != kTypeA && type != kTypeAaaa) {
        rdatas.clear();
      }
    }
    const uint8_t rcode = mode == Mode::servfail ? 2 : mode == Mode::nxdomain ? 3 : 0;

    std::vector<uint8_t> r;
    r.push_back(q[0]);
    r.push_back(q[1]);
    r.push_back(static_cast<uint8_t>(0x84 | (q[2] & 0x01)));  // QR, AA, RD copied
    r.push_back(static_cast<uint8_t>(0x80 | rcode));          // RA
    auto put16 = [&r](size_t v) {
      r.push_back(static_cast<uint8_t>(v >> 8));
      r.push_back(static_cast<uint8_t>(v));
    };
    put16(1);
    put16(rdatas.size());
    put16(0);
    put16(0);
    r.insert(r.end(), q + 12, q + question_end);
    uint32_t ttl = 0;
    if (found != table_.end()) {
      ttl = type == kTypeAaaa ? found->second.aaaa_ttl.value_or(found->second.ttl)
                              : found->second.ttl;
    }
    for (const auto& rdata : rdatas) {
      put16(0xC00C);  // the question's name
      put16(type);
      put16(1);  // IN
      put16(ttl >> 16);
      put16(ttl & 0xFFFF);
      put16(rdata.size());
      r.insert(r.end(), rdata.begin(), rdata.end());
    }
    return r;
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  EventPtr event_;
  std::map<std::string, Entry> table_;
  std::map<std::pair<std::string, uint16_t>, int> counts_;
};

// Runs the loop until done() or the limit; true when done() became true.
bool runUntil(event_base* base, const std::function<bool()>& done,
              std::chrono::milliseconds limit = 3s) {
  const auto deadline = Clock::now() + limit;
  // A ticking timer, so that one pass never blocks past the deadline.
  EventPtr tick(event_new(
      base, -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr));
  timeval tv{0, 5000};
  event_add(tick.get(), &tv);
  while (!done()) {
    if (Clock::now() >= deadline) {
      return false;
    }
    event_base_loop(base, EVLOOP_ONCE);
  }
  return true;
}

void runFor(event_base* base, std::chrono::milliseconds duration) {
  runUntil(
      base, [] { return false; }, duration);
}

std::set<std::string> texts(const std::vector<IpAddress>& addresses) {
  std::set<std::string> out;
  for (const IpAddress& ip : addresses) {
    out.insert(ip.toString());
  }
  return out;
}

struct Fixture {
  EventBasePtr base{event_base_new()};
  FakeDns dns{base.get()};
  ResolverSettings config;

  Fixture() {
    config.servers = {dns.address()};
    config.timeout = 200ms;
    config.attempts = 1;
    config.min_ttl = 0ms;
    config.max_ttl = 300s;
    config.negative_ttl = 0ms;
  }

  std::unique_ptr<Resolver> makeResolver() {
    std::string error;
    auto resolver = Resolver::create(base.get(), config, &error);
    INFO(error);
    REQUIRE(resolver);
    return resolver;
  }
};

// Collects the answers of one lookup.
struct Result {
  std::optional<DnsAnswer> answer;
  int calls = 0;
  Resolver::Callback callback() {
    return [this](const DnsAnswer& a) {
      answer = a;
      ++calls;
    };
  }
};

// One lookup run to completion.
DnsAnswer resolveNow(Fixture& f, Resolver& resolver, const std::string& host) {
  Result result;
  auto lookup = resolver.resolve(host, result.callback());
  REQUIRE(runUntil(f.base.get(), [&] { return result.calls > 0; }));
  REQUIRE(result.calls == 1);
  return *result.answer;
}

}  // namespace

TEST_CASE("resolver: A and AAAA records of one name", "[resolver]") {
  Fixture f;
  f.dns.set("bucket.s3.example.test", {{"192.0.2.10", "192.0.2.11"}, {"2001:db8::1"}, 60});
  auto resolver = f.makeResolver();

  Result result;
  auto lookup = resolver->resolve("bucket.s3.example.test", result.callback());
  CHECK(result.calls == 0);  // never from inside resolve()
  REQUIRE(runUntil(f.base.get(), [&] { return result.calls > 0; }));
  CHECK(result.calls == 1);
  CHECK(result.answer->error == Reason::none);
  CHECK(result.answer->source == DnsAnswer::Source::resolved);
  CHECK(texts(result.answer->addresses) ==
        std::set<std::string>{"192.0.2.10", "192.0.2.11", "2001:db8::1"});
  CHECK(f.dns.queries("bucket.s3.example.test", kTypeA) == 1);
  CHECK(f.dns.queries("bucket.s3.example.test", kTypeAaaa) == 1);
  CHECK(resolver->cacheSize() == 1);

  // A cache hit: no query, delivered from the loop, not from resolve().
  Result again;
  auto second = resolver->resolve("bucket.s3.example.test", again.callback());
  CHECK(again.calls == 0);
  REQUIRE(runUntil(f.base.get(), [&] { return again.calls > 0; }));
  CHECK(again.answer->source == DnsAnswer::Source::cache_hit);
  CHECK(again.answer->error == Reason::none);
  CHECK(texts(again.answer->addresses) == texts(result.answer->addresses));
  CHECK(f.dns.queries("bucket.s3.example.test") == 2);
}

TEST_CASE("resolver: only A, or only AAAA, is an answer", "[resolver]") {
  Fixture f;
  f.dns.set("v4.example.test", {{"192.0.2.1"}, {}, 60});
  f.dns.set("v6.example.test", {{}, {"2001:db8::6"}, 60});
  auto resolver = f.makeResolver();

  DnsAnswer v4 = resolveNow(f, *resolver, "v4.example.test");
  CHECK(v4.error == Reason::none);
  CHECK(texts(v4.addresses) == std::set<std::string>{"192.0.2.1"});
  DnsAnswer v6 = resolveNow(f, *resolver, "v6.example.test");
  CHECK(v6.error == Reason::none);
  CHECK(texts(v6.addresses) == std::set<std::string>{"2001:db8::6"});
}

TEST_CASE("resolver: TTL raised to min_ttl, then a new query after expiry", "[resolver]") {
  Fixture f;
  f.config.min_ttl = 300ms;
  f.dns.set("short.example.test", {{"192.0.2.20"}, {}, 0});
  auto resolver = f.makeResolver();

  CHECK(resolveNow(f, *resolver, "short.example.test").source == DnsAnswer::Source::resolved);
  const int queries = f.dns.queries("short.example.test");
  DnsAnswer cached = resolveNow(f, *resolver, "short.example.test");
  CHECK(cached.source == DnsAnswer::Source::cache_hit);
  CHECK(texts(cached.addresses) == std::set<std::string>{"192.0.2.20"});
  CHECK(f.dns.queries("short.example.test") == queries);

  runFor(f.base.get(), 400ms);
  DnsAnswer fresh = resolveNow(f, *resolver, "short.example.test");
  CHECK(fresh.source == DnsAnswer::Source::resolved);
  CHECK(f.dns.queries("short.example.test") == 2 * queries);
}

TEST_CASE("resolver: TTL lowered to max_ttl", "[resolver]") {
  Fixture f;
  f.config.max_ttl = 200ms;
  f.dns.set("long.example.test", {{"192.0.2.21"}, {}, 3600});
  auto resolver = f.makeResolver();

  CHECK(resolveNow(f, *resolver, "long.example.test").source == DnsAnswer::Source::resolved);
  CHECK(resolveNow(f, *resolver, "long.example.test").source == DnsAnswer::Source::cache_hit);
  runFor(f.base.get(), 300ms);
  CHECK(resolveNow(f, *resolver, "long.example.test").source == DnsAnswer::Source::resolved);
  CHECK(f.dns.queries("long.example.test", kTypeA) == 2);
}

TEST_CASE("resolver: the smallest TTL of the answer counts", "[resolver]") {
  Fixture f;
  f.config.min_ttl = 200ms;
  FakeDns::Entry entry{{"192.0.2.30"}, {"2001:db8::30"}, 3600};
  entry.aaaa_ttl = 0;
  f.dns.set("mixed.example.test", entry);
  auto resolver = f.makeResolver();

  CHECK(resolveNow(f, *resolver, "mixed.example.test").source == DnsAnswer::Source::resolved);
  CHECK(resolveNow(f, *resolver, "mixed.example.test").source == DnsAnswer::Source::cache_hit);
  runFor(f.base.get(), 300ms);
  CHECK(resolveNow(f, *resolver, "mixed.example.test").source == DnsAnswer::Source::resolved);
}

TEST_CASE("resolver: a zero TTL with no min_ttl is not cached", "[resolver]") {
  Fixture f;
  f.dns.set("zero.example.test", {{"192.0.2.31"}, {}, 0});
  auto resolver = f.makeResolver();
  CHECK(resolveNow(f, *resolver, "zero.example.test").error == Reason::none);
  CHECK(resolveNow(f, *resolver, "zero.example.test").source == DnsAnswer::Source::resolved);
  CHECK(resolver->cacheSize() == 0);
}

TEST_CASE("resolver: NXDOMAIN is dns_failed, kept for negative_ttl", "[resolver]") {
  Fixture f;
  f.config.negative_ttl = 300ms;
  auto resolver = f.makeResolver();

  DnsAnswer first = resolveNow(f, *resolver, "missing.example.test");
  CHECK(first.error == Reason::dns_failed);
  CHECK(first.source == DnsAnswer::Source::resolved);
  CHECK(first.addresses.empty());
  const int queries = f.dns.queries("missing.example.test");
  CHECK(queries >= 1);

  DnsAnswer cached = resolveNow(f, *resolver, "missing.example.test");
  CHECK(cached.error == Reason::dns_failed);
  CHECK(cached.source == DnsAnswer::Source::cache_hit);
  CHECK(f.dns.queries("missing.example.test") == queries);

  runFor(f.base.get(), 400ms);
  DnsAnswer fresh = resolveNow(f, *resolver, "missing.example.test");
  CHECK(fresh.error == Reason::dns_failed);
  CHECK(fresh.source == DnsAnswer::Source::resolved);
  CHECK(f.dns.queries("missing.example.test") == 2 * queries);
}

TEST_CASE("resolver: a name without records is dns_failed", "[resolver]") {
  Fixture f;
  f.dns.set("empty.example.test", {{}, {}, 60});
  auto resolver = f.makeResolver();
  CHECK(resolveNow(f, *resolver, "empty.example.test").error == Reason::dns_failed);
}

TEST_CASE("resolver: SERVFAIL is dns_failed", "[resolver]") {
  Fixture f;
  f.config.negative_ttl = 5s;
  FakeDns::Entry entry;
  entry.mode = FakeDns::Mode::servfail;
  f.dns.set("broken.example.test", entry);
  auto resolver = f.makeResolver();

  DnsAnswer answer = resolveNow(f, *resolver, "broken.example.test");
  CHECK(answer.error == Reason::dns_failed);
  CHECK(answer.addresses.empty());
  CHECK(resolveNow(f, *resolver, "broken.example.test").source == DnsAnswer::Source::cache_hit);
}

TEST_CASE("resolver: silence is dns_timeout, never cached", "[resolver]") {
  Fixture f;
  f.config.negative_ttl = 5s;
  f.config.timeout = 150ms;
  FakeDns::Entry entry;
  entry.mode = FakeDns::Mode::silent;
  f.dns.set("quiet.example.test", entry);

  SECTION("one attempt") {
    f.config.attempts = 1;
    auto resolver = f.makeResolver();
    const auto start = Clock::now();
    DnsAnswer answer = resolveNow(f, *resolver, "quiet.example.test");
    const auto elapsed = Clock::now() - start;
    CHECK(answer.error == Reason::dns_timeout);
    CHECK(answer.source == DnsAnswer::Source::resolved);
    CHECK(elapsed >= 140ms);
    CHECK(elapsed < 1s);
    CHECK(f.dns.queries("quiet.example.test", kTypeA) == 1);

    // Not cached: the next lookup asks again.
    CHECK(resolveNow(f, *resolver, "quiet.example.test").error == Reason::dns_timeout);
    CHECK(f.dns.queries("quiet.example.test", kTypeA) == 2);
    CHECK(resolver->cacheSize() == 0);
  }
  SECTION("two attempts: two tries, c-ares doubles the second") {
    f.config.attempts = 2;
    auto resolver = f.makeResolver();
    const auto start = Clock::now();
    DnsAnswer answer = resolveNow(f, *resolver, "quiet.example.test");
    const auto elapsed = Clock::now() - start;
    CHECK(answer.error == Reason::dns_timeout);
    CHECK(f.dns.queries("quiet.example.test", kTypeA) == 2);
    CHECK(elapsed >= 290ms);
    CHECK(elapsed < 1500ms);  // 150ms + 300ms, with room for a slow machine
  }
}

TEST_CASE("resolver: concurrent lookups of one name share one query", "[resolver]") {
  Fixture f;
  f.dns.set("shared.example.test", {{"192.0.2.40"}, {"2001:db8::40"}, 60});
  auto resolver = f.makeResolver();

  Result r1, r2, r3;
  auto l1 = resolver->resolve("shared.example.test", r1.callback());
  auto l2 = resolver->resolve("shared.example.test", r2.callback());
  auto l3 = resolver->resolve("shared.example.test", r3.callback());
  REQUIRE(runUntil(f.base.get(), [&] { return r1.calls + r2.calls + r3.calls == 3; }));
  runFor(f.base.get(), 50ms);
  CHECK(r1.calls == 1);
  CHECK(r2.calls == 1);
  CHECK(r3.calls == 1);
  for (Result* r : {&r1, &r2, &r3}) {
    CHECK(r->answer->source == DnsAnswer::Source::resolved);
    CHECK(texts(r->answer->addresses) == std::set<std::string>{"192.0.2.40", "2001:db8::40"});
  }
  CHECK(f.dns.queries("shared.example.test", kTypeA) == 1);
  CHECK(f.dns.queries("shared.example.test", kTypeAaaa) == 1);
}

TEST_CASE("resolver: a destroyed handle is never called", "[resolver]") {
  Fixture f;
  f.dns.set("cancel.example.test", {{"192.0.2.50"}, {}, 60});
  auto resolver = f.makeResolver();

  SECTION("while the query is in flight") {
    Result cancelled, kept;
    auto lookup = resolver->resolve("cancel.example.test", cancelled.callback());
    auto other = resolver->resolve("cancel.example.test", kept.callback());
    lookup.reset();
    REQUIRE(runUntil(f.base.get(), [&] { return kept.calls > 0; }));
    runFor(f.base.get(), 50ms);
    CHECK(cancelled.calls == 0);
    CHECK(kept.calls == 1);
  }
  SECTION("the only waiter: the answer is still cached") {
    Result cancelled;
    auto lookup = resolver->resolve("cancel.example.test", cancelled.callback());
    lookup.reset();
    REQUIRE(runUntil(f.base.get(), [&] { return resolver->cacheSize() == 1; }));
    runFor(f.base.get(), 50ms);
    CHECK(cancelled.calls == 0);
    CHECK(resolveNow(f, *resolver, "cancel.example.test").source == DnsAnswer::Source::cache_hit);
  }
  SECTION("a cache hit waiting for delivery") {
    resolveNow(f, *resolver, "cancel.example.test");
    Result cancelled;
    auto lookup = resolver->resolve("cancel.example.test", cancelled.callback());
    lookup.reset();
    runFor(f.base.get(), 50ms);
    CHECK(cancelled.calls == 0);
  }
}

TEST_CASE("resolver: a callback may destroy other lookups or the resolver", "[resolver]") {
  Fixture f;
  f.dns.set("reentrant.example.test", {{"192.0.2.60"}, {}, 60});
  auto resolver = f.makeResolver();

  SECTION("another lookup of the same answer") {
    Result second;
    std::unique_ptr<Resolver::Lookup> l2;
    int first_calls = 0;
    auto l1 = resolver->resolve("reentrant.example.test", [&](const DnsAnswer&) {
      ++first_calls;
      l2.reset();
    });
    l2 = resolver->resolve("reentrant.example.test", second.callback());
    REQUIRE(runUntil(f.base.get(), [&] { return first_calls > 0; }));
    runFor(f.base.get(), 50ms);
    CHECK(first_calls == 1);
    CHECK(second.calls == 0);
  }
  SECTION("its own handle") {
    std::unique_ptr<Resolver::Lookup> self;
    int calls = 0;
    self = resolver->resolve("reentrant.example.test", [&](const DnsAnswer&) {
      ++calls;
      self.reset();
    });
    REQUIRE(runUntil(f.base.get(), [&] { return calls > 0; }));
    CHECK(self == nullptr);
  }
  SECTION("the resolver, with other answers pending") {
    Result second;
    int first_calls = 0;
    auto l1 = resolver->resolve("reentrant.example.test", [&](const DnsAnswer&) {
      ++first_calls;
      resolver.reset();
    });
    auto l2 = resolver->resolve("reentrant.example.test", second.callback());
    REQUIRE(runUntil(f.base.get(), [&] { return first_calls > 0; }));
    runFor(f.base.get(), 50ms);
    CHECK(resolver == nullptr);
    CHECK(second.calls == 0);
  }
  SECTION("a new lookup from inside a callback") {
    Result inner;
    std::unique_ptr<Resolver::Lookup> l2;
    int first_calls = 0;
    auto l1 = resolver->resolve("reentrant.example.test", [&](const DnsAnswer&) {
      ++first_calls;
      l2 = resolver->resolve("reentrant.example.test", inner.callback());
      CHECK(inner.calls == 0);
    });
    REQUIRE(runUntil(f.base.get(), [&] { return inner.calls > 0; }));
    CHECK(inner.answer->source == DnsAnswer::Source::cache_hit);
  }
}

TEST_CASE("resolver: destroyed with a query outstanding", "[resolver]") {
  Fixture f;
  FakeDns::Entry entry;
  entry.mode = FakeDns::Mode::silent;
  f.dns.set("pending.example.test", entry);
  f.config.timeout = 2s;
  auto resolver = f.makeResolver();

  Result result;
  auto lookup = resolver->resolve("pending.example.test", result.callback());
  REQUIRE(runUntil(f.base.get(), [&] { return f.dns.queries("pending.example.test") >= 2; }));
  resolver.reset();
  runFor(f.base.get(), 100ms);
  CHECK(result.calls == 0);
  lookup.reset();  // the handle outlives the resolver
  CHECK(result.calls == 0);
}

TEST_CASE("resolver: servers with ports, tried in order", "[resolver]") {
  Fixture f;
  f.dns.set("port.example.test", {{"192.0.2.70"}, {}, 60});

  // First a port nobody listens on. c-ares connects its UDP socket, so the ICMP
  // refusal surfaces on a later send or read of that socket and sends the query
  // on to the next server; a query whose refusal was consumed by another's send
  // moves on at its timeout. Either way the answer comes from the second server.
  int closed = socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(closed >= 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(closed, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) == 0);
  socklen_t len = sizeof(sin);
  REQUIRE(getsockname(closed, reinterpret_cast<sockaddr*>(&sin), &len) == 0);
  close(closed);
  const auto dead = SocketAddress(*IpAddress::parse("127.0.0.1"), ntohs(sin.sin_port));
  REQUIRE(dead.port() != f.dns.address().port());

  f.config.servers = {dead, f.dns.address()};
  f.config.timeout = 300ms;
  auto resolver = f.makeResolver();
  DnsAnswer answer = resolveNow(f, *resolver, "port.example.test");
  CHECK(answer.error == Reason::none);
  CHECK(texts(answer.addresses) == std::set<std::string>{"192.0.2.70"});
  CHECK(f.dns.queries("port.example.test", kTypeA) == 1);
  CHECK(f.dns.queries("port.example.test", kTypeAaaa) == 1);
}

TEST_CASE("resolver: no servers configured: c-ares takes /etc/resolv.conf", "[resolver]") {
  Fixture f;
  f.config.servers.clear();
  std::string error;
  auto resolver = Resolver::create(f.base.get(), f.config, &error);
  CHECK(resolver != nullptr);
  CHECK(error.empty());
  CHECK(resolver->cacheSize() == 0);
}

TEST_CASE("resolver: the cache holds at most 10000 names, the oldest go first", "[resolver]") {
  Fixture f;
  auto resolver = f.makeResolver();
  const int total = 10050;
  for (int i = 0; i < total; ++i) {
    f.dns.set("n" + std::to_string(i) + ".example.test", {{"192.0.2.1"}, {}, 300});
  }
  // In batches, so that the test server's socket buffer never overflows.
  const auto start = Clock::now();
  for (int first = 0; first < total; first += 100) {
    int answered = 0;
    std::vector<std::unique_ptr<Resolver::Lookup>> lookups;
    for (int i = first; i < std::min(total, first + 100); ++i) {
      lookups.push_back(resolver->resolve("n" + std::to_string(i) + ".example.test",
                                          [&answered](const DnsAnswer&) { ++answered; }));
    }
    const int expected = static_cast<int>(lookups.size());
    REQUIRE(runUntil(f.base.get(), [&] { return answered == expected; }));
  }
  INFO(
      "took " << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
              << "ms");
  CHECK(resolver->cacheSize() == 10000);
  CHECK(resolveNow(f, *resolver, "n0.example.test").source == DnsAnswer::Source::resolved);
  CHECK(resolveNow(f, *resolver, "n10049.example.test").source == DnsAnswer::Source::cache_hit);
  CHECK(resolver->cacheSize() == 10000);
}
