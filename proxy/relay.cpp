#include "proxy/relay.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "proxy/event_ptr.h"

namespace s3gate {

std::string_view relayCloseName(RelayClose close) {
  switch (close) {
    case RelayClose::client_eof:
      return "client_eof";
    case RelayClose::upstream_eof:
      return "upstream_eof";
    case RelayClose::idle_timeout:
      return "idle_timeout";
    case RelayClose::client_error:
      return "client_error";
    case RelayClose::upstream_error:
      return "upstream_error";
    case RelayClose::inspect_denied:
      return "inspect_denied";
    case RelayClose::shutdown:
      return "shutdown";
  }
  return "unknown";
}

namespace {

using Clock = std::chrono::steady_clock;

// One direction of the tunnel: bytes read from `src` wait in `buf` for `dst`.
struct Flow {
  int src = -1;
  int dst = -1;
  std::unique_ptr<char[]> buf;  // allocated when bytes first flow
  size_t capacity = 0;
  size_t begin = 0;  // first byte not yet written
  size_t end = 0;    // one past the last byte read
  bool src_eof = false;
  bool done = false;  // EOF passed on as shutdown(SHUT_WR)
  uint64_t bytes = 0;       // bytes written to dst
  uint64_t uncounted = 0;  // leading bytes not to count (the 200 head)

  size_t pending() const { return end - begin; }
  bool full() const { return buf && pending() == capacity; }
  bool wantsRead() const { return !src_eof && !full(); }
  void ensureBuffer(size_t want) {
    if (!buf) {
      capacity = std::max(capacity, want);
      buf = std::make_unique<char[]>(capacity);
    }
  }
};

class SocketRelay final : public Relay {
 public:
  SocketRelay(event_base* base, UniqueFd client, UniqueFd upstream, const RelayOptions& options,
              FirstBytesInspector inspector, DoneCallback on_done)
      : base_(base),
        client_(std::move(client)),
        upstream_(std::move(upstream)),
        options_(options),
        inspector_(std::move(inspector)),
        on_done_(std::move(on_done)) {
    up_.src = client_.get();
    up_.dst = upstream_.get();
    down_.src = upstream_.get();
    down_.dst = client_.get();
    up_.capacity = down_.capacity = options_.buffer_bytes;
  }

  bool init(std::string prefix_up, std::string prefix_down) {
    client_read_.reset(event_new(base_, client_.get(), EV_READ | EV_PERSIST, &onEvent, this));
    client_write_.reset(event_new(base_, client_.get(), EV_WRITE | EV_PERSIST, &onEvent, this));
    upstream_read_.reset(event_new(base_, upstream_.get(), EV_READ | EV_PERSIST, &onEvent, this));
    upstream_write_.reset(
        event_new(base_, upstream_.get(), EV_WRITE | EV_PERSIST, &onEvent, this));
    idle_timer_.reset(evtimer_new(base_, &onIdleTimer, this));
    if (!client_read_ || !client_write_ || !upstream_read_ || !upstream_write_ || !idle_timer_) {
      return false;
    }
    load(up_, prefix_up, false);
    load(down_, prefix_down, true);
    last_activity_ = Clock::now();
    armIdleTimer(options_.idle_timeout);
    // The prefixes go out when the sockets report writable, so that on_done
    // never runs before start() has returned.
    updateInterest();
    return true;
  }

  void stop() override { finish(RelayClose::shutdown); }

  RelayResult progress() const override {
    return RelayResult{up_.bytes, down_.bytes - std::min(down_.bytes, down_.uncounted), close_};
  }

 private:
  void load(Flow& d, const std::string& prefix, bool uncounted) {
    if (prefix.empty()) {
      return;
    }
    d.ensureBuffer(prefix.size());
    std::memcpy(d.buf.get(), prefix.data(), prefix.size());
    d.end = prefix.size();
    if (uncounted) {
      d.uncounted = prefix.size();
    }
  }

  static void onEvent(evutil_socket_t fd, short what, void* arg) {
    auto* self = static_cast<SocketRelay*>(arg);
    self->handle(fd, what);
  }

  static void onIdleTimer(evutil_socket_t, short, void* arg) {
    static_cast<SocketRelay*>(arg)->checkIdle();
  }

  void handle(int fd, short what) {
    if (finished_) {
      return;
    }
    Flow& d = (fd == client_.get()) == ((what & EV_READ) != 0) ? up_ : down_;
    if (what & EV_READ) {
      readInto(d);
    }
    if (!finished_) {
      pump(d);
    }
    if (!finished_) {
      updateInterest();
    }
  }

  void readInto(Flow& d) {
    d.ensureBuffer(options_.buffer_bytes);
    if (d.begin == d.end) {
      d.begin = d.end = 0;
    } else if (d.end == d.capacity) {
      std::memmove(d.buf.get(), d.buf.get() + d.begin, d.pending());
      d.end -= d.begin;
      d.begin = 0;
    }
    if (d.end == d.capacity) {
      return;
    }
    ssize_t n = recv(d.src, d.buf.get() + d.end, d.capacity - d.end, 0);
    if (n > 0) {
      d.end += static_cast<size_t>(n);
      last_activity_ = Clock::now();
      inspect_needs_more_ = false;
      return;
    }
    if (n == 0) {
      d.src_eof = true;
      if (first_eof_ == nullptr) {
        first_eof_ = &d;
      }
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      return;
    }
    finish(&d == &up_ ? RelayClose::client_error : RelayClose::upstream_error);
  }

  // Writes what is buffered in `d`; passes EOF on when the buffer is empty.
  void pump(Flow& d) {
    if (&d == &up_ && inspector_) {
      if (!inspectFirstBytes()) {
        return;
      }
    }
    while (d.pending() > 0) {
      ssize_t n = send(d.dst, d.buf.get() + d.begin, d.pending(), MSG_NOSIGNAL);
      if (n > 0) {
        d.begin += static_cast<size_t>(n);
        d.bytes += static_cast<uint64_t>(n);  // relayed, not merely read
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      finish(&d == &up_ ? RelayClose::upstream_error : RelayClose::client_error);
      return;
    }
    d.begin = d.end = 0;
    if (d.src_eof && !d.done) {
      d.done = true;
      shutdown(d.dst, SHUT_WR);
      if (up_.done && down_.done) {
        finish(first_eof_ == &up_ ? RelayClose::client_eof : RelayClose::upstream_eof);
      }
    }
  }

  // Returns true once the client's first bytes may go upstream.
  bool inspectFirstBytes() {
    if (up_.pending() == 0 && !up_.src_eof) {
      return false;
    }
    InspectVerdict verdict =
        inspector_(std::string_view(up_.buf ? up_.buf.get() + up_.begin : "", up_.pending()));
    if (verdict == InspectVerdict::need_more && !up_.src_eof && !up_.full()) {
      inspect_needs_more_ = true;
      return false;
    }
    if (verdict == InspectVerdict::deny ||
        (verdict == InspectVerdict::need_more && (up_.src_eof || up_.full()))) {
      finish(RelayClose::inspect_denied);
      return false;
    }
    inspector_ = nullptr;
    return true;
  }

  void updateInterest() {
    setEvent(client_read_.get(), up_.wantsRead());
    setEvent(upstream_read_.get(), down_.wantsRead());
    // While the inspector waits for more client bytes, nothing goes upstream.
    bool up_waiting = up_.pending() > 0 && !(inspector_ && inspect_needs_more_);
    setEvent(upstream_write_.get(), up_waiting);
    setEvent(client_write_.get(), down_.pending() > 0);
  }

  static void setEvent(event* ev, bool on) {
    bool pending = event_pending(ev, EV_READ | EV_WRITE, nullptr) != 0;
    if (on && !pending) {
      event_add(ev, nullptr);
    } else if (!on && pending) {
      event_del(ev);
    }
  }

  void armIdleTimer(Duration after) {
    timeval tv = toTimeval(after);
    evtimer_add(idle_timer_.get(), &tv);
  }

  void checkIdle() {
    if (finished_) {
      return;
    }
    auto idle = std::chrono::duration_cast<Duration>(Clock::now() - last_activity_);
    if (idle >= options_.idle_timeout) {
      finish(RelayClose::idle_timeout);
      return;
    }
    armIdleTimer(options_.idle_timeout - idle);
  }

  void finish(RelayClose close) {
    if (finished_) {
      return;
    }
    finished_ = true;
    close_ = close;
    client_read_.reset();
    client_write_.reset();
    upstream_read_.reset();
    upstream_write_.reset();
    idle_timer_.reset();
    client_.reset();
    upstream_.reset();
    up_.buf.reset();
    down_.buf.reset();
    RelayResult result = progress();
    result.close = close;
    if (on_done_) {
      DoneCallback done = std::move(on_done_);
      done(result);
    }
  }

  event_base* base_;
  UniqueFd client_;
  UniqueFd upstream_;
  RelayOptions options_;
  FirstBytesInspector inspector_;
  DoneCallback on_done_;
  Flow up_;
  Flow down_;
  const Flow* first_eof_ = nullptr;
  EventPtr client_read_;
  EventPtr client_write_;
  EventPtr upstream_read_;
  EventPtr upstream_write_;
  EventPtr idle_timer_;
  Clock::time_point last_activity_;
  bool finished_ = false;
  bool inspect_needs_more_ = false;
  RelayClose close_ = RelayClose::client_eof;
};

}  // namespace

std::unique_ptr<Relay> Relay::start(event_base* base, UniqueFd client, UniqueFd upstream,
                                    std::string prefix_up, std::string prefix_down,
                                    const RelayOptions& options, FirstBytesInspector inspector,
                                    DoneCallback on_done) {
  auto relay = std::make_unique<SocketRelay>(base, std::move(client), std::move(upstream),
                                             options, std::move(inspector), std::move(on_done));
  if (!relay->init(std::move(prefix_up), std::move(prefix_down))) {
    return nullptr;
  }
  return relay;
}

}  // namespace s3gate
