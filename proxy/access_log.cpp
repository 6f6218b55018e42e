#include "proxy/access_log.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>

namespace s3gate {

namespace {

// The writer's batching: it waits up to kLinger after the first line for more,
// or until kBatchBytes are queued; buffers above kKeptCapacity after a burst
// are freed rather than kept.
constexpr auto kLinger = std::chrono::milliseconds(20);
constexpr size_t kBatchBytes = 64 * 1024;
constexpr size_t kKeptCapacity = 1024 * 1024;

constexpr char kHex[] = "0123456789abcdef";

void appendEscapedByte(std::string& out, unsigned char byte) {
  out += "\\u00";
  out += kHex[byte >> 4];
  out += kHex[byte & 0xf];
}

bool isContinuation(unsigned char byte) {
  return (byte & 0xc0) == 0x80;
}

// The length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF) that starts at text[i], or 0.
size_t utf8SequenceLength(std::string_view text, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
  unsigned char lead = at(0);
  size_t length = 0;
  unsigned char second_min = 0x80;
  unsigned char second_max = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) {
      second_min = 0xa0;  // overlong
    } else if (lead == 0xed) {
      second_max = 0x9f;  // surrogates
    }
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) {
      second_min = 0x90;  // overlong
    } else if (lead == 0xf4) {
      second_max = 0x8f;  // above U+10FFFF
    }
  } else {
    return 0;
  }
  if (text.size() - i < length) {
    return 0;
  }
  if (at(1) < second_min || at(1) > second_max) {
    return 0;
  }
  for (size_t k = 2; k < length; ++k) {
    if (!isContinuation(at(k))) {
      return 0;
    }
  }
  return length;
}

// A JSON string literal. Control characters, DEL, U+2028/U+2029 and every byte
// that is not part of well-formed UTF-8 become \u00XX escapes, so the result is
// always valid UTF-8 on one line whatever the input.
void appendJsonString(std::string& out, std::string_view text) {
  out += '"';
  size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      if (byte == '"') {
        out += "\\\"";
      } else if (byte == '\\') {
        out += "\\\\";
      } else if (byte < 0x20 || byte == 0x7f) {
        appendEscapedByte(out, byte);
      } else {
        out += static_cast<char>(byte);
      }
      ++i;
      continue;
    }
    size_t length = utf8SequenceLength(text, i);
    if (length == 0) {
      appendEscapedByte(out, byte);
      ++i;
      continue;
    }
    // U+2028 and U+2029 end a line for JavaScript readers.
    if (length == 3 && byte == 0xe2 && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
        (static_cast<unsigned char>(text[i + 2]) & 0xfe) == 0xa8) {
      out += static_cast<unsigned char>(text[i + 2]) == 0xa8 ? "\\u2028" : "\\u2029";
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  out += '"';
}

// Appends `value` as exactly `width` decimal digits (zero-padded).
void appendDigits(char* at, int value, int width) {
  for (int i = width - 1; i >= 0; --i) {
    at[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

void appendTime(std::string& out, int64_t time_ms) {
  int64_t seconds = time_ms / 1000;
  int64_t millis = time_ms % 1000;
  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  // "YYYY-MM-DDTHH:MM:SS." changes once a second: it is formatted once per
  // second per thread, and only the milliseconds per line.
  thread_local int64_t cached_seconds = INT64_MIN;
  thread_local char cached[20];
  if (seconds != cached_seconds) {
    time_t t = static_cast<time_t>(seconds);
    tm parts{};
    gmtime_r(&t, &parts);
    appendDigits(cached, std::clamp(parts.tm_year + 1900, 0, 9999), 4);
    cached[4] = '-';
    appendDigits(cached + 5, parts.tm_mon + 1, 2);
    cached[7] = '-';
    appendDigits(cached + 8, parts.tm_mday, 2);
    cached[10] = 'T';
    appendDigits(cached + 11, parts.tm_hour, 2);
    cached[13] = ':';
    appendDigits(cached + 14, parts.tm_min, 2);
    cached[16] = ':';
    appendDigits(cached + 17, parts.tm_sec, 2);
    cached[19] = '.';
    cached_seconds = seconds;
  }
  char text[26];
  text[0] = '"';
  std::memcpy(text + 1, cached, sizeof(cached));
  appendDigits(text + 21, static_cast<int>(millis), 3);
  text[24] = 'Z';
  text[25] = '"';
  out.append(text, sizeof(text));
}

void appendKey(std::string& out, std::string_view key) {
  if (out.size() > 1) {
    out += ',';
  }
  out += '"';
  out += key;
  out += "\":";
}

void appendField(std::string& out, std::string_view key, std::string_view value) {
  appendKey(out, key);
  appendJsonString(out, value);
}

void appendNullable(std::string& out, std::string_view key,
                    const std::optional<std::string>& value) {
  appendKey(out, key);
  if (value) {
    appendJsonString(out, *value);
  } else {
    out += "null";
  }
}

template <typename Integer>
void appendNumber(std::string& out, std::string_view key, Integer value) {
  appendKey(out, key);
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, ec == std::errc() ? static_cast<size_t>(end - digits) : 0);
}

// Writes all of data, retrying on EINTR, partial writes and (for a descriptor
// someone made non-blocking) EAGAIN. Returns how many bytes were written.
size_t writeAll(int fd, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 1000) < 0 && errno != EINTR) {
        break;
      }
    } else {
      break;
    }
  }
  return done;
}

UniqueFd openLogFile(const std::string& path, std::string* error) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
  if (!fd && error != nullptr) {
    *error = "cannot open access log " + path + ": " + errnoText(errno);
  }
  return fd;
}

}  // namespace

std::string_view recordKindName(RecordKind kind) {
  switch (kind) {
    case RecordKind::connect:
      return "connect";
    case RecordKind::http:
      return "http";
    case RecordKind::inspect:
      return "inspect";
    case RecordKind::local:
      return "local";
    case RecordKind::sni:
      return "sni";
  }
  return "connect";
}

std::string_view closeCauseName(CloseCause cause) {
  switch (cause) {
    case CloseCause::none:
      return "-";
    case CloseCause::client_eof:
      return "client_eof";
    case CloseCause::upstream_eof:
      return "upstream_eof";
    case CloseCause::idle_timeout:
      return "idle_timeout";
    case CloseCause::header_timeout:
      return "header_timeout";
    case CloseCause::client_error:
      return "client_error";
    case CloseCause::upstream_error:
      return "upstream_error";
    case CloseCause::client_stalled:
      return "client_stalled";
    case CloseCause::sni_mismatch:
      return "sni_mismatch";
    case CloseCause::keep_alive:
      return "keep_alive";
    case CloseCause::proxy_close:
      return "proxy_close";
    case CloseCause::draining:
      return "draining";
    case CloseCause::shutdown:
      return "shutdown";
    case CloseCause::bad_proxy_header:
      return "bad_proxy_header";
    case CloseCause::tls_handshake_failed:
      return "tls_handshake_failed";
    case CloseCause::bad_framing:
      return "bad_framing";
    case CloseCause::bad_response:
      return "bad_response";
    case CloseCause::bad_response_body:
      return "bad_response_body";
    case CloseCause::upstream_tls_failed:
      return "upstream_tls_failed";
    case CloseCause::error:
      return "error";
  }
  return "-";
}

std::string formatAccessRecord(const AccessRecord& record) {
  std::string out;
  out.reserve(512);
  out += '{';
  appendKey(out, "time");
  appendTime(out, record.time_ms);
  appendField(out, "client", record.client);
  if (record.via) {
    appendField(out, "via", *record.via);
  }
  if (record.vpce) {
    appendField(out, "vpce", *record.vpce);
  }
  if (record.identity) {
    appendField(out, "identity", *record.identity);
  }
  appendField(out, "kind", recordKindName(record.kind));
  appendField(out, "method", record.method);
  appendField(out, "host", record.host);
  appendNumber(out, "port", record.port);
  appendNullable(out, "bucket", record.bucket);
  appendField(out, "rule", record.rule);
  appendField(out, "decision", verdictName(record.decision));
  if (record.reason == Reason::none) {
    appendNullable(out, "reason", std::nullopt);
  } else {
    appendField(out, "reason", reasonName(record.reason));
  }
  appendNumber(out, "status", record.status);
  appendNullable(out, "upstream", record.upstream);
  appendNumber(out, "bytes_up", record.bytes_up);
  appendNumber(out, "bytes_down", record.bytes_down);
  appendNumber(out, "duration_ms", record.duration_ms);
  appendField(out, "close", closeCauseName(record.close));
  if (record.user_agent) {
    appendField(out, "user_agent", *record.user_agent);
  }
  if (record.copy_source) {
    appendField(out, "copy_source", *record.copy_source);
  }
  if (record.quota) {
    appendField(out, "quota", *record.quota);
  }
  out += "}\n";
  return out;
}

std::unique_ptr<AccessLog> AccessLog::open(const std::string& target, size_t max_queued_bytes,
                                           std::string* error) {
  std::unique_ptr<AccessLog> log(new AccessLog());
  log->target_ = target;
  log->max_queued_bytes_ = max_queued_bytes;
  if (target == "off") {
    log->sink_ = Sink::off;
    return log;  // no writer: write() discards
  }
  if (target == "stdout") {
    log->sink_ = Sink::stdout_fd;
  } else {
    UniqueFd fd = openLogFile(target, error);
    if (!fd) {
      return nullptr;
    }
    log->sink_ = Sink::file;
    log->file_ = std::make_shared<UniqueFd>(std::move(fd));
  }
  log->writer_ = std::thread([raw = log.get()] { raw->run(); });
  pthread_setname_np(log->writer_.native_handle(), "s3gate-log");
  return log;
}

AccessLog::~AccessLog() {
  if (!writer_.joinable()) {
    return;
  }
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();  // the writer empties the queue before it stops
}

void AccessLog::write(const AccessRecord& record) {
  if (sink_ == Sink::off) {
    return;
  }
  std::string line = formatAccessRecord(record);
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    size_t before = queue_.size();
    if (before + line.size() > max_queued_bytes_) {
      dropped_.fetch_add(1);
      return;
    }
    queue_ += line;
    // The writer sleeps until the queue has something, then gathers lines for
    // a moment: wake it for the first line and once a batch is full, not for
    // every line (each wake-up is a futex call and a switch to its thread).
    wake = before == 0 || (before < kBatchBytes && queue_.size() >= kBatchBytes);
  }
  if (wake) {
    cv_.notify_one();
  }
}

bool AccessLog::reopen(std::string* error) {
  if (sink_ != Sink::file) {
    return true;
  }
  UniqueFd fd = openLogFile(target_, error);
  if (!fd) {
    return false;  // keep writing to the old file
  }
  auto fresh = std::make_shared<UniqueFd>(std::move(fd));
  std::lock_guard lock(mu_);
  file_.swap(fresh);
  // `fresh` now holds the old file; it closes here unless the writer still uses it.
  return true;
}

void AccessLog::flush() {
  if (sink_ == Sink::off) {
    return;
  }
  std::unique_lock lock(mu_);
  ++flushing_;
  cv_.notify_one();
  drained_.wait(lock, [this] { return queue_.empty() && !writing_; });
  --flushing_;
}

void AccessLog::run() {
  std::string batch;  // reused: after the first batches no write allocates
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return !queue_.empty() || stop_; });
    if (queue_.empty()) {
      break;  // stopping, and everything has been written
    }
    // Let lines gather so that one write() carries many: at most kLinger, or
    // until a batch is full, someone flushes, or the log stops.
    cv_.wait_for(lock, kLinger,
                 [this] { return queue_.size() >= kBatchBytes || stop_ || flushing_ > 0; });
    batch.clear();
    batch.swap(queue_);
    if (queue_.capacity() > kKeptCapacity) {
      std::string().swap(queue_);  // after a burst, give the memory back
    }
    std::shared_ptr<UniqueFd> file = file_;
    writing_ = true;
    lock.unlock();

    int fd = sink_ == Sink::stdout_fd ? STDOUT_FILENO : file->get();
    size_t written = writeAll(fd, batch);
    if (written < batch.size()) {
      // A write error (disk full, closed pipe): the unfinished lines are lost.
      auto lost =
          std::count(batch.begin() + static_cast<std::ptrdiff_t>(written), batch.end(), '\n');
      dropped_.fetch_add(static_cast<uint64_t>(lost));
    }
    file.reset();
    if (batch.capacity() > kKeptCapacity) {
      std::string().swap(batch);
    }

    lock.lock();
    writing_ = false;
    drained_.notify_all();
  }
  writing_ = false;
  drained_.notify_all();
}

}  // namespace s3gate
