// The pipe pool against the kernel's per-user pipe budget: once an
// unprivileged user is past fs.pipe-user-pages-soft, new pipes hold two pages,
// and the pool must hand out none (the relay then copies) instead of a pipe
// that would move 8 KiB per splice.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <vector>

#include "proxy/pipe_pool.h"

using namespace s3gate;

namespace {

long readSysctl(const char* path) {
  std::ifstream in(path);
  long value = -1;
  in >> value;
  return in ? value : -1;
}

// Runs in a child that became user `nobody`. Returns the exit code: 0 when
// the pool behaved, else the number of the failed step.
int exhaustAndAcquire() {
  // Fresh pipes are full size while the user is within budget.
  {
    Pipe first = PipePool::local().acquire();
    if (!first || first.capacity() < PipePool::kMinPipeBytes) {
      return 10;
    }
  }
  // Spend the budget with pipes of our own until the kernel gives a small one.
  std::vector<UniqueFd> held;
  bool small = false;
  for (int i = 0; i < 2000 && !small; ++i) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      return 11;
    }
    held.emplace_back(fds[0]);
    held.emplace_back(fds[1]);
    fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(PipePool::kPipeBytes));
    small = fcntl(fds[1], F_GETPIPE_SZ) < static_cast<int>(PipePool::kMinPipeBytes);
  }
  if (!small) {
    return 12;
  }
  size_t live = PipePool::live();
  if (PipePool::local().acquire()) {
    return 13;  // a two-page pipe was handed out
  }
  if (PipePool::live() != live) {
    return 14;  // the small pipe was kept open
  }
  // Paused: the next ask does not even try.
  if (PipePool::local().acquire()) {
    return 15;
  }
  return 0;
}

}  // namespace

TEST_CASE("the pipe pool hands out no pipe once the user's pipe budget is spent") {
  long soft = readSysctl("/proc/sys/fs/pipe-user-pages-soft");
  if (geteuid() != 0 || soft <= 0) {
    WARN(
        "skipped: needs root (to become an unprivileged user) and a pipe-user-pages-soft limit; "
        "euid "
        << geteuid() << ", pipe-user-pages-soft " << soft);
    return;
  }
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) {
      _exit(9);
    }
    _exit(exhaustAndAcquire());
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  INFO("failed step (see exhaustAndAcquire): " << WEXITSTATUS(status));
  CHECK(WEXITSTATUS(status) == 0);
}
