#include "proxy/resolver.h"

#include <ares.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <list>
#include <mutex>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "proxy/event_ptr.h"

// Why only DNS (ARES_OPT_LOOKUPS "b", never "f"): the proxy answers for its
// clients with the servers of `dns:`; /etc/hosts of the proxy host is not part
// of that contract and must not be able to redirect an S3 name. With no servers
// configured c-ares still takes them from /etc/resolv.conf.
//
// Why no search domains (ARES_OPT_DOMAINS, none): the ACL checked exactly the
// name asked for; "bucket.s3.amazonaws.com.corp.example" is another name.
//
// Timing: c-ares 1.18 doubles the per-try timeout after each round of all
// servers, so with one server a silent lookup ends after
// timeout * (2^attempts - 1), e.g. 2s + 4s with the defaults.
//
// Every user callback is delivered from `deliver_`, a separate event: never
// from inside resolve() and never from inside ares_process_fd(), so a callback
// may start lookups, destroy lookups, or destroy the resolver itself.

namespace s3gate {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxCacheEntries = 10000;
// Cancelled lookups leave their query running until c-ares ends it; this caps
// the names in flight at once. Beyond it a lookup fails at once (dns_failed).
constexpr size_t kMaxQueriesInFlight = 10000;
// When the cache is full, expired entries are swept at most this often; the
// oldest entries go first otherwise.
constexpr auto kSweepInterval = std::chrono::seconds(1);

struct ChannelDeleter {
  void operator()(ares_channel channel) const { ares_destroy(channel); }
};
using ChannelPtr = std::unique_ptr<std::remove_pointer_t<ares_channel>, ChannelDeleter>;

struct AddrinfoDeleter {
  void operator()(ares_addrinfo* ai) const { ares_freeaddrinfo(ai); }
};
using AddrinfoPtr = std::unique_ptr<ares_addrinfo, AddrinfoDeleter>;

// ares_library_init() once per process; never cleaned up (lives as long as the process).
int initCaresLibrary() {
  static std::once_flag once;
  static int status = ARES_SUCCESS;
  std::call_once(once, [] { status = ares_library_init(ARES_LIB_INIT_ALL); });
  return status;
}

class ResolverImpl;
class LookupImpl;

// One in-flight c-ares query for one name, shared by every lookup of that name.
// Owned by ResolverImpl::inflight_ until c-ares ends it (even with no waiters
// left, so that c-ares never holds a dangling argument).
struct Query {
  ResolverImpl* resolver;
  std::string host;
  std::list<LookupImpl*> waiters;
};

class LookupImpl final : public Resolver::Lookup {
 public:
  enum class State {
    waiting,   // in query_->waiters
    ready,     // answer_ set, in the resolver's ready_ list
    finished,  // delivered, or the resolver is gone: nothing to undo
  };

  LookupImpl(ResolverImpl* resolver, Resolver::Callback callback)
      : resolver_(resolver), callback_(std::move(callback)) {}
  ~LookupImpl() override;

  LookupImpl(const LookupImpl&) = delete;
  LookupImpl& operator=(const LookupImpl&) = delete;

  ResolverImpl* resolver_;  // null once finished
  Resolver::Callback callback_;
  State state_ = State::finished;
  Query* query_ = nullptr;                       // while waiting
  std::list<LookupImpl*>::iterator position_{};  // in query_->waiters or ready_
  DnsAnswer answer_;                             // while ready
};

struct CacheEntry {
  Reason error = Reason::none;
  std::vector<IpAddress> addresses;
  Clock::time_point expires;
  std::list<std::string>::iterator age;  // position in ResolverImpl::ages_
};

class ResolverImpl final : public Resolver {
 public:
  ResolverImpl(event_base* base, const ResolverSettings& dns) : base_(base), dns_(dns) {}
  ~ResolverImpl() override;

  ResolverImpl(const ResolverImpl&) = delete;
  ResolverImpl& operator=(const ResolverImpl&) = delete;

  [[nodiscard]] bool init(std::string* error);

  std::unique_ptr<Lookup> resolve(const std::string& host, Callback cb) override;
  size_t cacheSize() const override { return cache_.size(); }
  size_t pendingLookups() const override {
    size_t waiting = ready_.size();
    for (const auto& [host, query] : inflight_) {
      waiting += query->waiters.size();
    }
    return waiting;
  }

  // Called by ~LookupImpl: takes the lookup out of whatever list holds it.
  void forget(LookupImpl* lookup);

 private:
  static void onSocketState(void* data, ares_socket_t fd, int readable, int writable) noexcept;
  static void onSocketEvent(evutil_socket_t fd, short what, void* arg) noexcept;
  static void onTimer(evutil_socket_t fd, short what, void* arg) noexcept;
  static void onDeliverEvent(evutil_socket_t fd, short what, void* arg) noexcept;
  static void onAddrinfo(void* arg, int status, int timeouts, ares_addrinfo* result) noexcept;

  void watchSocket(ares_socket_t fd, bool readable, bool writable);
  void process(ares_socket_t read_fd, ares_socket_t write_fd);
  void updateTimer();
  void onQueryDone(Query* query, int status, const ares_addrinfo* result);
  void makeReady(LookupImpl* lookup, DnsAnswer answer);
  void deliver();

  const CacheEntry* findCached(const std::string& host, Clock::time_point now);
  void store(const std::string& host, const DnsAnswer& answer, Duration ttl, Clock::time_point now);
  void eraseCached(std::unordered_map<std::string, CacheEntry>::iterator it);
  Duration clampTtl(Duration ttl) const;

  event_base* base_;
  ResolverSettings dns_;
  EventPtr timer_;    // re-armed from ares_timeout() after every c-ares activity
  EventPtr deliver_;  // made active whenever ready_ is not empty
  std::unordered_map<ares_socket_t, EventPtr> socket_events_;
  std::unordered_map<std::string, std::unique_ptr<Query>> inflight_;
  std::list<LookupImpl*> ready_;  // answers waiting for deliver(), oldest first
  std::unordered_map<std::string, CacheEntry> cache_;
  std::list<std::string> ages_;  // cached names, oldest stored first
  Clock::time_point last_sweep_{};
  // Expires with the resolver: deliver() checks it after each user callback.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  ChannelPtr channel_;  // declared last: destroyed first (the destructor resets it anyway)
};

LookupImpl::~LookupImpl() {
  if (resolver_ != nullptr) {
    resolver_->forget(this);
  }
}

bool ResolverImpl::init(std::string* error) {
  timer_.reset(evtimer_new(base_, &ResolverImpl::onTimer, this));
  deliver_.reset(event_new(base_, -1, 0, &ResolverImpl::onDeliverEvent, this));
  if (!timer_ || !deliver_) {
    *error = "dns: cannot create the resolver's libevent events";
    return false;
  }

  ares_options options{};
  options.sock_state_cb = &ResolverImpl::onSocketState;
  options.sock_state_cb_data = this;
  options.timeout = static_cast<int>(std::clamp<Duration::rep>(dns_.timeout.count(), 1, INT_MAX));
  options.tries = std::max(1, dns_.attempts);
  char lookups[] = "b";
  options.lookups = lookups;
  options.domains = nullptr;
  options.ndomains = 0;
  const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS |
                   ARES_OPT_DOMAINS;
  ares_channel channel = nullptr;
  int status = ares_init_options(&channel, &options, mask);
  if (status != ARES_SUCCESS) {
    *error = std::string("dns: cannot set up c-ares: ") + ares_strerror(status);
    return false;
  }
  channel_.reset(channel);

  if (!dns_.servers.empty()) {
    std::vector<ares_addr_port_node> nodes(dns_.servers.size());
    for (size_t i = 0; i < dns_.servers.size(); ++i) {
      const SocketAddress& server = dns_.servers[i];
      ares_addr_port_node& node = nodes[i];
      node.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
      if (server.ip().isV4()) {
        node.family = AF_INET;
        std::memcpy(&node.addr.addr4, server.ip().bytes().data(), sizeof(node.addr.addr4));
      } else {
        node.family = AF_INET6;
        std::memcpy(&node.addr.addr6, server.ip().bytes().data(), sizeof(node.addr.addr6));
      }
      node.udp_port = server.port();
      node.tcp_port = server.port();
    }
    status = ares_set_servers_ports(channel_.get(), nodes.data());
    if (status != ARES_SUCCESS) {
      *error = std::string("dns.servers: c-ares refused them: ") + ares_strerror(status);
      return false;
    }
  }
  return true;
}

ResolverImpl::~ResolverImpl() {
  // Handles may outlive the resolver: make their destructors do nothing.
  for (auto& [host, query] : inflight_) {
    for (LookupImpl* lookup : query->waiters) {
      lookup->resolver_ = nullptr;
      lookup->state_ = LookupImpl::State::finished;
    }
  }
  for (LookupImpl* lookup : ready_) {
    lookup->resolver_ = nullptr;
    lookup->state_ = LookupImpl::State::finished;
  }
  // ares_destroy() ends every outstanding query with ARES_EDESTRUCTION, which
  // onAddrinfo ignores, and reports its sockets closed through onSocketState
  // while socket_events_ still exists.
  channel_.reset();
}

std::unique_ptr<Resolver::Lookup> ResolverImpl::resolve(const std::string& host, Callback cb) {
  auto lookup = std::make_unique<LookupImpl>(this, std::move(cb));
  const Clock::time_point now = Clock::now();

  if (const CacheEntry* cached = findCached(host, now)) {
    DnsAnswer answer;
    answer.error = cached->error;
    answer.addresses = cached->addresses;
    answer.source = DnsAnswer::Source::cache_hit;
    makeReady(lookup.get(), std::move(answer));
    return lookup;
  }

  auto found = inflight_.find(host);
  Query* query = nullptr;
  if (found != inflight_.end()) {
    query = found->second.get();
  } else if (inflight_.size() >= kMaxQueriesInFlight) {
    DnsAnswer answer;
    answer.error = Reason::dns_failed;
    makeReady(lookup.get(), std::move(answer));
    return lookup;
  }

  bool start = query == nullptr;
  if (start) {
    auto owned = std::make_unique<Query>();
    owned->resolver = this;
    owned->host = host;
    query = owned.get();
    inflight_.emplace(host, std::move(owned));
  }
  lookup->state_ = LookupImpl::State::waiting;
  lookup->query_ = query;
  lookup->position_ = query->waiters.insert(query->waiters.end(), lookup.get());

  if (start) {
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;  // A and AAAA
    // c-ares may end the query before returning (an IP literal, a bad name):
    // onAddrinfo then frees `query`, which is not touched after this call.
    ares_getaddrinfo(channel_.get(), host.c_str(), nullptr, &hints, &ResolverImpl::onAddrinfo,
                     query);
    updateTimer();
  }
  return lookup;
}

void ResolverImpl::forget(LookupImpl* lookup) {
  switch (lookup->state_) {
    case LookupImpl::State::waiting:
      lookup->query_->waiters.erase(lookup->position_);
      break;
    case LookupImpl::State::ready:
      ready_.erase(lookup->position_);
      break;
    case LookupImpl::State::finished:
      break;
  }
  lookup->state_ = LookupImpl::State::finished;
  lookup->resolver_ = nullptr;
}

void ResolverImpl::onSocketState(void* data, ares_socket_t fd, int readable,
                                 int writable) noexcept {
  static_cast<ResolverImpl*>(data)->watchSocket(fd, readable != 0, writable != 0);
}

void ResolverImpl::onSocketEvent(evutil_socket_t fd, short what, void* arg) noexcept {
  static_cast<ResolverImpl*>(arg)->process((what & EV_READ) ? fd : ARES_SOCKET_BAD,
                                           (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
}

void ResolverImpl::onTimer(evutil_socket_t, short, void* arg) noexcept {
  static_cast<ResolverImpl*>(arg)->process(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

void ResolverImpl::onDeliverEvent(evutil_socket_t, short, void* arg) noexcept {
  static_cast<ResolverImpl*>(arg)->deliver();
}

void ResolverImpl::onAddrinfo(void* arg, int status, int, ares_addrinfo* result) noexcept {
  AddrinfoPtr owned(result);
  if (status == ARES_EDESTRUCTION) {
    return;  // the resolver is being destroyed: touch nothing of it
  }
  auto* query = static_cast<Query*>(arg);
  query->resolver->onQueryDone(query, status, owned.get());
}

void ResolverImpl::watchSocket(ares_socket_t fd, bool readable, bool writable) {
  // Replacing the event may free the one whose callback is running
  // (ares_process_fd -> here); libevent allows that for the running event.
  socket_events_.erase(fd);
  if (!readable && !writable) {
    return;
  }
  const short what =
      static_cast<short>(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
  EventPtr ev(event_new(base_, fd, what, &ResolverImpl::onSocketEvent, this));
  if (!ev || event_add(ev.get(), nullptr) != 0) {
    // Not watched: the query on it ends by c-ares' timeout through timer_.
    return;
  }
  socket_events_.emplace(fd, std::move(ev));
}

void ResolverImpl::process(ares_socket_t read_fd, ares_socket_t write_fd) {
  ares_process_fd(channel_.get(), read_fd, write_fd);
  updateTimer();
}

void ResolverImpl::updateTimer() {
  timeval tv{};
  if (ares_timeout(channel_.get(), nullptr, &tv) == nullptr) {
    evtimer_del(timer_.get());
    return;
  }
  evtimer_add(timer_.get(), &tv);
}

Duration ResolverImpl::clampTtl(Duration ttl) const {
  return std::min(std::max(ttl, dns_.min_ttl), dns_.max_ttl);
}

void ResolverImpl::onQueryDone(Query* query, int status, const ares_addrinfo* result) {
  DnsAnswer answer;
  Duration ttl = dns_.negative_ttl;
  if (status == ARES_SUCCESS && result != nullptr) {
    int min_ttl = INT_MAX;
    for (const ares_addrinfo_node* node = result->nodes; node != nullptr; node = node->ai_next) {
      if (node->ai_family != AF_INET && node->ai_family != AF_INET6) {
        continue;
      }
      answer.addresses.push_back(IpAddress::fromSockaddr(node->ai_addr));
      min_ttl = std::min(min_ttl, node->ai_ttl);
    }
    // A CNAME chain is only as fresh as its shortest link.
    for (const ares_addrinfo_cname* cname = result->cnames; cname != nullptr; cname = cname->next) {
      min_ttl = std::min(min_ttl, cname->ttl);
    }
    if (!answer.addresses.empty()) {
      ttl = clampTtl(std::chrono::seconds(std::max(0, min_ttl)));
    }
  }
  if (answer.addresses.empty()) {
    answer.error = status == ARES_ETIMEOUT ? Reason::dns_timeout : Reason::dns_failed;
  }

  const std::string host = query->host;
  const Clock::time_point now = Clock::now();
  if (answer.error != Reason::dns_timeout) {
    store(host, answer, ttl, now);  // a timeout says nothing about the name: not cached
  }

  std::list<LookupImpl*> waiters = std::move(query->waiters);
  inflight_.erase(host);  // frees `query`
  for (LookupImpl* lookup : waiters) {
    makeReady(lookup, answer);
  }
}

void ResolverImpl::makeReady(LookupImpl* lookup, DnsAnswer answer) {
  lookup->state_ = LookupImpl::State::ready;
  lookup->query_ = nullptr;
  lookup->answer_ = std::move(answer);
  lookup->position_ = ready_.insert(ready_.end(), lookup);
  event_active(deliver_.get(), EV_TIMEOUT, 0);
}

void ResolverImpl::deliver() {
  const std::weak_ptr<bool> alive = alive_;
  // Only those ready now: lookups a callback starts wait for the next pass.
  size_t budget = ready_.size();
  while (budget > 0 && !ready_.empty()) {
    --budget;
    LookupImpl* lookup = ready_.front();
    ready_.pop_front();
    lookup->state_ = LookupImpl::State::finished;
    lookup->resolver_ = nullptr;
    // Moved out: the callback may destroy the lookup, other lookups, or this resolver.
    Callback callback = std::move(lookup->callback_);
    const DnsAnswer answer = std::move(lookup->answer_);
    if (callback) {
      callback(answer);
    }
    if (alive.expired()) {
      return;
    }
  }
  if (!ready_.empty()) {
    event_active(deliver_.get(), EV_TIMEOUT, 0);
  }
}

const CacheEntry* ResolverImpl::findCached(const std::string& host, Clock::time_point now) {
  auto it = cache_.find(host);
  if (it == cache_.end()) {
    return nullptr;
  }
  if (it->second.expires <= now) {
    eraseCached(it);
    return nullptr;
  }
  return &it->second;
}

void ResolverImpl::store(const std::string& host, const DnsAnswer& answer, Duration ttl,
                         Clock::time_point now) {
  if (auto it = cache_.find(host); it != cache_.end()) {
    eraseCached(it);
  }
  if (ttl <= Duration::zero()) {
    return;
  }
  if (cache_.size() >= kMaxCacheEntries && now - last_sweep_ >= kSweepInterval) {
    last_sweep_ = now;
    for (auto it = cache_.begin(); it != cache_.end();) {
      auto next = std::next(it);
      if (it->second.expires <= now) {
        eraseCached(it);
      }
      it = next;
    }
  }
  while (cache_.size() >= kMaxCacheEntries) {
    eraseCached(cache_.find(ages_.front()));
  }
  CacheEntry entry;
  entry.error = answer.error;
  entry.addresses = answer.addresses;
  entry.expires = now + ttl;
  entry.age = ages_.insert(ages_.end(), host);
  cache_.emplace(host, std::move(entry));
}

void ResolverImpl::eraseCached(std::unordered_map<std::string, CacheEntry>::iterator it) {
  ages_.erase(it->second.age);
  cache_.erase(it);
}

}  // namespace

std::unique_ptr<Resolver> Resolver::create(event_base* base, const ResolverSettings& dns,
                                           std::string* error) {
  std::string ignored;
  if (error == nullptr) {
    error = &ignored;
  }
  const int status = initCaresLibrary();
  if (status != ARES_SUCCESS) {
    *error = std::string("dns: cannot initialise c-ares: ") + ares_strerror(status);
    return nullptr;
  }
  auto resolver = std::make_unique<ResolverImpl>(base, dns);
  if (!resolver->init(error)) {
    return nullptr;
  }
  return resolver;
}

}  // namespace s3gate
