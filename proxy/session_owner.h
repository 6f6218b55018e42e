#pragma once
// What a session needs from whoever runs it: the worker in the proxy, a fake
// in the unit tests. Narrow on purpose: the session never sees the server.

#include <event2/event.h>

#include "proxy/runtime.h"

namespace s3gate {

class Connector;
class Metrics;
class QuotaTable;
class Session;
class UpstreamPool;

class SessionOwner {
 public:
  virtual ~SessionOwner() = default;

  virtual event_base* base() = 0;
  // The snapshot in force now: each request head is decided against it.
  virtual RuntimePtr runtime() const = 0;
  virtual Metrics& metrics() = 0;
  virtual Connector& connector() = 0;
  virtual UpstreamPool& pool() = 0;
  // The quota budgets shared by every worker; nullptr: no quotas enforced.
  virtual QuotaTable* quotas() { return nullptr; }
  // SIGTERM received: /ping answers 503 and connections are not kept alive.
  virtual bool draining() const = 0;
  // The drain closed the listeners: a request that arrives now gets 503.
  virtual bool listenersClosed() const = 0;
  // The session is done: destroy it once the current callback has returned.
  virtual void reap(Session* session) = 0;
};

}  // namespace s3gate
