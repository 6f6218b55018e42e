#include "proxy/upstream_pool.h"

namespace s3gate {

UpstreamPool::UpstreamPool(event_base* base, const Limits& limits) : limits_(limits) {
  sweep_timer_.reset(evtimer_new(base, &onSweep, this));
}

std::string UpstreamPool::key(const std::string& host, uint16_t port, bool tls) {
  return host + ":" + std::to_string(port) + (tls ? "/tls" : "/plain");
}

bool UpstreamPool::stillQuiet(Stream& stream) {
  // An idle HTTP connection must have nothing to read: a read that would block
  // means it is open and quiet (for TLS it also absorbs session tickets).
  char byte;
  Stream::Result r = stream.read(&byte, 1);
  return r.status == Stream::Io::would_block;
}

std::unique_ptr<Stream> UpstreamPool::take(const std::string& key, std::string* peer) {
  auto it = idle_.find(key);
  if (it == idle_.end()) {
    return nullptr;
  }
  auto now = std::chrono::steady_clock::now();
  std::unique_ptr<Stream> found;
  // Newest first: the most recently used connection is the likeliest alive.
  while (!it->second.empty() && !found) {
    Idle entry = std::move(it->second.back());
    it->second.pop_back();
    --total_;
    if (now - entry.since < limits_.idle && stillQuiet(*entry.stream)) {
      found = std::move(entry.stream);
      *peer = std::move(entry.peer);
    }
  }
  if (it->second.empty()) {
    idle_.erase(it);
  }
  return found;
}

void UpstreamPool::put(const std::string& key, std::unique_ptr<Stream> stream, std::string peer) {
  if (!stream) {
    return;
  }
  auto& list = idle_[key];
  if (list.size() >= limits_.per_key) {
    list.pop_front();
    --total_;
  }
  if (total_ >= limits_.total) {
    sweep();
    if (total_ >= limits_.total) {
      return;  // full: the connection closes
    }
  }
  list.push_back(Idle{std::move(stream), std::move(peer), std::chrono::steady_clock::now()});
  ++total_;
  if (sweep_timer_ && !evtimer_pending(sweep_timer_.get(), nullptr)) {
    timeval tv = toTimeval(limits_.idle);
    evtimer_add(sweep_timer_.get(), &tv);
  }
}

void UpstreamPool::onSweep(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<UpstreamPool*>(arg);
  self->sweep();
  if (self->total_ > 0) {
    timeval tv = toTimeval(self->limits_.idle / 2);
    evtimer_add(self->sweep_timer_.get(), &tv);
  }
}

void UpstreamPool::sweep() {
  auto now = std::chrono::steady_clock::now();
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& list = it->second;
    while (!list.empty() && now - list.front().since >= limits_.idle) {
      list.pop_front();
      --total_;
    }
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
}

void UpstreamPool::clear() {
  idle_.clear();
  total_ = 0;
}

}  // namespace s3gate
