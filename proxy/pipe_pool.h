#pragma once
// Pipes for splice(2), kept in a small per-thread pool so that a busy worker
// does not create and close a pipe for every burst of bytes.
//
// Bounds (file descriptors and kernel memory):
// - A pipe costs two descriptors and up to kPipeBytes of kernel memory while
//   it holds bytes. The relay holds one only while bytes flow in a direction
//   (two per busy tunnel at most); an idle direction gives its pipe back.
// - Each thread keeps at most kMaxPooled empty pipes (2 * kMaxPooled
//   descriptors), and none once its last attached user (a relay) is gone, so
//   an idle process holds no pipe at all.
// - At most maxLive() pipes exist in the process (a share of RLIMIT_NOFILE);
//   beyond that acquire() fails and the caller copies through its buffer.
// - The kernel's per-user pipe budget (fs.pipe-user-pages-soft, 16384 pages
//   by default: 256 pipes of kPipeBytes) also ends splicing: past it an
//   unprivileged user gets pipes of two pages, which would move 8 KiB per
//   splice. A pipe smaller than kMinPipeBytes is closed at once and the
//   thread stops asking for new ones for kRefusedPause; callers copy
//   meanwhile (their 64 KiB buffers beat a tiny pipe).
// Pipes that still hold bytes are closed, never pooled.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <utility>
#include <vector>

#include "proxy/socket.h"

namespace s3gate {

// Both ends of one pipe; counted in PipePool::live() until closed.
class Pipe {
 public:
  Pipe() = default;
  Pipe(UniqueFd read_end, UniqueFd write_end, size_t capacity)
      : read_end_(std::move(read_end)), write_end_(std::move(write_end)), capacity_(capacity) {}
  Pipe(Pipe&& other) noexcept = default;
  Pipe& operator=(Pipe&& other) noexcept {
    if (this != &other) {
      reset();
      read_end_ = std::move(other.read_end_);
      write_end_ = std::move(other.write_end_);
      capacity_ = other.capacity_;
    }
    return *this;
  }
  ~Pipe() { reset(); }

  int readFd() const { return read_end_.get(); }
  int writeFd() const { return write_end_.get(); }
  // Bytes the pipe takes before a write would block.
  size_t capacity() const { return capacity_; }
  explicit operator bool() const { return read_end_.valid(); }
  void reset();

 private:
  UniqueFd read_end_;
  UniqueFd write_end_;
  size_t capacity_ = 0;
};

class PipePool {
 public:
  // Asked of F_SETPIPE_SZ; the default size (64 KiB) when the kernel refuses.
  static constexpr size_t kPipeBytes = 256 * 1024;
  static constexpr size_t kMaxPooled = 8;
  static constexpr size_t kMinPipeBytes = 64 * 1024;  // Linux's default pipe size
  static constexpr std::chrono::seconds kRefusedPause{1};

  // The calling thread's pool.
  static PipePool& local();

  PipePool() = default;
  ~PipePool();  // closes what it holds (thread exit)
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // A pooled pipe or a new one; an empty Pipe when none can be had (out of
  // descriptors, or maxLive() reached).
  Pipe acquire();
  // Takes a pipe back: kept when `empty` and there is room, else closed.
  void release(Pipe pipe, bool empty);

  // Users keep the pool filled; the last one leaving closes what it holds.
  void attach() { ++users_; }
  void detach();

  size_t pooled() const { return free_.size(); }
  // Pipes open in the process (pooled or in use) and the limit on them.
  static size_t live() { return live_.load(std::memory_order_relaxed); }
  static size_t maxLive();

 private:
  friend class Pipe;

  std::vector<Pipe> free_;
  size_t users_ = 0;
  // Until then new pipes are not asked for: the kernel gave a small one.
  std::chrono::steady_clock::time_point refused_until_{};
  static std::atomic<size_t> live_;
};

}  // namespace s3gate
