#pragma once
// Owned file descriptors and the few socket settings every connection needs.

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "common/duration.h"
#include "common/net.h"

namespace s3gate {

// Owns one file descriptor; closes it once.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset(std::exchange(other.fd_, -1));
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

bool setNonBlocking(int fd);
// TCP_NODELAY on, SO_KEEPALIVE with idle/interval from `keepalive` (0: off).
// Set on a listening socket, they are inherited by every accepted socket
// (Linux copies them into the new socket), which saves five system calls per
// connection.
void setTcpOptions(int fd, Duration keepalive);
// A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT.
// Makes the next close() of `fd` send a reset instead of an end (SO_LINGER 0):
// for a peer that must not take what it got for everything.
void setResetOnClose(int fd);

UniqueFd listenOn(const SocketAddress& address, int backlog, std::string* error);
// Starts a non-blocking connect; *in_progress is true when it has to be waited for.
UniqueFd startConnect(const SocketAddress& address, bool* in_progress, int* error);
// The socket's pending error (SO_ERROR) after a non-blocking connect.
int socketError(int fd);
std::string errnoText(int err);

}  // namespace s3gate
