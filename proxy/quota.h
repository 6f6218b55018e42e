#pragma once
// Quotas (SPEC section 2 `quotas`, section 3 step 1b): which entry applies to
// a client, whose budget it draws on, and the budgets themselves.
//
//   matchQuota()   the first entry whose clients and identities both match
//   budgetKey()    who shares a budget: per address, identity or quota
//   TokenBucket    pure arithmetic on a caller's clock (tests use simulated time)
//   QuotaTable     the budgets, shared by every worker (thread-safe)
//   QuotaLease     one connection counted in one budget, released on close
//
// Budgets are state that must outlive a reload (a reload must not hand every
// client a fresh allowance), so the table belongs to the server, not to the
// runtime snapshot. A budget is found by its key, which begins with the
// entry's name; each use passes the entry of the snapshot in force, and the
// budget takes that entry's limits (a reload that changes a limit reaches
// every budget of the entry at its next connection or request).
//
// Bounds: at most `max_budgets` budgets are tracked. A budget with no open
// connection whose buckets are full again is freed (sweep(), and whenever a
// new budget would go over the bound). When every slot holds a live budget,
// a new client of an entry shares that entry's overflow budget, so the table
// stays bounded and the client is still limited.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "acl/reason.h"
#include "common/net.h"
#include "config/config.h"
#include "proxy/pacer.h"

namespace s3gate {

using QuotaClock = std::chrono::steady_clock;

// The entry that applies to a client, or nullptr. An empty `identity` is a
// client without one: it matches only entries whose identities are empty.
const QuotaRule* matchQuota(const std::vector<QuotaRule>& quotas, const IpAddress& client,
                            std::string_view identity);

// The budget a client draws on under `rule`: the entry's name and who shares it.
std::string budgetKey(const QuotaRule& rule, const IpAddress& client, std::string_view identity);

// A token bucket on the caller's clock: `rate` tokens a second up to `burst`.
// A rate of 0 is no limit. It starts full. take() may drive the level below
// zero (a debt several users of one bucket ran up between two looks); the
// debt is paid off before tokens are available again.
class TokenBucket {
 public:
  void configure(double rate, double burst, QuotaClock::time_point now);
  bool unlimited() const { return rate_ <= 0; }
  double rate() const { return rate_; }
  double burst() const { return burst_; }
  double level(QuotaClock::time_point now);
  // Takes `n` tokens if there are that many.
  bool tryTake(double n, QuotaClock::time_point now);
  // Takes `n` tokens whatever the level.
  void take(double n, QuotaClock::time_point now);
  // How long until the level reaches `n` (0 when it has).
  Duration until(double n, QuotaClock::time_point now);
  bool full(QuotaClock::time_point now);

 private:
  void refill(QuotaClock::time_point now);
  double rate_ = 0;
  double burst_ = 0;
  double level_ = 0;
  QuotaClock::time_point last_{};
  bool started_ = false;
};

// The byte bucket of a bandwidth (bits per second): a burst of 50 ms worth,
// at least 64 KiB, so that a paced transfer takes the time its budget says
// and moves in slices large enough to be cheap.
double paceBurstBytes(uint64_t bandwidth_bits);
// Seconds for Retry-After: until one request token, rounded up, at least 1.
int retryAfterSeconds(Duration until_token);

// One budget: its request tokens, its byte buckets (one per direction) and
// its open connections.
struct QuotaBudget {
  std::mutex mu;  // guards the buckets and the limits they were set from
  TokenBucket requests;
  TokenBucket up;
  TokenBucket down;
  uint64_t requests_per_second = UINT64_MAX;  // what the buckets were last set from
  uint64_t bandwidth_bits = UINT64_MAX;
  std::atomic<uint64_t> connections{0};

  // Takes the entry's limits (its current form after a reload).
  void configure(const QuotaRule& rule, QuotaClock::time_point now);
  // No connection and every bucket full: nothing would change if it were freed.
  bool idle(QuotaClock::time_point now);
};

// A connection counted in a budget; the count drops when it goes.
class QuotaLease {
 public:
  QuotaLease() = default;
  ~QuotaLease() { release(); }
  QuotaLease(QuotaLease&& other) noexcept = default;
  QuotaLease& operator=(QuotaLease&& other) noexcept;
  QuotaLease(const QuotaLease&) = delete;
  QuotaLease& operator=(const QuotaLease&) = delete;

  void release();
  bool held() const { return budget_ != nullptr; }
  const std::string& quota() const { return quota_; }  // the entry's name
  const std::string& key() const { return key_; }      // the budget asked for
  const std::shared_ptr<QuotaBudget>& budget() const { return budget_; }

 private:
  friend class QuotaTable;
  std::shared_ptr<QuotaBudget> budget_;
  std::string key_;
  std::string quota_;
};

class QuotaTable {
 public:
  static constexpr size_t kDefaultMaxBudgets = 100000;
  explicit QuotaTable(size_t max_budgets = kDefaultMaxBudgets);
  QuotaTable(const QuotaTable&) = delete;
  QuotaTable& operator=(const QuotaTable&) = delete;

  struct Admission {
    Reason reason = Reason::none;     // none, client_limit or rate_limited
    const QuotaRule* rule = nullptr;  // the entry that applied (into `quotas`), or nullptr
    int retry_after = 0;              // seconds, with rate_limited
  };

  // Step 1b. The connection's lease is taken (counted against
  // max_connections) when it holds none or holds another budget than the
  // client now draws on (a reload, an identity learnt later); `request`
  // takes a request token. On client_limit the lease is left empty.
  Admission admit(const std::vector<QuotaRule>& quotas, const IpAddress& client,
                  std::string_view identity, bool request, QuotaLease& lease,
                  QuotaClock::time_point now);

  // A pacer over the lease's budget, or nullptr when its entry has no
  // bandwidth. `on_paced` is told of the time a transfer waited.
  static std::shared_ptr<BandwidthPacer> pacer(const QuotaLease& lease,
                                               std::function<void(PaceDirection, double)> on_paced);

  // Frees idle budgets; returns how many went.
  size_t sweep(QuotaClock::time_point now);
  size_t size() const { return size_.load(std::memory_order_relaxed); }

 private:
  static constexpr size_t kStripes = 16;
  struct Stripe {
    std::mutex mu;
    std::unordered_map<std::string, std::shared_ptr<QuotaBudget>> budgets;
  };
  Stripe& stripeOf(const std::string& key);
  size_t sweepStripe(Stripe& stripe, QuotaClock::time_point now);
  // Finds or creates the budget of `key` and counts a connection in it;
  // nullptr when it is at max_connections (*at_limit) or, unless `force`,
  // when the table is full (*at_limit false).
  std::shared_ptr<QuotaBudget> lease(const std::string& key, const QuotaRule& rule, bool force,
                                     QuotaClock::time_point now, bool* at_limit);

  size_t max_budgets_;
  std::atomic<size_t> size_{0};
  std::vector<Stripe> stripes_;
};

}  // namespace s3gate
