// A session driven through its narrow owner interface with a fake connector:
// the decision, what the connector is asked, and the final verdict in the
// metrics and the answer, without DNS or a network.

#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/connector.h"
#include "proxy/event_ptr.h"
#include "proxy/runtime.h"
#include "proxy/session.h"
#include "proxy/session_owner.h"
#include "proxy/upstream_pool.h"

using namespace s3gate;

namespace {

constexpr const char* kConfig = R"(
access_log: off
clients: ["127.0.0.0/8"]
ports: [443]
buckets:
  - name: media
tunnel:
  verify_sni: false
)";

// Answers each connect with whatever the test hands it, from the loop.
class FakeConnector final : public Connector {
 public:
  struct Pending {
    ConnectTarget target;
    Callback cb;
  };

  class FakeAttempt final : public Attempt {
   public:
    explicit FakeAttempt(FakeConnector& owner) : owner_(owner) {}
    ~FakeAttempt() override { owner_.pending_.reset(); }

   private:
    FakeConnector& owner_;
  };

  std::unique_ptr<Attempt> connect(ConfigPtr, ConnectTarget target, Callback cb) override {
    asked.push_back(target);
    pending_ = Pending{std::move(target), std::move(cb)};
    return std::make_unique<FakeAttempt>(*this);
  }

  // Completes the pending attempt (the session may destroy the attempt inside).
  void answer(ConnectResult result) {
    REQUIRE(pending_);
    Callback cb = std::move(pending_->cb);
    cb(std::move(result));
  }

  bool waiting() const { return pending_.has_value(); }

  std::vector<ConnectTarget> asked;

 private:
  std::optional<Pending> pending_;
};

class FakeOwner final : public SessionOwner {
 public:
  FakeOwner() : base_(event_base_new()), pool_(base_.get(), UpstreamPool::Limits{}) {
    ConfigLoadResult loaded = loadConfigFromString(kConfig, "test.yaml");
    REQUIRE(loaded.ok());
    RuntimeBuild built = buildRuntimeFromConfig(loaded.config, RuntimeUse::run, nullptr, nullptr);
    REQUIRE(built.ok());
    runtime_ = built.runtime;
  }

  event_base* base() override { return base_.get(); }
  RuntimePtr runtime() const override { return runtime_; }
  Metrics& metrics() override { return metrics_; }
  Connector& connector() override { return connector_; }
  UpstreamPool& pool() override { return pool_; }
  bool draining() const override { return false; }
  bool listenersClosed() const override { return false; }
  void reap(Session* session) override { reaped.push_back(session); }

  void turn() {
    for (int i = 0; i < 5; ++i) {
      event_base_loop(base_.get(), EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
  }

  FakeConnector connector_;
  std::vector<Session*> reaped;

 private:
  EventBasePtr base_;
  RuntimePtr runtime_;
  Metrics metrics_;
  UpstreamPool pool_;
};

struct Pair {
  UniqueFd near;  // the session's end
  UniqueFd far;   // the test's end
};

Pair socketPair() {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  return Pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::string readSome(int fd) {
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

void sendAll(int fd, const std::string& text) {
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

struct Fixture {
  FakeOwner owner;
  Pair client = socketPair();
  std::unique_ptr<Session> session;

  Fixture() {
    ListenerConfig listener;
    session = std::make_unique<Session>(owner, listener, 0, std::move(client.near),
                                        *SocketAddress::parse("127.0.0.1:40000"), false);
    session->start();
  }

  // The client asks for a tunnel to an allowed bucket; the loop turns.
  void connectMedia() {
    sendAll(client.far.get(),
            "CONNECT media.s3.us-west-2.amazonaws.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    owner.turn();
  }
};

}  // namespace

TEST_CASE("an allowed CONNECT asks the connector for the name, then relays") {
  Fixture f;
  f.connectMedia();
  REQUIRE(f.owner.connector_.asked.size() == 1);
  CHECK(f.owner.connector_.asked[0].host == "media.s3.us-west-2.amazonaws.com");
  CHECK(f.owner.connector_.asked[0].port == 443);
  CHECK(f.session->state() == Session::State::connecting);

  Pair upstream = socketPair();
  ConnectResult ok;
  ok.fd = std::move(upstream.near);
  ok.address = *SocketAddress::parse("10.0.1.10:443");
  f.owner.connector_.answer(std::move(ok));
  f.owner.turn();
  CHECK(f.session->state() == Session::State::relaying);
  CHECK(readSome(f.client.far.get()) == "HTTP/1.1 200 Connection established\r\n\r\n");
  sendAll(f.client.far.get(), "ping");
  f.owner.turn();
  CHECK(readSome(upstream.far.get()) == "ping");
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::allow) == 1);
}

TEST_CASE("a denied bucket never reaches the connector") {
  Fixture f;
  sendAll(f.client.far.get(),
          "CONNECT other.s3.us-west-2.amazonaws.com:443 HTTP/1.1\r\nHost: x\r\n\r\n");
  f.owner.turn();
  CHECK(f.owner.connector_.asked.empty());
  std::string answer = readSome(f.client.far.get());
  CHECK(answer.rfind("HTTP/1.1 403 ", 0) == 0);
  CHECK(answer.find("details=\"bucket_not_allowed\"") != std::string::npos);
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::deny) == 1);
  CHECK(f.owner.metrics().denied(Reason::bucket_not_allowed) == 1);
}

TEST_CASE("the address rules overrule an allowed decision: counted as the final deny") {
  Fixture f;
  f.connectMedia();
  REQUIRE(f.owner.connector_.waiting());
  ConnectResult refused;
  refused.error = Reason::dns_pin_violation;
  refused.detail = "no address may be connected to";
  f.owner.connector_.answer(std::move(refused));
  f.owner.turn();
  std::string answer = readSome(f.client.far.get());
  CHECK(answer.rfind("HTTP/1.1 403 ", 0) == 0);
  CHECK(answer.find("error=destination_ip_prohibited") != std::string::npos);
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::deny) == 1);
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::allow) == 0);
}

TEST_CASE("an upstream failure keeps the allow verdict and answers 502") {
  Fixture f;
  f.connectMedia();
  ConnectResult failed;
  failed.error = Reason::connect_failed;
  f.owner.connector_.answer(std::move(failed));
  f.owner.turn();
  std::string answer = readSome(f.client.far.get());
  CHECK(answer.rfind("HTTP/1.1 502 ", 0) == 0);
  CHECK(answer.find("details=\"connect_failed\"") != std::string::npos);
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::allow) == 1);
  CHECK(f.owner.metrics().denied(Reason::connect_failed) == 0);
}

TEST_CASE("a client that leaves while the connector works cancels the attempt") {
  Fixture f;
  f.connectMedia();
  REQUIRE(f.owner.connector_.waiting());
  f.session->abort();  // the drain deadline
  CHECK(f.session->state() == Session::State::closed);
  CHECK_FALSE(f.owner.connector_.waiting());
  CHECK(f.owner.reaped.size() == 1);
  // It was decided before the connector started: counted once all the same.
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::allow) == 1);
}

TEST_CASE("a client that closes while the connector works ends the wait at once") {
  Fixture f;
  f.connectMedia();
  REQUIRE(f.owner.connector_.waiting());
  f.client.far.reset();  // FIN
  f.owner.turn();
  CHECK(f.session->state() == Session::State::closed);
  CHECK_FALSE(f.owner.connector_.waiting());
  CHECK(f.owner.reaped.size() == 1);
  CHECK(f.owner.metrics().requests(RequestKind::connect, Verdict::allow) == 1);
}
