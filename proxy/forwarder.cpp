#include "proxy/forwarder.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "proxy/event_ptr.h"

namespace s3gate {

namespace {

using Clock = std::chrono::steady_clock;

// Bytes waiting for one destination; a write consumes from the front.
struct Outbox {
  std::string data;
  size_t pos = 0;
  size_t pending() const { return data.size() - pos; }
  void append(std::string_view bytes) {
    // Drop the consumed front once it outweighs what is left: a destination
    // that never drains completely must not make the buffer grow with the body.
    if (pos > 0 && pos >= data.size() - pos) {
      data.erase(0, pos);
      pos = 0;
    }
    data.append(bytes);
  }
  std::string_view front() const { return std::string_view(data).substr(pos); }
  void consume(size_t n) {
    pos += n;
    if (pos == data.size()) {
      data.clear();
      pos = 0;
    }
  }
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
        scratch_(std::make_unique<char[]>(options.buffer_bytes)) {}

  bool init(const RequestHead& head, const RequestFraming& framing, std::string_view after_head) {
    method_ = std::string(head.method);
    client_http10_ = head.version_minor == 0;
    client_wants_keep_alive_ = framing.keep_alive && options_.allow_client_keep_alive;
    request_body_ = BodyFramer::forFraming(framing.body);
    HeadPieces pieces = rewriteRequestHead(head);
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
    handshaking_ = upstream_->isTls();
    last_activity_ = Clock::now();
    timeval tv = toTimeval(options_.idle_timeout);
    evtimer_add(idle_timer_.get(), &tv);
    // The first pump runs from the loop, so on_done never runs inside start().
    event_active(kick_.get(), EV_TIMEOUT, 0);
    return true;
  }

  void stop() override { finish("shutdown", false); }

 private:
  static void onEvent(evutil_socket_t, short, void* arg) {
    static_cast<StreamForwarder*>(arg)->pump();
  }

  static void onIdle(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<StreamForwarder*>(arg);
    auto idle = std::chrono::duration_cast<Duration>(Clock::now() - self->last_activity_);
    if (idle >= self->options_.idle_timeout) {
      self->failOrClose(Reason::connect_timeout, "the upstream sent nothing for idle_timeout",
                        "idle_timeout");
      return;
    }
    timeval tv = toTimeval(self->options_.idle_timeout - idle);
    evtimer_add(self->idle_timer_.get(), &tv);
  }

  // Moves as many bytes as every side allows, then waits for the readiness
  // that the blocked operations need.
  void pump() {
    if (finished_) {
      return;
    }
    client_.clearWants();
    upstream_->clearWants();
    if (!initial_body_.empty()) {
      std::string initial = std::move(initial_body_);
      initial_body_.clear();
      takeRequestBody(initial);
      if (finished_) {
        return;
      }
    }
    bool progress = true;
    while (progress && !finished_) {
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
          failOrClose(Reason::upstream_tls_failed, upstream_->error(), "upstream_tls_failed");
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
    }
    if (finished_) {
      return;
    }
    if (exchangeComplete()) {
      complete();
      return;
    }
    updateInterest();
  }

  bool writeUpstream() {
    bool progress = false;
    while (!handshaking_ && to_upstream_.pending() > 0) {
      std::string_view out = to_upstream_.front();
      Stream::Result r = upstream_->write(out.data(), out.size());
      if (r.status == Stream::Io::ok && r.bytes > 0) {
        to_upstream_.consume(r.bytes);
        result_.bytes_up += r.bytes;
        last_activity_ = Clock::now();
        progress = true;
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        break;
      }
      // The upstream went away while we were sending: a response may still be
      // readable (S3 answers an early 403 and closes), so stop sending only.
      upstream_write_failed_ = true;
      to_upstream_ = Outbox{};
      result_.upstream_reset = true;
      break;
    }
    return progress;
  }

  bool readClient() {
    bool progress = false;
    while (!request_body_.done() && !client_eof_ && !upstream_write_failed_ &&
           to_upstream_.pending() < options_.buffer_bytes) {
      size_t room = options_.buffer_bytes - to_upstream_.pending();
      Stream::Result r = client_.read(scratch_.get(), room);
      if (r.status == Stream::Io::ok) {
        last_activity_ = Clock::now();
        takeRequestBody(std::string_view(scratch_.get(), r.bytes));
        progress = true;
        if (finished_) {
          return true;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        break;
      }
      // The client left before its request body ended.
      client_eof_ = true;
      if (r.status == Stream::Io::error) {
        finish("client_error", false);
      } else if (!response_started_) {
        finish("client_eof", false);
      }
      return progress;
    }
    return progress;
  }

  void takeRequestBody(std::string_view bytes) {
    if (bytes.empty()) {
      return;
    }
    if (request_body_.done()) {
      result_.leftover.append(bytes);
      return;
    }
    bool done = false;
    BodyError error = BodyError::none;
    size_t taken = request_body_.feed(bytes, &done, &error);
    if (error != BodyError::none) {
      // A request body we cannot frame: nothing more of it goes upstream.
      failOrClose(Reason::bad_framing, std::string(bodyErrorName(error)), "bad_framing");
      return;
    }
    to_upstream_.append(bytes.substr(0, taken));
    if (taken < bytes.size()) {
      result_.leftover.append(bytes.substr(taken));
    }
  }

  bool writeClient() {
    bool progress = false;
    while (to_client_.pending() > 0) {
      std::string_view out = to_client_.front();
      Stream::Result r = client_.write(out.data(), out.size());
      if (r.status == Stream::Io::ok && r.bytes > 0) {
        to_client_.consume(r.bytes);
        result_.bytes_down += r.bytes;
        last_activity_ = Clock::now();
        progress = true;
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        break;
      }
      finish("client_error", false);
      return progress;
    }
    return progress;
  }

  bool readUpstream() {
    bool progress = false;
    while (!handshaking_ && !response_done_ && !upstream_eof_ &&
           to_client_.pending() < options_.buffer_bytes) {
      size_t room = options_.buffer_bytes - to_client_.pending();
      Stream::Result r = upstream_->read(scratch_.get(), room);
      if (r.status == Stream::Io::ok) {
        last_activity_ = Clock::now();
        progress = true;
        takeResponse(std::string_view(scratch_.get(), r.bytes));
        if (finished_) {
          return true;
        }
        continue;
      }
      if (r.status == Stream::Io::would_block) {
        break;
      }
      upstream_eof_ = true;
      if (r.status == Stream::Io::error) {
        result_.upstream_reset = true;
      }
      progress = true;
      onUpstreamEof(r.status == Stream::Io::error);
      return progress;
    }
    return progress;
  }

  void takeResponse(std::string_view bytes) {
    if (!head_done_) {
      head_buffer_.append(bytes);
      parseHeads();
      return;
    }
    takeResponseBody(bytes);
  }

  // Parses response heads from head_buffer_: 1xx heads are relayed as they
  // come, the final one sets the body framing.
  void parseHeads() {
    ParseLimits limits{options_.max_header_bytes, options_.max_headers};
    while (!head_done_ && !finished_) {
      ResponseParseResult parsed = parseResponseHead(head_buffer_, limits, head_checked_);
      if (parsed.status == ParseStatus::incomplete) {
        head_checked_ = head_buffer_.size();
        return;
      }
      head_checked_ = 0;
      if (parsed.status == ParseStatus::error) {
        failOrClose(Reason::connect_failed,
                    "the upstream sent an invalid response head (" +
                        std::string(upstreamErrorName(parsed.error)) + ")",
                    "bad_response");
        return;
      }
      const ResponseHead& head = parsed.head;
      size_t used = head.head_length;
      if (head.status_code == 101) {
        // We never ask for an upgrade (Upgrade is hop-by-hop and dropped).
        failOrClose(Reason::connect_failed,
                    "the upstream switched protocols (101) without being asked to", "bad_response");
        return;
      }
      if (head.interim()) {
        // RFC 9110 section 15.2: no 1xx to an HTTP/1.0 client.
        if (!client_http10_) {
          appendHead(rewriteResponseHead(head));
        }
        head_buffer_.erase(0, used);
        continue;
      }
      ResponseFraming framing = checkResponseFraming(method_, head);
      if (framing.error != UpstreamError::none) {
        failOrClose(Reason::connect_failed,
                    "the upstream response has invalid framing (" +
                        std::string(upstreamErrorName(framing.error)) + ")",
                    "bad_response");
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
      appendHead(rewriteResponseHead(head, add));
      head_done_ = true;
      std::string rest = head_buffer_.substr(used);
      head_buffer_.clear();
      head_buffer_.shrink_to_fit();
      if (response_body_.done()) {
        response_done_ = true;
        if (!rest.empty()) {
          upstream_reusable_ = false;  // bytes nobody asked for
        }
        return;
      }
      takeResponseBody(rest);
    }
  }

  void appendHead(const HeadPieces& pieces) {
    response_started_ = true;
    for (std::string_view piece : pieces.pieces()) {
      to_client_.append(piece);
    }
  }

  void takeResponseBody(std::string_view bytes) {
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
    to_client_.append(bytes.substr(0, taken));
    if (error != BodyError::none) {
      // The head is already with the client: all we can do is close.
      finish("bad_response_body", false);
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
    if (!head_done_) {
      failOrClose(Reason::connect_failed,
                  error ? "the upstream reset the connection before responding"
                        : "the upstream closed the connection before responding",
                  error ? "upstream_error" : "upstream_eof");
      return;
    }
    if (response_body_.atEof() == BodyError::none) {
      response_done_ = true;  // a body delimited by the close
      keep_client_ = false;
      return;
    }
    // Truncated: the client gets what came, then a close, never a clean end.
    truncated_ = true;
  }

  bool exchangeComplete() const {
    if (truncated_ && to_client_.pending() == 0) {
      return true;
    }
    return response_done_ && to_client_.pending() == 0;
  }

  void complete() {
    bool request_complete =
        request_body_.done() && to_upstream_.pending() == 0 && !upstream_write_failed_;
    if (truncated_) {
      finish("upstream_eof", false);
      return;
    }
    result_.client_reusable = keep_client_ && request_complete && !client_eof_;
    if (upstream_reusable_ && request_complete && !upstream_eof_) {
      result_.upstream = std::move(upstream_);
    }
    finish(result_.client_reusable ? "keep_alive" : "proxy_close", true);
  }

  // Before any response byte went to the client the session can still answer
  // with an error status; after that, closing is all that is left.
  void failOrClose(Reason reason, const std::string& detail, const char* close) {
    if (!response_started_ && result_.bytes_down == 0) {
      result_.error = reason;
      result_.error_detail = detail;
    }
    finish(close, false);
  }

  void finish(const char* close, bool clean) {
    if (finished_) {
      return;
    }
    finished_ = true;
    result_.close = close;
    if (!clean) {
      result_.client_reusable = false;
      result_.upstream.reset();
    }
    client_read_.reset();
    client_write_.reset();
    upstream_read_.reset();
    upstream_write_.reset();
    idle_timer_.reset();
    kick_.reset();
    if (on_done_) {
      DoneCallback done = std::move(on_done_);
      done(std::move(result_));
    }
  }

  void updateInterest() {
    short client_wants = client_.wantEvents();
    short upstream_wants = upstream_->wantEvents();
    setEventWanted(client_read_.get(), (client_wants & EV_READ) != 0);
    setEventWanted(client_write_.get(), (client_wants & EV_WRITE) != 0);
    setEventWanted(upstream_read_.get(), (upstream_wants & EV_READ) != 0);
    setEventWanted(upstream_write_.get(), (upstream_wants & EV_WRITE) != 0);
  }

  event_base* base_;
  Stream& client_;
  std::unique_ptr<Stream> upstream_;
  ForwardOptions options_;
  DoneCallback on_done_;
  std::unique_ptr<char[]> scratch_;
  std::string method_;
  bool client_wants_keep_alive_ = false;
  bool client_http10_ = false;
  bool keep_client_ = false;

  Outbox to_upstream_;
  Outbox to_client_;
  BodyFramer request_body_ = BodyFramer::none();
  BodyFramer response_body_ = BodyFramer::none();
  std::string initial_body_;  // client bytes that came with the request head
  std::string head_buffer_;   // response head bytes until the head is complete
  size_t head_checked_ = 0;

  bool handshaking_ = false;
  bool head_done_ = false;
  bool response_started_ = false;
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
