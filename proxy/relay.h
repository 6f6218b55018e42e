#pragma once
// The relay: the byte pump of a tunnel. Two connected streams in; byte counts
// and a close reason out. Everything else about a tunnel (decisions, logs,
// metrics) lives in the session, so the pump can be replaced (splice, io_uring)
// without touching the rest.
//
// Contract:
// - The relay owns both streams from start() on and closes them when it ends.
// - Memory is bounded: one buffer per direction, allocated when bytes flow in
//   that direction and freed when it is idle again. A full buffer stops reading
//   its source until the destination has taken bytes (a slow reader slows its
//   writer).
// - Zero copy: between two plain sockets (`zero_copy`, the default) bytes move
//   with splice(2), socket to pipe to socket, without passing through the
//   process. The pipe takes the buffer's place (bounded by the pipe's size,
//   PipePool::kPipeBytes, instead of buffer_bytes); it is taken from a
//   per-thread pool when bytes flow in a direction and given back when the
//   direction is idle, so an idle tunnel holds neither pipe nor buffer, and a
//   busy one two pipe descriptors per direction on top of its two sockets
//   (proxy/pipe_pool.h has the bounds). A direction copies through its buffer
//   while the inspector looks at the client's first bytes, while a prefix is
//   being written, for TLS streams, and when no pipe can be had. A spliced
//   write to a closed socket raises SIGPIPE: the process must ignore it.
// - EOF from one side becomes a write shutdown on the other once everything
//   read before it has been written; the relay ends when both directions are
//   done, on an error, or after `idle_timeout` with no bytes either way.
// - `on_done` runs once, from the event loop (never inside start()); the owner
//   must not destroy the Relay inside it (defer the destruction).
// - Pacing (`pacer`, a bandwidth quota): each read is bounded by what the
//   pacer allows in its direction; with nothing allowed the direction stops
//   reading (its source backs up, as with a slow reader) and a timer resumes
//   it when the pacer says. Nothing is refused or cut, and memory stays
//   bounded as above. A paced wait counts as activity for idle_timeout.

#include <event2/event.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/duration.h"
#include "proxy/pacer.h"
#include "proxy/stream.h"

namespace s3gate {

enum class RelayClose {
  client_eof,      // both directions finished, the client closed first
  upstream_eof,    // both directions finished, the upstream closed first
  idle_timeout,    // no bytes either way for idle_timeout
  client_error,    // reset or error on the client side
  upstream_error,  // reset or error on the upstream side
  inspect_denied,  // the first-bytes inspector refused the client's bytes
  shutdown,        // stopped by the owner (drain deadline, exit)
};
std::string_view relayCloseName(RelayClose close);

struct RelayResult {
  uint64_t bytes_up = 0;    // client to upstream, written to the upstream
  uint64_t bytes_down = 0;  // upstream to client, written to the client, not counting prefix_down
  RelayClose close = RelayClose::client_eof;
};

// Looks at the client's first bytes before any of them is sent upstream.
enum class InspectVerdict { need_more, pass, deny };
using FirstBytesInspector = std::function<InspectVerdict(std::string_view client_bytes)>;

struct RelayOptions {
  Duration idle_timeout{std::chrono::seconds(300)};
  size_t buffer_bytes = 64 * 1024;        // per direction
  bool zero_copy = true;                  // splice(2) between two plain sockets
  std::shared_ptr<BandwidthPacer> pacer;  // null: not paced
};

class Relay {
 public:
  using DoneCallback = std::function<void(const RelayResult&)>;

  // prefix_up: client bytes already read (after the request head), sent first
  // and counted. prefix_down: bytes for the client before any upstream byte
  // (the "200 Connection established" head), not counted.
  static std::unique_ptr<Relay> start(event_base* base, std::unique_ptr<Stream> client,
                                      std::unique_ptr<Stream> upstream, std::string prefix_up,
                                      std::string prefix_down, const RelayOptions& options,
                                      FirstBytesInspector inspector, DoneCallback on_done);
  virtual ~Relay() = default;

  // Ends the relay now with RelayClose::shutdown (on_done runs from inside).
  virtual void stop() = 0;
  virtual RelayResult progress() const = 0;
};

}  // namespace s3gate
