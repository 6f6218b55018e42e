#pragma once
// The access log: one JSON object per line, per tunnel or request (SPEC section 4).
// Workers hand finished records to the log, which formats them (escaping every
// string so no input can forge or split a line) and appends them to a bounded
// in-memory queue; a writer thread drains it to stdout or a file. When the
// queue is full the line is dropped and counted, so a slow disk never blocks
// an event loop.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "proxy/socket.h"

namespace s3gate {

struct AccessRecord {
  int64_t time_ms = 0;                  // when it ended, ms since the epoch (UTC)
  std::string client;                   // "10.1.2.3:51514"
  std::optional<std::string> via;       // PROXY-header peer
  std::optional<std::string> vpce;      // AWS TLV
  std::optional<std::string> identity;  // client-certificate CN
  std::string kind;                     // connect, http, inspect, local, sni
  std::string method;                   // "-" where none
  std::string host;                     // "-" where none
  int port = 0;
  std::optional<std::string> bucket;  // null where none
  std::string rule = "-";
  std::string decision;               // allow, deny, report
  std::optional<std::string> reason;  // null where none
  int status = 0;
  std::optional<std::string> upstream;  // "52.218.1.7:443"; null where none
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  int64_t duration_ms = 0;
  std::string close;  // how it ended: client_eof, upstream_eof, idle_timeout, ...
};

// Formats a record as one JSON line (with the trailing newline).
std::string formatAccessRecord(const AccessRecord& record);

class AccessLog {
 public:
  // target: "stdout", "off" or a file path. Returns nullptr and sets *error
  // when the file cannot be opened.
  static std::unique_ptr<AccessLog> open(const std::string& target, size_t max_queued_bytes,
                                         std::string* error);
  ~AccessLog();  // flushes what is queued, then stops the writer

  void write(const AccessRecord& record);  // thread-safe, never blocks on I/O
  bool reopen(std::string* error);         // SIGUSR1: reopen the file (logrotate)
  void flush();                            // waits until the queue is written (tests, exit)
  uint64_t dropped() const { return dropped_.load(); }

 private:
  enum class Sink { off, stdout_fd, file };

  AccessLog() = default;
  void run();

  std::string target_;
  Sink sink_ = Sink::off;
  // The open file (Sink::file). reopen() swaps the pointer under mu_; the writer
  // takes its own reference for each batch, so the old descriptor is closed
  // only once the batch being written to it is done.
  std::shared_ptr<UniqueFd> file_;
  size_t max_queued_bytes_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable drained_;
  std::string queue_;
  bool writing_ = false;
  bool stop_ = false;
  std::atomic<uint64_t> dropped_{0};
  std::thread writer_;
};

}  // namespace s3gate
