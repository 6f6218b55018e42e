#include "proxy/access_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace s3gate;

namespace {

// A deliberately small JSON reader for one flat object of strings, integers and
// nulls: enough to check that a line parses back to the fields that went in.
// Returns false on anything it does not understand.
struct Value {
  bool is_null = false;
  bool is_string = false;
  std::string text;  // the decoded string, or the number's digits
};

bool appendUtf8(std::string& out, unsigned code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xc0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else {
    out += static_cast<char>(0xe0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  }
  return true;
}

bool parseString(const std::string& s, size_t& i, std::string& out) {
  if (i >= s.size() || s[i] != '"') {
    return false;
  }
  ++i;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') {
      ++i;
      return true;
    }
    if (c < 0x20) {
      return false;  // raw control characters are not JSON
    }
    if (c == '\\') {
      if (i + 1 >= s.size()) {
        return false;
      }
      char e = s[i + 1];
      if (e == '"' || e == '\\' || e == '/') {
        out += e;
        i += 2;
      } else if (e == 'u') {
        if (i + 6 > s.size()) {
          return false;
        }
        unsigned code = std::stoul(s.substr(i + 2, 4), nullptr, 16);
        appendUtf8(out, code);
        i += 6;
      } else {
        return false;
      }
      continue;
    }
    out += static_cast<char>(c);
    ++i;
  }
  return false;
}

bool parseLine(const std::string& line, std::vector<std::pair<std::string, Value>>& fields) {
  if (line.size() < 3 || line.front() != '{' || line.substr(line.size() - 2) != "}\n") {
    return false;
  }
  if (line.find('\n') != line.size() - 1) {
    return false;
  }
  size_t i = 1;
  const size_t end = line.size() - 2;
  while (i < end) {
    std::string key;
    if (!parseString(line, i, key) || i >= end || line[i] != ':') {
      return false;
    }
    ++i;
    Value value;
    if (line.compare(i, 4, "null") == 0) {
      value.is_null = true;
      i += 4;
    } else if (line[i] == '"') {
      value.is_string = true;
      if (!parseString(line, i, value.text)) {
        return false;
      }
    } else {
      size_t start = i;
      if (line[i] == '-') {
        ++i;
      }
      while (i < end && std::isdigit(static_cast<unsigned char>(line[i]))) {
        ++i;
      }
      if (i == start) {
        return false;
      }
      value.text = line.substr(start, i - start);
    }
    fields.emplace_back(key, value);
    if (i < end) {
      if (line[i] != ',') {
        return false;
      }
      ++i;
    }
  }
  return i == end;
}

bool isValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      return false;
    }
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) {
        return false;
      }
    }
    i += n;
  }
  return true;
}

AccessRecord fullRecord() {
  AccessRecord r;
  r.time_ms = 1795537825123;  // 2026-11-24T16:30:25.123Z
  r.client = "10.1.2.3:51514";
  r.via = "10.0.0.7:4001";
  r.vpce = "vpce-0931f00d";
  r.identity = "client-a";
  r.kind = RecordKind::connect;
  r.method = "CONNECT";
  r.host = "media.s3.us-west-2.amazonaws.com";
  r.port = 443;
  r.bucket = "media";
  r.rule = "media";
  r.decision = Verdict::allow;
  r.status = 200;
  r.upstream = "52.218.1.7:443";
  r.bytes_up = 1048576;
  r.bytes_down = 4096;
  r.duration_ms = 812;
  r.close = CloseCause::client_eof;
  return r;
}

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int countLines(const std::string& text) {
  int n = 0;
  for (char c : text) {
    n += c == '\n';
  }
  return n;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "s3gate-access-log-XXXXXX").string();
    path = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

}  // namespace

TEST_CASE("a full record, fields in the SPEC's order") {
  CHECK(formatAccessRecord(fullRecord()) ==
        R"({"time":"2026-11-24T16:30:25.123Z","client":"10.1.2.3:51514","via":"10.0.0.7:4001",)"
        R"("vpce":"vpce-0931f00d","identity":"client-a","kind":"connect","method":"CONNECT",)"
        R"("host":"media.s3.us-west-2.amazonaws.com","port":443,"bucket":"media","rule":"media",)"
        R"("decision":"allow","reason":null,"status":200,"upstream":"52.218.1.7:443",)"
        R"("bytes_up":1048576,"bytes_down":4096,"duration_ms":812,"close":"client_eof"})"
        "\n");
}

TEST_CASE("a minimal record: optional fields left out or null") {
  AccessRecord r;
  r.time_ms = 0;
  r.client = "127.0.0.1:40000";
  r.kind = RecordKind::http;
  r.method = "GET";
  r.host = "evil.example";
  r.port = 80;
  r.decision = Verdict::deny;
  r.reason = Reason::host_not_allowed;
  r.status = 403;
  r.duration_ms = 1;
  r.close = CloseCause::proxy_close;
  CHECK(formatAccessRecord(r) ==
        R"({"time":"1970-01-01T00:00:00.000Z","client":"127.0.0.1:40000","kind":"http",)"
        R"("method":"GET","host":"evil.example","port":80,"bucket":null,"rule":"-",)"
        R"("decision":"deny","reason":"host_not_allowed","status":403,"upstream":null,)"
        R"("bytes_up":0,"bytes_down":0,"duration_ms":1,"close":"proxy_close"})"
        "\n");
}

TEST_CASE("time is UTC with milliseconds") {
  AccessRecord r;
  r.time_ms = 951782400007;  // a leap day
  CHECK(formatAccessRecord(r).rfind(R"({"time":"2000-02-29T00:00:00.007Z",)", 0) == 0);
  r.time_ms = -1;
  CHECK(formatAccessRecord(r).rfind(R"({"time":"1969-12-31T23:59:59.999Z",)", 0) == 0);
  // The same second again, then the next: the date part follows each line's time.
  r.time_ms = -999;
  CHECK(formatAccessRecord(r).rfind(R"({"time":"1969-12-31T23:59:59.001Z",)", 0) == 0);
  r.time_ms = 0;
  CHECK(formatAccessRecord(r).rfind(R"({"time":"1970-01-01T00:00:00.000Z",)", 0) == 0);
  r.time_ms = 253402300799999;  // the last millisecond of year 9999
  CHECK(formatAccessRecord(r).rfind(R"({"time":"9999-12-31T23:59:59.999Z",)", 0) == 0);
}

TEST_CASE("hostile strings cannot forge a field or split the line") {
  struct Case {
    std::string input;
    std::string escaped;  // how it appears between the quotes
    std::string decoded;  // what a JSON reader gets back
  };
  const std::vector<Case> cases = {
      {R"(a","decision":"allow)", R"(a\",\"decision\":\"allow)", R"(a","decision":"allow)"},
      {"line\nbreak\r\n", R"(line\u000abreak\u000d\u000a)", "line\nbreak\r\n"},
      {"back\\slash", R"(back\\slash)", "back\\slash"},
      {std::string("nul\0byte", 8), R"(nul\u0000byte)", std::string("nul\0byte", 8)},
      {"\x01\x1f\x7f", R"(\u0001\u001f\u007f)", "\x01\x1f\x7f"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"sep\xe2\x80\xa8par\xe2\x80\xa9", R"(sep\u2028par\u2029)", "sep\xe2\x80\xa8par\xe2\x80\xa9"},
      // Invalid UTF-8: a lone continuation, a truncated sequence, an overlong
      // '"' (0xC0 0xA2), a surrogate, a byte that never occurs.
      {"\x80", R"(\u0080)", "\xc2\x80"},
      {"\xe2\x82", R"(\u00e2\u0082)", "\xc3\xa2\xc2\x82"},
      {"\xc0\xa2", R"(\u00c0\u00a2)", "\xc3\x80\xc2\xa2"},
      {"\xed\xa0\x80", R"(\u00ed\u00a0\u0080)", "\xc3\xad\xc2\xa0\xc2\x80"},
      {"\xff\"", R"(\u00ff\")", "\xc3\xbf\""},
  };
  for (const auto& c : cases) {
    INFO("escaped: " << c.escaped);
    AccessRecord r = fullRecord();
    r.host = c.input;
    r.method = c.input;
    r.identity = c.input;
    r.user_agent = c.input;
    std::string line = formatAccessRecord(r);
    CHECK(line.find("\"host\":\"" + c.escaped + "\",") != std::string::npos);
    CHECK(isValidUtf8(line));

    std::vector<std::pair<std::string, Value>> fields;
    REQUIRE(parseLine(line, fields));
    std::vector<std::string> keys;
    std::map<std::string, Value> by_key;
    for (const auto& [key, value] : fields) {
      keys.push_back(key);
      by_key[key] = value;
    }
    CHECK(keys == std::vector<std::string>{"time",       "client",      "via",      "vpce",
                                           "identity",   "kind",        "method",   "host",
                                           "port",       "bucket",      "rule",     "decision",
                                           "reason",     "status",      "upstream", "bytes_up",
                                           "bytes_down", "duration_ms", "close",    "user_agent"});
    CHECK(by_key["host"].text == c.decoded);
    CHECK(by_key["method"].text == c.decoded);
    CHECK(by_key["identity"].text == c.decoded);
    CHECK(by_key["user_agent"].text == c.decoded);
    CHECK(by_key["decision"].text == "allow");
    CHECK(by_key["reason"].is_null);
    CHECK(by_key["port"].text == "443");
  }
}

TEST_CASE("\"off\" discards") {
  std::string error;
  auto log = AccessLog::open("off", 1 << 20, &error);
  REQUIRE(log);
  log->write(fullRecord());
  log->flush();
  CHECK(log->dropped() == 0);
}

TEST_CASE("an unwritable path is an error") {
  std::string error;
  auto log = AccessLog::open("/nonexistent-dir/s3gate/access.log", 1 << 20, &error);
  CHECK(log == nullptr);
  CHECK(error.find("/nonexistent-dir/s3gate/access.log") != std::string::npos);
}

TEST_CASE("a file target is appended to, and reopened after a rename") {
  TempDir dir;
  auto path = dir.path / "access.log";
  {
    std::ofstream existing(path);
    existing << "earlier line\n";
  }
  std::string error;
  auto log = AccessLog::open(path.string(), 1 << 20, &error);
  INFO(error);
  REQUIRE(log);
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);

  AccessRecord r = fullRecord();
  r.user_agent = "first";
  log->write(r);
  r.user_agent = "second";
  log->write(r);
  log->flush();
  std::string first = readFile(path);
  CHECK(countLines(first) == 3);
  CHECK(first.rfind("earlier line\n{", 0) == 0);
  CHECK(first.find(R"("user_agent":"second"})") != std::string::npos);

  // logrotate: rename, then signal; lines before reopen() still go to the old file.
  auto rotated = dir.path / "access.log.1";
  std::filesystem::rename(path, rotated);
  r.user_agent = "before-reopen";
  log->write(r);
  log->flush();
  REQUIRE(log->reopen(&error));
  r.user_agent = "after-reopen";
  log->write(r);
  log->flush();

  std::string old_text = readFile(rotated);
  std::string new_text = readFile(path);
  CHECK(countLines(old_text) == 4);
  CHECK(old_text.find(R"("user_agent":"before-reopen"})") != std::string::npos);
  CHECK(countLines(new_text) == 1);
  CHECK(new_text.find(R"("user_agent":"after-reopen"})") != std::string::npos);
  REQUIRE(stat(path.c_str(), &st) == 0);
  mode_t mask = umask(0);
  umask(mask);
  CHECK((st.st_mode & 0777) == (0640 & ~mask));
  CHECK(log->dropped() == 0);
}

TEST_CASE("the destructor writes what is still queued") {
  TempDir dir;
  auto path = dir.path / "access.log";
  std::string error;
  {
    auto log = AccessLog::open(path.string(), 1 << 20, &error);
    REQUIRE(log);
    for (int i = 0; i < 100; ++i) {
      log->write(fullRecord());
    }
  }
  CHECK(countLines(readFile(path)) == 100);
}

TEST_CASE("a line larger than the queue bound is dropped and counted") {
  TempDir dir;
  auto path = dir.path / "access.log";
  std::string error;
  auto log = AccessLog::open(path.string(), 64, &error);
  REQUIRE(log);
  log->write(fullRecord());  // ~400 bytes > 64
  log->write(fullRecord());
  log->flush();
  CHECK(log->dropped() == 2);
  CHECK(readFile(path).empty());
}

TEST_CASE("a stalled writer: the bounded queue drops and counts, never blocks") {
  TempDir dir;
  auto fifo = dir.path / "fifo";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  // Open the read end first (non-blocking) so the log's O_WRONLY open succeeds;
  // nobody reads until the end, so the writer blocks once the pipe is full.
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(reader >= 0);
  std::string error;
  const size_t line_size = formatAccessRecord(fullRecord()).size();
  auto log = AccessLog::open(fifo.string(), 10 * line_size, &error);
  INFO(error);
  REQUIRE(log);

  // The pipe holds at most 64 KiB by default (1 MiB at most when raised), the
  // queue 10 lines: 1 MiB / line_size + 10 lines can be in flight; write more.
  const int total = static_cast<int>((2u << 20) / line_size) + 100;
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < total; ++i) {
    log->write(fullRecord());
  }
  auto elapsed = std::chrono::steady_clock::now() - started;
  CHECK(elapsed < std::chrono::seconds(5));  // never waited for the reader
  CHECK(log->dropped() > 0);

  // Now read everything; the destructor flushes what is queued and closes the pipe.
  int fl = fcntl(reader, F_GETFL);
  fcntl(reader, F_SETFL, fl & ~O_NONBLOCK);
  std::string received;
  std::thread drain([&] {
    char buffer[65536];
    for (;;) {
      ssize_t n = ::read(reader, buffer, sizeof(buffer));
      if (n <= 0) {
        break;
      }
      received.append(buffer, static_cast<size_t>(n));
    }
  });
  uint64_t dropped = 0;
  {
    log->flush();
    dropped = log->dropped();
    log.reset();
  }
  drain.join();
  ::close(reader);
  CHECK(static_cast<uint64_t>(countLines(received)) + dropped == static_cast<uint64_t>(total));
  CHECK(received.size() % line_size == 0);
}

TEST_CASE("writes from several threads arrive whole") {
  TempDir dir;
  auto path = dir.path / "access.log";
  std::string error;
  auto log = AccessLog::open(path.string(), 1 << 24, &error);
  REQUIRE(log);
  constexpr int kThreads = 4;
  constexpr int kLines = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&log, t] {
      AccessRecord r = fullRecord();
      r.user_agent = "thread-" + std::to_string(t);
      for (int i = 0; i < kLines; ++i) {
        log->write(r);
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  log->flush();
  std::istringstream lines(readFile(path));
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    std::vector<std::pair<std::string, Value>> fields;
    CHECK(parseLine(line + "\n", fields));
    ++n;
  }
  CHECK(n == kThreads * kLines);
  CHECK(log->dropped() == 0);
}
