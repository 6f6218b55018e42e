#pragma once
// Reads the server name out of a TLS ClientHello: a pure function over the
// client's first bytes, no I/O. Used by tunnel.verify_sni and sni listeners.

#include <string>
#include <string_view>

#include "proxy/relay.h"

namespace s3gate {

enum class ClientHelloStatus {
  incomplete,  // a TLS handshake so far, more bytes needed
  not_tls,     // nothing a TLS server would take for the start of a handshake
  malformed,   // TLS (a handshake record of any version, or another TLS record
               // type) that does not parse as a ClientHello
  no_sni,      // a ClientHello without a host_name server name (an SSLv2-format
               // hello can have none)
  ok,          // server_name holds the name (as sent, not normalised)
};

struct ClientHelloInfo {
  ClientHelloStatus status = ClientHelloStatus::incomplete;
  std::string server_name;
};

// The ClientHello may span several TLS records; at most `max_bytes` are examined.
ClientHelloInfo peekClientHello(std::string_view bytes, size_t max_bytes = 16384 + 5);

// tunnel.verify_sni on a CONNECT tunnel's first client bytes: whatever a TLS
// server could read as a ClientHello must carry a server name that normalises
// to `expected_host` (the decision's host, normalised); anything else TLS
// (malformed, no server name, another name) is deny. Bytes that are not TLS
// pass (SPEC: relayed as they are); need_more until the hello is whole.
InspectVerdict inspectSni(std::string_view client_bytes, std::string_view expected_host);

// inspectSni() as the relay's first-bytes inspector.
FirstBytesInspector sniInspector(std::string expected_host);

}  // namespace s3gate
