// The relay against socketpairs on one event_base: byte counts, prefixes,
// half-close, backpressure, idle timeout and the first-bytes inspector.

#include <fcntl.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "proxy/event_ptr.h"
#include "proxy/relay.h"

using namespace s3gate;

namespace {

struct Pair {
  UniqueFd app;    // the test's end
  UniqueFd relay;  // handed to the relay
};

Pair makePair() {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  return Pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

struct Harness {
  EventBasePtr base{event_base_new()};
  Pair client = makePair();
  Pair upstream = makePair();
  std::optional<RelayResult> result;
  std::unique_ptr<Relay> relay;

  void start(std::string prefix_up = {}, std::string prefix_down = {},
             RelayOptions options = RelayOptions{}, FirstBytesInspector inspector = nullptr) {
    relay = Relay::start(base.get(), Stream::plain(std::move(client.relay)),
                         Stream::plain(std::move(upstream.relay)),
                         std::move(prefix_up), std::move(prefix_down), options,
                         std::move(inspector), [this](const RelayResult& r) { result = r; });
    REQUIRE(relay);
  }
  // Runs the loop until `done` or the deadline; returns done().
  template <typename F>
  bool runUntil(F done, std::chrono::milliseconds limit = std::chrono::milliseconds(3000)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      event_base_loop(base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return done();
  }
};

std::string readAll(int fd) {
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool peerClosed(int fd) {
  char c;
  return recv(fd, &c, 1, MSG_PEEK) == 0;
}

}  // namespace

TEST_CASE("relay carries bytes both ways and counts them, prefixes first") {
  Harness h;
  h.start("early", "HTTP/1.1 200 Connection established\r\n\r\n");
  std::string got_up;
  std::string got_down;
  REQUIRE(send(h.client.app.get(), "hello", 5, 0) == 5);
  REQUIRE(send(h.upstream.app.get(), "world!", 6, 0) == 6);
  REQUIRE(h.runUntil([&] {
    got_up += readAll(h.upstream.app.get());
    got_down += readAll(h.client.app.get());
    return got_up.size() == 10 && got_down.size() == 45;
  }));
  CHECK(got_up == "earlyhello");
  CHECK(got_down == "HTTP/1.1 200 Connection established\r\n\r\nworld!");
  RelayResult progress = h.relay->progress();
  CHECK(progress.bytes_up == 10);
  CHECK(progress.bytes_down == 6);
  CHECK_FALSE(h.result.has_value());
}

TEST_CASE("relay passes a half-close on and ends when both directions are done") {
  Harness h;
  h.start();
  REQUIRE(send(h.client.app.get(), "request", 7, 0) == 7);
  REQUIRE(shutdown(h.client.app.get(), SHUT_WR) == 0);
  std::string got_up;
  REQUIRE(h.runUntil([&] {
    got_up += readAll(h.upstream.app.get());
    return got_up == "request" && peerClosed(h.upstream.app.get());
  }));
  // The other direction still works after the client's half-close.
  REQUIRE(send(h.upstream.app.get(), "reply", 5, 0) == 5);
  std::string got_down;
  REQUIRE(h.runUntil([&] {
    got_down += readAll(h.client.app.get());
    return got_down == "reply";
  }));
  CHECK_FALSE(h.result.has_value());
  REQUIRE(shutdown(h.upstream.app.get(), SHUT_WR) == 0);
  REQUIRE(h.runUntil([&] { return h.result.has_value(); }));
  CHECK(h.result->close == RelayClose::client_eof);
  CHECK(h.result->bytes_up == 7);
  CHECK(h.result->bytes_down == 5);
  CHECK(peerClosed(h.client.app.get()));
}

TEST_CASE("relay stops reading a fast writer when the reader is slow") {
  Harness h;
  RelayOptions options;
  options.buffer_bytes = 64 * 1024;
  h.start({}, {}, options);
  // The upstream app never reads: what the client can push is bounded by the
  // socket buffers and one relay buffer, not by memory.
  std::string chunk(64 * 1024, 'x');
  uint64_t pushed = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  int stalls = 0;
  while (std::chrono::steady_clock::now() < deadline && stalls < 50) {
    ssize_t n = send(h.client.app.get(), chunk.data(), chunk.size(), 0);
    if (n > 0) {
      pushed += static_cast<uint64_t>(n);
      stalls = 0;
    } else {
      ++stalls;
    }
    event_base_loop(h.base.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
  }
  int sndbuf = 0;
  socklen_t len = sizeof(sndbuf);
  getsockopt(h.client.app.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
  // Four socket buffers on the way (two per socketpair) plus the relay's buffer.
  uint64_t bound = 4 * static_cast<uint64_t>(sndbuf) + options.buffer_bytes + 64 * 1024;
  INFO("pushed " << pushed << " bound " << bound);
  CHECK(pushed > 0);
  CHECK(pushed <= bound);
  CHECK_FALSE(h.result.has_value());
  // Once the reader reads, everything arrives intact.
  uint64_t received = 0;
  REQUIRE(h.runUntil([&] {
    received += readAll(h.upstream.app.get()).size();
    return received == pushed;
  }));
}

TEST_CASE("relay ends an idle tunnel after idle_timeout") {
  Harness h;
  RelayOptions options;
  options.idle_timeout = std::chrono::milliseconds(150);
  h.start({}, {}, options);
  REQUIRE(h.runUntil([&] { return h.result.has_value(); }));
  CHECK(h.result->close == RelayClose::idle_timeout);
  CHECK(peerClosed(h.client.app.get()));
  CHECK(peerClosed(h.upstream.app.get()));
}

TEST_CASE("relay reports an error from one side") {
  Harness h;
  h.start();
  // Closing the upstream with the client still sending: the relay's write fails.
  h.upstream.app.reset();
  std::string data(1 << 20, 'y');
  send(h.client.app.get(), data.data(), data.size(), 0);
  REQUIRE(h.runUntil([&] { return h.result.has_value(); }));
  CHECK((h.result->close == RelayClose::upstream_error || h.result->close == RelayClose::upstream_eof));
}

TEST_CASE("relay holds client bytes until the inspector passes them") {
  Harness h;
  int calls = 0;
  h.start({}, {}, RelayOptions{}, [&](std::string_view bytes) {
    ++calls;
    return bytes.size() < 6 ? InspectVerdict::need_more : InspectVerdict::pass;
  });
  REQUIRE(send(h.client.app.get(), "abc", 3, 0) == 3);
  h.runUntil([&] { return calls >= 1; });
  CHECK(readAll(h.upstream.app.get()).empty());
  REQUIRE(send(h.client.app.get(), "defg", 4, 0) == 4);
  std::string got;
  REQUIRE(h.runUntil([&] {
    got += readAll(h.upstream.app.get());
    return got == "abcdefg";
  }));
  // Bytes from the upstream flow while the inspector waits, and after.
  REQUIRE(send(h.upstream.app.get(), "down", 4, 0) == 4);
  std::string down;
  REQUIRE(h.runUntil([&] {
    down += readAll(h.client.app.get());
    return down == "down";
  }));
}

TEST_CASE("relay closes the tunnel when the inspector denies, sending nothing upstream") {
  Harness h;
  h.start({}, {}, RelayOptions{}, [](std::string_view) { return InspectVerdict::deny; });
  REQUIRE(send(h.client.app.get(), "secret", 6, 0) == 6);
  REQUIRE(h.runUntil([&] { return h.result.has_value(); }));
  CHECK(h.result->close == RelayClose::inspect_denied);
  CHECK(readAll(h.upstream.app.get()).empty());
  CHECK(peerClosed(h.upstream.app.get()));
}
