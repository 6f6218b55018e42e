#include "proxy/stream.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <cerrno>

namespace s3gate {

namespace {

class PlainStream final : public Stream {
 public:
  explicit PlainStream(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const override { return fd_.get(); }
  bool isTls() const override { return false; }

  Result read(char* buf, size_t len) override {
    read_wants_ = 0;
    while (true) {
      ssize_t n = recv(fd_.get(), buf, len, 0);
      if (n > 0) {
        return {Io::ok, static_cast<size_t>(n)};
      }
      if (n == 0) {
        return {Io::eof, 0};
      }
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        read_wants_ = EV_READ;
        return {Io::would_block, 0};
      }
      error_ = errnoText(errno);
      return {Io::error, 0};
    }
  }

  Result write(const char* buf, size_t len) override {
    write_wants_ = 0;
    while (true) {
      ssize_t n = send(fd_.get(), buf, len, MSG_NOSIGNAL);
      if (n >= 0) {
        return {Io::ok, static_cast<size_t>(n)};
      }
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        write_wants_ = EV_WRITE;
        return {Io::would_block, 0};
      }
      error_ = errnoText(errno);
      return {Io::error, 0};
    }
  }

  void shutdownWrite() override { shutdown(fd_.get(), SHUT_WR); }
  UniqueFd releaseFd() override { return std::move(fd_); }

 private:
  UniqueFd fd_;
};

class TlsStream final : public Stream {
 public:
  TlsStream(UniqueFd fd, SslPtr ssl) : fd_(std::move(fd)), ssl_(std::move(ssl)) {}
  int fd() const override { return fd_.get(); }
  bool isTls() const override { return true; }
  SSL* ssl() const override { return ssl_.get(); }
  // Decrypted bytes, or (a buffer BIO holding a prefix) encrypted ones not yet read.
  bool hasBufferedInput() const override {
    return SSL_pending(ssl_.get()) > 0 || BIO_pending(SSL_get_rbio(ssl_.get())) > 0;
  }

  Result handshake() override {
    read_wants_ = 0;
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) {
      return {Io::ok, 0};
    }
    Result result = failure(rc, &read_wants_);
    long verify = SSL_get_verify_result(ssl_.get());
    if (result.status != Io::would_block && verify != X509_V_OK) {
      // "certificate verify failed" alone does not say what to fix.
      error_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    }
    return result;
  }

  Result read(char* buf, size_t len) override {
    read_wants_ = 0;
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    int rc = SSL_read_ex(ssl_.get(), buf, len, &got);
    if (rc == 1) {
      return {Io::ok, got};
    }
    return failure(rc, &read_wants_);
  }

  Result write(const char* buf, size_t len) override {
    write_wants_ = 0;
    if (len == 0) {
      return {Io::ok, 0};
    }
    ERR_clear_error();
    errno = 0;
    size_t put = 0;
    int rc = SSL_write_ex(ssl_.get(), buf, len, &put);
    if (rc == 1) {
      return {Io::ok, put};
    }
    return failure(rc, &write_wants_);
  }

  void shutdownWrite() override {
    ERR_clear_error();
    errno = 0;
    SSL_shutdown(ssl_.get());  // best effort: close_notify
    shutdown(fd_.get(), SHUT_WR);
  }

 private:
  Result failure(int rc, short* wants) {
    int err = SSL_get_error(ssl_.get(), rc);
    switch (err) {
      case SSL_ERROR_WANT_READ:
        *wants = EV_READ;
        return {Io::would_block, 0};
      case SSL_ERROR_WANT_WRITE:
        *wants = EV_WRITE;
        return {Io::would_block, 0};
      case SSL_ERROR_ZERO_RETURN:
        return {Io::eof, 0};
      case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
          int saved = errno;
          if (saved == EAGAIN || saved == EINTR) {
            *wants = EV_READ;
            return {Io::would_block, 0};
          }
          error_ = saved != 0 ? errnoText(saved) : "connection closed";
          return {saved == 0 ? Io::eof : Io::error, 0};
        }
        error_ = opensslErrors();
        return {Io::error, 0};
      default:
        error_ = opensslErrors();
        return {Io::error, 0};
    }
  }

  UniqueFd fd_;
  SslPtr ssl_;
};

}  // namespace

std::unique_ptr<Stream> Stream::plain(UniqueFd fd) {
  return std::make_unique<PlainStream>(std::move(fd));
}

std::unique_ptr<Stream> Stream::tls(UniqueFd fd, SslPtr ssl) {
  return std::make_unique<TlsStream>(std::move(fd), std::move(ssl));
}

}  // namespace s3gate
