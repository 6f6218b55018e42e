#pragma once
// Reads the server name out of a TLS ClientHello: a pure function over the
// client's first bytes, no I/O. Used by tunnel.verify_sni and sni listeners.

#include <string>
#include <string_view>

namespace s3gate {

enum class ClientHelloStatus {
  incomplete,  // a TLS handshake so far, more bytes needed
  not_tls,     // the bytes are not a TLS handshake record
  malformed,   // a TLS handshake record that does not parse as a ClientHello
  no_sni,      // a ClientHello without a host_name server name
  ok,          // server_name holds the name (as sent, not normalised)
};

struct ClientHelloInfo {
  ClientHelloStatus status = ClientHelloStatus::incomplete;
  std::string server_name;
};

// The ClientHello may span several TLS records; at most `max_bytes` are examined.
ClientHelloInfo peekClientHello(std::string_view bytes, size_t max_bytes = 16384 + 5);

}  // namespace s3gate
