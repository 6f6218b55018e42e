#pragma once
// Idle upstream connections of one worker, kept for the next plain-HTTP
// request to the same host, port and transport. Bounded per key and in total;
// a connection idle longer than the limit, or one that has anything to say
// while idle (EOF, data, an error), is closed instead of reused.
//
// Each idle connection stays registered for readability, so an upstream that
// closes it is noticed as it happens, and the handover to and from a
// forwarder within one callback costs no epoll_ctl (the base's changelist
// folds the delete and the add). A connection idle for longer than
// kProbeAfter is also probed with a one-byte read when taken: that catches a
// close racing the take in the same loop pass.

#include <event2/event.h>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/duration.h"
#include "proxy/event_ptr.h"
#include "proxy/stream.h"

namespace s3gate {

class UpstreamPool {
 public:
  struct Limits {
    size_t per_key = 64;  // one per concurrent client of a busy bucket
    size_t total = 1024;
    Duration idle{std::chrono::seconds(15)};  // S3 closes idle connections after ~20 s
  };
  static constexpr std::chrono::milliseconds kProbeAfter{1000};

  UpstreamPool(event_base* base, const Limits& limits);
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  static std::string key(const std::string& host, uint16_t port, bool tls);

  // A live idle connection for `key`, or nullptr; *peer gets the address text
  // it was put with (for the access log, without a getpeername per request).
  // *watch gets the connection's idle watch, still registered: the caller
  // frees it once its own event for the socket is added (so the socket's
  // interest never drops and costs no epoll_ctl), within the same callback.
  std::unique_ptr<Stream> take(const std::string& key, std::string* peer, EventPtr* watch);
  void put(const std::string& key, std::unique_ptr<Stream> stream, std::string peer);
  size_t size() const { return total_; }
  void clear();

 private:
  struct Idle {
    UpstreamPool* pool = nullptr;
    std::unique_ptr<Stream> stream;  // null once closed while idle
    std::string peer;
    std::chrono::steady_clock::time_point since;
    EventPtr watch;  // readable while idle: the connection is done
  };
  using IdleList = std::deque<std::unique_ptr<Idle>>;
  static void onSweep(evutil_socket_t, short, void* arg);
  static void onWatch(evutil_socket_t, short, void* arg);
  void sweep();
  static bool stillQuiet(Stream& stream);
  void drop(Idle& entry);

  event_base* base_;
  Limits limits_;
  EventPtr sweep_timer_;
  std::unordered_map<std::string, IdleList> idle_;
  size_t total_ = 0;  // open idle connections
};

}  // namespace s3gate
