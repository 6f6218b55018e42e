#include "proxy/stream.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <cerrno>

namespace s3gate {

namespace {

// One send() of `data`, retried on EINTR: the bytes the socket took (0 when it
// is full), or -1 with errno set.
ssize_t sendOnce(int fd, const char* data, size_t len) {
  while (true) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) {
      return n;
    }
    if (errno != EINTR) {
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
  }
}

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
    ssize_t n = sendOnce(fd_.get(), buf, len);
    if (n < 0) {
      error_ = errnoText(errno);
      return {Io::error, 0};
    }
    if (n == 0 && len > 0) {
      write_wants_ = EV_WRITE;
      return {Io::would_block, 0};
    }
    return {Io::ok, static_cast<size_t>(n)};
  }

  void shutdownWrite() override { shutdown(fd_.get(), SHUT_WR); }
  UniqueFd releaseFd() override { return std::move(fd_); }

 private:
  UniqueFd fd_;
};

// Ciphertext leaves through a BIO of ours instead of a socket BIO: OpenSSL
// writes each TLS record with its own write(2), so a 64 KiB SSL_write would
// cost four system calls; gathered here, the records of one call go out in one
// send(). What the socket does not take waits in `pending_`, and the write
// that produced it reports would_block until it is gone: the caller retries
// with the same bytes, as it must for SSL_write itself, and is then told they
// were written. Nothing is held between calls unless the socket is full.
class TlsStream final : public Stream {
 public:
  TlsStream(UniqueFd fd, SslPtr ssl) : fd_(std::move(fd)), ssl_(std::move(ssl)) {
    BIO* out = BIO_new(outputMethod());
    if (out != nullptr) {
      BIO_set_data(out, this);
      BIO_set_init(out, 1);
      SSL_set0_wbio(ssl_.get(), out);  // the SSL owns it; the socket BIO stays for reads
      // This BIO never blocks: one SSL_write makes all its records, not one.
      SSL_clear_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
  }
  int fd() const override { return fd_.get(); }
  bool isTls() const override { return true; }
  SSL* ssl() const override { return ssl_.get(); }
  bool cleanEnd() const override { return !unclean_end_; }
  // Decrypted bytes, records read ahead (unless the last read found only part
  // of one), or (a buffer BIO holding a prefix) encrypted bytes not yet read.
  bool hasBufferedInput() const override {
    return SSL_pending(ssl_.get()) > 0 || (!starved_ && SSL_has_pending(ssl_.get()) == 1) ||
           BIO_pending(SSL_get_rbio(ssl_.get())) > 0;
  }

  Result handshake() override {
    read_wants_ = 0;
    if (Result out = sendPending(); out.status != Io::ok) {
      return blockedOn(out, &read_wants_);
    }
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl_.get());
    if (Result out = sendStaged(); out.status != Io::ok) {
      // A flight must be out before its answer can come.
      return blockedOn(out, &read_wants_);
    }
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

  // Fills `buf` from as many records as are at hand: with read-ahead one
  // system call brings several.
  Result read(char* buf, size_t len) override {
    read_wants_ = 0;
    if (broken_) {
      return {Io::error, 0};
    }
    size_t total = 0;
    Result result{Io::ok, 0};
    while (total < len) {
      ERR_clear_error();
      errno = 0;
      size_t got = 0;
      int rc = SSL_read_ex(ssl_.get(), buf + total, len - total, &got);
      if (rc == 1) {
        total += got;
        starved_ = false;
        if (SSL_has_pending(ssl_.get()) != 1) {
          break;
        }
        continue;
      }
      if (total == 0) {
        result = failure(rc, &read_wants_);
        starved_ = result.status == Io::would_block;
      } else {
        // What ended the loop (no more bytes, EOF, an error) comes back at
        // the next call; only part of a record left means wait for the socket.
        starved_ = SSL_get_error(ssl_.get(), rc) == SSL_ERROR_WANT_READ;
      }
      break;
    }
    // Reading can make OpenSSL write (a key update, an alert).
    if (Result out = sendStaged(); out.status == Io::error) {
      return out;
    }
    if (total > 0) {
      return {Io::ok, total};
    }
    return result;
  }

  Result write(const char* buf, size_t len) override {
    write_wants_ = 0;
    if (len == 0) {
      return {Io::ok, 0};
    }
    if (Result out = sendPending(); out.status != Io::ok) {
      return blockedOn(out, &write_wants_);
    }
    if (unconfirmed_ > 0) {
      // The retry of a write whose records are now all sent.
      size_t done = std::min(unconfirmed_, len);
      unconfirmed_ = 0;
      return {Io::ok, done};
    }
    ERR_clear_error();
    errno = 0;
    size_t put = 0;
    int rc = SSL_write_ex(ssl_.get(), buf, std::min(len, kMaxPlainPerWrite), &put);
    Result out = sendStaged();
    if (rc != 1) {
      return out.status == Io::error ? out : failure(rc, &write_wants_);
    }
    if (out.status != Io::ok) {
      unconfirmed_ = put;
      return blockedOn(out, &write_wants_);
    }
    return {Io::ok, put};
  }

  void shutdownWrite() override {
    ERR_clear_error();
    errno = 0;
    if (sendPending().status == Io::ok) {
      SSL_shutdown(ssl_.get());  // best effort: close_notify
      sendStaged();
    }
    shutdown(fd_.get(), SHUT_WR);
  }

 private:
  // Plaintext taken per SSL_write: four full records, one send().
  static constexpr size_t kMaxPlainPerWrite = 64 * 1024;

  // Where the output BIO puts what OpenSSL writes: the thread's staging
  // buffer while pending_ is empty (sent, usually whole, at the end of the
  // call), else behind pending_, to keep the order.
  static std::string& staging() {
    thread_local std::string buffer;
    return buffer;
  }

  static int outWrite(BIO* bio, const char* data, size_t len, size_t* written) {
    auto* self = static_cast<TlsStream*>(BIO_get_data(bio));
    (self->pending_.empty() ? staging() : self->pending_).append(data, len);
    *written = len;
    return 1;
  }

  static long outCtrl(BIO*, int cmd, long, void*) {
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;  // sent at the end of each call
  }

  static BIO_METHOD* outputMethod() {
    static BIO_METHOD* method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "s3gate-tls-out");
      if (m != nullptr) {
        BIO_meth_set_write_ex(m, &outWrite);
        BIO_meth_set_ctrl(m, &outCtrl);
      }
      return m;
    }();
    return method;
  }

  // Sends `data` once (retrying EINTR); how much went, or -1 after an error.
  ssize_t sendSome(const char* data, size_t len) {
    ssize_t n = sendOnce(fd_.get(), data, len);
    if (n < 0) {
      error_ = errnoText(errno);
      broken_ = true;
    }
    return n;
  }

  // Sends what the last OpenSSL call staged; the rest becomes pending_.
  Result sendStaged() {
    std::string& stage = staging();
    if (stage.empty()) {
      return pending_.empty() ? Result{Io::ok, 0} : sendPending();
    }
    ssize_t n = sendSome(stage.data(), stage.size());
    if (n >= 0 && static_cast<size_t>(n) < stage.size()) {
      pending_.assign(stage, static_cast<size_t>(n));
    }
    stage.clear();
    if (n < 0) {
      return {Io::error, 0};
    }
    return pending_.empty() ? Result{Io::ok, 0} : Result{Io::would_block, 0};
  }

  // Sends what an earlier call left behind.
  Result sendPending() {
    if (broken_) {
      return {Io::error, 0};
    }
    while (pending_sent_ < pending_.size()) {
      ssize_t n = sendSome(pending_.data() + pending_sent_, pending_.size() - pending_sent_);
      if (n < 0) {
        return {Io::error, 0};
      }
      if (n == 0) {
        return {Io::would_block, 0};
      }
      pending_sent_ += static_cast<size_t>(n);
    }
    std::string().swap(pending_);  // an idle stream holds no output buffer
    pending_sent_ = 0;
    return {Io::ok, 0};
  }

  // Output that did not go: wait for the socket to be writable (or fail).
  static Result blockedOn(Result out, short* wants) {
    if (out.status == Io::would_block) {
      *wants = EV_WRITE;
    }
    return out;
  }

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
      case SSL_ERROR_SSL:
        if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
          // A FIN without close_notify (contexts without
          // SSL_OP_IGNORE_UNEXPECTED_EOF): an end, but not a clean one.
          ERR_clear_error();
          unclean_end_ = true;
          error_ = "connection closed without a TLS close_notify";
          return {Io::eof, 0};
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
  std::string pending_;       // ciphertext the socket has not taken yet
  size_t pending_sent_ = 0;   // of pending_, already sent
  size_t unconfirmed_ = 0;    // plaintext whose records wait in pending_
  bool starved_ = false;      // the last read found only part of a record
  bool broken_ = false;       // a send failed: the stream is done
  bool unclean_end_ = false;  // the peer closed without a close_notify
};

}  // namespace

std::unique_ptr<Stream> Stream::plain(UniqueFd fd) {
  return std::make_unique<PlainStream>(std::move(fd));
}

std::unique_ptr<Stream> Stream::tls(UniqueFd fd, SslPtr ssl) {
  return std::make_unique<TlsStream>(std::move(fd), std::move(ssl));
}

}  // namespace s3gate
