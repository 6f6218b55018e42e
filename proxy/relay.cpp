#include "proxy/relay.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <thread>

#include "proxy/event_ptr.h"
#include "proxy/pipe_pool.h"
#include "proxy/scratch.h"

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

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// Reads of at least this many bytes make a direction "bulk": its next burst is
// spliced. Smaller reads (requests, acknowledgements, ping-pong) are cheaper
// copied through the thread's scratch buffer than moved through a pipe.
constexpr size_t kBulkReadBytes = 4096;

// One direction of the tunnel. Bytes read from `src` wait for `dst` either in
// `buf` (copied through the process: small reads, TLS, the inspector,
// prefixes, or no pipe to be had) or in `pipe` (bulk bytes between two plain
// sockets), never in both: the way is chosen afresh whenever the direction
// holds no bytes. A copied read goes through the thread's scratch buffer
// straight to the destination; `buf` only holds what the destination refused.
struct Flow {
  Stream* src = nullptr;
  Stream* dst = nullptr;
  // Plain sockets at either end: a short read means the socket is drained, a
  // short write that it is full (TLS records make neither true for TLS).
  bool src_plain = false;
  bool dst_plain = false;
  bool can_splice = false;  // both plain, zero_copy on, and splice not refused
  bool bulk = false;        // the last read was large: splice the next burst

  std::unique_ptr<char[]> buf;  // allocated when bytes flow, freed when idle
  size_t capacity = 0;
  size_t begin = 0;  // first byte not yet written
  size_t end = 0;    // one past the last byte read

  Pipe pipe;               // held while bytes flow, back to the pool when idle
  size_t in_pipe = 0;      // bytes spliced in and not yet out
  bool pipe_full = false;  // a splice into the pipe would block (its slots are used)

  bool src_eof = false;
  bool done = false;           // EOF passed on as a write shutdown
  uint64_t bytes = 0;          // bytes written to dst
  uint64_t uncounted = 0;      // leading bytes not to count (the 200 head)
  bool read_blocked = false;   // the last read would block (or drained the socket)
  PaceGate pace;               // with a pacer: the budget asked before each read
  bool write_blocked = false;  // the last write would block (or filled the socket)

  size_t buffered() const { return end - begin; }
  size_t pending() const { return buffered() + in_pipe; }
  bool full() const {
    if (in_pipe > 0) {
      return pipe_full || in_pipe >= pipe.capacity();
    }
    return buf && buffered() == capacity;
  }
  bool wantsRead() const { return !src_eof && !full() && !pace.waiting(); }
  void ensureBuffer(size_t want) {
    if (!buf) {
      capacity = std::max(capacity, want);
      buf = std::make_unique_for_overwrite<char[]>(capacity);
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
        on_done_(std::move(on_done)),
        pool_(&PipePool::local()),
        pool_thread_(std::this_thread::get_id()) {
    pool_->attach();
    up_.src = client_.get();
    up_.dst = upstream_.get();
    down_.src = upstream_.get();
    down_.dst = client_.get();
    for (Flow* d : {&up_, &down_}) {
      d->capacity = options_.buffer_bytes;
      d->src_plain = !d->src->isTls();
      d->dst_plain = !d->dst->isTls();
      d->can_splice = options_.zero_copy && d->src_plain && d->dst_plain;
      // A plain socket is read once it reports readable (no EAGAIN first,
      // and no pipe for a direction that never carries a byte). A TLS stream
      // is tried at once: OpenSSL may hold bytes from the handshake.
      d->read_blocked = d->src_plain;
    }
  }

  ~StreamRelay() override { dropPipes(); }

  bool init(std::string prefix_up, std::string prefix_down) {
    // One event per socket (its interest changes with what the flows wait
    // for) and the idle timer: three events per tunnel.
    client_event_.reset(event_new(base_, client_->fd(), EV_READ | EV_PERSIST, &onEvent, this));
    upstream_event_.reset(event_new(base_, upstream_->fd(), EV_READ | EV_PERSIST, &onEvent, this));
    idle_timer_.reset(evtimer_new(base_, &onIdleTimer, this));
    if (!client_event_ || !upstream_event_ || !idle_timer_) {
      return false;
    }
    if (!up_.pace.init(base_, options_.pacer.get(), PaceDirection::up, &onUpPaceTimer, this) ||
        !down_.pace.init(base_, options_.pacer.get(), PaceDirection::down, &onDownPaceTimer,
                         this)) {
      return false;
    }
    load(up_, prefix_up, false);
    load(down_, prefix_down, true);
    last_activity_ = Clock::now();
    // Every tunnel's first idle deadline is the same span: libevent keeps
    // those in one queue (a "common timeout") instead of its heap.
    timeval span = toTimeval(options_.idle_timeout);
    const timeval* common = event_base_init_common_timeout(base_, &span);
    evtimer_add(idle_timer_.get(), common != nullptr ? common : &span);
    // Watch the sockets for reading now, in the callback that handed them
    // over: the session's events for them go after this, so their interest
    // never drops (no epoll_ctl). Everything else, writes included, starts
    // from the loop, so that on_done never runs inside start().
    if (up_.wantsRead()) {
      event_add(client_event_.get(), nullptr);
    }
    if (down_.wantsRead()) {
      event_add(upstream_event_.get(), nullptr);
    }
    kick();
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
    if (uncounted) {
      // The response head: a buffer of its own size, freed once written.
      d.capacity = prefix.size();
      d.uncounted = prefix.size();
    }
    d.ensureBuffer(prefix.size());
    std::memcpy(d.buf.get(), prefix.data(), prefix.size());
    d.end = prefix.size();
  }

  // Runs the pump from the loop soon, without a socket event: an activation
  // of the client's event that reports no readiness. A later interest change
  // may drop it, but only from inside a pump, which did the kick's work.
  void kick() { event_active(client_event_.get(), EV_TIMEOUT, 0); }

  static void onEvent(evutil_socket_t fd, short what, void* arg) {
    auto* self = static_cast<StreamRelay*>(arg);
    if (self->finished_) {
      return;
    }
    // Readiness on a socket may unblock both what reads from it and what
    // writes to it (TLS can need either for either). The kick (no readiness)
    // unblocks nothing: a blocked operation waits for its socket.
    if ((what & (EV_READ | EV_WRITE)) == 0) {
      // The kick.
    } else if (fd == self->client_->fd()) {
      self->up_.read_blocked = false;
      self->down_.write_blocked = false;
    } else if (fd == self->upstream_->fd()) {
      self->down_.read_blocked = false;
      self->up_.write_blocked = false;
    }
    self->pumpAll();
  }

  static void onUpPaceTimer(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<StreamRelay*>(arg);
    self->onPaceTimer(self->up_);
  }
  static void onDownPaceTimer(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<StreamRelay*>(arg);
    self->onPaceTimer(self->down_);
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
    while (progress && !finished_ && !denying_ && rounds++ < 16) {
      progress = move(up_);
      if (finished_ || denying_) {
        break;
      }
      progress |= move(down_);
    }
    if (denying_) {
      flushDenied();
    }
    if (!finished_) {
      updateInterest();
      if (progress && !denying_) {
        // More to do, but other connections get their turn first.
        kick();
      }
    }
  }

  // One step for one direction: write what is held, read more if there is
  // room, write again. Returns whether any byte moved or any state changed.
  // Neither a read nor a write is retried once it blocked until its socket
  // reports ready (or OpenSSL holds bytes already read).
  bool move(Flow& d) {
    bool progress = d.write_blocked ? false : flush(d);
    if (finished_ || denying_) {
      return true;
    }
    if (d.wantsRead() && !(d.read_blocked && !d.src->hasBufferedInput())) {
      progress |= fill(d);
      if (finished_) {
        return true;
      }
      if (!d.write_blocked) {
        progress |= flush(d);
        if (finished_) {
          return true;
        }
      }
    }
    if (d.pending() == 0 && d.read_blocked && !d.src->hasBufferedInput()) {
      // Idle: an idle direction holds neither a pipe nor a buffer.
      pool_->release(std::move(d.pipe), true);
      d.buf.reset();
      d.begin = d.end = 0;
    }
    return progress;
  }

  // Reads from the source: spliced into the pipe when the direction may be
  // spliced and holds nothing in its buffer, else into the buffer.
  bool fill(Flow& d) {
    size_t limit = d.pace.allowance(Clock::now());
    if (limit == 0) {
      return false;  // out of bandwidth budget: the pace timer resumes it
    }
    if (d.buffered() == 0 && d.in_pipe == 0) {
      bool inspecting = &d == &up_ && inspector_;
      bool splice = d.bulk && d.can_splice && !inspecting;
      if (splice && !d.pipe) {
        d.pipe = pool_->acquire();  // none to be had: copy through the buffer
      }
      if (!splice && d.pipe) {
        pool_->release(std::move(d.pipe), true);
      }
      if (d.pipe) {
        d.buf.reset();
        d.begin = d.end = 0;
      } else if (!inspecting) {
        return copyThrough(d, limit);
      }
    }
    return d.pipe ? spliceIn(d, limit) : readInto(d, limit);
  }

  void onPaceTimer(Flow& d) {
    if (finished_) {
      return;
    }
    Clock::time_point now = Clock::now();
    if (d.pace.resume(now)) {
      last_activity_ = now;  // waiting for the budget is not idleness
    }
    pumpAll();
  }

  // Reads into the scratch buffer and writes at once what the destination
  // takes; the rest waits in the direction's buffer.
  bool copyThrough(Flow& d, size_t limit) {
    // Only what the destination does not take moves to the direction's buffer.
    char* scratch = threadScratch().data();
    size_t room = std::min({options_.buffer_bytes, kScratchBytes, limit});
    Stream::Result r = d.src->read(scratch, room);
    if (!readDone(d, r, room)) {
      return r.status == Stream::Io::eof || r.status == Stream::Io::error;
    }
    size_t written = 0;
    if (!d.write_blocked && !writeOut(d, scratch, r.bytes, &written)) {
      return true;
    }
    if (written < r.bytes) {
      d.ensureBuffer(options_.buffer_bytes);
      std::memcpy(d.buf.get(), scratch + written, r.bytes - written);
      d.begin = 0;
      d.end = r.bytes - written;
    }
    return true;
  }

  // The bookkeeping after a read of up to `room` bytes into a buffer: true
  // when bytes arrived (r.bytes > 0), false after EOF, an error or EAGAIN.
  bool readDone(Flow& d, const Stream::Result& r, size_t room) {
    d.read_blocked = r.status == Stream::Io::would_block;
    switch (r.status) {
      case Stream::Io::ok:
        last_activity_ = Clock::now();
        inspect_needs_more_ = false;
        d.pace.consume(r.bytes, last_activity_);
        // A plain socket that gave less than asked for is drained: the next
        // read waits for readiness instead of failing with EAGAIN.
        d.read_blocked = d.src_plain && r.bytes < room;
        d.bulk = r.bytes >= kBulkReadBytes;
        return r.bytes > 0;
      case Stream::Io::would_block:
        return false;
      case Stream::Io::eof:
        sourceEof(d);
        return false;
      case Stream::Io::error:
        finish(&d == &up_ ? RelayClose::client_error : RelayClose::upstream_error);
        return false;
    }
    return false;
  }

  // Writes up to `len` bytes of `data` to the destination and counts them;
  // *written says how many went. False when the relay finished (an error).
  bool writeOut(Flow& d, const char* data, size_t len, size_t* written) {
    *written = 0;
    while (*written < len) {
      size_t want = len - *written;
      Stream::Result r = d.dst->write(data + *written, want);
      if (r.status == Stream::Io::ok && r.bytes > 0) {
        *written += r.bytes;
        d.bytes += r.bytes;  // relayed, not merely read
        if (d.dst_plain && r.bytes < want) {
          d.write_blocked = true;  // the socket is full: wait for it
          return true;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        d.write_blocked = true;
        return true;
      }
      finish(&d == &up_ ? RelayClose::upstream_error : RelayClose::client_error);
      return false;
    }
    return true;
  }

  bool readInto(Flow& d, size_t limit) {
    d.ensureBuffer(options_.buffer_bytes);
    if (d.begin == d.end) {
      d.begin = d.end = 0;
    } else if (d.end == d.capacity) {
      std::memmove(d.buf.get(), d.buf.get() + d.begin, d.buffered());
      d.end -= d.begin;
      d.begin = 0;
    }
    size_t room = std::min(d.capacity - d.end, limit);
    Stream::Result r = d.src->read(d.buf.get() + d.end, room);
    if (readDone(d, r, room)) {
      d.end += r.bytes;
      return true;
    }
    return r.status == Stream::Io::eof || r.status == Stream::Io::error;
  }

  void sourceEof(Flow& d) {
    d.src_eof = true;
    if (first_eof_ == nullptr) {
      first_eof_ = &d;
    }
  }

  // splice(2) from the source socket into the pipe, at most up to its capacity
  // (the bound on what a direction holds).
  bool spliceIn(Flow& d, size_t limit) {
    size_t room = std::min(d.pipe.capacity() - d.in_pipe, limit);
    while (true) {
      ssize_t n = splice(d.src->fd(), nullptr, d.pipe.writeFd(), nullptr, room, kSpliceFlags);
      if (n > 0) {
        d.in_pipe += static_cast<size_t>(n);
        last_activity_ = Clock::now();
        d.pace.consume(static_cast<size_t>(n), last_activity_);
        d.bulk = static_cast<size_t>(n) >= kBulkReadBytes;
        // Short: the socket is drained (or the pipe's slots are used up,
        // which the next attempt finds out).
        d.read_blocked = static_cast<size_t>(n) < room;
        return true;
      }
      if (n == 0) {
        sourceEof(d);
        return true;
      }
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN) {
        // With bytes in the pipe it is the pipe that is full (its slots can
        // run out before its bytes): wait for the destination to drain it.
        if (d.in_pipe > 0) {
          d.pipe_full = true;
        } else {
          d.read_blocked = true;
        }
        return false;
      }
      if ((errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) && d.in_pipe == 0) {
        // These sockets cannot be spliced: copy through the buffer instead.
        d.can_splice = false;
        pool_->release(std::move(d.pipe), true);
        return readInto(d, limit);
      }
      finish(&d == &up_ ? RelayClose::client_error : RelayClose::upstream_error);
      return true;
    }
  }

  // splice(2) from the pipe to the destination socket; counts what went out.
  bool spliceOut(Flow& d) {
    bool progress = false;
    while (d.in_pipe > 0) {
      ssize_t n = splice(d.pipe.readFd(), nullptr, d.dst->fd(), nullptr, d.in_pipe, kSpliceFlags);
      if (n > 0) {
        size_t moved = static_cast<size_t>(n);
        bool short_write = moved < d.in_pipe;
        d.in_pipe -= moved;
        d.bytes += moved;
        d.pipe_full = false;
        progress = true;
        if (short_write) {
          d.write_blocked = true;  // the socket is full
          return true;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && errno == EAGAIN) {
        d.write_blocked = true;
        return progress;
      }
      finish(&d == &up_ ? RelayClose::upstream_error : RelayClose::client_error);
      return true;
    }
    return progress;
  }

  // Writes what `d` holds; passes EOF on once it holds nothing.
  bool flush(Flow& d) {
    if (&d == &up_ && inspector_) {
      if (!inspectFirstBytes()) {
        return false;
      }
    }
    bool progress = false;
    d.write_blocked = false;
    if (d.in_pipe > 0) {
      progress = spliceOut(d);
      if (finished_ || d.in_pipe > 0) {
        return progress;
      }
    }
    if (d.buffered() > 0) {
      size_t written = 0;
      if (!writeOut(d, d.buf.get() + d.begin, d.buffered(), &written)) {
        return true;
      }
      d.begin += written;
      progress = written > 0;
      if (d.buffered() > 0) {
        return progress;
      }
    }
    d.begin = d.end = 0;
    if (d.capacity != options_.buffer_bytes) {
      d.buf.reset();  // a prefix's own buffer
      d.capacity = options_.buffer_bytes;
    }
    if (d.src_eof && !d.done) {
      d.done = true;
      const Flow& other = &d == &up_ ? down_ : up_;
      if (!(other.done && d.dst_plain)) {
        // The last direction to end needs no shutdown on a plain socket: both
        // EOFs are read, and the close that follows sends the FIN.
        d.dst->shutdownWrite();
      }
      pool_->release(std::move(d.pipe), true);
      d.buf.reset();
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
    if (up_.buffered() == 0) {
      // The client closed without sending a byte: nothing was sent that could
      // name another host (SPEC: such a tunnel is allowed, closed client_eof).
      inspector_ = nullptr;
      return true;
    }
    InspectVerdict verdict =
        inspector_(std::string_view(up_.buf ? up_.buf.get() + up_.begin : "", up_.buffered()));
    if (verdict == InspectVerdict::need_more && !up_.src_eof && !up_.full()) {
      inspect_needs_more_ = true;
      return false;
    }
    if (verdict != InspectVerdict::pass) {
      deny();
      return false;
    }
    inspector_ = nullptr;
    return true;
  }

  // The inspector refused the client's bytes. The client was promised
  // "200, then closed": whatever is left of the 200 head still goes to it (the
  // refused bytes may have come in the same packet as the CONNECT, before any
  // of it was written), and nothing more moves either way.
  void deny() {
    denying_ = true;
    inspector_ = nullptr;
    up_.buf.reset();  // refused: never sent (no pipe while inspecting)
    up_.begin = up_.end = 0;
  }

  // Writes what remains of the uncounted prefix (the 200 head) to the client;
  // ends the relay once it has all gone, or on an error. Only the head: bytes
  // from the upstream behind it are not passed on.
  void flushDenied() {
    Flow& d = down_;
    if (d.bytes < d.uncounted && d.buffered() > 0 && !d.write_blocked) {
      const size_t left = static_cast<size_t>(
          std::min<uint64_t>(d.uncounted - d.bytes, static_cast<uint64_t>(d.buffered())));
      size_t written = 0;
      if (!writeOut(d, d.buf.get() + d.begin, left, &written)) {
        return;  // finished with client_error
      }
      d.begin += written;
    }
    if (d.bytes >= d.uncounted || d.buffered() == 0) {
      finish(RelayClose::inspect_denied);
    }
  }

  void updateInterest() {
    // What each stream waits for: a read that blocked on it, a write that
    // blocked on it (for TLS either may need the other readiness).
    short client = 0;
    short upstream = 0;
    if (denying_) {
      // Only the rest of the 200 head, to the client.
      setSocketInterest(client_event_.get(), client_->writeWants());
      setSocketInterest(upstream_event_.get(), 0);
      return;
    }
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
    setSocketInterest(client_event_.get(), client);
    setSocketInterest(upstream_event_.get(), upstream);
  }

  void armIdleTimer(Duration after) {
    timeval tv = toTimeval(after);
    evtimer_add(idle_timer_.get(), &tv);
  }

  void checkIdle() {
    if (finished_) {
      return;
    }
    if (up_.pace.waiting() || down_.pace.waiting()) {
      last_activity_ = Clock::now();  // waiting for the bandwidth budget
    }
    auto idle = std::chrono::duration_cast<Duration>(Clock::now() - last_activity_);
    if (idle >= options_.idle_timeout) {
      finish(RelayClose::idle_timeout);
      return;
    }
    armIdleTimer(options_.idle_timeout - idle);
  }

  // Gives the pipes back (empty ones to the pool, the others closed) and
  // leaves the pool. Off the thread that started the relay (its pool may be
  // gone) the pipes are simply closed.
  void dropPipes() {
    if (pool_ == nullptr) {
      return;
    }
    if (std::this_thread::get_id() == pool_thread_) {
      for (Flow* d : {&up_, &down_}) {
        pool_->release(std::move(d->pipe), d->in_pipe == 0);
      }
      pool_->detach();
    }
    for (Flow* d : {&up_, &down_}) {
      d->pipe.reset();
      d->in_pipe = 0;
    }
    pool_ = nullptr;
  }

  void finish(RelayClose close) {
    if (finished_) {
      return;
    }
    if (denying_) {
      // However the rest of the 200 went (or did not: a reset, the idle
      // timeout, a stop), the tunnel ended because its first bytes were refused.
      close = RelayClose::inspect_denied;
    }
    finished_ = true;
    close_ = close;
    Clock::time_point now = Clock::now();
    for (Flow* d : {&up_, &down_}) {
      d->pace.resume(now);  // a wait cut short still counts
      d->pace.stop();
    }
    client_event_.reset();
    upstream_event_.reset();
    idle_timer_.reset();
    client_.reset();
    upstream_.reset();
    up_.buf.reset();
    down_.buf.reset();
    RelayResult result = progress();
    result.close = close;
    dropPipes();
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
  PipePool* pool_;  // this thread's; null once the pipes are given back
  std::thread::id pool_thread_;
  Flow up_;
  Flow down_;
  const Flow* first_eof_ = nullptr;
  EventPtr client_event_;  // the client socket, for what the flows wait on it
  EventPtr upstream_event_;
  EventPtr idle_timer_;
  Clock::time_point last_activity_;
  bool finished_ = false;
  bool inspect_needs_more_ = false;
  bool denying_ = false;  // the inspector refused: the 200 head goes out, then the end
  RelayClose close_ = RelayClose::client_eof;
};

}  // namespace

std::unique_ptr<Relay> Relay::start(event_base* base, std::unique_ptr<Stream> client,
                                    std::unique_ptr<Stream> upstream, std::string prefix_up,
                                    std::string prefix_down, const RelayOptions& options,
                                    FirstBytesInspector inspector, DoneCallback on_done) {
  auto relay = std::make_unique<StreamRelay>(base, std::move(client), std::move(upstream), options,
                                             std::move(inspector), std::move(on_done));
  if (!relay->init(std::move(prefix_up), std::move(prefix_down))) {
    return nullptr;
  }
  return relay;
}

}  // namespace s3gate
