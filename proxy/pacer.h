#pragma once
// What the byte pumps (the relay, the forwarder) ask a bandwidth budget: how
// many bytes may move now, and when they may move again. The pumps know
// nothing of quotas; proxy/quota.h implements this over a shared budget.

#include <event2/event.h>

#include <chrono>
#include <cstddef>
#include <limits>

#include "common/duration.h"
#include "proxy/event_ptr.h"

namespace s3gate {

enum class PaceDirection { up, down };  // up: client to upstream

class BandwidthPacer {
 public:
  using Clock = std::chrono::steady_clock;
  virtual ~BandwidthPacer() = default;

  // Bytes that may be read in `direction` now (0: none until resumeAfter()).
  virtual size_t allowance(PaceDirection direction, Clock::time_point now) = 0;
  // `bytes` were read in `direction`: they are taken from the budget (which
  // may go into debt when several transfers share it; the debt is waited off).
  virtual void consume(PaceDirection direction, size_t bytes, Clock::time_point now) = 0;
  // After an allowance of 0: how long until a worthwhile slice is allowed.
  virtual Duration resumeAfter(PaceDirection direction, Clock::time_point now) = 0;
  // The transfer waited `seconds` for the budget in `direction` (metrics).
  virtual void paced(PaceDirection direction, double seconds) = 0;
};

// One direction of a pump under a pacer: the budget asked before each read,
// and the wait for it. Out of budget, the direction reads nothing (its source
// backs up, as behind a slow reader) until the gate's timer calls the pump's
// callback, which calls resume(). Without a pacer every read is allowed.
class PaceGate {
 public:
  using Clock = BandwidthPacer::Clock;

  // False when the timer cannot be made.
  bool init(event_base* base, BandwidthPacer* pacer, PaceDirection direction,
            event_callback_fn on_timer, void* arg) {
    pacer_ = pacer;
    direction_ = direction;
    if (pacer_ == nullptr) {
      return true;
    }
    timer_.reset(evtimer_new(base, on_timer, arg));
    return timer_ != nullptr;
  }

  // Waiting for the budget: no reads, and the wait is not idleness.
  bool waiting() const { return waiting_; }

  // The bytes the next read may take; 0 starts a wait that the timer ends.
  size_t allowance(Clock::time_point now) {
    if (pacer_ == nullptr) {
      return std::numeric_limits<size_t>::max();
    }
    if (waiting_) {
      return 0;
    }
    size_t allowed = pacer_->allowance(direction_, now);
    if (allowed == 0) {
      waiting_ = true;
      since_ = now;
      timeval tv = toTimeval(pacer_->resumeAfter(direction_, now));
      evtimer_add(timer_.get(), &tv);
    }
    return allowed;
  }

  // `bytes` were read: they come off the budget.
  void consume(size_t bytes, Clock::time_point now) {
    if (pacer_ != nullptr && bytes > 0) {
      pacer_->consume(direction_, bytes, now);
    }
  }

  // Ends a wait (the timer fired, or the pump is ending) and reports its
  // length; false when there was none.
  bool resume(Clock::time_point now) {
    if (!waiting_) {
      return false;
    }
    waiting_ = false;
    pacer_->paced(direction_, std::chrono::duration<double>(now - since_).count());
    return true;
  }

  void stop() { timer_.reset(); }

 private:
  BandwidthPacer* pacer_ = nullptr;
  PaceDirection direction_ = PaceDirection::up;
  bool waiting_ = false;
  Clock::time_point since_;
  EventPtr timer_;
};

}  // namespace s3gate
