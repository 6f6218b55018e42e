#pragma once
// The server: `workers` threads, one event_base each, every proxy listener
// bound once per worker with SO_REUSEPORT so the kernel spreads connections;
// the main thread runs a control loop for signals (as libevent events, never
// work inside a signal handler) and the admin listener, so /metrics and /ping
// answer while the proxy loops are busy.

#include <event2/event.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/connector.h"
#include "proxy/event_ptr.h"
#include "proxy/quota.h"
#include "proxy/resolver.h"
#include "proxy/runtime.h"
#include "proxy/session_owner.h"
#include "proxy/socket.h"
#include "proxy/upstream_pool.h"

namespace s3gate {

class Server;
class Session;

// One event loop thread and everything that lives on it. It runs its sessions
// as their SessionOwner.
class Worker final : public SessionOwner {
 public:
  Worker(Server& server, int index);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  bool init(RuntimePtr runtime, std::string* error);
  void startThread();
  void join();

  // Thread-safe: run `fn` on this worker's loop.
  void post(std::function<void()> fn);
  // On this worker's loop: a reload's snapshot takes over for every decision
  // from now on; a resolver whose settings changed is replaced (the old one
  // answers its pending lookups, then goes).
  void setRuntime(RuntimePtr runtime);

  // SessionOwner
  event_base* base() override { return base_.get(); }
  RuntimePtr runtime() const override { return runtime_; }
  Metrics& metrics() override;
  Connector& connector() override { return *connector_; }
  UpstreamPool& pool() override { return *pool_; }
  QuotaTable* quotas() override;
  bool draining() const override;
  bool listenersClosed() const override { return exiting_; }
  void reap(Session* session) override;

  Resolver& resolver() { return *resolver_; }

  // Ticks from a timer on this loop: the watchdog pings systemd only while
  // every loop keeps ticking.
  void startHeartbeat(Duration interval);
  uint64_t heartbeats() const { return heartbeats_.load(std::memory_order_relaxed); }

 private:
  struct Listener {
    ListenerConfig config;
    size_t index = 0;  // in the configuration's listeners
    UniqueFd fd;
    EventPtr event;
    Worker* worker = nullptr;
    // The limits.tcp_keepalive set on `fd` (accepted sockets inherit it).
    Duration tcp_keepalive{-1};
  };
  static void onAccept(evutil_socket_t fd, short what, void* arg);
  static void onReap(evutil_socket_t fd, short what, void* arg);
  static void onPosted(evutil_socket_t fd, short what, void* arg);
  static void onAcceptRetry(evutil_socket_t fd, short what, void* arg);
  static void onHeartbeat(evutil_socket_t fd, short what, void* arg);
  static void onTick(evutil_socket_t fd, short what, void* arg);
  void acceptFrom(Listener& listener);
  void closeListeners();
  void beginDrain();
  void abortAll();

  Server& server_;
  int index_;
  EventBasePtr base_;
  RuntimePtr runtime_;
  std::unique_ptr<Resolver> resolver_;
  std::vector<std::unique_ptr<Resolver>> retired_resolvers_;  // until their lookups end
  std::unique_ptr<Connector> connector_;
  std::unique_ptr<UpstreamPool> pool_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  std::vector<Session*> to_reap_;
  EventPtr reap_event_;
  EventPtr accept_retry_;
  EventPtr posted_event_;
  EventPtr heartbeat_;
  EventPtr tick_;  // every second: running transfers into the byte counters, retired resolvers
  std::atomic<uint64_t> heartbeats_{0};
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
  std::thread thread_;
  bool exiting_ = false;
  std::chrono::steady_clock::time_point last_accept_warning_{};
  uint64_t suppressed_accept_warnings_ = 0;  // since last_accept_warning_
  friend class Server;
};

class Server {
 public:
  // `config_path` empty: the embedded default (a reload has nothing to read).
  Server(RuntimePtr runtime, std::string config_path, Metrics& metrics);
  ~Server();

  // Binds everything and runs until drained; returns the exit code.
  int run();

  RuntimePtr runtime() const;
  Metrics& metrics() { return metrics_; }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  // The connection count over every worker (max_connections).
  bool tryAddConnection(uint64_t limit);
  void removeConnection();
  // The quota budgets: state that outlives reloads, shared by every worker.
  QuotaTable& quotas() { return quotas_; }

 private:
  static void onSignal(evutil_socket_t sig, short what, void* arg);
  static void onDrainStep(evutil_socket_t fd, short what, void* arg);
  static void onWatchdog(evutil_socket_t fd, short what, void* arg);
  void handleSignal(int sig);
  void reload();
  void startDrain();
  void stopListening();
  void finishDrain();

  mutable std::mutex runtime_mu_;
  RuntimePtr runtime_;  // guarded by runtime_mu_; workers hold their own copy
  std::string config_path_;
  Metrics& metrics_;
  EventBasePtr control_;
  std::vector<EventPtr> signal_events_;
  EventPtr drain_timer_;
  EventPtr watchdog_timer_;
  std::vector<uint64_t> last_heartbeats_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<uint64_t> connections_{0};
  QuotaTable quotas_;
  std::atomic<bool> draining_{false};
  enum class DrainPhase { none, delay, draining, done } drain_phase_ = DrainPhase::none;
  std::chrono::steady_clock::time_point drain_deadline_;
  friend class Worker;
};

}  // namespace s3gate
