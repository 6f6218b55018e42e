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

// Adds or deletes `ev` (a socket event without timeout) so that it is pending
// exactly when `wanted`.
inline void setEventWanted(event* ev, bool wanted) {
  bool pending = event_pending(ev, EV_READ | EV_WRITE, nullptr) != 0;
  if (wanted && !pending) {
    event_add(ev, nullptr);
  } else if (!wanted && pending) {
    event_del(ev);
  }
}

inline timeval toTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace s3gate
