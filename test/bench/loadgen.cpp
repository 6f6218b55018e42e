// loadgen: the load generator and the upstream server of the s3gate benchmarks
// (test/bench/README.md). One binary, one epoll loop per process, no libevent,
// so that its own cost stays far below any proxy's; the no-proxy baseline of
// run.py shows its ceiling.
//
//   loadgen serve  --tunnel IP:PORT [--http IP:PORT]
//       The upstream. Tunnel port: each connection starts with a 16-byte header
//       (command byte, 7 bytes padding, 64-bit little-endian length):
//         'D' n: source, n bytes are sent to the client;
//         'U' n: sink, n bytes are read, then one byte 'K' is sent back;
//         'E' 0: echo, every later byte is sent back.
//       HTTP port: an HTTP/1.1 keep-alive origin. GET /<anything>/<N> answers
//       N bytes of body; PUT (Content-Length or chunked) is read and dropped,
//       answered 200 with an empty body.
//   loadgen down|up  --bytes N --conns K [proxy/target options]
//       K tunnels, all set up first, then N bytes in all, split evenly.
//   loadgen setup    --conns C --count N: C concurrent loops of connect, CONNECT,
//       200, --size bytes echoed, close.
//   loadgen idle     --count N [--size S]: N tunnels set up (and S bytes echoed
//       through each when S > 0), then held until standard input closes or
//       --max-seconds pass; prints one JSON line when all are up.
//   loadgen pingpong --count N --size S: one tunnel, N round trips of S bytes.
//   loadgen http     --conns C --count N --url URL [--method GET|PUT --bytes B]
//       C keep-alive connections; GET reads the whole body; PUT sends B bytes.
//
// Common options: --proxy IP:PORT (absent: straight to the upstream),
// --upstream IP:PORT (where the target is without a proxy), --target HOST:PORT
// (the CONNECT target), --max-seconds S (every mode is bounded in count and
// time). Each client mode prints one JSON object on standard output.
//
// TLS (OpenSSL; both ends offer TLS 1.3 with TLS_AES_128_GCM_SHA256 only):
//   serve --tls IP:PORT --cert PEM --key PEM: a TLS port; after the handshake a
//       connection whose first byte starts a TLS record speaks the tunnel
//       protocol, any other speaks HTTP (the origin above).
//   --hello HOST: every tunnel first sends a real ClientHello naming HOST (made
//       once with OpenSSL), for proxies that check the server name; the tunnel
//       port skips a leading TLS record.
//   --proxy-tls 1 [--proxy-name NAME]: TLS to the proxy (an HTTPS proxy
//       listener; without --proxy, to the upstream's TLS port), its
//       certificate checked against NAME (with --ca).
//   http --url https://HOST/...: TLS to the origin (through a CONNECT tunnel to
//       HOST:443 with --proxy), its certificate checked against HOST (with --ca).
//   --ca PEM: the CA the certificates are checked against; --resume 1: offer
//       a ticket from an earlier connection (each ticket once, newest first).
//
// Proxy authentication: --proxy-user NAME --proxy-password PW: every CONNECT
// carries `Proxy-Authorization: Basic` for NAME; with --proxy-users N (> 0) the
// k-th CONNECT names user NAME<k mod N> instead (NAME0, NAME1, ...), all with
// the same password.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr size_t kIoChunk = 1 << 20;  // bytes per read/write call in bulk transfers
constexpr size_t kHeaderBytes = 16;   // the tunnel protocol's header

char g_zeros[kIoChunk];  // what sources and uploads send
char g_rbuf[kIoChunk];   // where reads land when the bytes are dropped

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "loadgen: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "loadgen: %s (see the comment at the top of loadgen.cpp)\n", msg);
  std::exit(64);
}

uint64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

sockaddr_in parseAddr(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) {
    usage(("bad address " + s).c_str());
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(std::atoi(s.c_str() + colon + 1)));
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    usage(("bad address " + s).c_str());
  }
  return sa;
}

void raiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// --- TLS (OpenSSL). Both ends offer TLS 1.3 with AES-128-GCM only, read ahead
// into a 256 KiB buffer (one read call for many records, not two per record) and write partial
// records as the socket takes them.

void tlsCommon(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);  // up to 256 KiB of records per read call
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

SSL_CTX* tlsServerCtx(const std::string& cert, const std::string& key) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  tlsCommon(ctx);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    usage("cannot load --cert/--key");
  }
  return ctx;
}

// The client's tickets (TLS 1.3 tickets arrive after the handshake), newest
// last. Each is offered once, as a client holding its own connections' tickets
// does; a server may accept a ticket only once.
std::vector<SSL_SESSION*> g_sessions;

int onNewSession(SSL*, SSL_SESSION* sess) {
  if (SSL_SESSION_is_resumable(sess) != 1) {
    return 0;
  }
  if (g_sessions.size() >= 4096) {
    SSL_SESSION_free(g_sessions.front());
    g_sessions.erase(g_sessions.begin());
  }
  g_sessions.push_back(sess);
  return 1;  // kept
}

SSL_CTX* tlsClientCtx(const std::string& ca) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  tlsCommon(ctx);
  if (!ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
      ERR_print_errors_fp(stderr);
      usage("cannot load --ca");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, onNewSession);
  return ctx;
}

SSL* tlsClient(SSL_CTX* ctx, int fd, const std::string& host, bool resume) {
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, host.c_str());
  if (SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE) {
    SSL_set1_host(ssl, host.c_str());
  }
  if (resume && !g_sessions.empty()) {
    SSL_set_session(ssl, g_sessions.back());
    SSL_SESSION_free(g_sessions.back());
    g_sessions.pop_back();
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

// A real TLS 1.3 ClientHello naming `host`, as a client would send it first in
// a tunnel (so that a proxy checking the server name sees one); the upstream
// of the tunnel protocol skips it. Made once, sent by every tunnel.
std::string makeClientHello(const std::string& host) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  tlsCommon(ctx);
  SSL* ssl = SSL_new(ctx);
  BIO* rb = BIO_new(BIO_s_mem());
  BIO* wb = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rb, wb);
  SSL_set_tlsext_host_name(ssl, host.c_str());
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants to read: the ClientHello is in wb
  char* p = nullptr;
  long n = BIO_get_mem_data(wb, &p);
  std::string out(p, size_t(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

// I/O through TLS when `ssl` is set: >0 bytes, 0 end of stream, -1 with errno
// (EAGAIN: try again when the socket is ready).
ssize_t ioRecv(int fd, SSL* ssl, char* buf, size_t n) {
  if (ssl == nullptr) {
    return recv(fd, buf, n, 0);
  }
  int r = SSL_read(ssl, buf, int(std::min<size_t>(n, 1 << 30)));
  if (r > 0) {
    return r;
  }
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    return 0;
  }
  ERR_clear_error();
  errno = ECONNRESET;
  return -1;
}

ssize_t ioSend(int fd, SSL* ssl, const char* buf, size_t n) {
  if (ssl == nullptr) {
    return send(fd, buf, n, MSG_NOSIGNAL);
  }
  int r = SSL_write(ssl, buf, int(std::min<size_t>(n, 1 << 30)));
  if (r > 0) {
    return r;
  }
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  ERR_clear_error();
  errno = EPIPE;
  return -1;
}

// Drives a handshake: 1 done, 0 wait for `*events`, -1 failed.
int tlsHandshake(SSL* ssl, uint32_t* events, std::string* err) {
  int r = SSL_do_handshake(ssl);
  if (r == 1) {
    return 1;
  }
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    *events = EPOLLIN;
    return 0;
  }
  if (e == SSL_ERROR_WANT_WRITE) {
    *events = EPOLLOUT;
    return 0;
  }
  char buf[256];
  unsigned long code = ERR_get_error();
  ERR_error_string_n(code, buf, sizeof buf);
  if (err != nullptr) {
    *err = std::string("TLS handshake: ") + (code != 0 ? buf : "connection closed");
  }
  ERR_clear_error();
  return -1;
}

bool tlsPending(SSL* ssl) {
  return ssl != nullptr && SSL_has_pending(ssl) == 1;
}

struct Args {
  std::string mode;
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& dflt = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : it->second;
  }
  uint64_t num(const std::string& k, uint64_t dflt) const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : std::strtoull(it->second.c_str(), nullptr, 10);
  }
  double real(const std::string& k, double dflt) const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : std::strtod(it->second.c_str(), nullptr);
  }
};

void putHeader(std::string& out, char cmd, uint64_t n) {
  char h[kHeaderBytes] = {};
  h[0] = cmd;
  for (int i = 0; i < 8; ++i) {
    h[8 + i] = char((n >> (8 * i)) & 0xff);
  }
  out.append(h, kHeaderBytes);
}

bool ieq(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// The value of a header field in a head (without the final CRLFCRLF), or "".
std::string_view headerValue(std::string_view head, std::string_view name) {
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos) {
    size_t start = pos + 2;
    size_t end = head.find("\r\n", start);
    std::string_view line = head.substr(start, end == std::string_view::npos ? end : end - start);
    auto colon = line.find(':');
    if (colon != std::string_view::npos && ieq(line.substr(0, colon), name)) {
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
        v.remove_prefix(1);
      }
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
        v.remove_suffix(1);
      }
      return v;
    }
    pos = end;
  }
  return {};
}

// Chunked transfer decoding of bytes that are dropped. feed() consumes what it
// can from `in` and returns the number of bytes used; done() once the last
// chunk and the (empty) trailer have gone by.
struct ChunkedDrop {
  enum { size_line, data, data_crlf, trailer, finished } st = size_line;
  uint64_t left = 0;
  std::string line;
  bool done() const { return st == finished; }
  size_t feed(const char* p, size_t n) {
    size_t used = 0;
    while (used < n && st != finished) {
      if (st == data) {
        size_t take = size_t(std::min<uint64_t>(left, n - used));
        used += take;
        left -= take;
        if (left == 0) {
          st = data_crlf;
        }
        continue;
      }
      char c = p[used++];
      if (c != '\n') {
        line.push_back(c);
        continue;
      }
      if (st == size_line) {
        left = std::strtoull(line.c_str(), nullptr, 16);
        st = left == 0 ? trailer : data;
      } else if (st == data_crlf) {
        st = size_line;
      } else if (st == trailer && (line.empty() || line == "\r")) {
        st = finished;
      }
      line.clear();
    }
    return used;
  }
};

// ---------------------------------------------------------------------------
// the upstream server

struct ServerConn {
  int fd = -1;
  bool http = false;
  SSL* ssl = nullptr;          // a TLS connection (--tls port)
  bool handshaking = false;    // its handshake is not complete yet
  bool sniff = false;          // tunnel protocol or HTTP: the first byte decides (TLS port)
  bool hello_skipped = false;  // tunnel protocol: a leading TLS record was skipped (or none)
  size_t skipped = 0;          // bytes of that record's body skipped so far
  std::string out;             // bytes waiting to be written
  size_t out_off = 0;
  uint64_t source_left = 0;  // body / source bytes still to send from g_zeros
  // tunnel protocol
  std::string hdr;
  char cmd = 0;
  uint64_t sink_left = 0;
  // http
  std::string in;          // unparsed request bytes
  bool in_body = false;    // dropping a request body
  uint64_t body_left = 0;  // Content-Length body bytes left
  bool chunked = false;
  ChunkedDrop chunks;
  uint32_t events = 0;
};

class Server {
 public:
  explicit Server(const Args& args) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) {
      die("epoll_create1");
    }
    if (!args.get("tunnel").empty()) {
      tunnel_fd_ = listenOn(args.get("tunnel"));
    }
    if (!args.get("http").empty()) {
      http_fd_ = listenOn(args.get("http"));
    }
    if (!args.get("tls").empty()) {
      tls_ctx_ = tlsServerCtx(args.get("cert"), args.get("key"));
      tls_fd_ = listenOn(args.get("tls"));
    }
  }

  void run() {
    std::vector<epoll_event> evs(512);
    std::printf("{\"listening\":true}\n");
    std::fflush(stdout);
    for (;;) {
      int n = epoll_wait(ep_, evs.data(), int(evs.size()), -1);
      if (n < 0) {
        if (errno == EINTR) {
          continue;
        }
        die("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        void* ptr = evs[i].data.ptr;
        if (ptr == &tunnel_fd_ || ptr == &http_fd_ || ptr == &tls_fd_) {
          acceptAll(*static_cast<int*>(ptr), ptr == &http_fd_, ptr == &tls_fd_);
          continue;
        }
        auto* c = static_cast<ServerConn*>(ptr);
        if (!drive(*c)) {
          if (c->ssl != nullptr) {
            SSL_free(c->ssl);
          }
          close(c->fd);
          delete c;
        }
      }
    }
  }

 private:
  int listenOn(const std::string& addr) {
    sockaddr_in sa = parseAddr(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
      die(("bind " + addr).c_str());
    }
    if (listen(fd, 4096) < 0) {
      die("listen");
    }
    return fd;  // registered with epoll in finishListen(), once the member holds it
  }

 public:
  void finishListen() {
    for (int* member : {&tunnel_fd_, &http_fd_, &tls_fd_}) {
      if (*member >= 0) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = member;
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, *member, &ev) < 0) {
          die("epoll_ctl listener");
        }
      }
    }
  }

 private:
  void acceptAll(int lfd, bool http, bool tls) {
    for (int i = 0; i < 256; ++i) {
      int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
          std::fprintf(stderr, "loadgen serve: accept: %s\n", std::strerror(errno));
        }
        return;
      }
      setNoDelay(fd);
      auto* c = new ServerConn;
      c->fd = fd;
      c->http = http;
      c->events = EPOLLIN;
      if (tls) {
        c->ssl = SSL_new(tls_ctx_);
        SSL_set_fd(c->ssl, fd);
        SSL_set_accept_state(c->ssl);
        c->handshaking = true;
        c->sniff = true;
      }
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = c;
      epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    }
  }

  void want(ServerConn& c, uint32_t events) {
    if (events != c.events) {
      epoll_event ev{};
      ev.events = events;
      ev.data.ptr = &c;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
      c.events = events;
    }
  }

  // Writes what is pending. Returns 1 when all is written, 0 when blocked, -1 on error.
  int flush(ServerConn& c) {
    while (c.out_off < c.out.size() || c.source_left > 0) {
      ssize_t w;
      if (c.out_off < c.out.size()) {
        w = ioSend(c.fd, c.ssl, c.out.data() + c.out_off, c.out.size() - c.out_off);
      } else {
        w = ioSend(c.fd, c.ssl, g_zeros, size_t(std::min<uint64_t>(c.source_left, kIoChunk)));
      }
      if (w < 0) {
        if (errno == EAGAIN) {
          return 0;
        }
        if (errno == EINTR) {
          continue;
        }
        return -1;
      }
      if (c.out_off < c.out.size()) {
        c.out_off += size_t(w);
        if (c.out_off == c.out.size()) {
          c.out.clear();
          c.out_off = 0;
        }
      } else {
        c.source_left -= uint64_t(w);
      }
    }
    return 1;
  }

  // Makes all the progress it can; false: close the connection.
  bool drive(ServerConn& c) {
    if (c.handshaking) {
      uint32_t ev = 0;
      int h = tlsHandshake(c.ssl, &ev, nullptr);
      if (h < 0) {
        return false;
      }
      if (h == 0) {
        want(c, ev);
        return true;
      }
      c.handshaking = false;
    }
    for (int round = 0; round < 64 || tlsPending(c.ssl); ++round) {
      int f = flush(c);
      if (f < 0) {
        return false;
      }
      if (f == 0) {
        want(c, EPOLLOUT);
        return true;
      }
      ssize_t r = ioRecv(c.fd, c.ssl, g_rbuf, sizeof g_rbuf);
      if (r == 0) {
        return false;
      }
      if (r < 0) {
        if (errno == EAGAIN) {
          want(c, EPOLLIN);
          return true;
        }
        if (errno == EINTR) {
          continue;
        }
        return false;
      }
      if (c.sniff) {
        // Tunnel clients start with a TLS record (their ClientHello), HTTP
        // clients with a method.
        c.sniff = false;
        c.http = g_rbuf[0] != 0x16;
      }
      bool ok = c.http ? onHttpBytes(c, g_rbuf, size_t(r)) : onTunnelBytes(c, g_rbuf, size_t(r));
      if (!ok) {
        return false;
      }
    }
    // Fairness: come back on the next loop pass.
    want(c,
         (c.out_off < c.out.size() || c.source_left > 0) ? uint32_t(EPOLLOUT) : uint32_t(EPOLLIN));
    return true;
  }

  bool onTunnelBytes(ServerConn& c, const char* p, size_t n) {
    if (!c.hello_skipped) {
      // A leading TLS record (the client's ClientHello, for proxies that check
      // the server name) is skipped; its 5-byte header gives its length.
      size_t take = std::min(n, size_t(5) > c.hdr.size() ? size_t(5) - c.hdr.size() : size_t(0));
      if (c.hdr.empty() && n > 0 && p[0] != 0x16) {
        c.hello_skipped = true;
      } else {
        c.hdr.append(p, take);
        p += take;
        n -= take;
        if (c.hdr.size() < 5) {
          return true;
        }
        size_t len = (size_t(static_cast<unsigned char>(c.hdr[3])) << 8) |
                     static_cast<unsigned char>(c.hdr[4]);
        size_t skip = std::min(n, len - c.skipped);
        c.skipped += skip;
        p += skip;
        n -= skip;
        if (c.skipped < len) {
          return true;
        }
        c.hdr.clear();
        c.hello_skipped = true;
      }
    }
    if (c.cmd == 0) {
      size_t take = std::min(n, kHeaderBytes - c.hdr.size());
      c.hdr.append(p, take);
      p += take;
      n -= take;
      if (c.hdr.size() < kHeaderBytes) {
        return true;
      }
      uint64_t len = 0;
      for (int i = 0; i < 8; ++i) {
        len |= uint64_t(static_cast<unsigned char>(c.hdr[8 + i])) << (8 * i);
      }
      c.cmd = c.hdr[0];
      if (c.cmd == 'D') {
        c.source_left = len;
      } else if (c.cmd == 'U') {
        c.sink_left = len;
        if (len == 0) {
          c.out.push_back('K');
        }
      } else if (c.cmd != 'E') {
        return false;
      }
    }
    if (n == 0) {
      return true;
    }
    if (c.cmd == 'U') {
      if (n > c.sink_left) {
        return false;
      }
      c.sink_left -= n;
      if (c.sink_left == 0) {
        c.out.push_back('K');
      }
    } else if (c.cmd == 'E') {
      c.out.append(p, n);
    }
    return true;
  }

  bool onHttpBytes(ServerConn& c, const char* p, size_t n) {
    if (c.in_body && c.in.empty()) {
      // Fast path for large request bodies: drop in place.
      size_t used = dropBody(c, p, n);
      p += used;
      n -= used;
      if (c.in_body) {
        return true;
      }
      respondPut(c);
    }
    c.in.append(p, n);
    for (int guard = 0; guard < 1024; ++guard) {
      if (c.in_body) {
        size_t used = dropBody(c, c.in.data(), c.in.size());
        c.in.erase(0, used);
        if (c.in_body) {
          return true;
        }
        respondPut(c);
        continue;
      }
      size_t end = c.in.find("\r\n\r\n");
      if (end == std::string::npos) {
        return c.in.size() < 65536;
      }
      std::string head = c.in.substr(0, end);
      c.in.erase(0, end + 4);
      size_t sp1 = head.find(' ');
      size_t sp2 = head.find(' ', sp1 + 1);
      if (sp1 == std::string::npos || sp2 == std::string::npos) {
        return false;
      }
      std::string method = head.substr(0, sp1);
      std::string target = head.substr(sp1 + 1, sp2 - sp1 - 1);
      if (method == "GET" || method == "HEAD") {
        size_t slash = target.rfind('/');
        uint64_t len = std::strtoull(target.c_str() + slash + 1, nullptr, 10);
        char buf[160];
        int hn = std::snprintf(
            buf, sizeof buf,
            "HTTP/1.1 200 OK\r\nContent-Length: %" PRIu64
            "\r\nContent-Type: application/octet-stream\r\nCache-Control: no-store\r\n\r\n",
            len);
        c.out.append(buf, size_t(hn));
        if (method == "GET") {
          if (len <= 65536) {
            c.out.append(size_t(len), 'x');
          } else {
            c.source_left += len;  // after the head, from g_zeros
          }
        }
      } else if (method == "PUT" || method == "POST") {
        std::string_view te = headerValue(head, "Transfer-Encoding");
        c.chunked = !te.empty() && te.find("chunked") != std::string_view::npos;
        c.chunks = ChunkedDrop{};
        c.body_left = c.chunked
                          ? 0
                          : std::strtoull(std::string(headerValue(head, "Content-Length")).c_str(),
                                          nullptr, 10);
        c.in_body = true;
        if (!c.chunked && c.body_left == 0) {
          c.in_body = false;
          respondPut(c);
        }
      } else {
        return false;
      }
      if (c.in.empty()) {
        return true;
      }
    }
    return false;
  }

  size_t dropBody(ServerConn& c, const char* p, size_t n) {
    if (c.chunked) {
      size_t used = c.chunks.feed(p, n);
      if (c.chunks.done()) {
        c.in_body = false;
      }
      return used;
    }
    size_t take = size_t(std::min<uint64_t>(c.body_left, n));
    c.body_left -= take;
    if (c.body_left == 0) {
      c.in_body = false;
    }
    return take;
  }

  static void respondPut(ServerConn& c) {
    c.out.append("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nCache-Control: no-store\r\n\r\n");
  }

  int ep_ = -1;
  int tunnel_fd_ = -1;
  int http_fd_ = -1;
  int tls_fd_ = -1;
  SSL_CTX* tls_ctx_ = nullptr;
};

// ---------------------------------------------------------------------------
// clients

struct Target {
  bool via_proxy = false;
  sockaddr_in connect_to{};  // the proxy, or the upstream itself
  std::string target;        // host:port for CONNECT
  bool proxy_tls = false;    // TLS to the proxy (an HTTPS proxy listener)
  std::string proxy_name;    // the name its certificate is checked against
  std::string hello;         // a ClientHello sent first in every tunnel (--hello HOST)
  std::string proxy_user;    // Proxy-Authorization on every CONNECT (--proxy-user)
  std::string proxy_password;
  uint64_t proxy_users = 0;  // > 0: the k-th CONNECT names proxy_user + (k mod proxy_users)
};

std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), int(in.size()));
  out.resize(size_t(n));
  return out;
}

// The CONNECT request for the k-th tunnel (k counts the CONNECTs a client sent).
std::string connectRequest(const Target& t, const std::string& target, uint64_t k) {
  std::string req = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
  if (!t.proxy_user.empty()) {
    std::string user = t.proxy_user;
    if (t.proxy_users > 0) {
      user += std::to_string(k % t.proxy_users);
    }
    req += "Proxy-Authorization: Basic " + base64(user + ":" + t.proxy_password) + "\r\n";
  }
  return req + "\r\n";
}

Target targetFrom(const Args& args) {
  Target t;
  std::string proxy = args.get("proxy");
  t.via_proxy = !proxy.empty() && proxy != "none";
  t.connect_to = parseAddr(t.via_proxy ? proxy : args.get("upstream"));
  t.target = args.get("target");
  if (t.via_proxy && t.target.empty() && args.mode != "http") {
    usage("--target is required with --proxy");
  }
  t.proxy_tls = args.get("proxy-tls", "0") == "1";  // without a proxy: TLS to the upstream
  t.proxy_name = args.get("proxy-name", "localhost");
  if (!args.get("hello").empty()) {
    t.hello = makeClientHello(args.get("hello"));
  }
  t.proxy_user = args.get("proxy-user");
  t.proxy_password = args.get("proxy-password");
  t.proxy_users = args.num("proxy-users", 0);
  if (t.proxy_user.empty() && (!t.proxy_password.empty() || t.proxy_users > 0)) {
    usage("--proxy-password and --proxy-users need --proxy-user");
  }
  return t;
}

enum class St { connecting, proxy_tls, proxy_head, end_tls, ready, running, held, done };

bool inSetup(St st) {
  return st == St::connecting || st == St::proxy_tls || st == St::proxy_head || st == St::end_tls;
}

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;  // TLS to the proxy, or (https URLs) to the origin
  St st = St::connecting;
  std::string out;
  size_t out_off = 0;
  std::string in;          // head bytes (CONNECT reply, HTTP response head)
  uint64_t send_left = 0;  // bulk bytes to send from g_zeros
  uint64_t recv_left = 0;  // bytes still expected (tunnel data, echo, body)
  bool want_ack = false;   // upload: waiting for 'K'
  uint32_t events = 0;
  // http
  bool in_resp_body = false;
  bool resp_chunked = false;
  bool resp_until_close = false;
  bool server_closes = false;  // the response said Connection: close
  ChunkedDrop chunks;
  uint64_t req_start = 0;
  uint64_t responses = 0;  // completed on this connection
};

class Client {
 public:
  Client(const Args& args) : args_(args), t_(targetFrom(args)) {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) {
      die("epoll_create1");
    }
    max_seconds_ = args.real("max-seconds", 60);
    deadline_ = nowNs() + uint64_t(max_seconds_ * 1e9);
    resume_ = args.get("resume", "0") == "1";
    std::string url = args.get("url");
    if (url.rfind("https://", 0) == 0) {
      https_ = true;
      https_host_ = url.substr(8, url.find('/', 8) - 8);
    }
    if (t_.proxy_tls || https_) {
      tls_ctx_ = tlsClientCtx(args.get("ca"));
    }
  }

  int run() {
    const std::string& m = args_.mode;
    if (m == "down" || m == "up") {
      return runBulk(m == "down");
    }
    if (m == "setup") {
      return runSetup();
    }
    if (m == "idle") {
      return runIdle();
    }
    if (m == "http") {
      return runHttp();
    }
    usage("unknown mode");
  }

 private:
  // --- plumbing

  Conn* open() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++errors_;
      last_error_ = std::string("socket: ") + std::strerror(errno);
      return nullptr;
    }
    setNoDelay(fd);
    int r = connect(fd, reinterpret_cast<const sockaddr*>(&t_.connect_to), sizeof t_.connect_to);
    if (r < 0 && errno != EINPROGRESS) {
      ++errors_;
      last_error_ = std::string("connect: ") + std::strerror(errno);
      close(fd);
      return nullptr;
    }
    auto* c = new Conn;
    c->fd = fd;
    c->events = EPOLLOUT;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.ptr = c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    ++live_;
    return c;
  }

  void closeConn(Conn* c) {
    if (c->ssl != nullptr) {
      // close_notify, as clients send it: OpenSSL also marks the session of a
      // connection freed without it not resumable (the last ticket, here).
      if (SSL_is_init_finished(c->ssl) == 1) {
        SSL_shutdown(c->ssl);
      }
      SSL_free(c->ssl);
    }
    close(c->fd);
    delete c;
    --live_;
  }

  void want(Conn& c, uint32_t events) {
    if (events != c.events) {
      epoll_event ev{};
      ev.events = events;
      ev.data.ptr = &c;
      epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
      c.events = events;
    }
  }

  // 1: all written; 0: blocked; -1: error.
  int flush(Conn& c) {
    while (c.out_off < c.out.size() || c.send_left > 0) {
      ssize_t w;
      if (c.out_off < c.out.size()) {
        w = ioSend(c.fd, c.ssl, c.out.data() + c.out_off, c.out.size() - c.out_off);
      } else {
        w = ioSend(c.fd, c.ssl, g_zeros, size_t(std::min<uint64_t>(c.send_left, kIoChunk)));
      }
      if (w < 0) {
        if (errno == EAGAIN) {
          return 0;
        }
        if (errno == EINTR) {
          continue;
        }
        last_error_ = std::string("send: ") + std::strerror(errno);
        return -1;
      }
      if (c.out_off < c.out.size()) {
        c.out_off += size_t(w);
        if (c.out_off == c.out.size()) {
          c.out.clear();
          c.out_off = 0;
        }
      } else {
        c.send_left -= uint64_t(w);
        bytes_ += uint64_t(w);
      }
    }
    return 1;
  }

  // Starts the tunnel: the CONNECT request, or nothing without a proxy.
  void beginTunnel(Conn& c) {
    bool tunnel = args_.mode != "http" || https_;
    if (t_.via_proxy && tunnel) {
      std::string target = https_ ? https_host_ + ":443" : t_.target;
      c.out = connectRequest(t_, target, connects_++);
      c.st = St::proxy_head;
    } else {
      afterTunnel(c);
    }
  }

  // The tunnel (or the direct connection) is there: TLS to the origin for
  // https URLs, else ready.
  void afterTunnel(Conn& c) {
    if (https_) {
      c.ssl = tlsClient(tls_ctx_, c.fd, https_host_, resume_);
      c.st = St::end_tls;
    } else {
      c.st = St::ready;
    }
  }

  // The tunnel protocol's first bytes: the ClientHello (--hello), then the header.
  void startTunnelBytes(Conn& c, char cmd, uint64_t n) {
    c.out += t_.hello;
    putHeader(c.out, cmd, n);
  }

  // 1 done, 0 waiting (events set), -1 failed.
  int stepHandshake(Conn& c) {
    uint32_t ev = 0;
    int h = tlsHandshake(c.ssl, &ev, &last_error_);
    if (h == 0) {
      want(c, ev);
    } else if (h == 1) {
      ++handshakes_;
      if (SSL_session_reused(c.ssl) == 1) {
        ++resumed_;
      }
    }
    return h;
  }

  // The event loop: calls step(conn) for every ready connection until
  // finished() or the deadline.
  template <typename Step, typename Finished>
  bool loop(Step step, Finished finished) {
    std::vector<epoll_event> evs(1024);
    while (!finished()) {
      uint64_t now = nowNs();
      if (now >= deadline_) {
        timed_out_ = true;
        return false;
      }
      int timeout_ms = int(std::min<uint64_t>((deadline_ - now) / 1000000 + 1, 100));
      int n = epoll_wait(ep_, evs.data(), int(evs.size()), timeout_ms);
      if (n < 0 && errno != EINTR) {
        die("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        if (evs[i].data.ptr == nullptr) {
          stdin_closed_ = true;
          continue;
        }
        step(static_cast<Conn*>(evs[i].data.ptr));
      }
    }
    return true;
  }

  // Drives the set-up of a tunnel: connect, CONNECT, reply head. Returns false
  // on failure (counted). Leaves c.st == ready when done.
  bool stepSetup(Conn& c) {
    if (c.st == St::connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last_error_ = std::string("connect: ") + std::strerror(err);
        return false;
      }
      if (t_.proxy_tls) {
        c.ssl = tlsClient(tls_ctx_, c.fd, t_.proxy_name, resume_);
        c.st = St::proxy_tls;
      } else {
        beginTunnel(c);
      }
    }
    if (c.st == St::proxy_tls) {
      int h = stepHandshake(c);
      if (h <= 0) {
        return h == 0;
      }
      beginTunnel(c);
    }
    if (c.st == St::proxy_head) {
      int f = flush(c);
      if (f < 0) {
        return false;
      }
      if (f == 0) {
        want(c, EPOLLOUT);
        return true;
      }
      char buf[4096];
      for (;;) {
        ssize_t r = ioRecv(c.fd, c.ssl, buf, sizeof buf);
        if (r == 0) {
          last_error_ = "proxy closed before its reply";
          return false;
        }
        if (r < 0) {
          if (errno == EAGAIN) {
            want(c, EPOLLIN);
            return true;
          }
          if (errno == EINTR) {
            continue;
          }
          last_error_ = std::string("recv: ") + std::strerror(errno);
          return false;
        }
        c.in.append(buf, size_t(r));
        size_t end = c.in.find("\r\n\r\n");
        if (end != std::string::npos) {
          if (c.in.compare(0, 9, "HTTP/1.1 ") != 0 && c.in.compare(0, 9, "HTTP/1.0 ") != 0) {
            last_error_ = "bad proxy reply";
            return false;
          }
          if (c.in.compare(9, 3, "200") != 0) {
            last_error_ = "proxy said " + c.in.substr(0, c.in.find("\r\n"));
            return false;
          }
          if (end + 4 != c.in.size()) {
            last_error_ = "bytes after the proxy's reply head";
            return false;
          }
          c.in.clear();
          afterTunnel(c);
          break;
        }
        if (c.in.size() > 16384) {
          last_error_ = "proxy reply head too large";
          return false;
        }
      }
    }
    if (c.st == St::end_tls) {
      int h = stepHandshake(c);
      if (h <= 0) {
        return h == 0;
      }
      c.st = St::ready;
    }
    return true;
  }

  // Sends what is pending and reads what is expected (recv_left, or the ack).
  // Returns 1 when the exchange is complete, 0 to wait, -1 on failure.
  int stepTransfer(Conn& c) {
    int f = flush(c);
    if (f < 0) {
      return -1;
    }
    for (int round = 0; (round < 16 || tlsPending(c.ssl)) && (c.recv_left > 0 || c.want_ack);
         ++round) {
      ssize_t r = ioRecv(c.fd, c.ssl, g_rbuf, sizeof g_rbuf);
      if (r == 0) {
        last_error_ = "peer closed early";
        return -1;
      }
      if (r < 0) {
        if (errno == EAGAIN) {
          break;
        }
        if (errno == EINTR) {
          continue;
        }
        last_error_ = std::string("recv: ") + std::strerror(errno);
        return -1;
      }
      if (c.want_ack) {
        if (r != 1 || g_rbuf[0] != 'K') {
          last_error_ = "bad upload ack";
          return -1;
        }
        c.want_ack = false;
      } else {
        if (uint64_t(r) > c.recv_left) {
          last_error_ = "more bytes than expected";
          return -1;
        }
        c.recv_left -= uint64_t(r);
        if (args_.mode == "down") {
          bytes_ += uint64_t(r);
        }
      }
    }
    bool sending = f == 0;
    bool receiving = c.recv_left > 0 || c.want_ack;
    if (!sending && !receiving) {
      return 1;
    }
    want(c,
         sending ? (uint32_t(EPOLLOUT) | (receiving ? uint32_t(EPOLLIN) : 0u)) : uint32_t(EPOLLIN));
    return 0;
  }

  void printResult(const char* extra) {
    std::printf(
        "{\"mode\":\"%s\",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"bytes\":%" PRIu64
        ",\"seconds\":%.6f,\"timed_out\":%s,\"last_error\":\"%s\",\"tls_handshakes\":%" PRIu64
        ",\"tls_resumed\":%" PRIu64 "%s}\n",
        args_.mode.c_str(), ok_, errors_, bytes_, seconds_, timed_out_ ? "true" : "false",
        last_error_.c_str(), handshakes_, resumed_, extra);
    std::fflush(stdout);
  }

  // --- modes

  int runBulk(bool down) {
    uint64_t conns = args_.num("conns", 1);
    uint64_t total = args_.num("bytes", 1ull << 30);
    std::vector<Conn*> cs;
    for (uint64_t i = 0; i < conns; ++i) {
      Conn* c = open();
      if (c == nullptr) {
        printResult("");
        return 1;
      }
      cs.push_back(c);
    }
    size_t ready = 0;
    bool failed = false;
    loop(
        [&](Conn* c) {
          if (!stepSetup(*c)) {
            failed = true;
          } else if (c->st == St::ready) {
            ++ready;
            want(*c, 0);
          }
        },
        [&] { return failed || ready == cs.size(); });
    if (failed || ready != cs.size()) {
      ++errors_;
      printResult("");
      return 1;
    }
    uint64_t t0 = nowNs();
    size_t done = 0;
    for (uint64_t i = 0; i < conns; ++i) {
      Conn& c = *cs[i];
      uint64_t share = total / conns + (i < total % conns ? 1 : 0);
      startTunnelBytes(c, down ? 'D' : 'U', share);
      c.st = St::running;
      if (down) {
        c.recv_left = share;
      } else {
        c.send_left = share;
        c.want_ack = true;
      }
      int r = stepTransfer(c);
      if (r < 0) {
        failed = true;
      } else if (r == 1) {
        ++done;
        c.st = St::done;
      }
    }
    loop(
        [&](Conn* c) {
          if (c->st != St::running) {
            return;
          }
          int r = stepTransfer(*c);
          if (r < 0) {
            failed = true;
          } else if (r == 1) {
            ++done;
            c->st = St::done;
            want(*c, 0);
          }
        },
        [&] { return failed || done == cs.size(); });
    seconds_ = double(nowNs() - t0) / 1e9;
    ok_ = done;
    if (failed) {
      ++errors_;
    }
    for (Conn* c : cs) {
      closeConn(c);
    }
    char extra[64];
    std::snprintf(extra, sizeof extra, ",\"mb_per_s\":%.1f",
                  double(bytes_) / 1e6 / std::max(seconds_, 1e-9));
    printResult(extra);
    return failed || timed_out_ ? 1 : 0;
  }

  int runSetup() {
    uint64_t conns = args_.num("conns", 50);
    uint64_t count = args_.num("count", 10000);
    uint64_t size = args_.num("size", 100);
    uint64_t started = 0;
    uint64_t t0 = nowNs();
    std::vector<uint64_t> lat;
    lat.reserve(size_t(std::min<uint64_t>(count, 10000000)));
    std::map<Conn*, uint64_t> start_of;
    auto launch = [&] {
      while (live_ < conns && started < count && nowNs() < deadline_) {
        ++started;
        Conn* c = open();
        if (c != nullptr) {
          start_of[c] = nowNs();
        }
      }
    };
    launch();
    loop(
        [&](Conn* c) {
          bool fail = false;
          if (inSetup(c->st)) {
            fail = !stepSetup(*c);
          }
          if (!fail && c->st == St::ready) {
            startTunnelBytes(*c, 'E', 0);
            c->out.append(size_t(size), 'p');
            c->recv_left = size;
            c->st = St::running;
          }
          if (!fail && c->st == St::running) {
            int r = stepTransfer(*c);
            if (r < 0) {
              fail = true;
            } else if (r == 1) {
              ++ok_;
              lat.push_back(nowNs() - start_of[c]);
              start_of.erase(c);
              closeConn(c);
              launch();
              return;
            }
          }
          if (fail) {
            ++errors_;
            start_of.erase(c);
            closeConn(c);
            launch();
          }
        },
        [&] { return live_ == 0 && (started >= count || nowNs() >= deadline_); });
    seconds_ = double(nowNs() - t0) / 1e9;
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) {
      return lat.empty() ? 0.0 : double(lat[size_t(p * double(lat.size() - 1))]) / 1e3;
    };
    char extra[160];
    std::snprintf(extra, sizeof extra, ",\"per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f",
                  double(ok_) / seconds_, pct(0.5), pct(0.99));
    printResult(extra);
    return 0;
  }

  int runIdle() {
    uint64_t count = args_.num("count", 1000);
    uint64_t size = args_.num("size", 0);
    uint64_t window = args_.num("window", 100);
    uint64_t started = 0;
    uint64_t held = 0;
    std::vector<Conn*> all;
    auto launch = [&] {
      while (live_ - held < window && started < count) {
        ++started;
        Conn* c = open();
        if (c != nullptr) {
          all.push_back(c);
        }
      }
    };
    uint64_t t0 = nowNs();
    launch();
    loop(
        [&](Conn* c) {
          bool fail = false;
          if (inSetup(c->st)) {
            fail = !stepSetup(*c);
          }
          if (!fail && c->st == St::ready) {
            if (size == 0) {
              c->st = St::held;
            } else {
              startTunnelBytes(*c, 'E', 0);
              c->out.append(size_t(size), 'p');
              c->recv_left = size;
              c->st = St::running;
            }
          }
          if (!fail && c->st == St::running) {
            int r = stepTransfer(*c);
            if (r < 0) {
              fail = true;
            } else if (r == 1) {
              c->st = St::held;
            }
          }
          if (!fail && c->st == St::held) {
            ++held;
            ++ok_;
            want(*c, 0);
            launch();
          } else if (fail) {
            ++errors_;
            c->st = St::done;
            want(*c, 0);
            --live_;  // counted as finished; closed at exit
            launch();
          }
        },
        [&] { return started >= count && held + errors_ >= started; });
    seconds_ = double(nowNs() - t0) / 1e9;
    printResult(",\"holding\":true");
    // Hold until standard input closes or the deadline.
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, 0, &ev) < 0) {
      stdin_closed_ = false;  // not pollable (a file): hold until the deadline
    }
    loop([](Conn*) {}, [&] { return stdin_closed_; });
    for (Conn* c : all) {
      close(c->fd);
      delete c;
    }
    return 0;
  }

  int runHttp() {
    uint64_t conns = args_.num("conns", 1);
    uint64_t count = args_.num("count", 1000);
    std::string url = args_.get("url");
    std::string method = args_.get("method", "GET");
    uint64_t body = args_.num("bytes", 0);
    if (url.rfind("http://", 0) != 0 && !https_) {
      usage("--url must start with http:// or https://");
    }
    size_t skip = https_ ? 8 : 7;
    std::string hostport = url.substr(skip, url.find('/', skip) - skip);
    std::string path = url.substr(url.find('/', skip));
    // Through a proxy, plain HTTP names the whole URL; https goes through a tunnel.
    std::string head = method + " " + (t_.via_proxy && !https_ ? url : path) +
                       " HTTP/1.1\r\nHost: " + hostport + "\r\nUser-Agent: s3gate-loadgen\r\n";
    if (method == "PUT") {
      head += "Content-Length: " + std::to_string(body) + "\r\n";
    }
    head += "\r\n";
    uint64_t started = 0;
    uint64_t opening = 0;  // connections being set up (connect, CONNECT, TLS)
    uint64_t reconnects = 0;
    uint64_t body_bytes = 0;
    std::vector<uint64_t> lat;
    auto sendRequest = [&](Conn& c) {
      ++started;
      c.out += head;
      c.send_left = method == "PUT" ? body : 0;
      c.in.clear();
      c.in_resp_body = false;
      c.req_start = nowNs();
      c.st = St::running;
    };
    auto launch = [&] {
      while (live_ < conns && started + opening < count && nowNs() < deadline_) {
        Conn* c = open();
        if (c == nullptr) {
          return;
        }
        ++opening;
      }
    };
    uint64_t t0 = nowNs();
    launch();
    // Returns 1 when a response is complete, 0 to wait, -1 on failure, 2 when
    // the server closed after a complete response (read until close).
    auto stepResponse = [&](Conn& c) -> int {
      for (int round = 0; round < 32 || tlsPending(c.ssl); ++round) {
        ssize_t r = ioRecv(c.fd, c.ssl, g_rbuf, sizeof g_rbuf);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
          if (c.in_resp_body && c.resp_until_close) {
            return 2;
          }
          if (!c.in_resp_body && c.in.empty() && c.responses > 0) {
            return 3;  // a reused connection the server had closed: retry on a new one
          }
          last_error_ = "server closed mid-response";
          return -1;
        }
        if (r < 0) {
          if (errno == EAGAIN) {
            return 0;
          }
          if (errno == EINTR) {
            continue;
          }
          last_error_ = std::string("recv: ") + std::strerror(errno);
          return -1;
        }
        const char* p = g_rbuf;
        size_t n = size_t(r);
        if (!c.in_resp_body) {
          size_t old = c.in.size();
          c.in.append(p, n);
          size_t end = c.in.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
          if (end == std::string::npos) {
            if (c.in.size() > 65536) {
              last_error_ = "response head too large";
              return -1;
            }
            continue;
          }
          std::string_view h(c.in.data(), end);
          if (h.compare(0, 9, "HTTP/1.1 ") != 0 && h.compare(0, 9, "HTTP/1.0 ") != 0) {
            last_error_ = "bad response";
            return -1;
          }
          if (h.substr(9, 3) != "200") {
            last_error_ = "status " + std::string(h.substr(9, 3));
            return -1;
          }
          std::string_view connection = headerValue(h, "Connection");
          c.server_closes = ieq(connection, "close") || h.compare(0, 9, "HTTP/1.0 ") == 0;
          std::string_view te = headerValue(h, "Transfer-Encoding");
          std::string_view cl = headerValue(h, "Content-Length");
          c.resp_chunked = te.find("chunked") != std::string_view::npos;
          c.resp_until_close = !c.resp_chunked && cl.empty();
          c.recv_left = cl.empty() ? 0 : std::strtoull(std::string(cl).c_str(), nullptr, 10);
          c.chunks = ChunkedDrop{};
          c.in_resp_body = true;
          size_t rest = c.in.size() - (end + 4);
          std::string restBytes = c.in.substr(end + 4);
          c.in.clear();
          if (rest == 0) {
            if (!c.resp_chunked && !c.resp_until_close && c.recv_left == 0) {
              return 1;
            }
            continue;
          }
          std::memcpy(g_rbuf, restBytes.data(), rest);
          p = g_rbuf;
          n = rest;
        }
        if (c.resp_until_close) {
          body_bytes += n;
          continue;
        }
        if (c.resp_chunked) {
          size_t used = c.chunks.feed(p, n);
          body_bytes += used;
          if (c.chunks.done()) {
            return used == n ? 1 : -1;
          }
          continue;
        }
        if (n > c.recv_left) {
          last_error_ = "more bytes than the response's length";
          return -1;
        }
        c.recv_left -= n;
        body_bytes += n;
        if (c.recv_left == 0) {
          return 1;
        }
      }
      return 0;
    };
    loop(
        [&](Conn* c) {
          if (inSetup(c->st)) {
            if (!stepSetup(*c)) {
              --opening;
              ++errors_;
              closeConn(c);
              launch();
              return;
            }
            if (c->st != St::ready) {
              return;  // waiting for the events stepSetup asked for
            }
            --opening;
            if (started >= count || nowNs() >= deadline_) {
              closeConn(c);
              return;
            }
            sendRequest(*c);
          }
          auto retryOrFail = [&] { return c->responses > 0 && c->in.empty() ? 3 : -1; };
          int f = flush(*c);
          int r = f < 0 ? retryOrFail() : stepResponse(*c);
          // A fast server may have answered the next request already: loop,
          // bounded, so that one connection cannot starve the others.
          for (int turn = 0; turn < 16 && (r == 1 || r == 2); ++turn) {
            ++ok_;
            ++c->responses;
            lat.push_back(nowNs() - c->req_start);
            if (r == 2 || c->server_closes) {
              ++reconnects;
              closeConn(c);
              launch();
              return;
            }
            if (started >= count || nowNs() >= deadline_) {
              closeConn(c);
              return;
            }
            sendRequest(*c);
            f = flush(*c);
            r = f < 0 ? retryOrFail() : stepResponse(*c);
          }
          if (r == 3) {
            // tinyproxy closes every client connection after one response,
            // without saying so: the request goes again on a new connection.
            ++reconnects;
            --started;
            closeConn(c);
            launch();
            return;
          }
          if (r < 0) {
            ++errors_;
            closeConn(c);
            launch();
            return;
          }
          want(*c, f == 0 ? uint32_t(EPOLLOUT | EPOLLIN) : uint32_t(EPOLLIN));
        },
        [&] { return live_ == 0 && (started >= count || nowNs() >= deadline_); });
    seconds_ = double(nowNs() - t0) / 1e9;
    // Bodies of requests retried on a new connection are not counted twice.
    bytes_ = method == "GET" ? body_bytes : ok_ * body;
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) {
      return lat.empty() ? 0.0 : double(lat[size_t(p * double(lat.size() - 1))]) / 1e3;
    };
    char extra[256];
    std::snprintf(extra, sizeof extra,
                  ",\"per_s\":%.1f,\"mb_per_s\":%.1f,\"reconnects\":%" PRIu64
                  ",\"p50_us\":%.1f,\"p99_us\":%.1f",
                  double(ok_) / seconds_, double(bytes_) / 1e6 / seconds_, reconnects, pct(0.5),
                  pct(0.99));
    printResult(extra);
    return errors_ > 0 ? 1 : 0;
  }

  const Args& args_;
  Target t_;
  SSL_CTX* tls_ctx_ = nullptr;
  bool https_ = false;
  std::string https_host_;
  bool resume_ = false;
  uint64_t handshakes_ = 0;
  uint64_t resumed_ = 0;
  uint64_t connects_ = 0;  // CONNECT requests sent
  int ep_ = -1;
  double max_seconds_ = 60;
  uint64_t deadline_ = 0;
  uint64_t live_ = 0;
  uint64_t ok_ = 0;
  uint64_t errors_ = 0;
  uint64_t bytes_ = 0;
  double seconds_ = 0;
  bool timed_out_ = false;
  bool stdin_closed_ = false;
  std::string last_error_;
};

// ---------------------------------------------------------------------------
// ping-pong: blocking I/O on one tunnel, one round trip at a time.

bool writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    p += w;
    n -= size_t(w);
  }
  return true;
}

bool readAll(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) {
        continue;
      }
      return false;
    }
    p += r;
    n -= size_t(r);
  }
  return true;
}

int runPingPong(const Args& args) {
  Target t = targetFrom(args);
  uint64_t count = args.num("count", 10000);
  uint64_t warmup = args.num("warmup", 1000);
  size_t size = size_t(args.num("size", 100));
  double max_seconds = args.real("max-seconds", 60);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setNoDelay(fd);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&t.connect_to), sizeof t.connect_to) < 0) {
    die("connect");
  }
  if (t.via_proxy) {
    std::string req = connectRequest(t, t.target, 0);
    if (!writeAll(fd, req.data(), req.size())) {
      die("send CONNECT");
    }
    std::string head;
    char c;
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 16384) {
      if (recv(fd, &c, 1, 0) != 1) {
        die("proxy reply");
      }
      head.push_back(c);
    }
    if (head.compare(9, 3, "200") != 0) {
      std::fprintf(stderr, "loadgen: proxy said %s\n", head.c_str());
      return 1;
    }
  }
  std::string hdr = t.hello;
  putHeader(hdr, 'E', 0);
  if (!writeAll(fd, hdr.data(), hdr.size())) {
    die("send header");
  }
  std::vector<char> out(size, 'p');
  std::vector<char> in(size);
  std::vector<uint64_t> lat;
  lat.reserve(size_t(count));
  uint64_t deadline = nowNs() + uint64_t(max_seconds * 1e9);
  uint64_t t0 = 0;
  bool timed_out = false;
  for (uint64_t i = 0; i < warmup + count; ++i) {
    if (i == warmup) {
      t0 = nowNs();
    }
    uint64_t s = nowNs();
    if (s > deadline) {
      timed_out = true;
      break;
    }
    if (!writeAll(fd, out.data(), size) || !readAll(fd, in.data(), size)) {
      die("round trip");
    }
    if (i >= warmup) {
      lat.push_back(nowNs() - s);
    }
  }
  double seconds = double(nowNs() - t0) / 1e9;
  close(fd);
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    return lat.empty() ? 0.0 : double(lat[size_t(p * double(lat.size() - 1))]) / 1e3;
  };
  std::printf(
      "{\"mode\":\"pingpong\",\"ok\":%zu,\"errors\":0,\"seconds\":%.6f,\"timed_out\":%s,"
      "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"min_us\":%.2f}\n",
      lat.size(), seconds, timed_out ? "true" : "false", pct(0.5), pct(0.99), pct(0.999), pct(0.0));
  return timed_out ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage("a mode is required");
  }
  Args args;
  args.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      usage(("bad argument " + a).c_str());
    }
    args.kv[a.substr(2)] = argv[++i];
  }
  signal(SIGPIPE, SIG_IGN);
  raiseFdLimit();
  if (args.mode == "serve") {
    Server s(args);
    s.finishListen();
    s.run();
    return 0;
  }
  if (args.mode == "pingpong") {
    return runPingPong(args);
  }
  Client c(args);
  return c.run();
}
