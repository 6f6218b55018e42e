#pragma once
// A PROXY protocol header parser, versions 1 (text) and 2 (binary), after
// HAProxy's proxy-protocol.txt: a pure function over bytes, no I/O.
//
// Call it with everything received so far on a connection whose listener has
// `proxy_protocol: true`. It answers incomplete (read more), ok (with the
// header's length: drop that many bytes, the rest is the client's payload) or
// invalid (close the connection). It never looks past the header: whatever
// follows, a second PROXY header included, is payload and not its concern; the
// session parses one header per connection and passes the rest on.
//
// Answers are stable: when a prefix of the input answers anything but
// incomplete, the whole input answers the same. Errors are judged as soon as
// the bytes allow (a first byte that is neither 'P' nor '\r', a byte of the v2
// signature, an unknown command or family, a length over the cap, a TLV that
// overruns the header), so a peer that sends garbage is refused at once
// instead of after the header timeout.
//
// Choices, taken the strict way (a header we read differently from its sender
// would put the wrong client address in front of the rules):
// - v1: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", TCP6 likewise, or
//   "PROXY UNKNOWN" followed by CRLF or by a space and anything up to the first
//   CRLF; single spaces; addresses of the family named, IPv4 dotted-quad without
//   leading zeros; ports 0 to 65535 in decimal without leading zeros; at most
//   107 bytes with the CRLF; a bare CR or LF is invalid.
// - v2 LOCAL (NLB health checks): the family and the whole block after the
//   16 fixed bytes are skipped unread, as the spec says; `local` is set.
// - v2 PROXY with AF_UNSPEC: the block is skipped (its layout is unknown, so
//   there are no TLVs to find) and `local` is set: use the peer's address.
// - v2 PROXY with AF_INET or AF_INET6 over STREAM: the addresses, then TLVs
//   that fill the rest of the block exactly.
// - v2 PROXY with DGRAM, AF_UNIX, or any value the spec does not list: invalid.
//   s3gate is a TCP proxy and an NLB sends only TCP over IPv4 or IPv6; reading
//   such a header as "use the peer's address" would quietly judge the client
//   as the load balancer.
// - v2 header larger than kMaxProxyV2HeaderBytes: invalid as soon as the length
//   field arrives, so a peer cannot make us buffer 64 KiB.
// - TLV 0xEA (PP2_TYPE_AWS) with subtype 0x01 (PP2_SUBTYPE_AWS_VPCE_ID): the
//   rest of the value is the endpoint id, which must be 1 or more visible ASCII
//   characters (0x21-0x7E) and appear once; else invalid. An empty 0xEA TLV
//   (no subtype) is invalid; other AWS subtypes are skipped.
// - TLV 0x03 (PP2_TYPE_CRC32C): must be 4 bytes and appear once; the checksum
//   is verified (CRC32C of the whole header with the field zeroed, big-endian).
// - Any other TLV is skipped.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/net.h"

namespace s3gate {

inline constexpr size_t kMaxProxyV1HeaderBytes = 107;   // the spec's maximum, CRLF included
inline constexpr size_t kMaxProxyV2HeaderBytes = 4096;  // ours; the protocol allows 16 + 65535

enum class ProxyHeaderStatus { incomplete, ok, invalid };

struct ProxyHeader {
  int version = 0;     // 1 or 2
  size_t length = 0;   // bytes of the header, to drop from the stream
  bool local = false;  // v2 LOCAL, v2 AF_UNSPEC or v1 UNKNOWN: use the peer's address
  std::optional<SocketAddress> source;       // the original client; set when !local
  std::optional<SocketAddress> destination;  // the address the client connected to; when !local
  std::optional<std::string> vpce_id;        // TLV 0xEA subtype 0x01, e.g. "vpce-0931f00d..."
};

struct ProxyHeaderResult {
  ProxyHeaderStatus status = ProxyHeaderStatus::incomplete;
  ProxyHeader header;  // on ok
  std::string error;   // on invalid: one line for the log, e.g. "v1: bad source port"
};

// Parses the PROXY header at the start of `bytes` (everything received so far).
// Each call reads from the start again: linear in the bytes up to the header's
// end, which the caps above bound (a header trickled in byte by byte costs at
// most about 8 million byte steps in all, for a 4 KiB v2 header).
[[nodiscard]] ProxyHeaderResult parseProxyHeader(std::string_view bytes);

}  // namespace s3gate
