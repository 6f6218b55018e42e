#pragma once
// The access log: one JSON object per line, per tunnel or request (SPEC section 4).
// Workers hand finished records to the log, which formats them (escaping every
// string so no input can forge or split a line) and appends them to a bounded
// in-memory queue; a writer thread drains it to stdout or a file, many lines
// per write (it gathers for up to 20 ms after the first). When the
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

#include "acl/decision.h"
#include "acl/reason.h"
#include "proxy/socket.h"

namespace s3gate {

enum class RecordKind { connect, http, inspect, local, sni };
std::string_view recordKindName(RecordKind kind);

// How a tunnel, an exchange or a connection ended: one closed list, as Reason is.
enum class CloseCause {
  none,                  // not ended yet (never logged as such)
  client_eof,            // the client closed (first, for a tunnel)
  upstream_eof,          // the upstream closed first
  idle_timeout,          // no bytes either way for idle_timeout
  header_timeout,        // the request head did not arrive in time
  client_error,          // reset or error on the client side
  upstream_error,        // reset or error on the upstream side
  client_stalled,        // an error response could not be written in time
  sni_mismatch,          // the ClientHello named another host
  keep_alive,            // the exchange ended and the connection waits for the next
  proxy_close,           // s3gate closed after its response
  draining,              // closed because the instance is shutting down
  shutdown,              // the drain deadline ended it
  bad_proxy_header,      // the PROXY header was malformed
  tls_handshake_failed,  // the HTTPS listener's handshake failed
  bad_framing,           // a body's framing went wrong mid-stream
  bad_response,          // the upstream's response head could not be passed on
  bad_response_body,     // the upstream's response body broke its framing
  upstream_tls_failed,   // the upstream TLS handshake failed
  error,                 // s3gate could not set the connection up (out of memory, events)
};
std::string_view closeCauseName(CloseCause cause);

// One access-log line, from typed fields; formatAccessRecord() writes it once.
struct AccessRecord {
  int64_t time_ms = 0;                  // when it ended, ms since the epoch (UTC)
  std::string client;                   // "10.1.2.3:51514"
  std::optional<std::string> via;       // PROXY-header peer
  std::optional<std::string> vpce;      // AWS TLV
  std::optional<std::string> identity;  // client-certificate CN or user
  RecordKind kind = RecordKind::connect;
  std::string method = "-";  // "-" where none
  std::string host = "-";    // "-" where none
  int port = 0;
  std::optional<std::string> bucket;  // null where none
  std::string rule = "-";
  Verdict decision = Verdict::deny;
  Reason reason = Reason::none;  // null where none
  int status = 0;
  std::optional<std::string> upstream;  // "52.218.1.7:443"; null where none
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  int64_t duration_ms = 0;
  CloseCause close = CloseCause::none;
  std::optional<std::string> user_agent;   // at most 256 bytes
  std::optional<std::string> copy_source;  // "bucket/key"
  std::optional<std::string> quota;        // the quota entry that applied
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
  int flushing_ = 0;  // flush() callers waiting: the writer writes at once
  bool stop_ = false;
  std::atomic<uint64_t> dropped_{0};
  std::thread writer_;
};

}  // namespace s3gate
