#include "proxy/admin.h"

#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "common/text.h"
#include "proxy/http_parser.h"

namespace s3gate {

namespace {

constexpr int kBacklog = 64;
constexpr int kAcceptBatch = 16;  // accepts per wake-up, so that one wake-up stays short
constexpr size_t kMaxHeaders = 100;
constexpr std::chrono::seconds kLingerTimeout{2};
// After EMFILE or ENFILE the listening socket stays readable: accepting again
// at once would spin. The proxy gets the descriptors that free up meanwhile.
constexpr std::chrono::milliseconds kAcceptRetry{100};
constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextContentType = "text/plain; charset=utf-8";

timeval toTv(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// Whether a Connection field of `head` lists "close".
bool asksClose(const RequestHead& head) {
  for (const HeaderField& field : head.headers) {
    if (!equalsIgnoreCase(field.name, "connection")) {
      continue;
    }
    std::string_view rest = field.value;
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      std::string_view option = rest.substr(0, comma);
      while (!option.empty() && (option.front() == ' ' || option.front() == '\t')) {
        option.remove_prefix(1);
      }
      while (!option.empty() && (option.back() == ' ' || option.back() == '\t')) {
        option.remove_suffix(1);
      }
      if (equalsIgnoreCase(option, "close")) {
        return true;
      }
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
  }
  return false;
}

// Whether the request announces a body (which is not read: the connection
// closes after the answer).
bool hasBody(const RequestHead& head) {
  for (const HeaderField& field : head.headers) {
    if (equalsIgnoreCase(field.name, "transfer-encoding")) {
      return true;
    }
    if (equalsIgnoreCase(field.name, "content-length") && field.value != "0") {
      return true;
    }
  }
  return false;
}

std::string responseHead(int code, std::string_view reason, std::string_view content_type,
                         size_t length, bool keep_alive, bool allow) {
  std::string out = "HTTP/1.1 " + std::to_string(code) + " ";
  out += reason;
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nCache-Control: no-store\r\n";
  if (allow) {
    out += "Allow: GET, HEAD\r\n";
  }
  out += "Content-Length: " + std::to_string(length) + "\r\n";
  if (!keep_alive) {
    out += "Connection: close\r\n";
  }
  out += "\r\n";
  return out;
}

}  // namespace

// One admin connection. Owned by AdminServer::connections_; its events are
// freed before its descriptor closes (members are destroyed in reverse order).
struct AdminServer::Connection {
  enum class Phase {
    head,       // reading a request head, before the head deadline
    writing,    // writing the response, before the write deadline
    lingering,  // answered and shut down for writing: reading to EOF, briefly
    closed,     // waiting to be reaped
  };

  AdminServer* server = nullptr;
  Connections::iterator self;
  UniqueFd fd;
  EventPtr socket_event;  // EV_READ or EV_WRITE, as the phase needs
  EventPtr deadline;      // the phase's deadline: never pushed back by a byte
  Phase phase = Phase::head;
  std::string in;  // at most kMaxHeadBytes plus one read
  std::string out;
  size_t out_sent = 0;
  bool keep_alive = false;
};

AdminServer::AdminServer(event_base* base, Metrics& metrics, std::function<bool()> is_draining)
    : base_(base), metrics_(metrics), is_draining_(std::move(is_draining)) {}

AdminServer::~AdminServer() = default;

std::unique_ptr<AdminServer> AdminServer::create(event_base* base, const SocketAddress& address,
                                                 Metrics& metrics,
                                                 std::function<bool()> is_draining,
                                                 std::string* error) {
  std::unique_ptr<AdminServer> server(new AdminServer(base, metrics, std::move(is_draining)));

  sockaddr_storage storage{};
  socklen_t length = address.toSockaddr(&storage);
  UniqueFd fd(::socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    *error = "admin socket: " + errnoText(errno);
    return nullptr;
  }
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (storage.ss_family == AF_INET6) {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    *error = "admin bind " + address.toString() + ": " + errnoText(errno);
    return nullptr;
  }
  if (::listen(fd.get(), kBacklog) != 0) {
    *error = "admin listen " + address.toString() + ": " + errnoText(errno);
    return nullptr;
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0) {
    *error = "admin getsockname: " + errnoText(errno);
    return nullptr;
  }
  server->bound_ = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&bound));
  server->accept_event_.reset(
      event_new(base, fd.get(), EV_READ | EV_PERSIST, &AdminServer::onAcceptable, server.get()));
  server->accept_retry_.reset(evtimer_new(base, &AdminServer::onAcceptRetry, server.get()));
  if (!server->accept_event_ || !server->accept_retry_ ||
      event_add(server->accept_event_.get(), nullptr) != 0) {
    *error = "admin: cannot watch " + address.toString();
    return nullptr;
  }
  server->listener_ = std::move(fd);
  return server;
}

void AdminServer::onAcceptable(evutil_socket_t, short, void* arg) {
  static_cast<AdminServer*>(arg)->acceptAll();
}

void AdminServer::onAcceptRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  event_add(self->accept_event_.get(), nullptr);
  self->acceptAll();
}

void AdminServer::acceptAll() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        event_del(accept_event_.get());
        timeval tv = toTv(kAcceptRetry);
        evtimer_add(accept_retry_.get(), &tv);
      }
      return;  // EAGAIN: nothing more waits
    }
    if (connections_.size() >= kMaxConnections || descriptorsLow(fd.get())) {
      continue;  // closed at once (fd goes out of scope)
    }
    open(std::move(fd));
  }
}

// Counting the process's open descriptors exactly means reading /proc/self/fd,
// which costs about 8 us per open descriptor (120 ms at 15000): too much for
// every accept. accept(2) returns the lowest free number, so every number below
// the one it returned is open: a number within the reserve of the soft limit
// says the table is full up to there, and the connection is refused at no
// cost. With holes below (descriptors freed by closed connections) the count
// is low, but then those holes are free for the proxy, and the admin listener
// takes at most kMaxConnections of them. The reserve is a quarter of a small
// limit, so that a low limit still leaves the admin port usable.
bool AdminServer::descriptorsLow(int accepted_fd) const {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return false;
  }
  const rlim_t reserve = std::min<rlim_t>(kDescriptorReserve, limit.rlim_cur / 4);
  return static_cast<rlim_t>(accepted_fd) + reserve >= limit.rlim_cur;
}

void AdminServer::open(UniqueFd fd) {
  auto connection = std::make_unique<Connection>();
  Connection& c = *connection;
  c.server = this;
  c.socket_event.reset(event_new(base_, fd.get(), EV_READ | EV_PERSIST, &onSocket, &c));
  c.deadline.reset(evtimer_new(base_, &onDeadline, &c));
  if (!c.socket_event || !c.deadline || event_add(c.socket_event.get(), nullptr) != 0) {
    return;
  }
  c.fd = std::move(fd);
  c.self = connections_.insert(connections_.end(), std::move(connection));
  arm(c, kHeadTimeout);
}

void AdminServer::onSocket(evutil_socket_t, short, void* arg) {
  auto& c = *static_cast<Connection*>(arg);
  // No exception may cross into libevent: a connection that throws is closed.
  try {
    c.server->service(c);
  } catch (...) {
    c.server->close(c);
  }
}

void AdminServer::onDeadline(evutil_socket_t, short, void* arg) {
  auto& c = *static_cast<Connection*>(arg);
  c.server->close(c);
}

void AdminServer::arm(Connection& c, std::chrono::milliseconds after) {
  timeval tv = toTv(after);
  evtimer_add(c.deadline.get(), &tv);
}

void AdminServer::service(Connection& c) {
  switch (c.phase) {
    case Connection::Phase::head:
      if (readHead(c)) {
        answer(c);
      }
      return;
    case Connection::Phase::writing:
      writeOut(c);
      return;
    case Connection::Phase::lingering: {
      char buf[4096];
      while (true) {
        ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
        if (n > 0) {
          continue;  // discarded; the linger deadline bounds this
        }
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          return;
        }
        close(c);  // EOF or an error: done
        return;
      }
    }
    case Connection::Phase::closed:
      return;
  }
}

// Reads until the buffer holds a whole head (or what is bad or too large to be
// one): true then. False when more must be waited for, or the connection closed.
bool AdminServer::readHead(Connection& c) {
  const ParseLimits limits{kMaxHeadBytes, kMaxHeaders};
  while (true) {
    if (!c.in.empty() && parseRequestHead(c.in, limits).status != ParseStatus::incomplete) {
      return true;
    }
    char buf[2048];
    ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return false;
    }
    close(c);  // EOF before a whole head, or an error
    return false;
  }
}

void AdminServer::answer(Connection& c) {
  const ParseLimits limits{kMaxHeadBytes, kMaxHeaders};
  ParseResult parsed = parseRequestHead(c.in, limits);
  if (parsed.status == ParseStatus::error) {
    const bool too_large = parsed.reason == Reason::header_too_large;
    const std::string_view body = too_large ? "request head too large\n" : "bad request\n";
    c.keep_alive = false;
    c.out = responseHead(too_large ? 431 : 400,
                         too_large ? "Request Header Fields Too Large" : "Bad Request",
                         kTextContentType, body.size(), false, false);
    c.out += body;
    c.in.clear();
  } else {
    const RequestHead& head = parsed.head;
    c.keep_alive = head.version_minor == 1 && !asksClose(head) && !hasBody(head);
    std::string_view path = head.target.form == TargetForm::authority
                                ? std::string_view()
                                : std::string_view(head.target.path);
    path = path.substr(0, path.find('?'));
    c.out = respond(c, head.method, path);
    c.in.erase(0, head.head_length);  // a pipelined request waits its turn
  }
  c.out_sent = 0;
  c.phase = Connection::Phase::writing;
  arm(c, kWriteTimeout);
  writeOut(c);
}

std::string AdminServer::respond(Connection& c, std::string_view method, std::string_view path) {
  const bool head_only = method == "HEAD";
  const bool readable = method == "GET" || head_only;
  int code = 200;
  std::string_view reason = "OK";
  std::string_view content_type = kTextContentType;
  std::string body;
  bool allow = false;
  if (path != "/metrics" && path != "/ping") {
    code = 404;
    reason = "Not Found";
    body = "not found\n";
  } else if (!readable) {
    code = 405;
    reason = "Method Not Allowed";
    body = "method not allowed\n";
    allow = true;
  } else if (path == "/metrics") {
    content_type = kMetricsContentType;
    body = metrics_.serialize();
  } else if (is_draining_ && is_draining_()) {
    code = 503;
    reason = "Service Unavailable";
    body = "draining";
  } else {
    body = "OK";
  }
  // A HEAD response has the length the body would have had, and no body.
  std::string out = responseHead(code, reason, content_type, body.size(), c.keep_alive, allow);
  if (!head_only) {
    out += body;
  }
  return out;
}

bool AdminServer::writeOut(Connection& c) {
  while (c.out_sent < c.out.size()) {
    ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.out_sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      setSocketInterest(c.socket_event.get(), EV_WRITE);
      return false;
    }
    close(c);
    return false;
  }
  c.out.clear();
  c.out.shrink_to_fit();
  if (!c.keep_alive) {
    startLinger(c);
    return true;
  }
  // The next head has its own deadline, from now.
  c.phase = Connection::Phase::head;
  arm(c, kHeadTimeout);
  setSocketInterest(c.socket_event.get(), EV_READ);
  if (!c.in.empty()) {
    // A pipelined request: served from the loop, not from here.
    event_active(c.socket_event.get(), EV_READ, 0);
  }
  return true;
}

// Closing with unread bytes would send a reset, which can destroy the
// response before the client has read it: shut down for writing, read what
// comes until EOF, briefly.
void AdminServer::startLinger(Connection& c) {
  c.phase = Connection::Phase::lingering;
  c.in.clear();
  c.in.shrink_to_fit();
  ::shutdown(c.fd.get(), SHUT_WR);
  arm(c, kLingerTimeout);
  setSocketInterest(c.socket_event.get(), EV_READ);
}

// Stops the connection at once (events off, descriptor closed); the object is
// freed from the loop, never inside its own callback.
void AdminServer::close(Connection& c) {
  if (c.phase == Connection::Phase::closed) {
    return;
  }
  c.phase = Connection::Phase::closed;
  c.socket_event.reset();
  c.deadline.reset();
  c.fd.reset();
  retired_.splice(retired_.end(), connections_, c.self);
  if (!reap_) {
    reap_.reset(event_new(base_, -1, 0, &AdminServer::onReap, this));
  }
  if (reap_) {
    event_active(reap_.get(), EV_TIMEOUT, 0);
  }
}

void AdminServer::onReap(evutil_socket_t, short, void* arg) {
  static_cast<AdminServer*>(arg)->retired_.clear();
}

}  // namespace s3gate
