#include "proxy/quota.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace s3gate {

namespace {

using Seconds = std::chrono::duration<double>;

constexpr double kPaceBurstSeconds = 0.05;
constexpr double kMinPaceBurstBytes = 64 * 1024;
// A paced transfer resumes once half its burst is there: slices stay large
// (few wake-ups) and the budget is never far from used.
constexpr double kResumeFraction = 0.5;
// Below this the allowance is not worth a read (unless the burst is smaller).
constexpr double kMinSliceBytes = 16 * 1024;
constexpr Duration kMinPause{1};

// The overflow budget of an entry: shared by its clients that find the table full.
std::string overflowKey(const std::string& name) {
  return name + "\n*";
}

}  // namespace

const QuotaRule* matchQuota(const std::vector<QuotaRule>& quotas, const IpAddress& client,
                            std::string_view identity) {
  for (const QuotaRule& rule : quotas) {
    if (!rule.clients.empty() && !anyContains(rule.clients, client)) {
      continue;
    }
    if (!rule.identities.empty() && std::find(rule.identities.begin(), rule.identities.end(),
                                              identity) == rule.identities.end()) {
      continue;
    }
    return &rule;
  }
  return nullptr;
}

std::string budgetKey(const QuotaRule& rule, const IpAddress& client, std::string_view identity) {
  // The name first (a newline cannot be in an address, and the kinds differ).
  std::string key = rule.name + "\n";
  switch (rule.per) {
    case QuotaPer::quota:
      key += "q";
      break;
    case QuotaPer::identity:
      if (!identity.empty()) {
        key += "i:";
        key += identity;
        break;
      }
      [[fallthrough]];
    case QuotaPer::address:
      key += "a:" + client.toString();
      break;
  }
  return key;
}

// --- TokenBucket -----------------------------------------------------------

void TokenBucket::configure(double rate, double burst, QuotaClock::time_point now) {
  if (!started_) {
    started_ = true;
    last_ = now;
    rate_ = rate;
    burst_ = burst;
    level_ = burst;
    return;
  }
  refill(now);  // what accrued so far accrued at the old rate
  rate_ = rate;
  burst_ = burst;
  level_ = std::min(level_, burst_);
}

void TokenBucket::refill(QuotaClock::time_point now) {
  if (now <= last_) {
    return;
  }
  double elapsed = std::chrono::duration_cast<Seconds>(now - last_).count();
  last_ = now;
  level_ = std::min(burst_, level_ + elapsed * rate_);
}

double TokenBucket::level(QuotaClock::time_point now) {
  refill(now);
  return level_;
}

bool TokenBucket::tryTake(double n, QuotaClock::time_point now) {
  if (unlimited()) {
    return true;
  }
  refill(now);
  if (level_ < n) {
    return false;
  }
  level_ -= n;
  return true;
}

void TokenBucket::take(double n, QuotaClock::time_point now) {
  if (unlimited()) {
    return;
  }
  refill(now);
  level_ -= n;
}

Duration TokenBucket::until(double n, QuotaClock::time_point now) {
  if (unlimited()) {
    return Duration(0);
  }
  refill(now);
  if (level_ >= n) {
    return Duration(0);
  }
  return std::chrono::ceil<Duration>(Seconds((n - level_) / rate_));
}

bool TokenBucket::full(QuotaClock::time_point now) {
  if (unlimited()) {
    return true;
  }
  refill(now);
  return level_ >= burst_;
}

double paceBurstBytes(uint64_t bandwidth_bits) {
  double rate = static_cast<double>(bandwidth_bits) / 8;
  return std::max(kMinPaceBurstBytes, rate * kPaceBurstSeconds);
}

int retryAfterSeconds(Duration until_token) {
  auto seconds = std::chrono::ceil<std::chrono::seconds>(until_token).count();
  return static_cast<int>(std::clamp<int64_t>(seconds, 1, 86400));
}

// --- QuotaBudget -----------------------------------------------------------

void QuotaBudget::configure(const QuotaRule& rule, QuotaClock::time_point now) {
  if (rule.requests_per_second != requests_per_second) {
    requests_per_second = rule.requests_per_second;
    auto rate = static_cast<double>(rule.requests_per_second);
    requests.configure(rate, rate, now);  // a burst of one second's worth
  }
  if (rule.bandwidth_bits != bandwidth_bits) {
    bandwidth_bits = rule.bandwidth_bits;
    double rate = static_cast<double>(rule.bandwidth_bits) / 8;
    double burst = paceBurstBytes(rule.bandwidth_bits);
    up.configure(rate, burst, now);
    down.configure(rate, burst, now);
  }
}

bool QuotaBudget::idle(QuotaClock::time_point now) {
  if (connections.load(std::memory_order_relaxed) != 0) {
    return false;
  }
  std::lock_guard lock(mu);
  return requests.full(now) && up.full(now) && down.full(now);
}

// --- QuotaLease ------------------------------------------------------------

QuotaLease& QuotaLease::operator=(QuotaLease&& other) noexcept {
  if (this != &other) {
    release();
    budget_ = std::move(other.budget_);
    key_ = std::move(other.key_);
    quota_ = std::move(other.quota_);
  }
  return *this;
}

void QuotaLease::release() {
  if (budget_) {
    budget_->connections.fetch_sub(1, std::memory_order_relaxed);
    budget_.reset();
  }
  key_.clear();
  quota_.clear();
}

// --- the pacer -------------------------------------------------------------

namespace {

class BudgetPacer final : public BandwidthPacer {
 public:
  BudgetPacer(std::shared_ptr<QuotaBudget> budget,
              std::function<void(PaceDirection, double)> on_paced)
      : budget_(std::move(budget)), on_paced_(std::move(on_paced)) {}

  size_t allowance(PaceDirection direction, Clock::time_point now) override {
    std::lock_guard lock(budget_->mu);
    TokenBucket& bucket = bucketOf(direction);
    if (bucket.unlimited()) {
      return std::numeric_limits<size_t>::max();
    }
    double level = bucket.level(now);
    if (level < std::min(kMinSliceBytes, bucket.burst() * kResumeFraction)) {
      return 0;
    }
    return static_cast<size_t>(level);
  }

  void consume(PaceDirection direction, size_t bytes, Clock::time_point now) override {
    std::lock_guard lock(budget_->mu);
    bucketOf(direction).take(static_cast<double>(bytes), now);
  }

  Duration resumeAfter(PaceDirection direction, Clock::time_point now) override {
    std::lock_guard lock(budget_->mu);
    TokenBucket& bucket = bucketOf(direction);
    return std::max(kMinPause, bucket.until(bucket.burst() * kResumeFraction, now));
  }

  void paced(PaceDirection direction, double seconds) override {
    if (on_paced_) {
      on_paced_(direction, seconds);
    }
  }

 private:
  TokenBucket& bucketOf(PaceDirection direction) {
    return direction == PaceDirection::up ? budget_->up : budget_->down;
  }
  std::shared_ptr<QuotaBudget> budget_;
  std::function<void(PaceDirection, double)> on_paced_;
};

}  // namespace

// --- QuotaTable ------------------------------------------------------------

QuotaTable::QuotaTable(size_t max_budgets)
    : max_budgets_(std::max<size_t>(max_budgets, 1)), stripes_(kStripes) {}

QuotaTable::Stripe& QuotaTable::stripeOf(const std::string& key) {
  return stripes_[std::hash<std::string>()(key) % kStripes];
}

size_t QuotaTable::sweepStripe(Stripe& stripe, QuotaClock::time_point now) {
  size_t freed =
      std::erase_if(stripe.budgets, [&](const auto& entry) { return entry.second->idle(now); });
  size_.fetch_sub(freed, std::memory_order_relaxed);
  return freed;
}

size_t QuotaTable::sweep(QuotaClock::time_point now) {
  size_t freed = 0;
  for (Stripe& stripe : stripes_) {
    std::lock_guard lock(stripe.mu);
    freed += sweepStripe(stripe, now);
  }
  return freed;
}

std::shared_ptr<QuotaBudget> QuotaTable::lease(const std::string& key, const QuotaRule& rule,
                                               bool force, QuotaClock::time_point now,
                                               bool* at_limit) {
  *at_limit = false;
  Stripe& stripe = stripeOf(key);
  std::lock_guard lock(stripe.mu);
  auto it = stripe.budgets.find(key);
  if (it == stripe.budgets.end()) {
    if (size() >= max_budgets_) {
      sweepStripe(stripe, now);
    }
    if (size() >= max_budgets_ && !force) {
      return nullptr;
    }
    it = stripe.budgets.emplace(key, std::make_shared<QuotaBudget>()).first;
    size_.fetch_add(1, std::memory_order_relaxed);
  }
  std::shared_ptr<QuotaBudget> budget = it->second;
  {
    std::lock_guard budget_lock(budget->mu);
    budget->configure(rule, now);
  }
  // Counted under the stripe's lock: a sweep never frees a budget being leased.
  if (rule.max_connections > 0 &&
      budget->connections.load(std::memory_order_relaxed) >= rule.max_connections) {
    *at_limit = true;
    return nullptr;
  }
  budget->connections.fetch_add(1, std::memory_order_relaxed);
  return budget;
}

QuotaTable::Admission QuotaTable::admit(const std::vector<QuotaRule>& quotas,
                                        const IpAddress& client, std::string_view identity,
                                        bool request, QuotaLease& lease_out,
                                        QuotaClock::time_point now) {
  Admission admission;
  const QuotaRule* rule = matchQuota(quotas, client, identity);
  if (rule == nullptr) {
    lease_out.release();
    return admission;
  }
  admission.rule = rule;
  std::string key = budgetKey(*rule, client, identity);
  if (!lease_out.held() || lease_out.key() != key) {
    lease_out.release();
    bool at_limit = false;
    std::shared_ptr<QuotaBudget> budget = lease(key, *rule, false, now, &at_limit);
    if (!budget && !at_limit) {
      budget = lease(overflowKey(rule->name), *rule, true, now, &at_limit);
    }
    if (!budget) {
      admission.reason = Reason::client_limit;
      return admission;
    }
    lease_out.budget_ = std::move(budget);
    lease_out.key_ = std::move(key);
    lease_out.quota_ = rule->name;
  } else {
    std::lock_guard lock(lease_out.budget_->mu);
    lease_out.budget_->configure(*rule, now);
  }
  if (request) {
    QuotaBudget& budget = *lease_out.budget_;
    std::lock_guard lock(budget.mu);
    if (!budget.requests.tryTake(1, now)) {
      admission.reason = Reason::rate_limited;
      admission.retry_after = retryAfterSeconds(budget.requests.until(1, now));
    }
  }
  return admission;
}

std::shared_ptr<BandwidthPacer> QuotaTable::pacer(
    const QuotaLease& lease, std::function<void(PaceDirection, double)> on_paced) {
  if (!lease.held()) {
    return nullptr;
  }
  {
    std::lock_guard lock(lease.budget()->mu);
    if (lease.budget()->bandwidth_bits == 0) {
      return nullptr;
    }
  }
  return std::make_shared<BudgetPacer>(lease.budget(), std::move(on_paced));
}

}  // namespace s3gate
