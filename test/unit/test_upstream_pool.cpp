// The worker's pool of idle upstream connections: reuse, bounds, and an
// upstream that closes (or speaks on) a connection while it waits in the pool.

#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "proxy/event_ptr.h"
#include "proxy/socket.h"
#include "proxy/stream.h"
#include "proxy/upstream_pool.h"

using namespace s3gate;

namespace {

// A plain stream for the pool and the upstream's end of the same connection.
struct Conn {
  std::unique_ptr<Stream> stream;
  UniqueFd upstream;
};

Conn makeConn() {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  return Conn{Stream::plain(UniqueFd(fds[0])), UniqueFd(fds[1])};
}

void turn(event_base* base) {
  for (int i = 0; i < 3; ++i) {
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
  }
}

}  // namespace

TEST_CASE("the pool gives back the newest live connection of a key") {
  EventBasePtr base(event_base_new());
  UpstreamPool pool(base.get(), UpstreamPool::Limits{});
  Conn a = makeConn();
  Conn b = makeConn();
  int b_fd = b.stream->fd();
  pool.put("k", std::move(a.stream), "10.0.0.1:80");
  pool.put("k", std::move(b.stream), "10.0.0.2:80");
  CHECK(pool.size() == 2);
  turn(base.get());
  std::string peer;
  EventPtr watch;
  CHECK(pool.take("other", &peer, &watch) == nullptr);
  std::unique_ptr<Stream> got = pool.take("k", &peer, &watch);
  REQUIRE(got);
  CHECK(got->fd() == b_fd);
  CHECK(peer == "10.0.0.2:80");
  CHECK(pool.size() == 1);
}

TEST_CASE("a connection the upstream closes while pooled is dropped as it happens") {
  EventBasePtr base(event_base_new());
  UpstreamPool pool(base.get(), UpstreamPool::Limits{});
  Conn a = makeConn();
  Conn b = makeConn();
  pool.put("k", std::move(a.stream), "a");
  pool.put("k", std::move(b.stream), "b");
  turn(base.get());
  CHECK(pool.size() == 2);

  SECTION("EOF") {
    b.upstream.reset();
  }
  SECTION("bytes nobody asked for") {
    REQUIRE(send(b.upstream.get(), "HTTP/1.1 408 Request Timeout\r\n\r\n", 32, 0) == 32);
  }
  // Noticed by the loop, before anyone asks for a connection.
  turn(base.get());
  CHECK(pool.size() == 1);
  std::string peer;
  EventPtr watch;
  std::unique_ptr<Stream> got = pool.take("k", &peer, &watch);
  REQUIRE(got);
  CHECK(peer == "a");
  CHECK(pool.take("k", &peer, &watch) == nullptr);
  CHECK(pool.size() == 0);
}

TEST_CASE("the pool keeps at most per_key connections of a key and total in all") {
  EventBasePtr base(event_base_new());
  UpstreamPool::Limits limits;
  limits.per_key = 2;
  limits.total = 3;
  UpstreamPool pool(base.get(), limits);
  std::vector<Conn> conns;
  for (int i = 0; i < 5; ++i) {
    conns.push_back(makeConn());
  }
  pool.put("k", std::move(conns[0].stream), "0");
  pool.put("k", std::move(conns[1].stream), "1");
  pool.put("k", std::move(conns[2].stream), "2");  // the oldest of k goes
  CHECK(pool.size() == 2);
  pool.put("j", std::move(conns[3].stream), "3");
  pool.put("j", std::move(conns[4].stream), "4");  // over total: closed at once
  CHECK(pool.size() == 3);
  char byte;
  CHECK(recv(conns[0].upstream.get(), &byte, 1, 0) == 0);  // closed by the pool
  CHECK(recv(conns[4].upstream.get(), &byte, 1, 0) == 0);
  std::string peer;
  EventPtr watch;
  REQUIRE(pool.take("k", &peer, &watch));
  CHECK(peer == "2");
  REQUIRE(pool.take("k", &peer, &watch));
  CHECK(peer == "1");
  REQUIRE(pool.take("j", &peer, &watch));
  CHECK(peer == "3");
  CHECK(pool.size() == 0);
}
