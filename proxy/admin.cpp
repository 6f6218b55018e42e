#include "proxy/admin.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <sys/socket.h>

#include <cerrno>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "proxy/socket.h"

namespace s3gate {

namespace {

constexpr int kBacklog = 64;
constexpr int kTimeoutSeconds = 10;           // read and write, per connection
constexpr ev_ssize_t kMaxHeadersSize = 8192;  // request line and headers
constexpr ev_ssize_t kMaxBodySize = 1024;     // the endpoints take no body
constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Every method: the handler answers 405 itself for the ones a path does not take
// (evhttp would answer 501 for a method outside this set).
constexpr ev_uint16_t kAllMethods = EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                    EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH;

struct BufferDeleter {
  void operator()(evbuffer* buffer) const { evbuffer_free(buffer); }
};
using UniqueBuffer = std::unique_ptr<evbuffer, BufferDeleter>;

void reply(evhttp_request* request, int code, const char* reason, std::string_view content_type,
           std::string_view body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(headers, "Content-Type", std::string(content_type).c_str());
  evhttp_add_header(headers, "Cache-Control", "no-store");
  if (evhttp_request_get_command(request) == EVHTTP_REQ_HEAD) {
    // libevent 2.1 would send a body after a HEAD response: send the head only,
    // with the length the body would have had.
    evhttp_add_header(headers, "Content-Length", std::to_string(body.size()).c_str());
    evhttp_send_reply(request, code, reason, nullptr);
    return;
  }
  UniqueBuffer buffer(evbuffer_new());
  if (buffer && evbuffer_add(buffer.get(), body.data(), body.size()) == 0) {
    evhttp_send_reply(request, code, reason, buffer.get());
  } else {
    evhttp_send_reply(request, HTTP_INTERNAL, "Internal Server Error", nullptr);
  }
}

void replyText(evhttp_request* request, int code, const char* reason, std::string_view body) {
  reply(request, code, reason, "text/plain; charset=utf-8", body);
}

}  // namespace

AdminServer::AdminServer(Metrics& metrics, std::function<bool()> is_draining)
    : metrics_(metrics), is_draining_(std::move(is_draining)) {}

AdminServer::~AdminServer() = default;

std::unique_ptr<AdminServer> AdminServer::create(event_base* base, const SocketAddress& address,
                                                 Metrics& metrics,
                                                 std::function<bool()> is_draining,
                                                 std::string* error) {
  std::unique_ptr<AdminServer> server(new AdminServer(metrics, std::move(is_draining)));

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

  server->http_.reset(evhttp_new(base));
  if (!server->http_) {
    *error = "admin: evhttp_new failed";
    return nullptr;
  }
  evhttp* http = server->http_.get();
  evhttp_set_allowed_methods(http, kAllMethods);
  evhttp_set_max_headers_size(http, kMaxHeadersSize);
  evhttp_set_max_body_size(http, kMaxBodySize);
  evhttp_set_timeout(http, kTimeoutSeconds);
  evhttp_set_gencb(http, &AdminServer::onRequest, server.get());
  // On success evhttp owns the socket (its listener closes it when freed).
  if (evhttp_accept_socket_with_handle(http, fd.get()) == nullptr) {
    *error = "admin: cannot listen on " + address.toString();
    return nullptr;
  }
  fd.release();
  return server;
}

void AdminServer::onRequest(evhttp_request* request, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  // No exception may cross into libevent.
  try {
    self->handle(request);
  } catch (const std::exception&) {
    evhttp_send_reply(request, HTTP_INTERNAL, "Internal Server Error", nullptr);
  } catch (...) {
    evhttp_send_reply(request, HTTP_INTERNAL, "Internal Server Error", nullptr);
  }
}

void AdminServer::handle(evhttp_request* request) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* raw_path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  std::string_view path = raw_path != nullptr ? raw_path : "";
  evhttp_cmd_type method = evhttp_request_get_command(request);
  bool readable = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;

  if (path != "/metrics" && path != "/ping") {
    replyText(request, HTTP_NOTFOUND, "Not Found", "not found\n");
    return;
  }
  if (!readable) {
    evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", "GET, HEAD");
    replyText(request, 405, "Method Not Allowed", "method not allowed\n");
    return;
  }
  if (path == "/metrics") {
    reply(request, HTTP_OK, "OK", kMetricsContentType, metrics_.serialize());
    return;
  }
  if (is_draining_ && is_draining_()) {
    replyText(request, HTTP_SERVUNAVAIL, "Service Unavailable", "draining");
  } else {
    replyText(request, HTTP_OK, "OK", "OK");
  }
}

}  // namespace s3gate
