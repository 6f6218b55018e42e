#include "proxy/auth.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/text.h"
#include "metrics/metrics.h"
#include "proxy/http_parser.h"
#include "proxy/runtime.h"

namespace s3gate {

namespace {

using Clock = std::chrono::steady_clock;

bool isCryptChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '/';
}

bool allCrypt(std::string_view s) {
  return std::all_of(s.begin(), s.end(), isCryptChar);
}

std::vector<std::string_view> splitDollar(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t at = s.find('$', start);
    if (at == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, at - start));
    start = at + 1;
  }
}

constexpr std::string_view kHashAdvice =
    "hashes must be bcrypt ($2y$ or $2b$: htpasswd -B), yescrypt ($y$: mkpasswd -m yescrypt) or "
    "SHA-512 crypt ($6$: mkpasswd -m sha-512)";

std::string digestKey(const AuthDigest& digest) {
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

std::string asciiLine(std::string_view s) {
  std::string out;
  for (char c : s) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------

SecretBytes::SecretBytes(std::string_view bytes)
    : data_(std::make_unique<char[]>(bytes.size() + 1)), size_(bytes.size()) {
  std::memcpy(data_.get(), bytes.data(), bytes.size());
  data_[bytes.size()] = '\0';
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::move(other.data_)), size_(other.size_) {
  other.size_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    wipe();
    data_ = std::move(other.data_);
    size_ = other.size_;
    other.size_ = 0;
  }
  return *this;
}

void SecretBytes::wipe() {
  if (data_) {
    OPENSSL_cleanse(data_.get(), size_ + 1);
    data_.reset();
  }
  size_ = 0;
}

// ---------------------------------------------------------------------------

bool classifyHash(std::string_view hash, HashKind* kind, std::string* why) {
  if (hash.empty()) {
    *why = "the hash is empty";
    return false;
  }
  if (hash[0] != '$') {
    *why = "the hash is not a crypt hash (a cleartext password, or an old DES or {SHA} hash?)";
    return false;
  }
  std::vector<std::string_view> p = splitDollar(hash);  // p[0] is empty
  std::string_view id = p.size() > 1 ? p[1] : std::string_view();
  if (id == "2y" || id == "2b") {
    // $2b$CC$ + 22 salt + 31 hash characters
    if (p.size() == 4 && p[2].size() == 2 && std::isdigit(static_cast<unsigned char>(p[2][0])) &&
        std::isdigit(static_cast<unsigned char>(p[2][1])) && p[2] >= "04" && p[2] <= "31" &&
        p[3].size() == 53 && allCrypt(p[3])) {
      *kind = HashKind::bcrypt;
      return true;
    }
    *why = "the bcrypt hash ($" + std::string(id) + "$) is malformed";
    return false;
  }
  if (id == "y") {
    // $y$PARAMS$SALT$HASH
    if (p.size() == 5 && !p[2].empty() && allCrypt(p[2]) && allCrypt(p[3]) && p[4].size() == 43 &&
        allCrypt(p[4])) {
      *kind = HashKind::yescrypt;
      return true;
    }
    *why = "the yescrypt hash ($y$) is malformed";
    return false;
  }
  if (id == "6") {
    // $6$[rounds=N$]SALT$HASH
    size_t salt = 2;
    if (p.size() == 5 && p[2].substr(0, 7) == "rounds=" && p[2].size() > 7 &&
        std::all_of(p[2].begin() + 7, p[2].end(),
                    [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      salt = 3;
    }
    if (p.size() == salt + 2 && p[salt].size() <= 16 && allCrypt(p[salt]) &&
        p[salt + 1].size() == 86 && allCrypt(p[salt + 1])) {
      *kind = HashKind::sha512_crypt;
      return true;
    }
    *why = "the SHA-512 crypt hash ($6$) is malformed";
    return false;
  }
  std::string named;
  if (id == "1") {
    named = "MD5 crypt ($1$)";
  } else if (id == "apr1") {
    named = "Apache MD5 ($apr1$)";
  } else if (id == "5") {
    named = "SHA-256 crypt ($5$)";
  } else if (id == "2a" || id == "2x") {
    named = "old bcrypt ($" + std::string(id) + "$; make it again as $2y$ or $2b$)";
  } else if (id == "7" || id == "gy" || id == "sha1" || id == "md5") {
    named = "$" + std::string(id) + "$";
  }
  *why = named.empty() ? "the hash's kind is not supported"
                       : "the hash is " + named + ", which is not supported";
  return false;
}

std::shared_ptr<const UsersTable> UsersTable::parse(std::string_view text,
                                                    const std::string& source,
                                                    std::vector<std::string>* errors) {
  auto table = std::make_shared<UsersTable>();
  std::unordered_map<std::string, size_t> first_line;
  size_t errors_before = errors->size();
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    std::string_view trimmed = line;
    while (!trimmed.empty() && (trimmed.front() == ' ' || trimmed.front() == '\t')) {
      trimmed.remove_prefix(1);
    }
    if (trimmed.empty() || trimmed.front() == '#') {
      continue;
    }
    const std::string where = source + ":" + std::to_string(line_no) + ": ";
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      errors->push_back(where + "expected \"name:hash\", found no ':'");
      continue;
    }
    std::string_view name = line.substr(0, colon);
    std::string_view hash = line.substr(colon + 1);
    bool name_ok = !name.empty() && name.front() != ' ' && name.back() != ' ' &&
                   std::none_of(name.begin(), name.end(), [](char c) {
                     return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
                   });
    if (!name_ok) {
      errors->push_back(where +
                        "the user name is empty, has control characters or spaces at an end");
      continue;
    }
    // htpasswd-style files may carry more fields (name:hash:comment); only
    // name:hash is accepted, so that a stray field is not taken for the hash.
    HashKind kind;
    std::string why;
    if (!classifyHash(hash, &kind, &why)) {
      errors->push_back(where + "user \"" + asciiLine(name) + "\": " + why + "; " +
                        std::string(kHashAdvice));
      continue;
    }
    auto [it, fresh] = first_line.emplace(std::string(name), line_no);
    if (!fresh) {
      errors->push_back(where + "user \"" + asciiLine(name) + "\" is already defined on line " +
                        std::to_string(it->second));
      continue;
    }
    table->users_.emplace(std::string(name), std::string(hash));
  }
  if (errors->size() != errors_before) {
    return nullptr;
  }
  return table;
}

std::shared_ptr<const UsersTable> UsersTable::load(const std::string& path,
                                                   std::vector<std::string>* errors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errors->push_back(path + ": cannot be read: " + std::strerror(errno));
    return nullptr;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    errors->push_back(path + ": cannot be read");
    return nullptr;
  }
  std::string bytes = text.str();
  auto table = parse(bytes, path, errors);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return table;
}

const std::string* UsersTable::find(std::string_view name) const {
  auto it = users_.find(std::string(name));
  return it == users_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------

BasicParse parseBasicCredentials(std::string_view value, BasicCredentials* out) {
  constexpr std::string_view kScheme = "basic";
  if (value.size() <= kScheme.size() || !equalsIgnoreCase(value.substr(0, 5), kScheme) ||
      (value[5] != ' ' && value[5] != '\t')) {
    return BasicParse::malformed;
  }
  std::string_view token = value.substr(6);
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
    token.remove_prefix(1);
  }
  // Canonical base64 only: a multiple of 4, '=' only as the last one or two.
  if (token.empty() || token.size() % 4 != 0 || token.size() > 4096) {
    return BasicParse::malformed;
  }
  size_t padding = 0;
  for (size_t i = 0; i < token.size(); ++i) {
    char c = token[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '+' || c == '/';
    if (c == '=') {
      if (i + 2 < token.size()) {
        return BasicParse::malformed;
      }
      ++padding;
    } else if (!alpha || padding > 0) {
      return BasicParse::malformed;
    }
  }
  std::vector<unsigned char> raw(token.size() / 4 * 3 + 1);
  int n = EVP_DecodeBlock(raw.data(), reinterpret_cast<const unsigned char*>(token.data()),
                          static_cast<int>(token.size()));
  BasicParse result = BasicParse::malformed;
  if (n >= 0 && static_cast<size_t>(n) >= padding) {
    std::string_view decoded(reinterpret_cast<const char*>(raw.data()),
                             static_cast<size_t>(n) - padding);
    size_t colon = decoded.find(':');
    std::string_view user = decoded.substr(0, colon);
    bool clean = std::none_of(decoded.begin(), decoded.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (colon != std::string_view::npos && !user.empty() && clean) {
      out->user = std::string(user);
      out->password = SecretBytes(decoded.substr(colon + 1));
      result = BasicParse::ok;
    }
  }
  OPENSSL_cleanse(raw.data(), raw.size());
  return result;
}

BasicParse basicCredentialsOf(const RequestHead& head, BasicCredentials* out) {
  const HeaderField* found = nullptr;
  for (const HeaderField& field : head.headers) {
    if (equalsIgnoreCase(field.name, "Proxy-Authorization")) {
      if (found != nullptr) {
        return BasicParse::malformed;
      }
      found = &field;
    }
  }
  if (found == nullptr) {
    return BasicParse::missing;
  }
  return parseBasicCredentials(found->value, out);
}

bool verifyPassword(const SecretBytes& password, const std::string& hash) {
  // 32 KiB of state: one per verifier thread, wiped after each use.
  thread_local std::unique_ptr<crypt_data> data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof(crypt_data));
  const char* result = crypt_rn(password.c_str(), hash.c_str(), data.get(), sizeof(crypt_data));
  bool good = result != nullptr && result[0] != '*' && std::strlen(result) == hash.size() &&
              CRYPTO_memcmp(result, hash.data(), hash.size()) == 0;
  OPENSSL_cleanse(data.get(), sizeof(crypt_data));
  return good;
}

AuthDigest authDigest(std::string_view user, const SecretBytes& password, std::string_view hash) {
  AuthDigest digest{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  static constexpr unsigned char kSeparator = 0;
  // Lengths first: no two (user, password, hash) triples give the same input.
  uint64_t lengths[2] = {user.size(), password.size()};
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(ctx, lengths, sizeof(lengths)) == 1 &&
            EVP_DigestUpdate(ctx, user.data(), user.size()) == 1 &&
            EVP_DigestUpdate(ctx, password.view().data(), password.size()) == 1 &&
            EVP_DigestUpdate(ctx, &kSeparator, 1) == 1 &&
            EVP_DigestUpdate(ctx, hash.data(), hash.size()) == 1 &&
            EVP_DigestFinal_ex(ctx, digest.data(), nullptr) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    // Unreachable in practice; a random key can only miss the cache.
    digest.fill(0xff);
    digest[0] = 0;
  }
  return digest;
}

// ---------------------------------------------------------------------------

CredentialCache::CredentialCache(size_t good_capacity, size_t bad_capacity, Duration negative_ttl)
    : negative_ttl_(negative_ttl) {
  good_.capacity = good_capacity;
  bad_.capacity = bad_capacity;
}

bool CredentialCache::find(Table& table, const std::string& key, Duration ttl,
                           Clock::time_point now) {
  auto it = table.index.find(key);
  if (it == table.index.end()) {
    return false;
  }
  if (now - it->second->second >= ttl) {
    table.lru.erase(it->second);
    table.index.erase(it);
    return false;
  }
  table.lru.splice(table.lru.begin(), table.lru, it->second);
  return true;
}

void CredentialCache::insert(Table& table, const std::string& key, Clock::time_point now) {
  if (table.capacity == 0) {
    return;
  }
  auto it = table.index.find(key);
  if (it != table.index.end()) {
    it->second->second = now;
    table.lru.splice(table.lru.begin(), table.lru, it->second);
    return;
  }
  while (table.lru.size() >= table.capacity) {
    table.index.erase(table.lru.back().first);
    table.lru.pop_back();
  }
  table.lru.emplace_front(key, now);
  table.index.emplace(key, table.lru.begin());
}

CredentialCache::Hit CredentialCache::lookup(const AuthDigest& digest, Duration ttl,
                                             Clock::time_point now) {
  if (ttl <= Duration(0)) {
    return Hit::none;
  }
  std::string key = digestKey(digest);
  std::lock_guard<std::mutex> lock(mu_);
  if (find(good_, key, ttl, now)) {
    return Hit::good;
  }
  if (find(bad_, key, std::min(ttl, negative_ttl_), now)) {
    return Hit::bad;
  }
  return Hit::none;
}

void CredentialCache::put(const AuthDigest& digest, bool good, Clock::time_point now) {
  std::string key = digestKey(digest);
  std::lock_guard<std::mutex> lock(mu_);
  insert(good ? good_ : bad_, key, now);
}

size_t CredentialCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return good_.lru.size() + bad_.lru.size();
}

// ---------------------------------------------------------------------------

// Shared by a pending check (on its loop) and the job (on a verifier thread):
// the thread activates `ev` under `mu` only while the check still exists.
struct Authenticator::Delivery {
  std::mutex mu;
  event* ev = nullptr;  // null once the check is gone
  AuthAnswer answer = AuthAnswer::bad;

  void deliver(AuthAnswer a) {
    std::lock_guard<std::mutex> lock(mu);
    if (ev != nullptr) {
      answer = a;
      event_active(ev, EV_TIMEOUT, 0);
    }
  }
};

struct Authenticator::Job {
  std::string key;
  std::string client;
  SecretBytes password;
  std::string hash;
  std::vector<std::shared_ptr<Delivery>> waiters;  // guarded by Authenticator::mu_
};

class Authenticator::PendingCheck final : public Authenticator::Pending {
 public:
  PendingCheck(event_base* base, Callback done)
      : delivery_(std::make_shared<Delivery>()),
        done_(std::move(done)),
        event_(event_new(base, -1, 0, &onDeliver, this)) {
    delivery_->ev = event_.get();
  }
  ~PendingCheck() override {
    {
      std::lock_guard<std::mutex> lock(delivery_->mu);
      delivery_->ev = nullptr;
    }
    // event_ is freed after this: the thread can no longer activate it.
  }
  bool valid() const { return event_ != nullptr; }
  std::shared_ptr<Delivery> delivery() { return delivery_; }

 private:
  static void onDeliver(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<PendingCheck*>(arg);
    AuthAnswer answer;
    {
      std::lock_guard<std::mutex> lock(self->delivery_->mu);
      answer = self->delivery_->answer;
    }
    Callback done = std::move(self->done_);
    done(answer);  // may destroy self
  }

  std::shared_ptr<Delivery> delivery_;
  Callback done_;
  EventPtr event_;
};

Authenticator::Options Authenticator::defaultOptions() {
  Options options;
  unsigned cpus = std::thread::hardware_concurrency();
  options.threads = std::clamp<size_t>(cpus / 2, 2, 8);
  return options;
}

Authenticator::Authenticator(Options options)
    : options_(options),
      cache_(options.cache_entries, options.negative_entries, options.negative_ttl) {}

Authenticator::~Authenticator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) {
    t.join();
  }
}

void Authenticator::startThreads() {
  for (size_t i = 0; i < std::max<size_t>(1, options_.threads); ++i) {
    threads_.emplace_back([this] { run(); });
    // Its own name, so that per-thread CPU figures tell hashing from the workers.
    pthread_setname_np(threads_.back().native_handle(), "s3gate-auth");
  }
}

size_t Authenticator::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

void Authenticator::run() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !turns_.empty(); });
      if (stop_) {
        return;
      }
      // Round robin: the client whose turn it is gives one job and, if it
      // has more, goes to the back of the line.
      std::string client = std::move(turns_.front());
      turns_.pop_front();
      auto it = queues_.find(client);
      job = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) {
        queues_.erase(it);
      } else {
        turns_.push_back(std::move(client));
      }
      --queued_;
    }
    bool good = verifyPassword(job->password, job->hash);
    job->password.wipe();
    AuthDigest digest;
    std::memcpy(digest.data(), job->key.data(), digest.size());
    cache_.put(digest, good, Clock::now());
    std::vector<std::shared_ptr<Delivery>> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_.erase(job->key);
      waiters.swap(job->waiters);
    }
    for (const auto& waiter : waiters) {
      waiter->deliver(good ? AuthAnswer::good : AuthAnswer::bad);
    }
  }
}

std::unique_ptr<Authenticator::Pending> Authenticator::check(
    event_base* base, const std::string& client, std::string_view user, SecretBytes password,
    const std::string& hash, Duration ttl, AuthAnswer* now, Callback done) {
  AuthDigest digest = authDigest(user, password, hash);
  switch (cache_.lookup(digest, ttl, Clock::now())) {
    case CredentialCache::Hit::good:
      *now = AuthAnswer::good_cached;
      return nullptr;
    case CredentialCache::Hit::bad:
      *now = AuthAnswer::bad_cached;
      return nullptr;
    case CredentialCache::Hit::none:
      break;
  }
  auto pending = std::make_unique<PendingCheck>(base, std::move(done));
  if (!pending->valid()) {
    *now = AuthAnswer::busy;
    return nullptr;
  }
  std::call_once(started_, [this] { startThreads(); });
  std::string key = digestKey(digest);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = inflight_.find(key); it != inflight_.end()) {
      it->second->waiters.push_back(pending->delivery());
      return pending;
    }
    auto queue = queues_.find(client);
    size_t mine = queue == queues_.end() ? 0 : queue->second.size();
    if (queued_ >= options_.queue_limit || mine >= options_.per_client_limit) {
      *now = AuthAnswer::busy;
      return nullptr;
    }
    auto job = std::make_shared<Job>();
    job->key = key;
    job->client = client;
    job->password = std::move(password);
    job->hash = hash;
    job->waiters.push_back(pending->delivery());
    if (mine == 0) {
      turns_.push_back(client);
    }
    queues_[client].push_back(job);
    inflight_.emplace(std::move(key), std::move(job));
    ++queued_;
  }
  cv_.notify_one();
  return pending;
}

// ---------------------------------------------------------------------------

std::string proxyAuthenticateValue(std::string_view realm) {
  return "Basic realm=\"" + std::string(realm) + "\", charset=\"UTF-8\"";
}

namespace {

// The credentials' bytes in the request head are overwritten once read: the
// header is hop-by-hop and never forwarded.
void wipeProxyAuthorization(const RequestHead& head, std::string& head_bytes) {
  const char* begin = head_bytes.data();
  const char* end = begin + head_bytes.size();
  for (const HeaderField& field : head.headers) {
    if (!equalsIgnoreCase(field.name, "Proxy-Authorization")) {
      continue;
    }
    const char* at = field.value.data();
    if (at >= begin && at + field.value.size() <= end) {
      std::fill_n(head_bytes.begin() + (at - begin), field.value.size(), '*');
    }
  }
}

void warnBusy(const std::string& client, size_t queued) {
  // At most one line a second: a flood must not flood stderr too.
  static std::atomic<int64_t> last{0};
  int64_t second =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
  int64_t before = last.load(std::memory_order_relaxed);
  if (before != second && last.compare_exchange_strong(before, second)) {
    fprintf(stderr,
            "s3gate: auth: the password verification queue is full (%zu waiting); %s was "
            "answered 407 auth_failed\n",
            queued, client.c_str());
  }
}

AuthOutcome outcomeOf(AuthAnswer answer, const std::string& user, Metrics& metrics) {
  AuthOutcome out;
  out.user = user;
  switch (answer) {
    case AuthAnswer::good:
      metrics.countAuth(AuthResult::success);
      out.status = AuthStatus::ok;
      return out;
    case AuthAnswer::good_cached:
      metrics.countAuth(AuthResult::cached);
      out.status = AuthStatus::ok;
      return out;
    case AuthAnswer::bad:
    case AuthAnswer::bad_cached:
      out.detail = "wrong user name or password";
      break;
    case AuthAnswer::busy:
      out.detail = "too many password checks waiting; try again";
      break;
  }
  metrics.countAuth(AuthResult::failure);
  out.status = AuthStatus::failed;
  return out;
}

}  // namespace

std::unique_ptr<Authenticator::Pending> authenticateHead(
    const Runtime& runtime, const ListenerConfig& listener, const RequestHead& head,
    std::string& head_bytes, const std::string& client, event_base* base, Metrics& metrics,
    AuthOutcome* now, std::function<void(AuthOutcome)> done) {
  *now = AuthOutcome{};
  const auto& auth = runtime.cfg().auth;
  if (!auth || listener.mode != ListenerMode::forward ||
      (listener.tls && !listener.tls->client_ca.empty())) {
    return nullptr;
  }
  BasicCredentials credentials;
  BasicParse parsed = basicCredentialsOf(head, &credentials);
  wipeProxyAuthorization(head, head_bytes);
  if (parsed == BasicParse::missing && !auth->required) {
    metrics.countAuth(AuthResult::missing);
    return nullptr;
  }
  if (parsed != BasicParse::ok) {
    metrics.countAuth(AuthResult::missing);
    now->status = AuthStatus::missing;
    now->detail = parsed == BasicParse::missing ? "this proxy requires a user name and password"
                                                : "Proxy-Authorization is not valid Basic "
                                                  "credentials";
    return nullptr;
  }
  const std::string* hash = runtime.users ? runtime.users->find(credentials.user) : nullptr;
  if (hash == nullptr || !runtime.authenticator) {
    // An unknown name costs no hashing: user names are not secret here (the
    // access log and the rules name them).
    metrics.countAuth(AuthResult::failure);
    now->status = AuthStatus::failed;
    now->user = credentials.user;
    now->detail = "wrong user name or password";
    return nullptr;
  }
  AuthAnswer answer = AuthAnswer::bad;
  std::string user = credentials.user;
  Metrics* counter = &metrics;
  auto pending = runtime.authenticator->check(
      base, client, credentials.user, std::move(credentials.password), *hash, auth->cache_ttl,
      &answer, [done = std::move(done), user, counter](AuthAnswer a) {
        done(outcomeOf(a, user, *counter));
      });
  if (pending) {
    return pending;
  }
  if (answer == AuthAnswer::busy) {
    warnBusy(client, runtime.authenticator->queued());
  }
  *now = outcomeOf(answer, user, metrics);
  return nullptr;
}

}  // namespace s3gate
