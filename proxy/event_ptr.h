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

// Makes the socket event `ev` (EV_PERSIST, no timeout) pending for exactly
// `what` (EV_READ, EV_WRITE, both, or 0: not pending), keeping its callback.
// One event per socket instead of one per direction: half the events, and
// with the base's changelist a change of direction costs one epoll_ctl. The
// event is deleted before it is reassigned, which also drops an activation
// not yet run; level-triggered readiness reports it again at the next poll.
inline void setSocketInterest(event* ev, short what) {
  what &= EV_READ | EV_WRITE;
  short current = event_get_events(ev) & (EV_READ | EV_WRITE);
  bool pending = event_pending(ev, EV_READ | EV_WRITE, nullptr) != 0;
  if (pending == (what != 0) && (what == 0 || what == current)) {
    return;
  }
  if (pending) {
    event_del(ev);
  }
  if (what == 0) {
    return;
  }
  if (what != current) {
    event_callback_fn callback = event_get_callback(ev);
    void* arg = event_get_callback_arg(ev);
    event_assign(ev, event_get_base(ev), event_get_fd(ev), static_cast<short>(what | EV_PERSIST),
                 callback, arg);
  }
  event_add(ev, nullptr);
}

inline timeval toTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace s3gate
