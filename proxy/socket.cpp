#include "proxy/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstring>

namespace s3gate {

bool setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0) {
    return false;
  }
  return fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

void setTcpOptions(int fd, Duration keepalive) {
  int one = 1;
  // Small writes (response heads, interactive protocols) must not wait for Nagle.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  auto seconds = static_cast<int>(keepalive.count() / 1000);
  if (seconds <= 0) {
    int zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &zero, sizeof(zero));
    return;
  }
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  // Probe after `keepalive` of silence and every `keepalive` after that: an NLB
  // forgets a flow after 350 s idle, so the default 60 s keeps it alive.
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &seconds, sizeof(seconds));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &seconds, sizeof(seconds));
  int count = 4;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

void setResetOnClose(int fd) {
  linger abort{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
}

UniqueFd listenOn(const SocketAddress& address, int backlog, std::string* error) {
  sockaddr_storage storage{};
  socklen_t len = address.toSockaddr(&storage);
  UniqueFd fd(socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = "socket: " + errnoText(errno);
    return {};
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Each worker binds its own socket on the same address; the kernel spreads
  // new connections across them.
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (storage.ss_family == AF_INET6) {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) != 0) {
    *error = "bind " + address.toString() + ": " + errnoText(errno);
    return {};
  }
  if (listen(fd.get(), backlog) != 0) {
    *error = "listen " + address.toString() + ": " + errnoText(errno);
    return {};
  }
  return fd;
}

UniqueFd startConnect(const SocketAddress& address, bool* in_progress, int* error) {
  sockaddr_storage storage{};
  socklen_t len = address.toSockaddr(&storage);
  *in_progress = false;
  *error = 0;
  UniqueFd fd(socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = errno;
    return {};
  }
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) != 0) {
    if (errno == EINPROGRESS) {
      *in_progress = true;
    } else {
      *error = errno;
      return {};
    }
  }
  return fd;
}

int socketError(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    return errno;
  }
  return err;
}

std::string errnoText(int err) {
  char buf[128];
  // GNU strerror_r returns the message pointer.
  const char* text = strerror_r(err, buf, sizeof(buf));
  return text;
}

}  // namespace s3gate
