#pragma once
// The forwarder: one plain-HTTP exchange (a request and its response) between
// two streams, plain or TLS on either side. It sends the request head in
// origin-form without hop-by-hop fields, streams the request body to the
// upstream and the response (1xx interim heads included) to the client, each
// direction through one bounded buffer: a full buffer stops reading its
// source. Between two plain sockets, a body of known length (Content-Length,
// or a response read until the close) is spliced through a pipe from the
// thread's PipePool instead, never past the body's end; chunked bodies and
// TLS streams are copied. Framing is tracked on both sides so that both
// connections can be kept alive, and any doubt about it closes the connection
// instead.
//
// Pacing (`pacer`, a bandwidth quota): each read of a request body (up) or a
// response body (down) is bounded by what the pacer allows in its direction,
// and what was read is taken from the budget. With nothing allowed the
// direction stops reading (its source backs up, as with a slow reader) and a
// timer resumes it when the pacer says. Heads are not paced. Nothing is
// refused or cut, memory stays bounded as above, and a paced wait counts as
// activity for idle_timeout.
//
// Contract: the session keeps owning the client stream and lends it for the
// exchange; the forwarder owns the upstream stream and hands it back in the
// result when it may carry another request. `on_done` runs once from the event
// loop, never from inside start(); the owner destroys the Forwarder after it.

#include <event2/event.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "acl/reason.h"
#include "common/duration.h"
#include "proxy/access_log.h"
#include "proxy/http_message.h"
#include "proxy/http_parser.h"
#include "proxy/pacer.h"
#include "proxy/stream.h"

namespace s3gate {

struct ForwardResult {
  // Set when the exchange failed before any response byte reached the client:
  // the session answers with this reason (502 and the like).
  Reason error = Reason::none;
  std::string error_detail;
  bool upstream_tls_error = false;     // the upstream TLS handshake failed
  bool upstream_reset = false;         // the upstream failed mid-exchange
  bool upstream_bad_response = false;  // the upstream's response could not be passed on
  // The upstream closed or reset the connection without sending a byte: on a
  // reused connection the request may be sent again on a new one.
  bool upstream_silent = false;
  int status = 0;                // the final response status relayed
  uint64_t bytes_up = 0;         // every byte sent upstream (head, body, chunk framing)
  uint64_t bytes_down = 0;       // every byte sent to the client (interim heads too)
  bool client_reusable = false;  // the client connection may carry the next request
  // The response was cut short after bytes of it reached the client: it must
  // get a reset, since a clean end would pass a close-delimited body off as whole.
  bool truncated = false;
  std::unique_ptr<Stream> upstream;     // set when the upstream connection may be reused
  std::string leftover;                 // client bytes after this request's body (the next request)
  CloseCause close = CloseCause::none;  // how the exchange ended, for the log
};

struct ForwardOptions {
  Duration idle_timeout{std::chrono::seconds(300)};
  size_t max_header_bytes = 65536;
  size_t max_headers = 100;
  size_t buffer_bytes = 64 * 1024;        // per direction
  bool allow_client_keep_alive = true;    // false while draining
  std::shared_ptr<BandwidthPacer> pacer;  // null: not paced
};

class Forwarder {
 public:
  using DoneCallback = std::function<void(ForwardResult)>;

  // `head` and `after_head` are read during start() only. `upstream` must be
  // connected; a TLS stream is handshaken first.
  static std::unique_ptr<Forwarder> start(event_base* base, Stream& client,
                                          std::unique_ptr<Stream> upstream, const RequestHead& head,
                                          const RequestFraming& framing,
                                          std::string_view after_head,
                                          const ForwardOptions& options, DoneCallback on_done);
  virtual ~Forwarder() = default;
  // Ends the exchange now (drain deadline); on_done runs from inside.
  virtual void stop() = 0;
  // Bytes sent so far: {up (every byte sent upstream), down (to the client)}.
  virtual std::pair<uint64_t, uint64_t> progress() const = 0;
};

}  // namespace s3gate
