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

#include "acl/config.h"
#include "metrics/metrics.h"
#include "proxy/access_log.h"
#include "proxy/event_ptr.h"
#include "proxy/resolver.h"
#include "proxy/socket.h"
#include "proxy/tls.h"
#include "proxy/upstream_pool.h"

namespace s3gate {

class Server;
class Session;

// One event loop thread and everything that lives on it.
class Worker {
 public:
  Worker(Server& server, int index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  bool init(const Config& config, std::string* error);
  void startThread();
  void join();

  // Thread-safe: run `fn` on this worker's loop.
  void post(std::function<void()> fn);

  event_base* base() const { return base_.get(); }
  Resolver& resolver() { return *resolver_; }
  UpstreamPool& pool() { return *pool_; }
  Metrics& metrics();
  AccessLog& accessLog();
  Server& server() { return server_; }

  // True once a drain has closed this worker's listeners.
  bool listenersClosed() const { return exiting_; }
  // A session asks to be destroyed once the current callback has returned.
  void reap(Session* session);

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
  static void onBytesTick(evutil_socket_t fd, short what, void* arg);
  void acceptFrom(Listener& listener);
  void closeListeners();
  void beginDrain();
  void abortAll();

  Server& server_;
  int index_;
  EventBasePtr base_;
  std::unique_ptr<Resolver> resolver_;
  std::unique_ptr<UpstreamPool> pool_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  std::vector<Session*> to_reap_;
  EventPtr reap_event_;
  EventPtr accept_retry_;
  EventPtr posted_event_;
  EventPtr heartbeat_;
  EventPtr bytes_tick_;  // every second: running transfers into the byte counters
  std::atomic<uint64_t> heartbeats_{0};
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
  std::thread thread_;
  bool exiting_ = false;
  friend class Server;
};

class Server {
 public:
  Server(ConfigPtr config, std::string config_path, Metrics& metrics, AccessLog& access_log);
  ~Server();

  // Binds everything and runs until drained; returns the exit code.
  int run();

  ConfigPtr config() const;
  Metrics& metrics() { return metrics_; }
  AccessLog& accessLog() { return access_log_; }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  // The TLS client context for upstreams (http.ca_file), shared by the workers.
  std::shared_ptr<TlsClientContext> tlsClient() const;
  // The TLS server context of listeners[index] (nullptr without `tls`).
  std::shared_ptr<TlsServerContext> listenerTls(size_t index) const;

  // The connection count over every worker (max_connections).
  bool tryAddConnection(uint64_t limit);
  void removeConnection();
  // Called by a worker when its last session has gone during a drain.
  void workerIdle();

 private:
  static void onSignal(evutil_socket_t sig, short what, void* arg);
  static void onDrainStep(evutil_socket_t fd, short what, void* arg);
  static void onWatchdog(evutil_socket_t fd, short what, void* arg);
  void handleSignal(int sig);
  void reload();
  // TLS contexts for every listener with `tls`; false and *error on failure.
  static bool makeListenerTls(const Config& config,
                              std::vector<std::shared_ptr<TlsServerContext>>* out,
                              std::string* error);
  void startDrain();
  void stopListening();
  void finishDrain();

  mutable std::mutex config_mu_;
  ConfigPtr config_;
  std::shared_ptr<TlsClientContext> tls_client_;                 // guarded by config_mu_
  std::vector<std::shared_ptr<TlsServerContext>> listener_tls_;  // guarded by config_mu_
  std::string config_path_;
  Metrics& metrics_;
  AccessLog& access_log_;
  EventBasePtr control_;
  std::vector<EventPtr> signal_events_;
  EventPtr drain_timer_;
  EventPtr watchdog_timer_;
  std::vector<uint64_t> last_heartbeats_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<uint64_t> connections_{0};
  std::atomic<bool> draining_{false};
  std::atomic<int> live_workers_{0};
  enum class DrainPhase { none, delay, draining, done } drain_phase_ = DrainPhase::none;
  std::chrono::steady_clock::time_point drain_deadline_;
  friend class Worker;
};

}  // namespace s3gate
