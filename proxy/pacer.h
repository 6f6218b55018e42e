#pragma once
// What the byte pumps (the relay) ask a bandwidth budget: how many bytes may
// move now, and when they may move again. The relay knows nothing of quotas;
// proxy/quota.h implements this over a shared budget.

#include <chrono>
#include <cstddef>

#include "common/duration.h"

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

}  // namespace s3gate
