#include "proxy/upstream_pool.h"

namespace s3gate {

UpstreamPool::UpstreamPool(event_base* base, const Limits& limits) : base_(base), limits_(limits) {
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

void UpstreamPool::drop(Idle& entry) {
  if (entry.stream) {
    entry.watch.reset();
    entry.stream.reset();
    --total_;
  }
}

void UpstreamPool::onWatch(evutil_socket_t, short, void* arg) {
  auto* entry = static_cast<Idle*>(arg);
  // EOF, an error or bytes nobody asked for end the connection; a TLS
  // session ticket is absorbed and the connection stays.
  if (!stillQuiet(*entry->stream)) {
    entry->pool->drop(*entry);  // the entry itself goes at the next take or sweep
  }
}

std::unique_ptr<Stream> UpstreamPool::take(const std::string& key, std::string* peer,
                                           EventPtr* watch) {
  auto it = idle_.find(key);
  if (it == idle_.end()) {
    return nullptr;
  }
  auto now = std::chrono::steady_clock::now();
  std::unique_ptr<Stream> found;
  // Newest first: the most recently used connection is the likeliest alive.
  while (!it->second.empty() && !found) {
    std::unique_ptr<Idle> entry = std::move(it->second.back());
    it->second.pop_back();
    if (!entry->stream) {
      continue;  // closed while idle
    }
    auto idle = now - entry->since;
    bool usable = idle < limits_.idle && (idle < kProbeAfter || stillQuiet(*entry->stream));
    --total_;
    if (usable) {
      found = std::move(entry->stream);
      *peer = std::move(entry->peer);
      *watch = std::move(entry->watch);
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
  IdleList& list = idle_[key];
  while (!list.empty() && !list.front()->stream) {
    list.pop_front();  // closed while idle
  }
  if (list.size() >= limits_.per_key) {
    drop(*list.front());
    list.pop_front();
  }
  if (total_ >= limits_.total) {
    sweep();
    if (total_ >= limits_.total) {
      return;  // full: the connection closes
    }
  }
  auto entry = std::make_unique<Idle>();
  entry->pool = this;
  entry->peer = std::move(peer);
  entry->since = std::chrono::steady_clock::now();
  entry->watch.reset(event_new(base_, stream->fd(), EV_READ | EV_PERSIST, &onWatch, entry.get()));
  if (!entry->watch) {
    return;  // the connection closes
  }
  event_add(entry->watch.get(), nullptr);
  entry->stream = std::move(stream);
  idle_[key].push_back(std::move(entry));
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
    IdleList& list = it->second;
    IdleList kept;
    for (auto& entry : list) {
      if (entry->stream && now - entry->since >= limits_.idle) {
        drop(*entry);
      }
      if (entry->stream) {
        kept.push_back(std::move(entry));
      }
    }
    list.swap(kept);
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
}

void UpstreamPool::clear() {
  idle_.clear();
  total_ = 0;
}

}  // namespace s3gate
