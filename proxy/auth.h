#pragma once
// Proxy authentication (SPEC section 3, step 1a): `Proxy-Authorization: Basic`
// checked against the users file of `auth.users_file`.
//
//   UsersTable       the users file, parsed once per runtime snapshot (--check,
//                    start-up and reload); only bcrypt, yescrypt and SHA-512
//                    crypt hashes are accepted
//   parseBasic...()  the header, strictly: "Basic" and canonical base64 of
//                    "user:password"
//   verifyPassword() the system's libcrypt (crypt_rn), compared in constant time;
//                    tens of milliseconds for bcrypt, so it runs only on the
//                    Authenticator's own threads, never on an event loop
//   CredentialCache  verified name+password+hash digests for auth.cache_ttl,
//                    bounded, least recently used out first; failures are kept
//                    apart, shorter, in a smaller table
//   Authenticator    the verifier threads: a bounded queue served round-robin by
//                    client address, so one client's burst of bad passwords
//                    delays only that client; one verification serves every
//                    request that waits for the same digest
//   authenticateHead() what the session calls for each request head
//
// The password is held in SecretBytes, wiped when it goes; it is never logged.

#include <event2/event.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/duration.h"
#include "config/config.h"
#include "proxy/event_ptr.h"

namespace s3gate {

class Metrics;
struct RequestHead;
struct Runtime;

// Bytes that must not outlive their use: not copyable, wiped on destruction.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::string_view bytes);
  ~SecretBytes() { wipe(); }
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  std::string_view view() const { return {data_.get(), size_}; }
  // A NUL-terminated copy lives in the buffer (crypt wants a C string).
  const char* c_str() const { return data_ ? data_.get() : ""; }
  size_t size() const { return size_; }
  void wipe();

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
};

enum class HashKind { bcrypt, yescrypt, sha512_crypt };

// The users file: "name:hash" lines, '#' comments and blank lines.
class UsersTable {
 public:
  // `source` names the file in errors ("FILE:LINE: ..."). Errors never quote a
  // hash field (it could be a cleartext password written by mistake).
  static std::shared_ptr<const UsersTable> parse(std::string_view text, const std::string& source,
                                                 std::vector<std::string>* errors);
  static std::shared_ptr<const UsersTable> load(const std::string& path,
                                                std::vector<std::string>* errors);

  // The hash of `name`, or nullptr.
  const std::string* find(std::string_view name) const;
  size_t size() const { return users_.size(); }

 private:
  std::unordered_map<std::string, std::string> users_;
};

// The kind of a stored hash, or false with *why set (no part of the hash in it).
bool classifyHash(std::string_view hash, HashKind* kind, std::string* why);

struct BasicCredentials {
  std::string user;
  SecretBytes password;
};
enum class BasicParse { missing, malformed, ok };
// `value` is the Proxy-Authorization field's value (already trimmed).
BasicParse parseBasicCredentials(std::string_view value, BasicCredentials* out);
// The Proxy-Authorization of a head: missing, malformed (also: sent twice, or
// another scheme) or ok.
BasicParse basicCredentialsOf(const RequestHead& head, BasicCredentials* out);

// Blocking (milliseconds for bcrypt): verifier threads and tests only.
bool verifyPassword(const SecretBytes& password, const std::string& hash);

using AuthDigest = std::array<unsigned char, 32>;
// SHA-256 of user, password and the entry's hash: a changed entry misses.
AuthDigest authDigest(std::string_view user, const SecretBytes& password, std::string_view hash);

// Thread-safe. A good entry lasts `ttl` as given at lookup (a reload that
// shortens cache_ttl shortens it for entries already there); a bad one the
// shorter of that and negative_ttl.
class CredentialCache {
 public:
  using Clock = std::chrono::steady_clock;
  CredentialCache(size_t good_capacity, size_t bad_capacity, Duration negative_ttl);

  enum class Hit { none, good, bad };
  Hit lookup(const AuthDigest& key, Duration ttl, Clock::time_point now);
  void put(const AuthDigest& key, bool good, Clock::time_point now);
  size_t size() const;

 private:
  struct Table {
    size_t capacity = 0;
    std::list<std::pair<std::string, Clock::time_point>> lru;  // most recent first
    std::unordered_map<std::string, decltype(lru)::iterator> index;
  };
  static bool find(Table& table, const std::string& key, Duration ttl, Clock::time_point now);
  static void insert(Table& table, const std::string& key, Clock::time_point now);

  mutable std::mutex mu_;
  Table good_;
  Table bad_;
  Duration negative_ttl_;
};

enum class AuthAnswer { good, good_cached, bad, bad_cached, busy };

class Authenticator {
 public:
  struct Options {
    size_t threads = 2;
    size_t queue_limit = 1024;       // verifications waiting, over all clients
    size_t per_client_limit = 32;    // waiting for one client address
    size_t cache_entries = 10000;    // good name+password digests
    size_t negative_entries = 1000;  // failed ones
    Duration negative_ttl{std::chrono::seconds(30)};
  };
  // Threads: half the CPUs, at least 2, at most 8. None start until the
  // first verification.
  static Options defaultOptions();

  explicit Authenticator(Options options);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // A verification in progress; destroying it (on its loop) cancels the
  // callback.
  class Pending {
   public:
    virtual ~Pending() = default;
  };
  using Callback = std::function<void(AuthAnswer)>;

  // On an event loop. A cached answer, or `busy` (the queue is full), is
  // given at once in *now and nullptr returned; otherwise the password goes to
  // a verifier thread and `done` runs later on `base`'s loop, never from
  // inside check().
  [[nodiscard]] std::unique_ptr<Pending> check(event_base* base, const std::string& client,
                                               std::string_view user, SecretBytes password,
                                               const std::string& hash, Duration ttl,
                                               AuthAnswer* now, Callback done);

  CredentialCache& cache() { return cache_; }
  size_t queued() const;

 private:
  struct Delivery;
  struct Job;
  class PendingCheck;
  void startThreads();
  void run();

  Options options_;
  CredentialCache cache_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::once_flag started_;
  std::vector<std::thread> threads_;
  // Waiting jobs per client, and the clients' turns (round robin).
  std::unordered_map<std::string, std::deque<std::shared_ptr<Job>>> queues_;
  std::deque<std::string> turns_;
  size_t queued_ = 0;
  // Queued or running, by digest: a second request for one digest joins it.
  std::unordered_map<std::string, std::shared_ptr<Job>> inflight_;
};

// ---------------------------------------------------------------------------
// The session's step 1a.

enum class AuthStatus {
  none,  // not asked: no auth, an sni listener, a listener with client_ca, or optional and absent
  ok,    // `user` verified
  missing,  // 407 auth_required
  failed,   // 407 auth_failed; `user` is the name tried (may be empty)
};
struct AuthOutcome {
  AuthStatus status = AuthStatus::none;
  std::string user;
  std::string detail;  // one line for the error body; never the password
};

// Checks one request head. Answers at once in *now (and returns nullptr), or
// returns a pending verification whose `done` runs later on `base`'s loop.
// The credentials in `head_bytes` (which the head's fields point into) are
// wiped once read. Counts s3gate_auth_total.
[[nodiscard]] std::unique_ptr<Authenticator::Pending> authenticateHead(
    const Runtime& runtime, const ListenerConfig& listener, const RequestHead& head,
    std::string& head_bytes, const std::string& client, event_base* base, Metrics& metrics,
    AuthOutcome* now, std::function<void(AuthOutcome)> done);

// The Proxy-Authenticate value for `realm`.
std::string proxyAuthenticateValue(std::string_view realm);

}  // namespace s3gate
