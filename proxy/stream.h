#pragma once
// A non-blocking byte stream over a connected socket: plain, or TLS on top of
// it. The forwarder works over any pair of these, so plain HTTP, HTTPS
// listeners and inspected tunnels share one implementation.
//
// Every call is non-blocking. After would_block, wantEvents() says which socket
// readiness (EV_READ and/or EV_WRITE) lets the blocked calls progress: for TLS
// a read may need the socket writable and a write readable.

#include <event2/event.h>

#include <cstddef>
#include <memory>
#include <string>

#include "proxy/socket.h"
#include "proxy/tls.h"

namespace s3gate {

class Stream {
 public:
  enum class Io { ok, would_block, eof, error };
  struct Result {
    Io status = Io::ok;
    size_t bytes = 0;
  };

  static std::unique_ptr<Stream> plain(UniqueFd fd);
  // `ssl` is set up for `fd` (connect or accept state); the handshake runs on
  // the first calls to handshake().
  static std::unique_ptr<Stream> tls(UniqueFd fd, SslPtr ssl);

  virtual ~Stream() = default;
  virtual int fd() const = 0;
  virtual bool isTls() const = 0;
  virtual SSL* ssl() const { return nullptr; }

  // ok once the stream carries data (plain streams: at once).
  virtual Result handshake() { return {}; }
  virtual Result read(char* buf, size_t len) = 0;
  virtual Result write(const char* buf, size_t len) = 0;
  // Bytes already read from the socket and waiting inside the stream (TLS).
  virtual bool hasBufferedInput() const { return false; }
  // After a read returned eof: whether the peer ended the stream properly.
  // TLS: false when the connection closed without a close_notify, which a
  // body delimited by the close must not take for its end (RFC 9112 9.8).
  virtual bool cleanEnd() const { return true; }
  // Sends EOF (TLS: close_notify, then SHUT_WR).
  virtual void shutdownWrite() = 0;
  // Plain streams give their socket away (to the relay); TLS streams cannot.
  virtual UniqueFd releaseFd() { return UniqueFd(); }
  // The readiness the last blocked read and write wait for.
  short wantEvents() const { return read_wants_ | write_wants_; }
  // The readiness a read (a write) waits for: what the last blocked one asked
  // for, else the obvious one.
  short readWants() const { return read_wants_ != 0 ? read_wants_ : EV_READ; }
  short writeWants() const { return write_wants_ != 0 ? write_wants_ : EV_WRITE; }
  void clearWants() { read_wants_ = write_wants_ = 0; }
  // Last error, for logs.
  const std::string& error() const { return error_; }

 protected:
  short read_wants_ = 0;
  short write_wants_ = 0;
  std::string error_;
};

}  // namespace s3gate
