#pragma once
// RAII owners for libevent objects.

#include <event2/event.h>

#include <chrono>
#include <memory>

namespace s3gate {

struct EventDeleter {
  void operator()(event* ev) const { event_free(ev); }
};
struct EventBaseDeleter {
  void operator()(event_base* base) const { event_base_free(base); }
};

using EventPtr = std::unique_ptr<event, EventDeleter>;
using EventBasePtr = std::unique_ptr<event_base, EventBaseDeleter>;

inline timeval toTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace s3gate
