#include "proxy/forwarder.h"

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

namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
// A body with fewer bytes to come than this is copied: a pipe and two
// splices cost more than copying a few KiB once.
constexpr uint64_t kMinSpliceBytes = 16 * 1024;
// Rounds of one pump before the other connections of the loop get a turn.
constexpr int kMaxRounds = 16;

// Bytes waiting for one destination, in one contiguous block. Reads land in
// its tail and writes take from its front, so a body byte is copied once on
// its way through. Bounded by its users: a reader asks for room only while
// fewer than buffer_bytes wait, and heads are bounded by max_header_bytes.
class Outbox {
 public:
  size_t pending() const { return end_ - begin_; }
  std::string_view front() const { return {data_.get() + begin_, pending()}; }
  void consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) {
      begin_ = end_ = 0;
    }
  }
  // At least `want` writable bytes after the pending ones; commit() what was
  // written there.
  char* tail(size_t want) {
    if (capacity_ - end_ < want && begin_ > 0) {
      std::memmove(data_.get(), data_.get() + begin_, pending());
      end_ -= begin_;
      begin_ = 0;
    }
    if (capacity_ - end_ < want) {
      size_t capacity = std::max(end_ + want, capacity_ + capacity_ / 2);
      auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
      if (end_ > 0) {
        std::memcpy(bigger.get(), data_.get(), end_);
      }
      data_ = std::move(bigger);
      capacity_ = capacity;
    }
    return data_.get() + end_;
  }
  void commit(size_t n) { end_ += n; }
  void append(std::string_view bytes) {
    if (!bytes.empty()) {
      std::memcpy(tail(bytes.size()), bytes.data(), bytes.size());
      commit(bytes.size());
    }
  }
  void clear() {
    data_.reset();
    capacity_ = begin_ = end_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
  size_t begin_ = 0;  // first byte not yet written
  size_t end_ = 0;    // one past the last byte added
};

// One direction's body spliced between two plain sockets: bytes wait in the
// pipe instead of an Outbox. The pipe comes from this thread's PipePool while
// bytes flow and goes back when the direction is idle.
struct SpliceWay {
  Pipe pipe;
  size_t in_pipe = 0;    // spliced in, not yet out
  bool full = false;     // a splice into the pipe would block (its slots are used)
  bool refused = false;  // the kernel cannot splice these sockets: copy instead
};

class StreamForwarder final : public Forwarder {
 public:
  StreamForwarder(event_base* base, Stream& client, std::unique_ptr<Stream> upstream,
                  const ForwardOptions& options, DoneCallback on_done)
      : base_(base),
        client_(client),
        upstream_(std::move(upstream)),
        options_(options),
        on_done_(std::move(on_done)),
        plain_(!client.isTls() && !upstream_->isTls()),
        client_plain_(!client.isTls()),
        upstream_plain_(!upstream_->isTls()) {}

  ~StreamForwarder() override { releasePipes(); }

  bool init(const RequestHead& head, const RequestFraming& framing, std::string_view after_head) {
    method_ = std::string(head.method);
    client_http10_ = head.version_minor == 0;
    client_wants_keep_alive_ = framing.keep_alive && options_.allow_client_keep_alive;
    request_body_ = BodyFramer::forFraming(framing.body);
    HeadPieces pieces = rewriteRequestHead(head);
    to_upstream_.tail(pieces.size() + after_head.size());
    for (std::string_view piece : pieces.pieces()) {
      to_upstream_.append(piece);
    }
    initial_body_.assign(after_head);  // framed on the first pump, from the loop
    client_read_.reset(event_new(base_, client_.fd(), EV_READ | EV_PERSIST, &onEvent, this));
    client_write_.reset(event_new(base_, client_.fd(), EV_WRITE | EV_PERSIST, &onEvent, this));
    upstream_read_.reset(event_new(base_, upstream_->fd(), EV_READ | EV_PERSIST, &onEvent, this));
    upstream_write_.reset(event_new(base_, upstream_->fd(), EV_WRITE | EV_PERSIST, &onEvent, this));
    idle_timer_.reset(evtimer_new(base_, &onIdle, this));
    kick_.reset(event_new(base_, -1, 0, &onEvent, this));
    if (!client_read_ || !client_write_ || !upstream_read_ || !upstream_write_ || !idle_timer_ ||
        !kick_) {
      return false;
    }
    if (!up_pace_.init(base_, options_.pacer.get(), PaceDirection::up, &onUpPaceTimer, this) ||
        !down_pace_.init(base_, options_.pacer.get(), PaceDirection::down, &onDownPaceTimer,
                         this)) {
      return false;
    }
    handshaking_ = upstream_->isTls();
    // The response cannot be there yet: the upstream is read once its socket
    // says so. A request body is tried at once (it usually follows the head).
    upstream_read_blocked_ = true;
    // Both sockets are watched for reading from here on, in the callback that
    // handed them over: the base's changelist folds this with the session's
    // and the pool's deletes, so a kept-alive exchange costs no epoll_ctl. A
    // client read that is not wanted (no body) is dropped if it fires.
    event_add(client_read_.get(), nullptr);
    if (!handshaking_) {
      event_add(upstream_read_.get(), nullptr);
    }
    last_activity_ = Clock::now();
    timeval tv = toTimeval(options_.idle_timeout);
    evtimer_add(idle_timer_.get(), &tv);
    // The first pump runs from the loop, so on_done never runs inside start().
    event_active(kick_.get(), EV_TIMEOUT, 0);
    return true;
  }

  void stop() override { finish(CloseCause::shutdown, false); }
  std::pair<uint64_t, uint64_t> progress() const override {
    return {result_.bytes_up, result_.bytes_down};
  }

 private:
  static void onEvent(evutil_socket_t fd, short what, void* arg) {
    auto* self = static_cast<StreamForwarder*>(arg);
    // Readiness on a socket may unblock both what reads from it and what
    // writes to it (TLS can need either for either); the kick unblocks nothing.
    if (fd >= 0 && fd == self->client_.fd()) {
      self->client_read_blocked_ = self->client_write_blocked_ = false;
      if ((what & EV_READ) != 0 && !self->bodyWanted()) {
        self->client_read_unwanted_ = true;  // pipelined bytes or EOF: wait for the end
      }
    } else if (fd >= 0 && self->upstream_ && fd == self->upstream_->fd()) {
      self->upstream_read_blocked_ = self->upstream_write_blocked_ = false;
    }
    self->pump();
  }

  static void onIdle(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<StreamForwarder*>(arg);
    if (self->up_pace_.waiting() || self->down_pace_.waiting()) {
      self->last_activity_ = Clock::now();  // waiting for the bandwidth budget
    }
    auto idle = std::chrono::duration_cast<Duration>(Clock::now() - self->last_activity_);
    if (idle >= self->options_.idle_timeout) {
      self->failOrClose(Reason::connect_timeout, "the upstream sent nothing for idle_timeout",
                        CloseCause::idle_timeout);
      return;
    }
    timeval tv = toTimeval(self->options_.idle_timeout - idle);
    evtimer_add(self->idle_timer_.get(), &tv);
  }

  static void onUpPaceTimer(evutil_socket_t, short, void* arg) {
    static_cast<StreamForwarder*>(arg)->onPaceTimer(PaceDirection::up);
  }

  static void onDownPaceTimer(evutil_socket_t, short, void* arg) {
    static_cast<StreamForwarder*>(arg)->onPaceTimer(PaceDirection::down);
  }

  void onPaceTimer(PaceDirection direction) {
    if (finished_) {
      return;
    }
    resume(direction, Clock::now());
    pump();
  }

  // --- pacing (a bandwidth quota)

  PaceGate& gateOf(PaceDirection direction) {
    return direction == PaceDirection::up ? up_pace_ : down_pace_;
  }

  // The bytes the next body read in `direction` may take. 0: none, and the
  // direction reads nothing until its timer (its source backs up meanwhile).
  size_t allowance(PaceDirection direction) { return gateOf(direction).allowance(Clock::now()); }

  // `bytes` of a body were read in `direction`: they come off the budget.
  void consume(PaceDirection direction, size_t bytes) {
    gateOf(direction).consume(bytes, Clock::now());
  }

  void resume(PaceDirection direction, Clock::time_point now) {
    if (gateOf(direction).resume(now)) {
      last_activity_ = now;  // waiting for the budget is not idleness
    }
  }

  // Moves as many bytes as every side allows, then waits for the readiness
  // that the blocked operations need.
  void pump() {
    if (finished_) {
      return;
    }
    if (!initial_body_.empty()) {
      std::string initial = std::move(initial_body_);
      initial_body_.clear();
      takeRequestBody(initial, false);
      if (finished_) {
        return;
      }
    }
    bool progress = true;
    for (int round = 0; progress && round < kMaxRounds; ++round) {
      progress = false;
      if (handshaking_) {
        Stream::Result r = upstream_->handshake();
        if (r.status == Stream::Io::ok) {
          handshaking_ = false;
          progress = true;
        } else if (r.status == Stream::Io::would_block) {
          break;
        } else {
          result_.upstream_tls_error = true;
          failOrClose(Reason::upstream_tls_failed, upstream_->error(),
                      CloseCause::upstream_tls_failed);
          return;
        }
      }
      progress |= writeUpstream();
      if (finished_) {
        return;
      }
      progress |= readClient();
      if (finished_) {
        return;
      }
      progress |= writeClient();
      if (finished_) {
        return;
      }
      progress |= readUpstream();
      if (finished_) {
        return;
      }
      if (exchangeComplete()) {
        complete();
        return;
      }
    }
    if (progress) {
      // More to do, but the other connections get their turn first.
      event_active(kick_.get(), EV_TIMEOUT, 0);
    }
    releaseIdlePipes();
    updateInterest();
  }

  // --- request: client -> upstream

  bool writeUpstream() {
    if (handshaking_ || upstream_write_blocked_ || upstream_write_failed_) {
      return false;
    }
    bool progress = false;
    while (to_upstream_.pending() > 0) {
      std::string_view out = to_upstream_.front();
      Stream::Result r = upstream_->write(out.data(), out.size());
      if (r.status == Stream::Io::ok && r.bytes > 0) {
        to_upstream_.consume(r.bytes);
        result_.bytes_up += r.bytes;
        last_activity_ = Clock::now();
        progress = true;
        if (upstream_plain_ && r.bytes < out.size()) {
          upstream_write_blocked_ = true;  // the socket is full: wait for it
          return progress;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        upstream_write_blocked_ = true;
        return progress;
      }
      upstreamWriteFailed();
      return progress;
    }
    if (up_.in_pipe > 0) {
      Stream::Result r = spliceOut(up_, upstream_->fd(), &result_.bytes_up);
      if (r.status == Stream::Io::error) {
        upstreamWriteFailed();
      } else if (r.status == Stream::Io::would_block) {
        upstream_write_blocked_ = true;
      }
      progress |= r.bytes > 0;
    }
    return progress;
  }

  // The upstream went away while we were sending: a response may still be
  // readable (S3 answers an early 403 and closes), so stop sending only.
  void upstreamWriteFailed() {
    upstream_write_failed_ = true;
    to_upstream_.clear();
    dropPipe(up_);
    result_.upstream_reset = true;
  }

  bool readClient() {
    bool progress = false;
    while (!request_body_.done() && !client_eof_ && !upstream_write_failed_ &&
           !(client_read_blocked_ && !client_.hasBufferedInput())) {
      Stream::Result r;
      size_t limit = 0;
      if (spliceReady(up_, request_body_, to_upstream_)) {
        if (up_.full || up_.in_pipe >= up_.pipe.capacity()) {
          break;  // the upstream drains the pipe first
        }
        if ((limit = allowance(PaceDirection::up)) == 0) {
          break;  // out of bandwidth budget: the pace timer resumes it
        }
        r = spliceIn(up_, client_.fd(), request_body_, limit, &client_read_blocked_);
        if (up_.refused) {
          continue;  // copied from now on
        }
      } else {
        if (to_upstream_.pending() >= options_.buffer_bytes) {
          break;
        }
        if ((limit = allowance(PaceDirection::up)) == 0) {
          break;
        }
        size_t room = std::min(options_.buffer_bytes - to_upstream_.pending(), limit);
        char* into = to_upstream_.tail(room);
        r = client_.read(into, room);
        if (r.status == Stream::Io::ok) {
          if (client_plain_ && r.bytes < room) {
            client_read_blocked_ = true;  // drained: the next read waits for readiness
          }
          takeRequestBody(std::string_view(into, r.bytes), true);
        }
      }
      if (r.status == Stream::Io::ok) {
        last_activity_ = Clock::now();
        progress = true;
        if (finished_) {
          return true;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        if (!up_.full) {
          client_read_blocked_ = true;
        }
        break;
      }
      // The client left before its request body ended.
      client_eof_ = true;
      if (r.status == Stream::Io::error) {
        finish(CloseCause::client_error, false);
      } else if (!response_started_) {
        finish(CloseCause::client_eof, false);
      }
      return true;
    }
    return progress;
  }

  // `bytes` came from the client after the head; `in_place`: they were read
  // into to_upstream_'s tail (not yet committed).
  void takeRequestBody(std::string_view bytes, bool in_place) {
    if (bytes.empty()) {
      return;
    }
    size_t taken = 0;
    if (!request_body_.done()) {
      bool done = false;
      BodyError error = BodyError::none;
      taken = request_body_.feed(bytes, &done, &error);
      consume(PaceDirection::up, taken);
      if (error != BodyError::none) {
        // A request body we cannot frame: nothing more of it goes upstream.
        failOrClose(Reason::bad_framing, std::string(bodyErrorName(error)),
                    CloseCause::bad_framing);
        return;
      }
    }
    if (taken < bytes.size()) {
      // The next request, pipelined: it waits for the session.
      result_.leftover.append(bytes.substr(taken));
    }
    if (in_place) {
      to_upstream_.commit(taken);
    } else {
      to_upstream_.append(bytes.substr(0, taken));
    }
  }

  // --- response: upstream -> client

  bool writeClient() {
    if (client_write_blocked_) {
      return false;
    }
    bool progress = false;
    while (to_client_.pending() > 0) {
      std::string_view out = to_client_.front();
      Stream::Result r = client_.write(out.data(), out.size());
      if (r.status == Stream::Io::ok && r.bytes > 0) {
        to_client_.consume(r.bytes);
        result_.bytes_down += r.bytes;
        last_activity_ = Clock::now();
        progress = true;
        if (client_plain_ && r.bytes < out.size()) {
          client_write_blocked_ = true;
          return progress;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        client_write_blocked_ = true;
        return progress;
      }
      finish(CloseCause::client_error, false);
      return true;
    }
    if (down_.in_pipe > 0) {
      Stream::Result r = spliceOut(down_, client_.fd(), &result_.bytes_down);
      if (r.status == Stream::Io::error) {
        finish(CloseCause::client_error, false);
        return true;
      }
      if (r.status == Stream::Io::would_block) {
        client_write_blocked_ = true;
      }
      progress |= r.bytes > 0;
    }
    return progress;
  }

  bool readUpstream() {
    bool progress = false;
    while (!handshaking_ && !response_done_ && !upstream_eof_ &&
           !(upstream_read_blocked_ && !upstream_->hasBufferedInput())) {
      Stream::Result r;
      size_t limit = 0;
      if (head_done_ && spliceReady(down_, response_body_, to_client_)) {
        if (down_.full || down_.in_pipe >= down_.pipe.capacity()) {
          break;  // the client drains the pipe first
        }
        if ((limit = allowance(PaceDirection::down)) == 0) {
          break;  // out of bandwidth budget: the pace timer resumes it
        }
        r = spliceIn(down_, upstream_->fd(), response_body_, limit, &upstream_read_blocked_);
        if (down_.refused) {
          continue;
        }
        if (r.status == Stream::Io::ok && response_body_.done()) {
          response_done_ = true;
        }
      } else {
        if (to_client_.pending() >= options_.buffer_bytes) {
          break;
        }
        // Body reads are paced; heads are not (max_header_bytes bounds them).
        limit = head_done_ ? allowance(PaceDirection::down) : kScratchBytes;
        if (limit == 0) {
          break;
        }
        // Heads are read apart (they are rewritten) into the thread's
        // scratch; body bytes in place.
        size_t room = std::min(options_.buffer_bytes - to_client_.pending(), limit);
        char* into = head_done_ ? to_client_.tail(room) : threadScratch().data();
        r = upstream_->read(into, room);
        if (r.status == Stream::Io::ok) {
          upstream_spoke_ = upstream_spoke_ || r.bytes > 0;
          if (upstream_plain_ && r.bytes < room) {
            upstream_read_blocked_ = true;
          }
          if (head_done_) {
            takeResponseBody(std::string_view(into, r.bytes), true);
          } else {
            takeResponseHeads(std::string_view(into, r.bytes));
          }
        }
      }
      if (r.status == Stream::Io::ok) {
        last_activity_ = Clock::now();
        progress = true;
        if (finished_) {
          return true;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        if (!down_.full) {
          upstream_read_blocked_ = true;
        }
        break;
      }
      upstream_eof_ = true;
      if (r.status == Stream::Io::error) {
        result_.upstream_reset = true;
      }
      onUpstreamEof(r.status == Stream::Io::error);
      return true;
    }
    return progress;
  }

  void takeResponseHeads(std::string_view bytes) {
    if (head_buffer_.empty()) {
      parseHeads(bytes);
      return;
    }
    // A head that trickles in is gathered; parsing resumes where it stopped.
    std::string gathered = std::move(head_buffer_);
    head_buffer_.clear();
    gathered.append(bytes);
    parseHeads(gathered);
  }

  // Parses response heads from `input`: 1xx heads are relayed as they come,
  // the final one sets the body framing, and the bytes after it start the
  // body. An incomplete head is kept in head_buffer_.
  void parseHeads(std::string_view input) {
    ParseLimits limits{options_.max_header_bytes, options_.max_headers};
    while (!head_done_ && !finished_) {
      ResponseParseResult parsed = parseResponseHead(input, limits, head_checked_);
      if (parsed.status == ParseStatus::incomplete) {
        head_checked_ = input.size();
        head_buffer_.assign(input);
        return;
      }
      head_checked_ = 0;
      if (parsed.status == ParseStatus::error) {
        failOrClose(Reason::upstream_bad_response,
                    "the upstream sent an invalid response head (" +
                        std::string(upstreamErrorName(parsed.error)) + ")",
                    CloseCause::bad_response);
        return;
      }
      const ResponseHead& head = parsed.head;
      size_t used = head.head_length;
      if (head.status_code == 101) {
        // We never ask for an upgrade (Upgrade is hop-by-hop and dropped).
        failOrClose(Reason::upstream_bad_response,
                    "the upstream switched protocols (101) without being asked to",
                    CloseCause::bad_response);
        return;
      }
      if (head.interim()) {
        // RFC 9110 section 15.2: no 1xx to an HTTP/1.0 client.
        if (!client_http10_) {
          appendHead(rewriteResponseHead(head), 0);
        }
        input.remove_prefix(used);
        continue;
      }
      ResponseFraming framing = checkResponseFraming(method_, head);
      if (framing.error != UpstreamError::none) {
        failOrClose(Reason::upstream_bad_response,
                    "the upstream response has invalid framing (" +
                        std::string(upstreamErrorName(framing.error)) + ")",
                    CloseCause::bad_response);
        return;
      }
      result_.status = head.status_code;
      upstream_reusable_ = framing.reusable;
      response_body_ = BodyFramer::forFraming(framing.body);
      // A final response before the client's request body has all arrived (an
      // early error, an Expect: 100-continue refused) ends the client connection:
      // the rest of that body would otherwise be read as the next request.
      keep_client_ = client_wants_keep_alive_ && framing.body.kind != BodyKind::until_close &&
                     request_body_.done();
      ConnectionField add = ConnectionField::close;
      if (keep_client_) {
        // An HTTP/1.0 client keeps the connection only when told so.
        add = client_http10_ ? ConnectionField::keep_alive : ConnectionField::none;
      }
      std::string_view rest = input.substr(used);
      appendHead(rewriteResponseHead(head, add), rest.size());
      head_done_ = true;
      if (response_body_.done()) {
        response_done_ = true;
        if (!rest.empty()) {
          upstream_reusable_ = false;  // bytes nobody asked for
        }
        return;
      }
      takeResponseBody(rest, false);
    }
  }

  // `then`: body bytes about to follow the head, for one allocation.
  void appendHead(const HeadPieces& pieces, size_t then) {
    response_started_ = true;
    to_client_.tail(pieces.size() + then);
    for (std::string_view piece : pieces.pieces()) {
      to_client_.append(piece);
    }
  }

  // `in_place`: the bytes were read into to_client_'s tail (not yet committed).
  void takeResponseBody(std::string_view bytes, bool in_place) {
    if (bytes.empty()) {
      return;
    }
    if (response_done_) {
      upstream_reusable_ = false;
      return;
    }
    bool done = false;
    BodyError error = BodyError::none;
    size_t taken = response_body_.feed(bytes, &done, &error);
    consume(PaceDirection::down, taken);
    if (in_place) {
      to_client_.commit(taken);
    } else {
      to_client_.append(bytes.substr(0, taken));
    }
    if (error != BodyError::none) {
      // The head is already with the client: all we can do is close.
      finish(CloseCause::bad_response_body, false);
      return;
    }
    if (done) {
      response_done_ = true;
      if (taken < bytes.size()) {
        upstream_reusable_ = false;
      }
    }
  }

  void onUpstreamEof(bool error) {
    upstream_reusable_ = false;
    result_.upstream_silent = !upstream_spoke_;
    if (!head_done_) {
      failOrClose(Reason::connect_failed,
                  error ? "the upstream reset the connection before responding"
                        : "the upstream closed the connection before responding",
                  error ? CloseCause::upstream_error : CloseCause::upstream_eof);
      return;
    }
    if (response_body_.atEof() == BodyError::none && upstream_->cleanEnd()) {
      response_done_ = true;  // a body delimited by the close
      keep_client_ = false;
      return;
    }
    // Truncated: the client gets what came, then a close, never a clean end.
    truncated_ = true;
  }

  // --- splice(2) between two plain sockets

  // Whether the next body bytes of this way go through its pipe: they do
  // while the pipe holds bytes; a new run starts only when nothing waits in
  // the Outbox (order), the body may be moved unseen (a known length or until
  // close) and enough of it is left, and a pipe is to be had.
  bool spliceReady(SpliceWay& way, const BodyFramer& body, const Outbox& box) {
    if (way.in_pipe > 0) {
      return true;
    }
    if (!plain_ || way.refused || box.pending() > 0 || body.skippable() < kMinSpliceBytes) {
      return false;
    }
    if (!way.pipe) {
      if (!pool_) {
        pool_ = &PipePool::local();
        pool_thread_ = std::this_thread::get_id();
        pool_->attach();
      }
      way.pipe = pool_->acquire();  // none to be had: copy through the Outbox
    }
    return static_cast<bool>(way.pipe);
  }

  // Splices body bytes from `fd` into the pipe, never more than the body has
  // left (not a byte of the next message), than the pipe takes, nor than
  // `limit` (the pacer's allowance).
  // would_block: the socket is drained, or the pipe full (way.full). A short
  // splice sets *drained: the next one waits for readiness.
  Stream::Result spliceIn(SpliceWay& way, int fd, BodyFramer& body, size_t limit, bool* drained) {
    size_t room = std::min(way.pipe.capacity() - way.in_pipe, limit);
    size_t want = static_cast<size_t>(std::min<uint64_t>(room, body.skippable()));
    while (true) {
      ssize_t n = splice(fd, nullptr, way.pipe.writeFd(), nullptr, want, kSpliceFlags);
      if (n > 0) {
        auto moved = static_cast<size_t>(n);
        way.in_pipe += moved;
        body.skip(moved);
        consume(&way == &up_ ? PaceDirection::up : PaceDirection::down, moved);
        // Short: the socket is drained (or the pipe's slots are used up,
        // which the next attempt finds out).
        *drained = moved < want;
        return {Stream::Io::ok, moved};
      }
      if (n == 0) {
        return {Stream::Io::eof, 0};
      }
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN) {
        // With bytes in the pipe it may be the pipe that is full (its slots
        // can run out before its bytes): wait for the destination to drain it.
        way.full = way.in_pipe > 0;
        return {Stream::Io::would_block, 0};
      }
      if ((errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) && way.in_pipe == 0) {
        way.refused = true;
        dropPipe(way);
        return {Stream::Io::would_block, 0};
      }
      return {Stream::Io::error, 0};
    }
  }

  // Splices what the pipe holds to `fd`, counting it in *counter.
  Stream::Result spliceOut(SpliceWay& way, int fd, uint64_t* counter) {
    Stream::Result result{Stream::Io::ok, 0};
    while (way.in_pipe > 0) {
      ssize_t n = splice(way.pipe.readFd(), nullptr, fd, nullptr, way.in_pipe, kSpliceFlags);
      if (n > 0) {
        auto moved = static_cast<size_t>(n);
        bool short_write = moved < way.in_pipe;
        way.in_pipe -= moved;
        way.full = false;
        *counter += moved;
        result.bytes += moved;
        last_activity_ = Clock::now();
        if (short_write) {
          result.status = Stream::Io::would_block;  // the socket is full
          return result;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      result.status = n < 0 && errno == EAGAIN ? Stream::Io::would_block : Stream::Io::error;
      return result;
    }
    return result;
  }

  // An empty pipe whose source is drained (or whose body has ended) goes back
  // to the pool: an idle exchange holds no pipe.
  void releaseIdlePipes() {
    if (pool_ == nullptr) {
      return;
    }
    if (up_.pipe && up_.in_pipe == 0 && (client_read_blocked_ || request_body_.done())) {
      pool_->release(std::move(up_.pipe), true);
      up_.full = false;
    }
    if (down_.pipe && down_.in_pipe == 0 && (upstream_read_blocked_ || response_done_)) {
      pool_->release(std::move(down_.pipe), true);
      down_.full = false;
    }
  }

  // Closes a pipe and forgets its bytes (a way that failed or gave up).
  static void dropPipe(SpliceWay& way) {
    way.pipe.reset();
    way.in_pipe = 0;
    way.full = false;
  }

  // Gives the pipes back (empty ones to the pool) and leaves the pool. Off
  // the thread that joined it (its pool may be gone) they are only closed.
  void releasePipes() {
    if (pool_ == nullptr) {
      return;
    }
    if (std::this_thread::get_id() == pool_thread_) {
      for (SpliceWay* way : {&up_, &down_}) {
        pool_->release(std::move(way->pipe), way->in_pipe == 0);
      }
      pool_->detach();
    }
    dropPipe(up_);
    dropPipe(down_);
    pool_ = nullptr;
  }

  // --- the end

  bool exchangeComplete() const {
    if (to_client_.pending() > 0 || down_.in_pipe > 0) {
      return false;
    }
    return truncated_ || response_done_;
  }

  void complete() {
    bool request_complete = request_body_.done() && to_upstream_.pending() == 0 &&
                            up_.in_pipe == 0 && !upstream_write_failed_;
    if (truncated_) {
      result_.truncated = true;
      finish(CloseCause::upstream_eof, false);
      return;
    }
    result_.client_reusable = keep_client_ && request_complete && !client_eof_;
    if (upstream_reusable_ && request_complete && !upstream_eof_) {
      result_.upstream = std::move(upstream_);
    }
    finish(result_.client_reusable ? CloseCause::keep_alive : CloseCause::proxy_close, true);
  }

  // Before any response byte went to the client the session can still answer
  // with an error status; after that, closing is all that is left.
  void failOrClose(Reason reason, const std::string& detail, CloseCause close) {
    if (reason == Reason::upstream_bad_response) {
      result_.upstream_bad_response = true;
    }
    if (!response_started_ && result_.bytes_down == 0) {
      result_.error = reason;
      result_.error_detail = detail;
    }
    finish(close, false);
  }

  void finish(CloseCause close, bool clean) {
    if (finished_) {
      return;
    }
    finished_ = true;
    result_.close = close;
    if (!clean) {
      result_.client_reusable = false;
      result_.upstream.reset();
    }
    idle_timer_.reset();
    kick_.reset();
    Clock::time_point now = Clock::now();
    for (PaceGate* gate : {&up_pace_, &down_pace_}) {
      gate->resume(now);  // a wait cut short still counts
      gate->stop();
    }
    releasePipes();
    // The socket events go after on_done: the owner and the pool add theirs
    // there first, so the sockets' interest never drops (no epoll_ctl). The
    // owner destroys this forwarder only later (see the contract).
    EventPtr events[] = {std::move(client_read_), std::move(client_write_),
                         std::move(upstream_read_), std::move(upstream_write_)};
    if (on_done_) {
      DoneCallback done = std::move(on_done_);
      done(std::move(result_));
    }
  }

  bool bodyWanted() const {
    return !request_body_.done() && !client_eof_ && !upstream_write_failed_;
  }

  void updateInterest() {
    short client = 0;
    short upstream = 0;
    // A paced direction does not watch its source: the pace timer resumes it.
    if (bodyWanted() && client_read_blocked_ && !up_pace_.waiting()) {
      client |= client_.readWants();
    }
    if ((to_client_.pending() > 0 || down_.in_pipe > 0) && client_write_blocked_) {
      client |= client_.writeWants();
    }
    if (handshaking_) {
      upstream |= upstream_->wantEvents();
    } else {
      if (!response_done_ && !upstream_eof_ && upstream_read_blocked_ && !down_pace_.waiting()) {
        upstream |= upstream_->readWants();
      }
      bool up_pending = to_upstream_.pending() > 0 || up_.in_pipe > 0;
      if (up_pending && !upstream_write_failed_ && upstream_write_blocked_) {
        upstream |= upstream_->writeWants();
      }
    }
    // An unwanted client read stays registered until it fires (see init). Not
    // while the body is wanted but has no room (a full pipe or buffer): the
    // client is readable then, and a registered read would wake the loop at
    // once, again and again, until the upstream drained.
    bool backed_up = bodyWanted() && !client_read_blocked_;
    bool keep_client_read = !backed_up && !client_read_unwanted_ && !up_pace_.waiting() &&
                            event_pending(client_read_.get(), EV_READ, nullptr);
    setEventWanted(client_read_.get(), (client & EV_READ) != 0 || keep_client_read);
    setEventWanted(client_write_.get(), (client & EV_WRITE) != 0);
    setEventWanted(upstream_read_.get(), (upstream & EV_READ) != 0);
    setEventWanted(upstream_write_.get(), (upstream & EV_WRITE) != 0);
  }

  event_base* base_;
  Stream& client_;
  std::unique_ptr<Stream> upstream_;
  ForwardOptions options_;
  DoneCallback on_done_;
  const bool plain_;  // both plain sockets: bodies of known length may be spliced
  const bool client_plain_;
  const bool upstream_plain_;
  std::string method_;
  bool client_wants_keep_alive_ = false;
  bool client_http10_ = false;
  bool keep_client_ = false;
  bool client_read_unwanted_ = false;  // the client was readable while no body was wanted

  Outbox to_upstream_;
  Outbox to_client_;
  SpliceWay up_;              // request body, client -> upstream
  SpliceWay down_;            // response body, upstream -> client
  PaceGate up_pace_;          // with a pacer: the request body's budget
  PaceGate down_pace_;        // the response body's
  PipePool* pool_ = nullptr;  // this thread's, joined at the first pipe
  std::thread::id pool_thread_;
  BodyFramer request_body_ = BodyFramer::none();
  BodyFramer response_body_ = BodyFramer::none();
  std::string initial_body_;  // client bytes that came with the request head
  std::string head_buffer_;   // a response head that came in pieces, until complete
  size_t head_checked_ = 0;

  // A plain socket that reported a short read (drained) or short write
  // (full), or would block: not tried again until it reports readiness. The
  // flags are cleared by any event on the socket (TLS needs either for either).
  bool client_read_blocked_ = false;
  bool client_write_blocked_ = false;
  bool upstream_read_blocked_ = false;
  bool upstream_write_blocked_ = false;

  bool handshaking_ = false;
  bool head_done_ = false;
  bool response_started_ = false;
  bool upstream_spoke_ = false;  // a byte came from the upstream
  bool response_done_ = false;
  bool upstream_reusable_ = false;
  bool upstream_eof_ = false;
  bool upstream_write_failed_ = false;
  bool client_eof_ = false;
  bool truncated_ = false;
  bool finished_ = false;

  EventPtr client_read_;
  EventPtr client_write_;
  EventPtr upstream_read_;
  EventPtr upstream_write_;
  EventPtr idle_timer_;
  EventPtr kick_;
  Clock::time_point last_activity_;
  ForwardResult result_;
};

}  // namespace

std::unique_ptr<Forwarder> Forwarder::start(event_base* base, Stream& client,
                                            std::unique_ptr<Stream> upstream,
                                            const RequestHead& head, const RequestFraming& framing,
                                            std::string_view after_head,
                                            const ForwardOptions& options, DoneCallback on_done) {
  auto forwarder = std::make_unique<StreamForwarder>(base, client, std::move(upstream), options,
                                                     std::move(on_done));
  if (!forwarder->init(head, framing, after_head)) {
    return nullptr;
  }
  return forwarder;
}

}  // namespace s3gate
