#include "proxy/pipe_pool.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

namespace s3gate {

std::atomic<size_t> PipePool::live_{0};

void Pipe::reset() {
  if (read_end_.valid()) {
    read_end_.reset();
    write_end_.reset();
    PipePool::live_.fetch_sub(1, std::memory_order_relaxed);
  }
}

PipePool& PipePool::local() {
  thread_local PipePool pool;
  return pool;
}

PipePool::~PipePool() = default;

size_t PipePool::maxLive() {
  // A quarter of the descriptor limit (half of the descriptors at most go to
  // pipes), never more than 4096 pipes.
  static const size_t limit = [] {
    rlimit rl{};
    size_t fds = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      fds = rl.rlim_cur == RLIM_INFINITY ? (size_t{1} << 20) : static_cast<size_t>(rl.rlim_cur);
    }
    return std::min<size_t>(4096, fds / 4);
  }();
  return limit;
}

Pipe PipePool::acquire() {
  if (!free_.empty()) {
    Pipe pipe = std::move(free_.back());
    free_.pop_back();
    return pipe;
  }
  if (refused_until_ != std::chrono::steady_clock::time_point{} &&
      std::chrono::steady_clock::now() < refused_until_) {
    return Pipe();
  }
  if (live_.fetch_add(1, std::memory_order_relaxed) >= maxLive()) {
    live_.fetch_sub(1, std::memory_order_relaxed);
    return Pipe();
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    live_.fetch_sub(1, std::memory_order_relaxed);
    return Pipe();
  }
  // A larger pipe moves more per splice; the kernel may refuse (pipe-max-size,
  // the per-user pipe page limits), and then the size it gave stands.
  int size = fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(kPipeBytes));
  if (size < 0) {
    size = fcntl(fds[1], F_GETPIPE_SZ);
  }
  Pipe pipe{UniqueFd(fds[0]), UniqueFd(fds[1]), size > 0 ? static_cast<size_t>(size) : 0};
  if (pipe.capacity() < kMinPipeBytes) {
    // Over the user's pipe budget: copying is cheaper than this pipe.
    refused_until_ = std::chrono::steady_clock::now() + kRefusedPause;
    return Pipe();  // `pipe` closes here
  }
  return pipe;
}

void PipePool::release(Pipe pipe, bool empty) {
  if (pipe && empty && users_ > 0 && free_.size() < kMaxPooled) {
    free_.push_back(std::move(pipe));
  }
  // Otherwise `pipe` closes here.
}

void PipePool::detach() {
  if (users_ > 0 && --users_ == 0) {
    free_.clear();
  }
}

}  // namespace s3gate
