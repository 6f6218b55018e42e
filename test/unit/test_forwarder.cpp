// The forwarder on one event_base between TCP loopback pairs, the test playing
// both the client and the origin: bodies of known length spliced through a
// pipe (byte-exact, exact byte counts, keep-alive afterwards, a body ending at
// a pipe boundary, a pipelined request after a body, the origin closing
// mid-body), the copying path for chunked and small bodies, and bodies paced
// by a bandwidth quota in both directions.

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "proxy/event_ptr.h"
#include "proxy/forwarder.h"
#include "proxy/pipe_pool.h"
#include "proxy/quota.h"

using namespace s3gate;

namespace {

const bool kSigpipeIgnored = signal(SIGPIPE, SIG_IGN) != SIG_ERR;

struct Pair {
  UniqueFd app;  // the test's end (client or origin), non-blocking
  UniqueFd fwd;  // the forwarder's end
};

// A connected TCP pair on 127.0.0.1, made with the proxy's own socket helpers.
Pair makeTcpPair() {
  std::string error;
  UniqueFd listener = listenOn(SocketAddress(*IpAddress::parse("127.0.0.1"), 0), 1, &error);
  REQUIRE(listener);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  REQUIRE(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0);
  bool in_progress = false;
  int err = 0;
  UniqueFd app = startConnect(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&bound)),
                              &in_progress, &err);
  REQUIRE(app);
  pollfd ready{listener.get(), POLLIN, 0};
  REQUIRE(poll(&ready, 1, 5000) == 1);
  UniqueFd fwd(accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  REQUIRE(fwd);
  return Pair{std::move(app), std::move(fwd)};
}

std::string pattern(size_t n, unsigned seed) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<char>((i * 7919 + (i >> 13) + seed) & 0xff);
  }
  return out;
}

// One end the test plays: sends `out` as the socket takes it, keeps what
// arrives, notes EOF.
struct Peer {
  explicit Peer(int socket) : fd(socket) {}

  int fd = -1;
  std::string out;
  size_t sent = 0;
  std::string in;
  bool eof = false;

  void step() {
    while (sent < out.size()) {
      ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      sent += static_cast<size_t>(n);
    }
    char buf[65536];
    while (!eof) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        in.append(buf, static_cast<size_t>(n));
      } else {
        eof = n == 0;
        break;
      }
    }
  }
};

// The pipe capacity the pool hands out here (the kernel may refuse the size asked).
size_t pipeCapacity() {
  Pipe pipe = PipePool::local().acquire();
  REQUIRE(pipe);
  return pipe.capacity();
}

struct Harness {
  EventBasePtr base{event_base_new()};
  Pair client = makeTcpPair();
  Pair origin = makeTcpPair();
  std::unique_ptr<Stream> client_stream = Stream::plain(std::move(client.fwd));
  std::unique_ptr<Stream> upstream = Stream::plain(std::move(origin.fwd));
  Peer client_peer = Peer(client.app.get());
  Peer origin_peer = Peer(origin.app.get());
  std::string request;  // the head the session parsed, and bytes read after it
  std::optional<ForwardResult> result;
  std::unique_ptr<Forwarder> forwarder;
  ForwardOptions options;
  size_t max_pipes = 0;  // most pipes open at once during the run

  // Starts one exchange for `head` ("PUT http://... HTTP/1.1\r\n...\r\n\r\n");
  // `after_head` is what the session read past the head.
  void start(const std::string& head, const std::string& after_head = {}) {
    request = head + after_head;
    ParseResult parsed = parseRequestHead(request, ParseLimits{});
    REQUIRE(parsed.status == ParseStatus::complete);
    REQUIRE(parsed.head.head_length == head.size());
    RequestFraming framing = checkRequestFraming(parsed.head, true);
    REQUIRE(framing.reason == Reason::none);
    result.reset();
    REQUIRE(upstream);
    forwarder = Forwarder::start(base.get(), *client_stream, std::move(upstream), parsed.head,
                                 framing, std::string_view(request).substr(head.size()), options,
                                 [this](ForwardResult r) {
                                   upstream = std::move(r.upstream);
                                   result = std::move(r);
                                 });
    REQUIRE(forwarder);
  }

  template <typename F>
  bool runUntil(F done, std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      client_peer.step();
      origin_peer.step();
      event_base_loop(base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
      max_pipes = std::max(max_pipes, PipePool::live());
    }
    return done();
  }
  bool finish() {
    bool done = runUntil([this] { return result.has_value(); });
    forwarder.reset();
    return done;
  }
};

std::string putHead(size_t length, const char* path = "/b/key") {
  return std::string("PUT http://s3.example.com") + path +
         " HTTP/1.1\r\nHost: s3.example.com\r\nContent-Length: " + std::to_string(length) +
         "\r\n\r\n";
}

const std::string kGetHead =
    "GET http://s3.example.com/b/key HTTP/1.1\r\nHost: s3.example.com\r\n\r\n";
// What the origin receives for kGetHead: origin-form, fields as they were.
const std::string kGetUpstream = "GET /b/key HTTP/1.1\r\nHost: s3.example.com\r\n\r\n";

std::string okHead(size_t length) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n";
}

// A quota budget's own pacer, watched: what each direction took, its largest
// single take, how often it ran out and how long it waited.
class WatchedPacer final : public BandwidthPacer {
 public:
  struct Way {
    size_t taken = 0;
    size_t largest = 0;
    int pauses = 0;
    double waited = 0;
  };
  Way up;
  Way down;

  explicit WatchedPacer(uint64_t bandwidth_bits) {
    QuotaRule rule;
    rule.name = "bw";
    rule.bandwidth_bits = bandwidth_bits;
    quotas_ = {rule};
    REQUIRE(table_
                .admit(quotas_, *IpAddress::parse("127.0.0.1"), "", false, lease_,
                       std::chrono::steady_clock::now())
                .reason == Reason::none);
    inner_ = QuotaTable::pacer(lease_, nullptr);
    REQUIRE(inner_);
  }

  size_t allowance(PaceDirection direction, Clock::time_point now) override {
    return inner_->allowance(direction, now);
  }
  void consume(PaceDirection direction, size_t bytes, Clock::time_point now) override {
    Way& way = of(direction);
    way.taken += bytes;
    way.largest = std::max(way.largest, bytes);
    inner_->consume(direction, bytes, now);
  }
  Duration resumeAfter(PaceDirection direction, Clock::time_point now) override {
    ++of(direction).pauses;
    return inner_->resumeAfter(direction, now);
  }
  void paced(PaceDirection direction, double seconds) override { of(direction).waited += seconds; }

 private:
  Way& of(PaceDirection direction) { return direction == PaceDirection::up ? up : down; }
  QuotaTable table_;
  std::vector<QuotaRule> quotas_;
  QuotaLease lease_;
  std::shared_ptr<BandwidthPacer> inner_;
};

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `data` in chunked framing, `piece` bytes a chunk, then the last chunk.
std::string chunkedBody(const std::string& data, size_t piece) {
  std::string chunked;
  for (size_t at = 0; at < data.size(); at += piece) {
    std::string part = data.substr(at, piece);
    char size[32];
    snprintf(size, sizeof(size), "%zx\r\n", part.size());
    chunked += size + part + "\r\n";
  }
  return chunked + "0\r\n\r\n";
}

}  // namespace

TEST_CASE("forwarder splices a PUT and a GET byte-exact, then keeps both connections",
          "[forwarder]") {
  const size_t before = PipePool::live();
  Harness h;
  const std::string body = pattern(4 * 1024 * 1024 + 17, 1);
  const std::string head = putHead(body.size());
  const std::string upstream_head =
      "PUT /b/key HTTP/1.1\r\nHost: s3.example.com\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n";
  // The session read the head and the first bytes of the body.
  h.start(head, body.substr(0, 1000));
  h.client_peer.out = body.substr(1000);
  REQUIRE(
      h.runUntil([&] { return h.origin_peer.in.size() == upstream_head.size() + body.size(); }));
  REQUIRE(h.origin_peer.in == upstream_head + body);
  REQUIRE(h.max_pipes > before);  // the body went through a pipe
  h.origin_peer.out = okHead(0);
  REQUIRE(h.finish());
  CHECK(h.result->error == Reason::none);
  CHECK(h.result->status == 200);
  CHECK(h.result->bytes_up == upstream_head.size() + body.size());
  CHECK(h.result->bytes_down == okHead(0).size());
  CHECK(h.result->client_reusable);
  CHECK(h.result->leftover.empty());
  REQUIRE(h.upstream);  // kept for the next request
  REQUIRE(h.runUntil([&] { return h.client_peer.in == okHead(0); }));

  // The follow-up on the same connections: a GET whose body is spliced.
  const std::string answer = pattern(3 * 1024 * 1024 + 5, 2);
  h.client_peer.in.clear();
  h.origin_peer.in.clear();
  h.start(kGetHead);
  REQUIRE(h.runUntil([&] { return h.origin_peer.in == kGetUpstream; }));
  h.origin_peer.out = okHead(answer.size()) + answer;
  h.origin_peer.sent = 0;
  h.max_pipes = 0;
  REQUIRE(h.finish());
  REQUIRE(h.runUntil(
      [&] { return h.client_peer.in.size() >= okHead(answer.size()).size() + answer.size(); }));
  CHECK(h.client_peer.in == okHead(answer.size()) + answer);
  CHECK(h.max_pipes > before);
  CHECK(h.result->bytes_up == kGetUpstream.size());
  CHECK(h.result->bytes_down == okHead(answer.size()).size() + answer.size());
  CHECK(h.result->client_reusable);
  CHECK(h.upstream);
  CHECK(PipePool::live() == before);  // nothing held once the forwarders are gone
}

TEST_CASE("forwarder: a body that ends exactly at a pipe boundary", "[forwarder]") {
  const size_t capacity = pipeCapacity();
  for (size_t length : {capacity, 2 * capacity, 3 * capacity + 1}) {
    DYNAMIC_SECTION("response body of " << length << " bytes") {
      Harness h;
      const std::string answer = pattern(length, 3);
      h.start(kGetHead);
      h.origin_peer.out = okHead(answer.size());
      REQUIRE(h.runUntil([&] { return h.client_peer.in.size() == okHead(answer.size()).size(); }));
      h.origin_peer.out += answer;  // the body comes after the head, in its own reads
      REQUIRE(h.finish());
      REQUIRE(
          h.runUntil([&] { return h.client_peer.in.size() >= okHead(length).size() + length; }));
      CHECK(h.client_peer.in == okHead(length) + answer);
      CHECK(h.result->bytes_down == okHead(length).size() + length);
      CHECK(h.result->client_reusable);
      CHECK(h.upstream);
    }
    DYNAMIC_SECTION("request body of " << length << " bytes") {
      Harness h;
      const std::string body = pattern(length, 4);
      h.start(putHead(length));
      h.client_peer.out = body;
      const size_t want = putHead(length).size() - std::string("http://s3.example.com").size();
      REQUIRE(h.runUntil([&] { return h.origin_peer.in.size() == want + length; }));
      CHECK(h.origin_peer.in.substr(want) == body);
      h.origin_peer.out = okHead(0);
      REQUIRE(h.finish());
      CHECK(h.result->bytes_up == want + length);
      CHECK(h.result->client_reusable);
    }
  }
}

TEST_CASE("forwarder: a request pipelined right after a spliced body stays for the session",
          "[forwarder]") {
  Harness h;
  const std::string body = pattern(1024 * 1024 + 3, 5);
  const std::string next = kGetHead;
  h.start(putHead(body.size()), body.substr(0, 10));
  h.client_peer.out = body.substr(10) + next;
  const size_t want = putHead(body.size()).size() - std::string("http://s3.example.com").size();
  REQUIRE(h.runUntil([&] { return h.origin_peer.in.size() >= want + body.size(); }));
  h.origin_peer.out = okHead(2) + "ok";
  REQUIRE(h.finish());
  CHECK(h.origin_peer.in.size() == want + body.size());  // not a byte of the next request
  CHECK(h.origin_peer.in.substr(want) == body);
  CHECK(h.result->client_reusable);
  // What the forwarder read past the body is in leftover; the rest is still
  // in the client socket, in order.
  std::string rest = h.result->leftover;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (rest.size() < next.size() && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = recv(h.client_stream->fd(), buf, sizeof(buf), 0);
    if (n > 0) {
      rest.append(buf, static_cast<size_t>(n));
    }
  }
  CHECK(rest == next);
}

TEST_CASE("forwarder: an upload the origin does not take leaves the loop asleep", "[forwarder]") {
  // The client has more body than the pipe and the origin's socket hold: the
  // forwarder must stop watching the client until there is room, not wake
  // the loop over and over because the client stays readable.
  Harness h;
  const size_t length = 64 * 1024 * 1024;
  h.start(putHead(length));
  h.client_peer.out = pattern(48 * 1024 * 1024, 12);
  auto fill_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (std::chrono::steady_clock::now() < fill_until) {
    h.client_peer.step();  // the origin reads nothing
    event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
  }
  REQUIRE(h.client_peer.sent < h.client_peer.out.size());  // backed up to the client
  bool ended = false;
  EventPtr timer(evtimer_new(
      h.base.get(), [](evutil_socket_t, short, void* arg) { *static_cast<bool*>(arg) = true; },
      &ended));
  timeval tv{0, 200 * 1000};
  evtimer_add(timer.get(), &tv);
  int wakeups = 0;
  while (!ended && wakeups < 100000) {
    event_base_loop(h.base.get(), EVLOOP_ONCE);  // blocks until something is ready
    ++wakeups;
  }
  CHECK(wakeups < 20);
  CHECK_FALSE(h.result.has_value());
}

TEST_CASE("forwarder: the origin closing mid-body ends the exchange with what came",
          "[forwarder]") {
  Harness h;
  const std::string part = pattern(1024 * 1024, 6);
  h.start(kGetHead);
  h.origin_peer.out = okHead(4 * 1024 * 1024);
  REQUIRE(h.runUntil([&] { return h.client_peer.in.size() == okHead(4 * 1024 * 1024).size(); }));
  h.origin_peer.out += part;
  REQUIRE(h.runUntil([&] { return h.origin_peer.sent == h.origin_peer.out.size(); }));
  shutdown(h.origin.app.get(), SHUT_WR);
  REQUIRE(h.finish());
  CHECK(h.result->close == CloseCause::upstream_eof);
  CHECK(h.result->error == Reason::none);  // the head had gone out: close, no error status
  CHECK_FALSE(h.result->client_reusable);
  CHECK_FALSE(h.upstream);
  CHECK(h.result->bytes_down == okHead(4 * 1024 * 1024).size() + part.size());
  REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= h.result->bytes_down; }));
  CHECK(h.client_peer.in.substr(okHead(4 * 1024 * 1024).size()) == part);
}

TEST_CASE("forwarder: a response read until the close is spliced to the end", "[forwarder]") {
  Harness h;
  const std::string answer = pattern(2 * 1024 * 1024 + 9, 7);
  const std::string head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
  h.start(kGetHead);
  h.origin_peer.out = head;
  REQUIRE(h.runUntil([&] { return !h.client_peer.in.empty(); }));
  h.origin_peer.out += answer;
  REQUIRE(h.runUntil([&] { return h.origin_peer.sent == h.origin_peer.out.size(); }));
  shutdown(h.origin.app.get(), SHUT_WR);
  REQUIRE(h.finish());
  CHECK(h.result->error == Reason::none);
  CHECK_FALSE(h.result->client_reusable);
  CHECK_FALSE(h.upstream);
  const std::string sent_head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
  CHECK(h.result->bytes_down == sent_head.size() + answer.size());
  REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= h.result->bytes_down; }));
  CHECK(h.client_peer.in == sent_head + answer);
}

TEST_CASE("forwarder copies chunked and small bodies, counting every byte", "[forwarder]") {
  Harness h;
  const std::string chunked = chunkedBody(pattern(300000, 8), 70000);
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  h.start(kGetHead);
  h.origin_peer.out = head;
  REQUIRE(h.runUntil([&] { return !h.client_peer.in.empty(); }));
  h.origin_peer.out += chunked;
  REQUIRE(h.finish());
  REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= head.size() + chunked.size(); }));
  CHECK(h.client_peer.in == head + chunked);
  CHECK(h.result->bytes_down == head.size() + chunked.size());
  CHECK(h.result->client_reusable);
  REQUIRE(h.upstream);

  // A small response comes with its head in one read and is copied.
  h.client_peer.in.clear();
  h.origin_peer.in.clear();
  h.origin_peer.out = okHead(5) + "hello";
  h.origin_peer.sent = 0;
  h.start(kGetHead);
  REQUIRE(h.finish());
  REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= okHead(5).size() + 5; }));
  CHECK(h.client_peer.in == okHead(5) + "hello");
  CHECK(h.result->client_reusable);
}

// 2 Mbit/s is 250 kB/s with a burst of 64 KiB (paceBurstBytes' floor): a paced
// body of N bytes takes (N - 64 KiB) / 250 kB/s, in waits of about 130 ms.
constexpr uint64_t kPacedBits = 2000000;
constexpr double kPacedBytesPerSecond = kPacedBits / 8.0;
constexpr size_t kPacedBurst = 64 * 1024;

double pacedSeconds(size_t bytes) {
  return (static_cast<double>(bytes) - kPacedBurst) / kPacedBytesPerSecond;
}

TEST_CASE("forwarder paces bodies by a bandwidth quota, byte-exact", "[forwarder][quota]") {
  const size_t length = 384 * 1024;
  Harness h;
  auto pacer = std::make_shared<WatchedPacer>(kPacedBits);
  h.options.pacer = pacer;
  // Waits of ~130 ms are longer than idle_timeout: waiting for the budget is
  // not idleness.
  h.options.idle_timeout = std::chrono::milliseconds(100);

  SECTION("a spliced request body (up)") {
    const std::string body = pattern(length, 9);
    const std::string head = putHead(length);
    const size_t want = head.size() - std::string("http://s3.example.com").size();
    auto start = std::chrono::steady_clock::now();
    h.start(head, body.substr(0, 100));
    h.client_peer.out = body.substr(100);
    REQUIRE(h.runUntil([&] { return h.origin_peer.in.size() >= want + length; }));
    double elapsed = secondsSince(start);
    CHECK(h.origin_peer.in.substr(want) == body);
    h.origin_peer.out = okHead(0);
    REQUIRE(h.finish());
    CHECK(h.result->error == Reason::none);
    CHECK(h.result->close == CloseCause::keep_alive);
    CHECK(h.result->bytes_up == want + length);
    CHECK(elapsed >= pacedSeconds(length) * 0.95);
    CHECK(elapsed < pacedSeconds(length) * 1.5 + 0.3);
    CHECK(pacer->up.taken == length);
    CHECK(pacer->up.largest <= kPacedBurst);  // not a pipe's worth at once
    CHECK(pacer->up.pauses > 3);
    CHECK(pacer->up.waited > pacedSeconds(length) * 0.5);
    CHECK(pacer->down.taken == 0);  // a head is not paced
    CHECK(pacer->down.pauses == 0);
  }

  SECTION("a spliced response body (down)") {
    const std::string answer = pattern(length, 10);
    auto start = std::chrono::steady_clock::now();
    h.start(kGetHead);
    h.origin_peer.out = okHead(length) + answer;
    REQUIRE(h.finish());
    REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= okHead(length).size() + length; }));
    double elapsed = secondsSince(start);
    CHECK(h.result->error == Reason::none);
    CHECK(h.result->close == CloseCause::keep_alive);
    CHECK(h.client_peer.in == okHead(length) + answer);
    CHECK(h.result->bytes_down == okHead(length).size() + length);
    CHECK(elapsed >= pacedSeconds(length) * 0.95);
    CHECK(elapsed < pacedSeconds(length) * 1.5 + 0.3);
    CHECK(pacer->down.taken == length);
    CHECK(pacer->down.largest <= kPacedBurst);
    CHECK(pacer->down.pauses > 3);
    CHECK(pacer->down.waited > pacedSeconds(length) * 0.5);
    CHECK(pacer->up.taken == 0);
  }

  SECTION("a copied chunked response body (down)") {
    const std::string chunked = chunkedBody(pattern(length, 11), 50000);
    const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    auto start = std::chrono::steady_clock::now();
    h.start(kGetHead);
    h.origin_peer.out = head + chunked;
    REQUIRE(h.finish());
    REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= head.size() + chunked.size(); }));
    double elapsed = secondsSince(start);
    CHECK(h.result->error == Reason::none);
    CHECK(h.client_peer.in == head + chunked);
    CHECK(elapsed >= pacedSeconds(chunked.size()) * 0.95);
    CHECK(pacer->down.taken == chunked.size());  // the framing is body bytes too
    CHECK(pacer->down.largest <= kPacedBurst);
    CHECK(pacer->down.pauses > 3);
  }
}

TEST_CASE("forwarder without a pacer moves the same bodies at once", "[forwarder][quota]") {
  // The paced test above measures the pacer, not the machine.
  const size_t length = 384 * 1024;
  Harness h;
  const std::string answer = pattern(length, 10);
  auto start = std::chrono::steady_clock::now();
  h.start(kGetHead);
  h.origin_peer.out = okHead(length) + answer;
  REQUIRE(h.finish());
  REQUIRE(h.runUntil([&] { return h.client_peer.in.size() >= okHead(length).size() + length; }));
  CHECK(h.client_peer.in == okHead(length) + answer);
  CHECK(secondsSince(start) < pacedSeconds(length) * 0.5);
}
