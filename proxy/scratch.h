#pragma once
// One buffer per thread for bytes read and dealt with (written on, parsed or
// copied elsewhere) before the reading call returns: the relay's copied
// reads, the session's request heads, the forwarder's response heads. Nothing
// keeps a pointer into it past that call, so the users of one thread (one
// event loop) never overlap, and no connection pays for a buffer of its own.

#include <cstddef>
#include <memory>
#include <span>

namespace s3gate {

inline constexpr size_t kScratchBytes = 64 * 1024;

inline std::span<char> threadScratch() {
  thread_local std::unique_ptr<char[]> buffer =
      std::make_unique_for_overwrite<char[]>(kScratchBytes);
  return {buffer.get(), kScratchBytes};
}

}  // namespace s3gate
