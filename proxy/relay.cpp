#include "proxy/relay.h"

#include <algorithm>
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
  Stream* src = nullptr;
  Stream* dst = nullptr;
  std::unique_ptr<char[]> buf;  // allocated when bytes first flow
  size_t capacity = 0;
  size_t begin = 0;  // first byte not yet written
  size_t end = 0;    // one past the last byte read
  bool src_eof = false;
  bool done = false;        // EOF passed on as a write shutdown
  uint64_t bytes = 0;       // bytes written to dst
  uint64_t uncounted = 0;   // leading bytes not to count (the 200 head)
  bool read_blocked = false;   // the last read would block
  bool write_blocked = false;  // the last write would block

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

class StreamRelay final : public Relay {
 public:
  StreamRelay(event_base* base, std::unique_ptr<Stream> client, std::unique_ptr<Stream> upstream,
              const RelayOptions& options, FirstBytesInspector inspector, DoneCallback on_done)
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
    client_read_.reset(event_new(base_, client_->fd(), EV_READ | EV_PERSIST, &onEvent, this));
    client_write_.reset(event_new(base_, client_->fd(), EV_WRITE | EV_PERSIST, &onEvent, this));
    upstream_read_.reset(
        event_new(base_, upstream_->fd(), EV_READ | EV_PERSIST, &onEvent, this));
    upstream_write_.reset(
        event_new(base_, upstream_->fd(), EV_WRITE | EV_PERSIST, &onEvent, this));
    idle_timer_.reset(evtimer_new(base_, &onIdleTimer, this));
    kick_.reset(event_new(base_, -1, 0, &onEvent, this));
    if (!client_read_ || !client_write_ || !upstream_read_ || !upstream_write_ || !idle_timer_ ||
        !kick_) {
      return false;
    }
    load(up_, prefix_up, false);
    load(down_, prefix_down, true);
    last_activity_ = Clock::now();
    armIdleTimer(options_.idle_timeout);
    // Everything starts from the loop, so that on_done never runs inside start().
    event_active(kick_.get(), EV_TIMEOUT, 0);
    return true;
  }

  void stop() override { finish(RelayClose::shutdown); }

  RelayResult progress() const override {
    return RelayResult{up_.bytes, down_.bytes - std::min(down_.bytes, down_.uncounted), close_};
  }

 private:
  static void load(Flow& d, const std::string& prefix, bool uncounted) {
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

  static void onEvent(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<StreamRelay*>(arg);
    if (self->finished_) {
      return;
    }
    // Readiness on a socket may unblock both what reads from it and what
    // writes to it (TLS can need either for either).
    if (fd == self->client_->fd()) {
      self->up_.read_blocked = false;
      self->down_.write_blocked = false;
    } else if (fd == self->upstream_->fd()) {
      self->down_.read_blocked = false;
      self->up_.write_blocked = false;
    } else {
      self->up_.read_blocked = self->down_.read_blocked = false;
      self->up_.write_blocked = self->down_.write_blocked = false;
    }
    self->pumpAll();
  }

  static void onIdleTimer(evutil_socket_t, short, void* arg) {
    static_cast<StreamRelay*>(arg)->checkIdle();
  }

  // Moves bytes both ways until nothing more can move, then waits for the
  // readiness the blocked operations need. Trying both directions on every
  // wake-up keeps TLS streams honest: a TLS read may be satisfied from bytes
  // OpenSSL already holds, which no socket event would announce.
  void pumpAll() {
    if (finished_) {
      return;
    }
    bool progress = true;
    int rounds = 0;
    // A bound on rounds keeps one busy tunnel from starving the loop.
    while (progress && !finished_ && rounds++ < 16) {
      progress = move(up_);
      if (finished_) {
        return;
      }
      progress |= move(down_);
    }
    if (!finished_) {
      if (progress) {
        // More to do, but other connections get their turn first.
        event_active(kick_.get(), EV_TIMEOUT, 0);
      }
      updateInterest();
    }
  }

  // One step for one direction: write what is buffered, read more if there is
  // room, write again. Returns whether any byte moved or any state changed.
  bool move(Flow& d) {
    bool progress = d.write_blocked ? false : pump(d);
    // A read that would block is not retried until its socket reports ready
    // (or OpenSSL holds bytes already read from it).
    if (finished_ || !d.wantsRead() || (d.read_blocked && !d.src->hasBufferedInput())) {
      return progress;
    }
    progress |= readInto(d);
    if (!finished_) {
      progress |= pump(d);
    }
    return progress;
  }

  bool readInto(Flow& d) {
    d.ensureBuffer(options_.buffer_bytes);
    if (d.begin == d.end) {
      d.begin = d.end = 0;
    } else if (d.end == d.capacity) {
      std::memmove(d.buf.get(), d.buf.get() + d.begin, d.pending());
      d.end -= d.begin;
      d.begin = 0;
    }
    Stream::Result r = d.src->read(d.buf.get() + d.end, d.capacity - d.end);
    d.read_blocked = r.status == Stream::Io::would_block;
    switch (r.status) {
      case Stream::Io::ok:
        d.end += r.bytes;
        last_activity_ = Clock::now();
        inspect_needs_more_ = false;
        return r.bytes > 0;
      case Stream::Io::would_block:
        return false;
      case Stream::Io::eof:
        d.src_eof = true;
        if (first_eof_ == nullptr) {
          first_eof_ = &d;
        }
        return true;
      case Stream::Io::error:
        finish(&d == &up_ ? RelayClose::client_error : RelayClose::upstream_error);
        return true;
    }
    return false;
  }

  // Writes what is buffered in `d`; passes EOF on when the buffer is empty.
  bool pump(Flow& d) {
    if (&d == &up_ && inspector_) {
      if (!inspectFirstBytes()) {
        return false;
      }
    }
    bool progress = false;
    d.write_blocked = false;
    while (d.pending() > 0) {
      Stream::Result r = d.dst->write(d.buf.get() + d.begin, d.pending());
      if (r.status == Stream::Io::ok && r.bytes > 0) {
        d.begin += r.bytes;
        d.bytes += r.bytes;  // relayed, not merely read
        progress = true;
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        d.write_blocked = true;
        return progress;
      }
      finish(&d == &up_ ? RelayClose::upstream_error : RelayClose::client_error);
      return true;
    }
    d.begin = d.end = 0;
    if (d.src_eof && !d.done) {
      d.done = true;
      d.dst->shutdownWrite();
      progress = true;
      if (up_.done && down_.done) {
        finish(first_eof_ == &up_ ? RelayClose::client_eof : RelayClose::upstream_eof);
      }
    }
    return progress;
  }

  // Returns true once the client's first bytes may go upstream.
  bool inspectFirstBytes() {
    if (up_.pending() == 0 && !up_.src_eof) {
      return false;
    }
    if (inspect_needs_more_ && !up_.src_eof && !up_.full()) {
      return false;  // nothing new since the inspector asked for more
    }
    InspectVerdict verdict =
        inspector_(std::string_view(up_.buf ? up_.buf.get() + up_.begin : "", up_.pending()));
    if (verdict == InspectVerdict::need_more && !up_.src_eof && !up_.full()) {
      inspect_needs_more_ = true;
      return false;
    }
    if (verdict != InspectVerdict::pass) {
      finish(RelayClose::inspect_denied);
      return false;
    }
    inspector_ = nullptr;
    return true;
  }

  void updateInterest() {
    // What each stream waits for: a read that blocked on it, a write that
    // blocked on it (for TLS either may need the other readiness).
    short client = 0;
    short upstream = 0;
    if (up_.wantsRead()) {
      client |= client_->readWants();
    }
    if (down_.wantsRead()) {
      upstream |= upstream_->readWants();
    }
    bool up_waiting = up_.pending() > 0 && !(inspector_ && inspect_needs_more_);
    if (up_waiting) {
      upstream |= upstream_->writeWants();
    }
    if (down_.pending() > 0) {
      client |= client_->writeWants();
    }
    setEvent(client_read_.get(), (client & EV_READ) != 0);
    setEvent(client_write_.get(), (client & EV_WRITE) != 0);
    setEvent(upstream_read_.get(), (upstream & EV_READ) != 0);
    setEvent(upstream_write_.get(), (upstream & EV_WRITE) != 0);
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
    kick_.reset();
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
  std::unique_ptr<Stream> client_;
  std::unique_ptr<Stream> upstream_;
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
  EventPtr kick_;  // runs the pump from the loop without a socket event
  Clock::time_point last_activity_;
  bool finished_ = false;
  bool inspect_needs_more_ = false;
  RelayClose close_ = RelayClose::client_eof;
};

}  // namespace

std::unique_ptr<Relay> Relay::start(event_base* base, std::unique_ptr<Stream> client,
                                    std::unique_ptr<Stream> upstream, std::string prefix_up,
                                    std::string prefix_down, const RelayOptions& options,
                                    FirstBytesInspector inspector, DoneCallback on_done) {
  auto relay = std::make_unique<StreamRelay>(base, std::move(client), std::move(upstream),
                                             options, std::move(inspector), std::move(on_done));
  if (!relay->init(std::move(prefix_up), std::move(prefix_down))) {
    return nullptr;
  }
  return relay;
}

}  // namespace s3gate
