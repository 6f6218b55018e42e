// Socket settings: what a listening socket passes on to the sockets it accepts.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <string>

#include "proxy/socket.h"
#include "test_helpers.h"

using namespace s3gate;
using s3gate::test::ip;

namespace {

int intOption(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof(value);
  REQUIRE(getsockopt(fd, level, name, &value, &len) == 0);
  return value;
}

// A connection to `listener` and the socket accept() made for it.
UniqueFd acceptOne(int listener, UniqueFd* client) {
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&local), &len) == 0);
  client->reset(socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(connect(client->get(), reinterpret_cast<sockaddr*>(&local), len) == 0);
  UniqueFd accepted;
  for (int i = 0; i < 1000 && !accepted; ++i) {
    accepted.reset(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  }
  REQUIRE(accepted);
  return accepted;
}

}  // namespace

TEST_CASE("accepted sockets inherit TCP_NODELAY and keepalive from the listener") {
  std::string error;
  UniqueFd listener = listenOn(SocketAddress(ip("127.0.0.1"), 0), 16, &error);
  REQUIRE(listener);
  setTcpOptions(listener.get(), std::chrono::seconds(45));
  UniqueFd client;
  UniqueFd accepted = acceptOne(listener.get(), &client);
  CHECK(intOption(accepted.get(), IPPROTO_TCP, TCP_NODELAY) != 0);
  CHECK(intOption(accepted.get(), SOL_SOCKET, SO_KEEPALIVE) != 0);
  CHECK(intOption(accepted.get(), IPPROTO_TCP, TCP_KEEPIDLE) == 45);
  CHECK(intOption(accepted.get(), IPPROTO_TCP, TCP_KEEPINTVL) == 45);
  CHECK(intOption(accepted.get(), IPPROTO_TCP, TCP_KEEPCNT) == 4);
  // The client side was set by nobody: the kernel's defaults.
  CHECK(intOption(client.get(), IPPROTO_TCP, TCP_NODELAY) == 0);
  CHECK(intOption(client.get(), SOL_SOCKET, SO_KEEPALIVE) == 0);

  SECTION("keepalive turned off on the listener is off on the next socket") {
    setTcpOptions(listener.get(), std::chrono::seconds(0));
    UniqueFd client2;
    UniqueFd accepted2 = acceptOne(listener.get(), &client2);
    CHECK(intOption(accepted2.get(), SOL_SOCKET, SO_KEEPALIVE) == 0);
    CHECK(intOption(accepted2.get(), IPPROTO_TCP, TCP_NODELAY) != 0);
    // The socket accepted before keeps what it had.
    CHECK(intOption(accepted.get(), SOL_SOCKET, SO_KEEPALIVE) != 0);
  }
}
