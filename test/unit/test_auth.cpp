#include <crypt.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/auth.h"
#include "proxy/http_parser.h"
#include "proxy/runtime.h"

using namespace std::chrono_literals;

namespace s3gate {
namespace {

// A hash made by the system's libcrypt, as mkpasswd or htpasswd would.
std::string makeHash(const char* prefix, unsigned long cost, const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  REQUIRE(crypt_gensalt_rn(prefix, cost, nullptr, 0, setting, sizeof(setting)) != nullptr);
  crypt_data data{};
  const char* hash = crypt_rn(password.c_str(), setting, &data, sizeof(data));
  REQUIRE(hash != nullptr);
  REQUIRE(hash[0] == '$');
  return hash;
}

std::vector<std::string> parseErrors(const std::string& text) {
  std::vector<std::string> errors;
  auto table = UsersTable::parse(text, "users", &errors);
  CHECK((table == nullptr) == !errors.empty());
  return errors;
}

TEST_CASE("users file: every accepted hash kind, comments, blank lines, CRLF", "[auth]") {
  std::string bcrypt_b = makeHash("$2b$", 4, "pw-b");
  std::string bcrypt_y = makeHash("$2y$", 4, "pw-y");
  std::string yescrypt = makeHash("$y$", 0, "pw-yes");
  std::string sha512 = makeHash("$6$", 0, "pw-sha");
  std::string sha512_rounds = makeHash("$6$", 5000, "pw-rounds");
  std::string text = "# studio users\n\n   \n  # indented comment\nalice:" + bcrypt_b +
                     "\nbob:" + bcrypt_y + "\r\ncarol:" + yescrypt + "\ndave:" + sha512 +
                     "\nerin.render-01@studio:" + sha512_rounds;
  std::vector<std::string> errors;
  auto table = UsersTable::parse(text, "users", &errors);
  REQUIRE(errors.empty());
  REQUIRE(table);
  CHECK(table->size() == 5);
  REQUIRE(table->find("bob"));
  CHECK(*table->find("bob") == bcrypt_y);  // the CR is not part of the hash
  CHECK(table->find("erin.render-01@studio"));
  CHECK(table->find("mallory") == nullptr);
  CHECK(table->find("ALICE") == nullptr);  // names are exact

  struct Case {
    const char* user;
    std::string password;
    bool good;
  };
  for (const Case& c :
       {Case{"alice", "pw-b", true}, Case{"alice", "pw-B", false}, Case{"bob", "pw-y", true},
        Case{"carol", "pw-yes", true}, Case{"carol", "pw-ye", false}, Case{"dave", "pw-sha", true},
        Case{"dave", "", false}, Case{"erin.render-01@studio", "pw-rounds", true}}) {
    INFO(c.user << " " << c.password);
    CHECK(verifyPassword(SecretBytes(c.password), *table->find(c.user)) == c.good);
  }
}

TEST_CASE("users file: each error names the file and line, never the hash", "[auth]") {
  std::string good = makeHash("$2b$", 4, "x");
  struct Case {
    std::string text;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"alice\n", "users:1: expected \"name:hash\", found no ':'"},
      {"# c\n:" + good + "\n",
       "users:2: the user name is empty, has control characters or spaces at an end"},
      {"alice:S3cretPassw0rd\n",
       "users:1: user \"alice\": the hash is not a crypt hash (a cleartext password, or an old "
       "DES or {SHA} hash?)"},
      {"alice:\n", "users:1: user \"alice\": the hash is empty"},
      {"alice:$1$abcdefgh$0123456789012345678901\n",
       "users:1: user \"alice\": the hash is MD5 crypt ($1$), which is not supported"},
      {"alice:$apr1$abcdefgh$0123456789012345678901\n",
       "users:1: user \"alice\": the hash is Apache MD5 ($apr1$), which is not supported"},
      {"alice:$5$abcdefgh$0123456789012345678901234567890123456789012\n",
       "users:1: user \"alice\": the hash is SHA-256 crypt ($5$), which is not supported"},
      {"alice:$2a$10$" + good.substr(7) + "\n",
       "users:1: user \"alice\": the hash is old bcrypt ($2a$; make it again as $2y$ or $2b$), "
       "which is not supported"},
      {"alice:" + good.substr(0, good.size() - 1) + "\n",
       "users:1: user \"alice\": the bcrypt hash ($2b$) is malformed"},
      {"alice:$2b$99$" + good.substr(7) + "\n",
       "users:1: user \"alice\": the bcrypt hash ($2b$) is malformed"},
      {"alice:$y$j9T$salt\n", "users:1: user \"alice\": the yescrypt hash ($y$) is malformed"},
      {"alice:$6$salt$short\n",
       "users:1: user \"alice\": the SHA-512 crypt hash ($6$) is malformed"},
      {"alice:" + good + ":extra field\n",
       "users:1: user \"alice\": the bcrypt hash ($2b$) is malformed"},
      {"alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
       "users:1: user \"alice\": the hash is not a crypt hash (a cleartext password, or an old "
       "DES or {SHA} hash?)"},
      {"alice:" + good + "\nbob:" + good + "\nalice:" + good + "\n",
       "users:3: user \"alice\" is already defined on line 1"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    std::vector<std::string> errors = parseErrors(c.text);
    REQUIRE(errors.size() == 1);
    std::string expected = c.error;
    if (expected.find("already defined") == std::string::npos &&
        expected.find("found no") == std::string::npos &&
        expected.find("user name is empty") == std::string::npos) {
      expected +=
          "; hashes must be bcrypt ($2y$ or $2b$: htpasswd -B), yescrypt ($y$: mkpasswd -m "
          "yescrypt) or SHA-512 crypt ($6$: mkpasswd -m sha-512)";
    }
    CHECK(errors[0] == expected);
    CHECK(errors[0].find("S3cretPassw0rd") == std::string::npos);
  }
  SECTION("every bad line is reported, not only the first") {
    CHECK(parseErrors("a\nb:plain\nc:" + good + "\n").size() == 2);
  }
  SECTION("a file that cannot be read") {
    std::vector<std::string> errors;
    CHECK(UsersTable::load("/nonexistent/users", &errors) == nullptr);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == "/nonexistent/users: cannot be read: No such file or directory");
  }
}

TEST_CASE("Proxy-Authorization: Basic is parsed strictly", "[auth]") {
  struct Case {
    std::string value;
    BasicParse result;
    std::string user;
    std::string password;
  };
  const std::vector<Case> cases = {
      {"Basic YWxpY2U6c2VjcmV0", BasicParse::ok, "alice", "secret"},
      {"basic   YWxpY2U6c2VjcmV0", BasicParse::ok, "alice", "secret"},
      {"BASIC YWxpY2U6c2VjcmV0", BasicParse::ok, "alice", "secret"},
      {"Basic YWxpY2U6", BasicParse::ok, "alice", ""},         // "alice:"
      {"Basic YWxpY2U6YTpi", BasicParse::ok, "alice", "a:b"},  // the first ':' splits
      {"Basic YWxpY2U6c2VjcmV0MQ==", BasicParse::ok, "alice", "secret1"},
      {"Basic YWxpY2U6c2VjcmV0MTI=", BasicParse::ok, "alice", "secret12"},
      {"Basic w6lsw6g6cMOkc3M=", BasicParse::ok, "\xc3\xa9l\xc3\xa8", "p\xc3\xa4ss"},  // UTF-8
      {"Basic YWxpY2U=", BasicParse::malformed, "", ""},            // "alice": no ':'
      {"Basic OnNlY3JldA==", BasicParse::malformed, "", ""},        // ":secret": no user
      {"Basic YWxpY2U6c2VjcmV0MQ", BasicParse::malformed, "", ""},  // padding left out
      {"Basic YWxpY2U6c2Vj=mV0", BasicParse::malformed, "", ""},    // '=' inside
      {"Basic YWxpY2U6c2VjcmV0!!!!", BasicParse::malformed, "", ""},
      {"Basic YWxp Y2U6c2VjcmV0", BasicParse::malformed, "", ""},
      {"Basic", BasicParse::malformed, "", ""},
      {"Basic ", BasicParse::malformed, "", ""},
      {"BasicYWxpY2U6c2VjcmV0", BasicParse::malformed, "", ""},
      {"Bearer YWxpY2U6c2VjcmV0", BasicParse::malformed, "", ""},
      {"Negotiate YIIabc=", BasicParse::malformed, "", ""},
      {"Basic YWxpY2UAOnNlY3JldA==", BasicParse::malformed, "", ""},  // NUL in the name
      {"Basic YWxpY2U6c2VjCnJldA==", BasicParse::malformed, "", ""},  // LF in the password
  };
  for (const Case& c : cases) {
    INFO(c.value);
    BasicCredentials out;
    REQUIRE(parseBasicCredentials(c.value, &out) == c.result);
    if (c.result == BasicParse::ok) {
      CHECK(out.user == c.user);
      CHECK(std::string(out.password.view()) == c.password);
    }
  }

  SECTION("from a request head: absent, once, twice") {
    auto headOf = [](const std::string& text, BasicCredentials* out) {
      ParseResult parsed = parseRequestHead(text, ParseLimits{});
      REQUIRE(parsed.status == ParseStatus::complete);
      return basicCredentialsOf(parsed.head, out);
    };
    BasicCredentials out;
    CHECK(headOf("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", &out) == BasicParse::missing);
    CHECK(headOf("CONNECT a:443 HTTP/1.1\r\nproxy-authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n",
                 &out) == BasicParse::ok);
    CHECK(out.user == "alice");
    CHECK(headOf("CONNECT a:443 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n"
                 "Proxy-Authorization: Basic Ym9iOng=\r\n\r\n",
                 &out) == BasicParse::malformed);
  }
}

TEST_CASE("SecretBytes wipes and moves", "[auth]") {
  SecretBytes a("hunter2");
  CHECK(a.view() == "hunter2");
  CHECK(std::string(a.c_str()) == "hunter2");
  SecretBytes b = std::move(a);
  CHECK(a.size() == 0);
  CHECK(b.view() == "hunter2");
  b.wipe();
  CHECK(b.size() == 0);
  CHECK(std::string(b.c_str()).empty());
}

TEST_CASE("the digest depends on user, password and hash", "[auth]") {
  AuthDigest d = authDigest("alice", SecretBytes("pw"), "$2b$hash");
  CHECK(d == authDigest("alice", SecretBytes("pw"), "$2b$hash"));
  CHECK(d != authDigest("alice", SecretBytes("pW"), "$2b$hash"));
  CHECK(d != authDigest("alicE", SecretBytes("pw"), "$2b$hash"));
  CHECK(d != authDigest("alice", SecretBytes("pw"), "$2b$hasH"));
  // No ambiguity where user and password meet.
  CHECK(authDigest("ab", SecretBytes("c"), "h") != authDigest("a", SecretBytes("bc"), "h"));
}

TEST_CASE("credential cache: TTL, a bound, failures apart", "[auth]") {
  using Clock = CredentialCache::Clock;
  auto key = [](int i) { return authDigest("u" + std::to_string(i), SecretBytes("p"), "h"); };
  Clock::time_point t0 = Clock::now();
  SECTION("a good entry lasts the TTL given at lookup") {
    CredentialCache cache(10, 10, 30s);
    cache.put(key(1), true, t0);
    CHECK(cache.lookup(key(1), 5min, t0 + 299s) == CredentialCache::Hit::good);
    CHECK(cache.lookup(key(1), 5min, t0 + 300s) == CredentialCache::Hit::none);
    CHECK(cache.size() == 0);  // expired entries go when seen
    cache.put(key(1), true, t0);
    CHECK(cache.lookup(key(1), 1min, t0 + 61s) == CredentialCache::Hit::none);  // a shorter TTL
    CHECK(cache.lookup(key(2), 5min, t0) == CredentialCache::Hit::none);
  }
  SECTION("a zero TTL caches nothing") {
    CredentialCache cache(10, 10, 30s);
    cache.put(key(1), true, t0);
    CHECK(cache.lookup(key(1), Duration(0), t0) == CredentialCache::Hit::none);
  }
  SECTION("a failure lasts the shorter of the TTL and negative_ttl") {
    CredentialCache cache(10, 10, 30s);
    cache.put(key(1), false, t0);
    CHECK(cache.lookup(key(1), 5min, t0 + 29s) == CredentialCache::Hit::bad);
    CHECK(cache.lookup(key(1), 5min, t0 + 30s) == CredentialCache::Hit::none);
    cache.put(key(1), false, t0);
    CHECK(cache.lookup(key(1), 10s, t0 + 10s) == CredentialCache::Hit::none);
  }
  SECTION("bounded: the least recently used goes first") {
    CredentialCache cache(3, 2, 30s);
    for (int i = 0; i < 3; ++i) {
      cache.put(key(i), true, t0);
    }
    CHECK(cache.lookup(key(0), 5min, t0) == CredentialCache::Hit::good);  // now the most recent
    cache.put(key(3), true, t0);
    CHECK(cache.size() == 3);
    CHECK(cache.lookup(key(1), 5min, t0) == CredentialCache::Hit::none);  // evicted
    CHECK(cache.lookup(key(0), 5min, t0) == CredentialCache::Hit::good);
    CHECK(cache.lookup(key(3), 5min, t0) == CredentialCache::Hit::good);
  }
  SECTION("a flood of failures never pushes out good entries") {
    CredentialCache cache(3, 2, 30s);
    cache.put(key(0), true, t0);
    for (int i = 100; i < 200; ++i) {
      cache.put(key(i), false, t0);
    }
    CHECK(cache.size() == 3);
    CHECK(cache.lookup(key(0), 5min, t0) == CredentialCache::Hit::good);
  }
}

// An event loop to receive the verifier threads' answers.
struct Loop {
  Loop() {
    static bool threads = evthread_use_pthreads() == 0;
    REQUIRE(threads);
    base.reset(event_base_new());
    REQUIRE(base);
  }
  // Runs the loop until `done()` or 10 s.
  template <typename F>
  void runUntil(F done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      timeval tv{0, 10000};
      event_base_loopexit(base.get(), &tv);
      event_base_dispatch(base.get());
    }
  }
  EventBasePtr base;
};

TEST_CASE("authenticator: verified off the loop, then cached", "[auth]") {
  Loop loop;
  std::string hash = makeHash("$2b$", 6, "right");
  Authenticator::Options options;
  options.threads = 2;
  Authenticator auth(options);
  std::vector<AuthAnswer> answers;
  auto record = [&](AuthAnswer a) { answers.push_back(a); };

  AuthAnswer now = AuthAnswer::busy;
  auto pending = auth.check(loop.base.get(), "10.0.0.1", "alice", SecretBytes("right"), hash, 5min,
                            &now, record);
  REQUIRE(pending);
  CHECK(answers.empty());  // never from inside check()
  loop.runUntil([&] { return !answers.empty(); });
  REQUIRE(answers == std::vector<AuthAnswer>{AuthAnswer::good});

  pending = auth.check(loop.base.get(), "10.0.0.1", "alice", SecretBytes("right"), hash, 5min, &now,
                       record);
  CHECK(pending == nullptr);
  CHECK(now == AuthAnswer::good_cached);

  pending = auth.check(loop.base.get(), "10.0.0.1", "alice", SecretBytes("wrong"), hash, 5min, &now,
                       record);
  REQUIRE(pending);
  loop.runUntil([&] { return answers.size() == 2; });
  CHECK(answers.back() == AuthAnswer::bad);
  pending = auth.check(loop.base.get(), "10.0.0.1", "alice", SecretBytes("wrong"), hash, 5min, &now,
                       record);
  CHECK(pending == nullptr);
  CHECK(now == AuthAnswer::bad_cached);  // not hashed again, and not good

  SECTION("a changed entry (new hash) is verified again") {
    std::string changed = makeHash("$2b$", 4, "right");
    pending = auth.check(loop.base.get(), "10.0.0.1", "alice", SecretBytes("right"), changed, 5min,
                         &now, record);
    CHECK(pending != nullptr);
    loop.runUntil([&] { return answers.size() == 3; });
    CHECK(answers.back() == AuthAnswer::good);
  }
}

TEST_CASE("authenticator: one verification for many waiters; a cancelled one is silent", "[auth]") {
  Loop loop;
  std::string hash = makeHash("$2b$", 8, "pw");
  Authenticator::Options options;
  options.threads = 1;
  Authenticator auth(options);
  int answered = 0;
  AuthAnswer now;
  std::vector<std::unique_ptr<Authenticator::Pending>> waiting;
  for (int i = 0; i < 5; ++i) {
    waiting.push_back(auth.check(loop.base.get(), "10.0.0." + std::to_string(i), "u",
                                 SecretBytes("pw"), hash, 5min, &now,
                                 [&](AuthAnswer a) { answered += a == AuthAnswer::good; }));
    REQUIRE(waiting.back());
  }
  CHECK(auth.queued() <= 1);  // joined the first one
  waiting[2].reset();         // its session went away
  loop.runUntil([&] { return answered == 4; });
  CHECK(answered == 4);
}

TEST_CASE("authenticator: the queue is bounded, per client and in all", "[auth]") {
  Loop loop;
  // Slow enough that nothing finishes while the queue is filled.
  std::string hash = makeHash("$2b$", 12, "pw");
  Authenticator::Options options;
  options.threads = 1;
  options.queue_limit = 6;
  options.per_client_limit = 3;
  Authenticator auth(options);
  std::vector<std::unique_ptr<Authenticator::Pending>> waiting;
  AuthAnswer now = AuthAnswer::good;
  auto ask = [&](const std::string& client, int i) {
    now = AuthAnswer::good;
    auto p = auth.check(loop.base.get(), client, "u", SecretBytes("wrong" + std::to_string(i)),
                        hash, 5min, &now, [](AuthAnswer) {});
    bool queued = p != nullptr;
    if (p) {
      waiting.push_back(std::move(p));
    }
    return queued;
  };
  // One may already be running (taken off the queue): up to 4 from one client.
  int flood = 0;
  for (int i = 0; i < 10; ++i) {
    flood += ask("10.0.0.66", i);
  }
  CHECK(flood >= 3);
  CHECK(flood <= 4);
  CHECK(now == AuthAnswer::busy);
  // Another client still gets its turn.
  CHECK(ask("10.0.0.7", 100));
  CHECK(ask("10.0.0.8", 101));
  waiting.clear();  // cancelled; the threads finish what they hold
}

}  // namespace
}  // namespace s3gate
