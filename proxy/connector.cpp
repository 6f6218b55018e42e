#include "proxy/connector.h"

#include <cerrno>

#include "metrics/metrics.h"
#include "proxy/event_ptr.h"
#include "proxy/resolver.h"

namespace s3gate {

namespace {

using Clock = std::chrono::steady_clock;

UpstreamFailure upstreamFailureFor(int err, bool timed_out) {
  if (timed_out) {
    return UpstreamFailure::timeout;
  }
  if (err == ECONNRESET || err == EPIPE) {
    return UpstreamFailure::reset;
  }
  return UpstreamFailure::refused;
}

class NetAttempt final : public Connector::Attempt {
 public:
  NetAttempt(event_base* base, Metrics& metrics, ConfigPtr config, ConnectTarget target,
             Connector::Callback cb)
      : base_(base),
        metrics_(metrics),
        config_(std::move(config)),
        target_(std::move(target)),
        cb_(std::move(cb)),
        deliver_(event_new(base, -1, 0, &onDeliver, this)) {}

  void start(Resolver& resolver) {
    if (target_.ip_literal) {
      useAddresses(filterResolvedAddresses(*config_, {target_.literal}));
      return;
    }
    if (const DnsPin* pin = findPin(*config_, target_.host)) {
      metrics_.countDnsLookup(DnsResult::pinned);
      useAddresses(pin->addresses);
      return;
    }
    lookup_ =
        resolver.resolve(target_.host, [this](const DnsAnswer& answer) { onResolved(answer); });
  }

 private:
  static void onDeliver(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<NetAttempt*>(arg);
    Connector::Callback cb = std::move(self->cb_);
    cb(std::move(self->result_));  // may destroy self
  }

  static void onSocket(evutil_socket_t, short what, void* arg) {
    auto* self = static_cast<NetAttempt*>(arg);
    if (what & EV_TIMEOUT) {
      self->connectFailed(ETIMEDOUT, true);
      return;
    }
    int err = socketError(self->fd_.get());
    if (err != 0) {
      self->connectFailed(err, false);
      return;
    }
    self->connected();
  }

  // The answer goes out from the loop, never from inside connect() or start().
  void done(Reason error, std::string detail) {
    result_.error = error;
    result_.detail = std::move(detail);
    socket_event_.reset();
    lookup_.reset();
    event_active(deliver_.get(), EV_TIMEOUT, 0);
  }

  void onResolved(const DnsAnswer& answer) {
    lookup_.reset();
    if (answer.error != Reason::none) {
      metrics_.countDnsLookup(DnsResult::failed);
      done(answer.error, "no usable answer for " + target_.host);
      return;
    }
    metrics_.countDnsLookup(answer.source == DnsAnswer::Source::cache_hit ? DnsResult::cache_hit
                                                                          : DnsResult::resolved);
    useAddresses(filterResolvedAddresses(*config_, answer.addresses));
  }

  void useAddresses(std::vector<IpAddress> addresses) {
    if (addresses.empty()) {
      done(Reason::dns_pin_violation, "no address of " + target_.host + " may be connected to");
      return;
    }
    addresses_ = std::move(addresses);
    next_ = 0;
    connectNext();
  }

  void connectNext() {
    while (next_ < addresses_.size()) {
      address_ = SocketAddress(addresses_[next_++], target_.port);
      bool in_progress = false;
      int err = 0;
      started_ = Clock::now();
      fd_ = startConnect(address_, &in_progress, &err);
      if (!fd_) {
        metrics_.countUpstreamError(upstreamFailureFor(err, false));
        last_failure_ = Reason::connect_failed;
        continue;
      }
      if (!in_progress) {
        connected();
        return;
      }
      socket_event_.reset(event_new(base_, fd_.get(), EV_WRITE, &onSocket, this));
      timeval tv = toTimeval(config_->limits.connect_timeout);
      event_add(socket_event_.get(), &tv);
      return;
    }
    done(last_failure_, "could not connect to " + target_.host);
  }

  void connectFailed(int err, bool timed_out) {
    socket_event_.reset();
    fd_.reset();
    metrics_.countUpstreamError(upstreamFailureFor(err, timed_out));
    last_failure_ = timed_out ? Reason::connect_timeout : Reason::connect_failed;
    connectNext();
  }

  void connected() {
    metrics_.observeUpstreamConnect(std::chrono::duration<double>(Clock::now() - started_).count());
    result_.fd = std::move(fd_);
    result_.address = address_;
    done(Reason::none, {});
  }

  event_base* base_;
  Metrics& metrics_;
  ConfigPtr config_;
  ConnectTarget target_;
  Connector::Callback cb_;
  ConnectResult result_;
  std::unique_ptr<Resolver::Lookup> lookup_;
  std::vector<IpAddress> addresses_;
  size_t next_ = 0;
  UniqueFd fd_;
  SocketAddress address_;
  Clock::time_point started_;
  Reason last_failure_ = Reason::connect_failed;
  EventPtr socket_event_;
  EventPtr deliver_;
};

class NetConnector final : public Connector {
 public:
  NetConnector(event_base* base, std::function<Resolver&()> resolver, Metrics& metrics)
      : base_(base), resolver_(std::move(resolver)), metrics_(metrics) {}

  std::unique_ptr<Attempt> connect(ConfigPtr config, ConnectTarget target, Callback cb) override {
    auto attempt = std::make_unique<NetAttempt>(base_, metrics_, std::move(config),
                                                std::move(target), std::move(cb));
    attempt->start(resolver_());
    return attempt;
  }

 private:
  event_base* base_;
  std::function<Resolver&()> resolver_;
  Metrics& metrics_;
};

}  // namespace

std::unique_ptr<Connector> makeNetConnector(event_base* base, std::function<Resolver&()> resolver,
                                            Metrics& metrics) {
  return std::make_unique<NetConnector>(base, std::move(resolver), metrics);
}

}  // namespace s3gate
