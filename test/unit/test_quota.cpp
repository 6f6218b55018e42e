// Quotas: which entry applies, whose budget it is, the token bucket on
// simulated time, pacing arithmetic and the budget table's bounds.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "proxy/quota.h"

using namespace s3gate;
using namespace std::chrono_literals;

namespace {

IpAddress ip(std::string_view text) {
  auto a = IpAddress::parse(text);
  REQUIRE(a);
  return *a;
}

Network net(std::string_view text) {
  auto n = Network::parse(text);
  REQUIRE(n);
  return *n;
}

QuotaRule rule(std::string name, std::vector<std::string> clients = {},
               std::vector<std::string> identities = {}, QuotaPer per = QuotaPer::address) {
  QuotaRule r;
  r.name = std::move(name);
  for (const auto& c : clients) {
    r.clients.push_back(net(c));
  }
  r.identities = std::move(identities);
  r.per = per;
  return r;
}

const QuotaClock::time_point t0{std::chrono::seconds(1000)};

}  // namespace

TEST_CASE("the first entry whose clients and identities both match applies", "[quota]") {
  std::vector<QuotaRule> quotas = {
      rule("farm-alice", {"10.30.0.0/16"}, {"alice"}),
      rule("farm", {"10.30.0.0/16"}),
      rule("artists", {}, {"alice", "bob"}),
      rule("rest"),
  };
  struct Row {
    const char* client;
    const char* identity;
    const char* expected;  // nullptr: none
  };
  const Row rows[] = {
      {"10.30.1.1", "alice", "farm-alice"},  // both lists match
      {"10.30.1.1", "bob", "farm"},          // identities do not: the next entry
      {"10.30.1.1", "", "farm"},             // no identity matches only empty identities
      {"10.1.1.1", "alice", "artists"},      // clients empty: anyone
      {"10.1.1.1", "Alice", "rest"},         // identities compare as written
      {"10.1.1.1", "", "rest"},
      {"::1", "", "rest"},
  };
  for (const Row& row : rows) {
    INFO(row.client << " " << row.identity);
    const QuotaRule* match = matchQuota(quotas, ip(row.client), row.identity);
    REQUIRE(match != nullptr);
    CHECK(match->name == row.expected);
  }
  std::vector<QuotaRule> narrow = {rule("farm", {"10.30.0.0/16"})};
  CHECK(matchQuota(narrow, ip("10.1.1.1"), "") == nullptr);
  CHECK(matchQuota({}, ip("10.1.1.1"), "") == nullptr);
}

TEST_CASE("budget keys: per address, identity or quota", "[quota]") {
  QuotaRule by_address = rule("a", {}, {}, QuotaPer::address);
  QuotaRule by_identity = rule("i", {}, {}, QuotaPer::identity);
  QuotaRule by_quota = rule("q", {}, {}, QuotaPer::quota);
  IpAddress one = ip("10.0.0.1");
  IpAddress two = ip("10.0.0.2");
  // per address: the address decides, the identity does not.
  CHECK(budgetKey(by_address, one, "alice") == budgetKey(by_address, one, "bob"));
  CHECK(budgetKey(by_address, one, "") != budgetKey(by_address, two, ""));
  // per identity: the identity decides; without one, the address.
  CHECK(budgetKey(by_identity, one, "alice") == budgetKey(by_identity, two, "alice"));
  CHECK(budgetKey(by_identity, one, "alice") != budgetKey(by_identity, one, "bob"));
  CHECK(budgetKey(by_identity, one, "") != budgetKey(by_identity, two, ""));
  CHECK(budgetKey(by_identity, one, "") == budgetKey(by_identity, one, ""));
  // An identity that spells an address is not that address's budget.
  CHECK(budgetKey(by_identity, one, "10.0.0.1") != budgetKey(by_identity, one, ""));
  // per quota: everyone together.
  CHECK(budgetKey(by_quota, one, "alice") == budgetKey(by_quota, two, ""));
  // Two entries never share a budget.
  QuotaRule other = rule("b", {}, {}, QuotaPer::address);
  CHECK(budgetKey(by_address, one, "") != budgetKey(other, one, ""));
}

TEST_CASE("token bucket on simulated time", "[quota]") {
  TokenBucket b;
  b.configure(10, 10, t0);  // 10 a second, a burst of one second's worth
  int taken = 0;
  while (b.tryTake(1, t0)) {
    ++taken;
  }
  CHECK(taken == 10);
  CHECK_FALSE(b.tryTake(1, t0));
  CHECK(b.until(1, t0) == 100ms);
  CHECK(retryAfterSeconds(b.until(1, t0)) == 1);  // rounded up to a whole second
  CHECK_FALSE(b.tryTake(1, t0 + 99ms));
  CHECK(b.tryTake(1, t0 + 100ms));
  CHECK_FALSE(b.full(t0 + 100ms));
  CHECK(b.full(t0 + 2s));
  CHECK(b.level(t0 + 10s) == Approx(10));  // never above the burst

  SECTION("a debt is paid off first") {
    TokenBucket bytes;
    bytes.configure(1000, 500, t0);
    bytes.take(2500, t0);  // -2000
    CHECK(bytes.level(t0) == Approx(-2000));
    CHECK(bytes.until(250, t0) == 2250ms);
  }
  SECTION("slow rates give Retry-After in whole seconds, at least 1") {
    TokenBucket slow;
    slow.configure(0.25, 1, t0);
    CHECK(slow.tryTake(1, t0));
    CHECK(retryAfterSeconds(slow.until(1, t0)) == 4);
    CHECK(retryAfterSeconds(slow.until(1, t0 + 3500ms)) == 1);
    CHECK(retryAfterSeconds(0ms) == 1);
  }
  SECTION("rate 0 is no limit") {
    TokenBucket none;
    none.configure(0, 0, t0);
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(none.tryTake(1, t0));
    }
    CHECK(none.full(t0));
  }
  SECTION("a new rate keeps what is left, within the new burst") {
    b.configure(2, 2, t0 + 100ms);
    CHECK(b.level(t0 + 100ms) <= 2);
  }
}

TEST_CASE("pacing arithmetic", "[quota]") {
  // 40 Mbit/s is 5 MB/s; the burst is 50 ms of it.
  CHECK(paceBurstBytes(40000000) == Approx(250000));
  CHECK(paceBurstBytes(1000000) == Approx(64 * 1024));  // at least 64 KiB
  CHECK(paceBurstBytes(2000000000) == Approx(12500000));

  QuotaTable table;
  QuotaRule r = rule("bw");
  r.bandwidth_bits = 40000000;
  std::vector<QuotaRule> quotas = {r};
  QuotaLease lease;
  REQUIRE(table.admit(quotas, ip("10.0.0.1"), "", false, lease, t0).reason == Reason::none);
  std::vector<double> waited;
  auto pacer = QuotaTable::pacer(lease, [&](PaceDirection, double s) { waited.push_back(s); });
  REQUIRE(pacer);

  // Moving 16 MiB at 5 MB/s by the pacer's word takes 16 MiB / 5 MB/s less
  // the first burst, on simulated time.
  const size_t total = 16 * 1024 * 1024;
  size_t moved = 0;
  QuotaClock::time_point now = t0;
  size_t largest = 0;
  int pauses = 0;
  while (moved < total) {
    size_t allowed = pacer->allowance(PaceDirection::down, now);
    if (allowed == 0) {
      Duration wait = pacer->resumeAfter(PaceDirection::down, now);
      REQUIRE(wait >= 1ms);
      now += wait;
      ++pauses;
      continue;
    }
    size_t slice = std::min<size_t>({allowed, 64 * 1024, total - moved});  // a read's size
    largest = std::max(largest, allowed);
    pacer->consume(PaceDirection::down, slice, now);
    moved += slice;
  }
  double seconds = std::chrono::duration<double>(now - t0).count();
  double expected = (total - 250000.0) / 5e6;
  CHECK(seconds == Approx(expected).epsilon(0.02));
  CHECK(largest <= 250000);  // never more than the burst at once
  CHECK(pauses > 50);        // paced in slices, ~25 ms each
  // The other direction has its own budget, untouched.
  CHECK(pacer->allowance(PaceDirection::up, now) == 250000);

  SECTION("no bandwidth: no pacer") {
    QuotaRule plain = rule("plain");
    QuotaLease other;
    REQUIRE(table.admit({plain}, ip("10.0.0.1"), "", false, other, t0).rule != nullptr);
    CHECK(QuotaTable::pacer(other, nullptr) == nullptr);
    CHECK(QuotaTable::pacer(QuotaLease(), nullptr) == nullptr);
  }
}

TEST_CASE("two transfers in one budget share its bandwidth", "[quota]") {
  QuotaTable table;
  QuotaRule r = rule("bw", {}, {}, QuotaPer::quota);
  r.bandwidth_bits = 8000000;  // 1 MB/s
  std::vector<QuotaRule> quotas = {r};
  QuotaLease a;
  QuotaLease b;
  REQUIRE(table.admit(quotas, ip("10.0.0.1"), "", false, a, t0).reason == Reason::none);
  REQUIRE(table.admit(quotas, ip("10.0.0.2"), "", false, b, t0).reason == Reason::none);
  CHECK(a.budget() == b.budget());
  auto pa = QuotaTable::pacer(a, nullptr);
  auto pb = QuotaTable::pacer(b, nullptr);
  // Over 10 simulated seconds, each takes what it is allowed every 10 ms.
  size_t total = 0;
  for (auto now = t0; now < t0 + 10s; now += 10ms) {
    for (auto* p : {pa.get(), pb.get()}) {
      size_t n = p->allowance(PaceDirection::up, now);
      p->consume(PaceDirection::up, n, now);
      total += n;
    }
  }
  // 10 s at 1 MB/s plus the first burst (64 KiB).
  CHECK(static_cast<double>(total) == Approx(10e6 + 65536).epsilon(0.02));
}

TEST_CASE("connections: max_connections per budget, released on close", "[quota]") {
  QuotaTable table;
  QuotaRule r = rule("conn");
  r.max_connections = 2;
  std::vector<QuotaRule> quotas = {r};
  QuotaLease one;
  QuotaLease two;
  QuotaLease three;
  CHECK(table.admit(quotas, ip("10.0.0.1"), "", false, one, t0).reason == Reason::none);
  CHECK(table.admit(quotas, ip("10.0.0.1"), "", false, two, t0).reason == Reason::none);
  auto refused = table.admit(quotas, ip("10.0.0.1"), "", false, three, t0);
  CHECK(refused.reason == Reason::client_limit);
  REQUIRE(refused.rule != nullptr);
  CHECK(refused.rule->name == "conn");
  CHECK_FALSE(three.held());
  // Another address has its own budget.
  QuotaLease elsewhere;
  CHECK(table.admit(quotas, ip("10.0.0.2"), "", false, elsewhere, t0).reason == Reason::none);
  // A request on a connection already counted is not counted again.
  CHECK(table.admit(quotas, ip("10.0.0.1"), "", true, one, t0).reason == Reason::none);
  CHECK(one.budget()->connections.load() == 2);
  one.release();
  CHECK(table.admit(quotas, ip("10.0.0.1"), "", false, three, t0).reason == Reason::none);

  SECTION("a reload that raises the limit reaches the budget") {
    quotas[0].max_connections = 3;
    QuotaLease four;
    CHECK(table.admit(quotas, ip("10.0.0.1"), "", false, four, t0).reason == Reason::none);
  }
  SECTION("an entry gone at a reload lets the lease go") {
    CHECK(table.admit({}, ip("10.0.0.1"), "", true, two, t0).rule == nullptr);
    CHECK_FALSE(two.held());
  }
}

TEST_CASE("requests: a token bucket per budget with Retry-After", "[quota]") {
  QuotaTable table;
  QuotaRule r = rule("rate");
  r.requests_per_second = 5;
  std::vector<QuotaRule> quotas = {r};
  QuotaLease lease;
  for (int i = 0; i < 5; ++i) {
    REQUIRE(table.admit(quotas, ip("10.0.0.1"), "", true, lease, t0).reason == Reason::none);
  }
  auto limited = table.admit(quotas, ip("10.0.0.1"), "", true, lease, t0);
  CHECK(limited.reason == Reason::rate_limited);
  CHECK(limited.retry_after == 1);
  CHECK(table.admit(quotas, ip("10.0.0.1"), "", true, lease, t0 + 200ms).reason == Reason::none);
  // The connection itself (request false) takes no token.
  QuotaLease other;
  CHECK(table.admit(quotas, ip("10.0.0.1"), "", false, other, t0 + 200ms).reason == Reason::none);
}

TEST_CASE("the table is bounded and frees departed clients' budgets", "[quota]") {
  QuotaTable table(4);
  QuotaRule r = rule("small");
  r.requests_per_second = 1;
  std::vector<QuotaRule> quotas = {r};
  std::vector<QuotaLease> leases(6);
  for (int i = 0; i < 6; ++i) {
    auto a = table.admit(quotas, ip("10.0.0." + std::to_string(i + 1)), "", i < 4, leases[i], t0);
    CHECK(a.reason == Reason::none);
  }
  // Four budgets and the entry's overflow budget, which the last two share.
  CHECK(table.size() == 5);
  CHECK(leases[4].budget() == leases[5].budget());
  CHECK(leases[4].key() != leases[5].key());
  // Connections closed: the overflow budget (no token taken) is freed at
  // once, the four whose request buckets are not full yet are kept.
  for (auto& l : leases) {
    l.release();
  }
  CHECK(table.sweep(t0 + 100ms) == 1);
  // A second later they are full again: nothing to remember, all freed.
  CHECK(table.sweep(t0 + 2s) == 4);
  CHECK(table.size() == 0);
  // A budget with an open connection is never freed.
  QuotaLease open;
  REQUIRE(table.admit(quotas, ip("10.0.0.1"), "", false, open, t0 + 2s).reason == Reason::none);
  CHECK(table.sweep(t0 + 10s) == 0);
  CHECK(table.size() == 1);
}

TEST_CASE("the table is safe to share between threads", "[quota]") {
  QuotaTable table(64);
  QuotaRule r = rule("threads", {}, {}, QuotaPer::quota);
  r.max_connections = 1000;
  std::vector<QuotaRule> quotas = {r};
  std::vector<IpAddress> clients;
  for (int t = 0; t < 4; ++t) {
    clients.push_back(ip("10.0." + std::to_string(t) + ".1"));
  }
  std::atomic<int> refused{0};  // Catch2 assertions are for the main thread only
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        QuotaLease lease;
        auto now = QuotaClock::now();
        if (table.admit(quotas, clients[t], "", false, lease, now).reason != Reason::none) {
          ++refused;
        }
        if (i % 100 == 0) {
          table.sweep(now);
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(refused.load() == 0);
  QuotaLease last;
  REQUIRE(table.admit(quotas, ip("10.0.0.1"), "", false, last, QuotaClock::now()).reason ==
          Reason::none);
  CHECK(last.budget()->connections.load() == 1);  // every lease given back
}
