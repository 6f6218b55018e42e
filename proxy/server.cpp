#include "proxy/server.h"

#include <event2/thread.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "proxy/admin.h"
#include "proxy/sd_notify.h"
#include "proxy/session.h"

namespace s3gate {

namespace {

constexpr int kListenBacklog = 4096;
constexpr int kAcceptsPerWakeup = 64;
constexpr Duration kAcceptRetry{std::chrono::milliseconds(100)};
constexpr Duration kDrainPoll{std::chrono::milliseconds(50)};

void logLine(const char* level, const std::string& message) {
  fprintf(stderr, "s3gate: %s: %s\n", level, message.c_str());
}

}  // namespace

// ---- Worker ----

Worker::Worker(Server& server, int index) : server_(server), index_(index) {}

Worker::~Worker() {
  // The loop has stopped: sessions go first (they use the resolver and base).
  sessions_.clear();
  listeners_.clear();
  pool_.reset();
  connector_.reset();
  retired_resolvers_.clear();
  resolver_.reset();
  tick_.reset();
  reap_event_.reset();
  heartbeat_.reset();
  accept_retry_.reset();
  posted_event_.reset();
}

Metrics& Worker::metrics() {
  return server_.metrics();
}

QuotaTable* Worker::quotas() {
  return &server_.quotas();
}

bool Worker::draining() const {
  return server_.draining();
}

bool Worker::init(RuntimePtr runtime, std::string* error) {
  runtime_ = std::move(runtime);
  const Config& config = *runtime_->config;
  {
    // Interest changes wait in libevent's changelist until the loop polls
    // again, so that what cancels out within one callback (a session handing
    // its client socket to the relay, a connect turning into a read) costs no
    // epoll_ctl. libevent retries a change on a descriptor number that was
    // closed and reused in between as the add it has become.
    std::unique_ptr<event_config, decltype(&event_config_free)> cfg(event_config_new(),
                                                                    &event_config_free);
    if (cfg) {
      event_config_set_flag(cfg.get(), EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
      base_.reset(event_base_new_with_config(cfg.get()));
    }
  }
  if (!base_) {
    *error = "event_base_new failed";
    return false;
  }
  resolver_ = Resolver::create(base_.get(), runtime_->resolver, error);
  if (!resolver_) {
    return false;
  }
  connector_ = makeNetConnector(
      base_.get(), [this]() -> Resolver& { return *resolver_; }, server_.metrics());
  pool_ = std::make_unique<UpstreamPool>(base_.get(), UpstreamPool::Limits{});
  reap_event_.reset(event_new(base_.get(), -1, 0, &onReap, this));
  accept_retry_.reset(evtimer_new(base_.get(), &onAcceptRetry, this));
  posted_event_.reset(event_new(base_.get(), -1, 0, &onPosted, this));
  tick_.reset(event_new(base_.get(), -1, EV_PERSIST, &onTick, this));
  if (tick_) {
    timeval second = toTimeval(std::chrono::seconds(1));
    event_add(tick_.get(), &second);
  }
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    const ListenerConfig& lc = config.listeners[i];
    std::string where = "listeners[" + std::to_string(i) + "]: ";
    auto listener = std::make_unique<Listener>();
    listener->config = lc;
    listener->index = i;
    listener->worker = this;
    listener->fd = listenOn(lc.address, kListenBacklog, error);
    if (!listener->fd) {
      *error = where + *error;
      return false;
    }
    listener->event.reset(event_new(base_.get(), listener->fd.get(), EV_READ | EV_PERSIST,
                                    &onAccept, listener.get()));
    event_add(listener->event.get(), nullptr);
    listeners_.push_back(std::move(listener));
  }
  return true;
}

void Worker::startThread() {
  thread_ = std::thread([this] { event_base_loop(base_.get(), EVLOOP_NO_EXIT_ON_EMPTY); });
  // Named for top -H, ps -L and /proc/PID/task/*/comm: s3gate-w0, s3gate-w1, ...
  std::string name = "s3gate-w" + std::to_string(index_);
  pthread_setname_np(thread_.native_handle(), name.c_str());
}

void Worker::join() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Worker::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  event_active(posted_event_.get(), EV_TIMEOUT, 0);
}

void Worker::setRuntime(RuntimePtr runtime) {
  if (!(runtime->resolver == runtime_->resolver)) {
    std::string error;
    auto fresh = Resolver::create(base_.get(), runtime->resolver, &error);
    if (fresh) {
      retired_resolvers_.push_back(std::move(resolver_));
      resolver_ = std::move(fresh);
    } else {
      fprintf(stderr, "s3gate: error: reload: worker %d keeps its resolver: %s\n", index_,
              error.c_str());
    }
  }
  runtime_ = std::move(runtime);
}

void Worker::onPosted(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  std::vector<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(self->posted_mu_);
    work.swap(self->posted_);
  }
  for (auto& fn : work) {
    fn();
  }
}

void Worker::onAccept(evutil_socket_t, short, void* arg) {
  auto* listener = static_cast<Listener*>(arg);
  listener->worker->acceptFrom(*listener);
}

void Worker::acceptFrom(Listener& listener) {
  for (int i = 0; i < kAcceptsPerWakeup; ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int fd = accept4(listener.fd.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop accepting for a moment instead of spinning,
        // and say so at most once a second (with how often it was not said).
        auto now = std::chrono::steady_clock::now();
        if (now - last_accept_warning_ >= std::chrono::seconds(1)) {
          std::string more = suppressed_accept_warnings_ > 0
                                 ? " (" + std::to_string(suppressed_accept_warnings_) +
                                       " more since the last warning)"
                                 : "";
          logLine("warning", "accept: " + errnoText(errno) + "; pausing accepts" + more);
          last_accept_warning_ = now;
          suppressed_accept_warnings_ = 0;
        } else {
          ++suppressed_accept_warnings_;
        }
        for (auto& l : listeners_) {
          event_del(l->event.get());
        }
        timeval tv = toTimeval(kAcceptRetry);
        evtimer_add(accept_retry_.get(), &tv);
      }
      return;
    }
    UniqueFd client(fd);
    const Config& config = *runtime_->config;
    Duration keepalive = config.limits.tcp_keepalive;
    if (listener.tcp_keepalive != keepalive) {
      // First connection, or a reload changed the setting: the listening
      // socket passes the options on from now, this one gets them here.
      setTcpOptions(listener.fd.get(), keepalive);
      setTcpOptions(fd, keepalive);
      listener.tcp_keepalive = keepalive;
    }
    bool within_limit = server_.tryAddConnection(config.limits.max_connections);
    auto session = std::make_unique<Session>(
        *this, listener.config, listener.index, std::move(client),
        SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer)), !within_limit);
    Session* raw = session.get();
    sessions_.emplace(raw, std::move(session));
    raw->start();
  }
}

void Worker::onAcceptRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  if (self->exiting_) {
    return;
  }
  for (auto& l : self->listeners_) {
    event_add(l->event.get(), nullptr);
  }
}

void Worker::reap(Session* session) {
  to_reap_.push_back(session);
  event_active(reap_event_.get(), EV_TIMEOUT, 0);
}

void Worker::onReap(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  std::vector<Session*> doomed;
  doomed.swap(self->to_reap_);
  for (Session* s : doomed) {
    self->sessions_.erase(s);
    self->server_.removeConnection();
  }
}

void Worker::startHeartbeat(Duration interval) {
  heartbeat_.reset(event_new(base_.get(), -1, EV_PERSIST, &onHeartbeat, this));
  timeval tv = toTimeval(interval);
  event_add(heartbeat_.get(), &tv);
}

void Worker::onTick(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  for (auto& [raw, owned] : self->sessions_) {
    raw->flushBytes();
  }
  std::erase_if(self->retired_resolvers_,
                [](const std::unique_ptr<Resolver>& r) { return r->pendingLookups() == 0; });
  if (self->index_ == 0) {
    // Departed clients' budgets go once they are full again (one worker sweeps).
    self->server_.quotas().sweep(std::chrono::steady_clock::now());
  }
}

void Worker::onHeartbeat(evutil_socket_t, short, void* arg) {
  static_cast<Worker*>(arg)->heartbeats_.fetch_add(1, std::memory_order_relaxed);
}

void Worker::closeListeners() {
  exiting_ = true;
  evtimer_del(accept_retry_.get());
  listeners_.clear();
}

void Worker::beginDrain() {
  closeListeners();
  std::vector<Session*> all;
  all.reserve(sessions_.size());
  for (auto& [raw, owned] : sessions_) {
    all.push_back(raw);
  }
  for (Session* s : all) {
    s->closeIfIdle();
  }
}

void Worker::abortAll() {
  std::vector<Session*> all;
  for (auto& [raw, owned] : sessions_) {
    all.push_back(raw);
  }
  for (Session* s : all) {
    s->abort();
  }
}

// ---- Server ----

Server::Server(RuntimePtr runtime, std::string config_path, Metrics& metrics)
    : runtime_(std::move(runtime)), config_path_(std::move(config_path)), metrics_(metrics) {}

Server::~Server() = default;

RuntimePtr Server::runtime() const {
  std::lock_guard<std::mutex> lock(runtime_mu_);
  return runtime_;
}

bool Server::tryAddConnection(uint64_t limit) {
  // Always counted: the session that answers 503 is a connection too.
  uint64_t now = connections_.fetch_add(1, std::memory_order_relaxed) + 1;
  return now <= limit;
}

void Server::removeConnection() {
  connections_.fetch_sub(1, std::memory_order_relaxed);
}

int Server::run() {
  RuntimePtr runtime = this->runtime();
  const Config* config = runtime->config.get();
  metrics_.setConfigInfo(config->sha256);
  control_.reset(event_base_new());
  if (!control_) {
    logLine("error", "event_base_new failed");
    return 1;
  }
  int count =
      config->workers > 0 ? config->workers : static_cast<int>(std::thread::hardware_concurrency());
  if (count <= 0) {
    count = 1;
  }
  for (int i = 0; i < count; ++i) {
    auto worker = std::make_unique<Worker>(*this, i);
    std::string error;
    if (!worker->init(runtime, &error)) {
      logLine("error", error);
      return 1;
    }
    workers_.push_back(std::move(worker));
  }
  std::string error;
  auto admin = AdminServer::create(
      control_.get(), config->admin, metrics_, [this] { return draining(); }, &error);
  if (!admin) {
    logLine("error", "admin " + config->admin.toString() + ": " + error);
    return 1;
  }
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) {
    EventPtr ev(evsignal_new(control_.get(), sig, &onSignal, this));
    evsignal_add(ev.get(), nullptr);
    signal_events_.push_back(std::move(ev));
  }
  drain_timer_.reset(evtimer_new(control_.get(), &onDrainStep, this));
  // systemd's watchdog (WatchdogSec=): ping at half the interval, and only
  // while every worker loop is turning.
  const char* watchdog_usec = getenv("WATCHDOG_USEC");
  long long usec = watchdog_usec != nullptr ? atoll(watchdog_usec) : 0;
  if (usec > 0 && getenv("NOTIFY_SOCKET") != nullptr) {
    Duration half{std::max<long long>(usec / 2000, 1)};
    for (auto& w : workers_) {
      w->startHeartbeat(std::max<Duration>(half / 4, Duration(1)));
    }
    last_heartbeats_.assign(workers_.size(), 0);
    watchdog_timer_.reset(event_new(control_.get(), -1, EV_PERSIST, &onWatchdog, this));
    timeval tv = toTimeval(half);
    event_add(watchdog_timer_.get(), &tv);
  }
  for (auto& w : workers_) {
    w->startThread();
  }
  std::string listening;
  for (const auto& l : config->listeners) {
    listening += (listening.empty() ? "" : ", ") + l.address.toString();
  }
  logLine("info", "listening on " + listening + " with " + std::to_string(count) +
                      " workers; admin on " + config->admin.toString() + "; configuration " +
                      config->source);
  notifySystemd("READY=1");
  event_base_loop(control_.get(), EVLOOP_NO_EXIT_ON_EMPTY);
  for (auto& w : workers_) {
    w->join();
  }
  workers_.clear();
  admin.reset();
  signal_events_.clear();
  drain_timer_.reset();
  watchdog_timer_.reset();
  if (auto log = this->runtime()->access_log) {
    log->flush();
  }
  return 0;
}

void Server::onWatchdog(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  bool all_turning = true;
  for (size_t i = 0; i < self->workers_.size(); ++i) {
    uint64_t now = self->workers_[i]->heartbeats();
    if (now == self->last_heartbeats_[i]) {
      all_turning = false;
    }
    self->last_heartbeats_[i] = now;
  }
  if (all_turning) {
    notifySystemd("WATCHDOG=1");
  } else {
    logLine("warning",
            "a worker loop has not turned for half the watchdog interval; "
            "not pinging systemd");
  }
}

void Server::onSignal(evutil_socket_t sig, short, void* arg) {
  static_cast<Server*>(arg)->handleSignal(static_cast<int>(sig));
}

void Server::handleSignal(int sig) {
  switch (sig) {
    case SIGTERM:
    case SIGINT:
      if (drain_phase_ != DrainPhase::none) {
        logLine("info", "second stop signal: exiting now");
        if (auto log = runtime()->access_log) {
          log->flush();
        }
        std::_Exit(0);
      }
      startDrain();
      return;
    case SIGHUP:
      reload();
      return;
    case SIGUSR1: {
      std::string error;
      auto log = runtime()->access_log;
      if (log && !log->reopen(&error)) {
        logLine("error", "access log reopen: " + error);
      }
      return;
    }
    default:
      return;
  }
}

void Server::reload() {
  notifySystemd("RELOADING=1");
  if (config_path_.empty()) {
    logLine("warning", "reload: running on the embedded default; nothing to reload");
    metrics_.configReloaded(true);
    notifySystemd("READY=1");
    return;
  }
  RuntimePtr running = runtime();
  std::vector<std::string> restart_warnings;
  RuntimeBuild built =
      buildRuntime(config_path_, RuntimeUse::run, running.get(), &restart_warnings);
  if (!built.ok()) {
    for (const auto& e : built.errors) {
      logLine("error", "reload rejected: " + e);
    }
    metrics_.configReloaded(false);
    notifySystemd("READY=1");
    return;
  }
  // Keys bound at start keep their running values; say so instead of ignoring them.
  for (const auto& w : restart_warnings) {
    logLine("warning", "reload: " + w);
  }
  {
    std::lock_guard<std::mutex> lock(runtime_mu_);
    runtime_ = built.runtime;
  }
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->post([worker, fresh = built.runtime] { worker->setRuntime(fresh); });
  }
  logLine("info", "configuration reloaded from " + config_path_);
  metrics_.setConfigInfo(built.runtime->config->sha256);
  metrics_.configReloaded(true);
  notifySystemd("READY=1");
}

void Server::startDrain() {
  const ConfigPtr config = runtime()->config;
  draining_.store(true);
  metrics_.setDraining(true);
  notifySystemd("STOPPING=1");
  drain_phase_ = DrainPhase::delay;
  logLine("info", "draining: /ping answers 503; still accepting for " +
                      std::to_string(config->limits.shutdown_delay.count()) + " ms");
  timeval tv = toTimeval(config->limits.shutdown_delay);
  evtimer_add(drain_timer_.get(), &tv);
}

void Server::onDrainStep(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  switch (self->drain_phase_) {
    case DrainPhase::delay:
      self->stopListening();
      break;
    case DrainPhase::draining:
      if (self->connections_.load() == 0 ||
          std::chrono::steady_clock::now() >= self->drain_deadline_) {
        self->finishDrain();
        return;
      }
      break;
    default:
      return;
  }
  timeval tv = toTimeval(kDrainPoll);
  evtimer_add(self->drain_timer_.get(), &tv);
}

void Server::stopListening() {
  const ConfigPtr config = runtime()->config;
  drain_phase_ = DrainPhase::draining;
  drain_deadline_ = std::chrono::steady_clock::now() + config->limits.drain_timeout;
  logLine("info", "draining: listeners closed; open work may finish for " +
                      std::to_string(config->limits.drain_timeout.count()) + " ms");
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->post([worker] { worker->beginDrain(); });
  }
}

void Server::finishDrain() {
  drain_phase_ = DrainPhase::done;
  if (connections_.load() != 0) {
    logLine("warning", "drain_timeout reached with " + std::to_string(connections_.load()) +
                           " connections open; closing them");
  }
  for (auto& w : workers_) {
    Worker* worker = w.get();
    worker->post([worker] {
      worker->abortAll();
      event_base_loopexit(worker->base(), nullptr);
    });
  }
  event_base_loopexit(control_.get(), nullptr);
}

}  // namespace s3gate
