// The PROXY protocol parser (proxy/proxy_protocol.h, SPEC sections 2 and 4):
// every accepted form with its addresses and VPC endpoint id, every rejection
// with its exact error, the size caps at and one past their edge, the byte at
// which each error is judged, and the same answer however the bytes are split.

#include <catch2/catch.hpp>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "proxy/proxy_protocol.h"

using namespace s3gate;
using namespace std::string_literals;

namespace {

// ---- building v2 headers as an NLB sends them ----

const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr uint8_t kLocal = 0x20;
constexpr uint8_t kProxy = 0x21;

std::string be16(uint16_t value) {
  return {static_cast<char>(value >> 8), static_cast<char>(value & 0xFF)};
}

std::string be32(uint32_t value) {
  return be16(value >> 16) + be16(value & 0xFFFF);
}

// Signature, version/command, family, and `body` with its length.
std::string v2(uint8_t version_command, uint8_t family, const std::string& body) {
  return kSignature + static_cast<char>(version_command) + static_cast<char>(family) +
         be16(static_cast<uint16_t>(body.size())) + body;
}

// The same with a length field that need not match the body.
std::string v2WithLength(uint8_t version_command, uint8_t family, uint16_t length,
                         const std::string& body) {
  return kSignature + static_cast<char>(version_command) + static_cast<char>(family) +
         be16(length) + body;
}

std::string addressBytes(std::string_view text) {
  const auto ip = IpAddress::parse(text);  // only the test's own literals; used before main
  const size_t size = ip->isV4() ? 4 : 16;
  return std::string(reinterpret_cast<const char*>(ip->bytes().data()), size);
}

std::string addresses(std::string_view source, std::string_view destination, uint16_t source_port,
                      uint16_t destination_port) {
  return addressBytes(source) + addressBytes(destination) + be16(source_port) +
         be16(destination_port);
}

std::string tlv(uint8_t type, const std::string& value) {
  return static_cast<char>(type) + be16(static_cast<uint16_t>(value.size())) + value;
}

std::string aws(uint8_t subtype, const std::string& value) {
  return tlv(0xEA, static_cast<char>(subtype) + value);
}

const std::string kV4 = addresses("10.1.2.3", "10.0.0.7", 51514, 4001);
const std::string kV6 = addresses("2001:db8::1", "fd00::7", 443, 4001);
const std::string kVpce = aws(0x01, "vpce-0931f00d1234abcde");

// CRC32C computed bit by bit, apart from the parser's table.
uint32_t crc32c(std::string_view bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (char c : bytes) {
    crc ^= static_cast<uint8_t>(c);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc >> 1) ^ ((crc & 1) != 0 ? 0x82F63B78u : 0);
    }
  }
  return ~crc;
}

// A v2 PROXY v4 header whose last TLV is a CRC32C with the right checksum.
std::string withCrc(const std::string& tlvs_before) {
  std::string header = v2(kProxy, 0x11, kV4 + tlvs_before + tlv(0x03, be32(0)));
  const uint32_t crc = crc32c(header);
  header.replace(header.size() - 4, 4, be32(crc));
  return header;
}

// ---- running the parser ----

// Delivers the input one byte more at a time and returns the first answer that
// is not incomplete (or the last answer) and the number of bytes it took.
std::pair<ProxyHeaderResult, size_t> feedBytewise(std::string_view input) {
  ProxyHeaderResult result;
  for (size_t n = 1; n <= input.size(); ++n) {
    result = parseProxyHeader(input.substr(0, n));
    if (result.status != ProxyHeaderStatus::incomplete) {
      return {result, n};
    }
  }
  return {result, input.size()};
}

std::string text(const std::optional<SocketAddress>& address) {
  return address ? address->toString() : "-";
}

void requireSame(const ProxyHeaderResult& a, const ProxyHeaderResult& b) {
  REQUIRE(a.status == b.status);
  REQUIRE(a.error == b.error);
  REQUIRE(a.header.version == b.header.version);
  REQUIRE(a.header.length == b.header.length);
  REQUIRE(a.header.local == b.header.local);
  REQUIRE(text(a.header.source) == text(b.header.source));
  REQUIRE(text(a.header.destination) == text(b.header.destination));
  REQUIRE(a.header.vpce_id == b.header.vpce_id);
}

// One-shot, byte by byte, and with a payload after it: the same answer, and the
// payload is never part of the header.
ProxyHeaderResult parseEveryWay(const std::string& input) {
  const ProxyHeaderResult one_shot = parseProxyHeader(input);
  REQUIRE(one_shot.status != ProxyHeaderStatus::incomplete);
  const auto [bytewise, taken] = feedBytewise(input);
  requireSame(bytewise, one_shot);
  if (one_shot.status == ProxyHeaderStatus::ok) {
    REQUIRE(taken == input.size());
  }
  requireSame(parseProxyHeader(input + "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), one_shot);
  requireSame(parseProxyHeader(input + input), one_shot);  // a second header is payload
  return one_shot;
}

struct Accepted {
  const char* name;
  std::string input;
  int version;
  bool local;
  std::string source;       // "-" when none
  std::string destination;  // "-" when none
  std::optional<std::string> vpce_id;
};

struct Rejected {
  const char* name;
  std::string input;
  std::string error;
};

const std::string kMaxV6Line =
    "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    "65535 65535\r\n";

std::vector<Accepted> acceptedHeaders() {
  return {
      // v1
      {"v1 TCP4", "PROXY TCP4 10.1.2.3 10.0.0.7 51514 4001\r\n", 1, false, "10.1.2.3:51514",
       "10.0.0.7:4001", std::nullopt},
      {"v1 TCP4 ports 0 and 65535", "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 1, false,
       "0.0.0.0:0", "255.255.255.255:65535", std::nullopt},
      {"v1 TCP6", "PROXY TCP6 2001:db8::1 fd00::7 443 4001\r\n", 1, false, "[2001:db8::1]:443",
       "[fd00::7]:4001", std::nullopt},
      {"v1 TCP6 upper case hex", "PROXY TCP6 2001:DB8::A ::1 1 2\r\n", 1, false, "[2001:db8::a]:1",
       "[::1]:2", std::nullopt},
      {"v1 TCP6 mapped IPv4", "PROXY TCP6 ::ffff:10.1.2.3 ::1 1 2\r\n", 1, false,
       "[::ffff:10.1.2.3]:1", "[::1]:2", std::nullopt},
      {"v1 TCP6 longest real line", kMaxV6Line, 1, false,
       "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
       "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", std::nullopt},
      {"v1 UNKNOWN", "PROXY UNKNOWN\r\n", 1, true, "-", "-", std::nullopt},
      {"v1 UNKNOWN with addresses", "PROXY UNKNOWN 10.1.2.3 10.0.0.7 1 2\r\n", 1, true, "-", "-",
       std::nullopt},
      {"v1 UNKNOWN with anything", "PROXY UNKNOWN  x\t\x01\xff  \r\n"s, 1, true, "-", "-",
       std::nullopt},
      {"v1 UNKNOWN at exactly 107 bytes", "PROXY UNKNOWN " + std::string(91, 'x') + "\r\n", 1, true,
       "-", "-", std::nullopt},
      // v2 LOCAL: family and block ignored
      {"v2 LOCAL", v2(kLocal, 0x00, ""), 2, true, "-", "-", std::nullopt},
      {"v2 LOCAL with a v4 block", v2(kLocal, 0x11, kV4), 2, true, "-", "-", std::nullopt},
      {"v2 LOCAL with an unknown family and junk", v2(kLocal, 0x77, "\x01\x02\x03"), 2, true, "-",
       "-", std::nullopt},
      {"v2 LOCAL with a vpce TLV: ignored", v2(kLocal, 0x00, kVpce), 2, true, "-", "-",
       std::nullopt},
      // v2 PROXY
      {"v2 PROXY UNSPEC", v2(kProxy, 0x00, ""), 2, true, "-", "-", std::nullopt},
      {"v2 PROXY UNSPEC with a block", v2(kProxy, 0x00, "\x01\x02\x03\x04\x05"), 2, true, "-", "-",
       std::nullopt},
      {"v2 PROXY TCP4", v2(kProxy, 0x11, kV4), 2, false, "10.1.2.3:51514", "10.0.0.7:4001",
       std::nullopt},
      {"v2 PROXY TCP6", v2(kProxy, 0x21, kV6), 2, false, "[2001:db8::1]:443", "[fd00::7]:4001",
       std::nullopt},
      {"v2 PROXY TCP4 with the vpce TLV", v2(kProxy, 0x11, kV4 + kVpce), 2, false, "10.1.2.3:51514",
       "10.0.0.7:4001", "vpce-0931f00d1234abcde"},
      {"v2 PROXY TCP6 with the vpce TLV", v2(kProxy, 0x21, kV6 + kVpce), 2, false,
       "[2001:db8::1]:443", "[fd00::7]:4001", "vpce-0931f00d1234abcde"},
      {"v2 vpce among other TLVs",
       v2(kProxy, 0x11, kV4 + tlv(0x04, std::string(5, '\0')) + kVpce + tlv(0x01, "h2")), 2, false,
       "10.1.2.3:51514", "10.0.0.7:4001", "vpce-0931f00d1234abcde"},
      {"v2 other AWS subtypes are skipped",
       v2(kProxy, 0x11, kV4 + aws(0x02, "\x00\xff"s) + kVpce + aws(0x7f, "")), 2, false,
       "10.1.2.3:51514", "10.0.0.7:4001", "vpce-0931f00d1234abcde"},
      {"v2 only other AWS subtypes", v2(kProxy, 0x11, kV4 + aws(0x02, "abc")), 2, false,
       "10.1.2.3:51514", "10.0.0.7:4001", std::nullopt},
      {"v2 other TLVs only", v2(kProxy, 0x11, kV4 + tlv(0x02, "s3.example") + tlv(0x05, "id")), 2,
       false, "10.1.2.3:51514", "10.0.0.7:4001", std::nullopt},
      {"v2 empty TLV values", v2(kProxy, 0x11, kV4 + tlv(0x04, "") + tlv(0x30, "")), 2, false,
       "10.1.2.3:51514", "10.0.0.7:4001", std::nullopt},
      {"v2 CRC32C verified", withCrc(kVpce), 2, false, "10.1.2.3:51514", "10.0.0.7:4001",
       "vpce-0931f00d1234abcde"},
      {"v2 CRC32C alone", withCrc(""), 2, false, "10.1.2.3:51514", "10.0.0.7:4001", std::nullopt},
      {"v2 at exactly the cap", v2(kProxy, 0x11, kV4 + tlv(0x04, std::string(4065, 'n'))), 2, false,
       "10.1.2.3:51514", "10.0.0.7:4001", std::nullopt},
  };
}

std::vector<Rejected> rejectedHeaders() {
  const std::string kBadStart = "v1: the line does not start with \"PROXY \"";
  const std::string kEmpty = "v1: empty field (a double space, or a space before the CRLF)";
  const std::string kMissing = "v1: missing fields (want protocol, two addresses and two ports)";
  const std::string kProtocol = "v1: unknown protocol (want TCP4, TCP6 or UNKNOWN)";
  const std::string kSource = "v1: bad source address";
  const std::string kDestination = "v1: bad destination address";
  const std::string kSourcePort = "v1: bad source port";
  const std::string kDestinationPort = "v1: bad destination port";
  const std::string kTooLong = "v1: longer than 107 bytes";
  const std::string kTrailing = "v2: bytes after the last TLV";
  return {
      {"neither P nor CR", "GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header"},
      {"lower case proxy", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"},
      {"TLS first", "\x16\x03\x01\x02\x00"s, "not a PROXY protocol header"},
      // v1
      {"v1 PROXy", "PROXy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", kBadStart},
      {"v1 tab after PROXY", "PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", kBadStart},
      {"v1 double space after PROXY", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", kEmpty},
      {"v1 double space between addresses", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", kEmpty},
      {"v1 double space between ports", "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", kEmpty},
      {"v1 space before CRLF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
       "v1: a field after the destination port"},
      {"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
       "v1: a field after the destination port"},
      {"v1 tab for a space", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", kProtocol},
      {"v1 lower case protocol", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", kProtocol},
      {"v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", kProtocol},
      {"v1 TCP44", "PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", kProtocol},
      {"v1 UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", kProtocol},
      {"v1 UNKNOWNX", "PROXY UNKNOWNX\r\n", kProtocol},
      {"v1 protocol only", "PROXY TCP4\r\n", kMissing},
      {"v1 no ports", "PROXY TCP4 1.2.3.4 5.6.7.8\r\n", kMissing},
      {"v1 one port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", kMissing},
      {"v1 nothing after PROXY", "PROXY \r\n", kEmpty},
      {"v1 IPv6 in TCP4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", kSource},
      {"v1 IPv6 destination in TCP4", "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", kDestination},
      {"v1 IPv4 in TCP6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", kSource},
      {"v1 IPv4 destination in TCP6", "PROXY TCP6 ::1 5.6.7.8 1 2\r\n", kDestination},
      {"v1 octet 256", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", kSource},
      {"v1 three octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", kSource},
      {"v1 five octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", kSource},
      {"v1 empty octet", "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", kSource},
      {"v1 octet with a leading zero", "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", kSource},
      {"v1 hostname", "PROXY TCP4 localhost 5.6.7.8 1 2\r\n", kSource},
      {"v1 address too long", "PROXY TCP4 1111.2.3.4444444 5.6.7.8 1 2\r\n", kSource},
      {"v1 bad IPv6", "PROXY TCP6 1::2::3 ::1 1 2\r\n", kSource},
      {"v1 IPv6 group of 5", "PROXY TCP6 12345::1 ::1 1 2\r\n", kSource},
      {"v1 IPv6 in brackets", "PROXY TCP6 [::1] ::1 1 2\r\n", kSource},
      {"v1 IPv6 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", kSource},
      {"v1 port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", kSourcePort},
      {"v1 destination port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", kDestinationPort},
      {"v1 port 99999", "PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", kSourcePort},
      {"v1 port of six digits", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", kSourcePort},
      {"v1 port with a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", kSourcePort},
      {"v1 port 00", "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", kDestinationPort},
      {"v1 negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", kSourcePort},
      {"v1 port with a sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", kSourcePort},
      {"v1 hex port", "PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n", kSourcePort},
      {"v1 LF only", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1: LF without CR"},
      {"v1 LF only after UNKNOWN", "PROXY UNKNOWN abc\ndef\r\n", "v1: LF without CR"},
      {"v1 CR only", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1: CR without LF"},
      {"v1 CR only after UNKNOWN", "PROXY UNKNOWN\r\r\n", "v1: CR without LF"},
      {"v1 NUL in an address", "PROXY TCP4 1.2.3\0.4 5.6.7.8 1 2\r\n"s, kSource},
      {"v1 UNKNOWN at 108 bytes", "PROXY UNKNOWN " + std::string(92, 'x') + "\r\n", kTooLong},
      {"v1 no CRLF within 107 bytes", "PROXY UNKNOWN " + std::string(200, 'x'), kTooLong},
      {"v1 TCP6 too long",
       "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
       "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n",
       kTooLong},
      // v2: the fixed part
      {"v2 signature byte 2", "\r\r\n\r\0\r\nQUIT\n\x21\x11\x00\x0c"s, "v2: bad signature"},
      {"v2 signature last byte", kSignature.substr(0, 11) + "\r\x21\x11\x00\x00",
       "v2: bad signature"},
      {"v2 signature lower case", "\r\n\r\n\0\r\nquit\n\x21\x11\x00\x00"s, "v2: bad signature"},
      {"v2 version 1", v2(0x11, 0x11, kV4), "v2: version 1, want 2"},
      {"v2 version 3", v2(0x31, 0x11, kV4), "v2: version 3, want 2"},
      {"v2 version 0", v2(0x01, 0x11, kV4), "v2: version 0, want 2"},
      {"v2 command 2", v2(0x22, 0x11, kV4), "v2: unknown command 2"},
      {"v2 command 15", v2(0x2F, 0x11, kV4), "v2: unknown command 15"},
      {"v2 UDP over IPv4", v2(kProxy, 0x12, kV4), "v2: UDP is not supported (family 0x12)"},
      {"v2 UDP over IPv6", v2(kProxy, 0x22, kV6), "v2: UDP is not supported (family 0x22)"},
      {"v2 AF_UNIX stream", v2(kProxy, 0x31, std::string(216, 'u')),
       "v2: AF_UNIX is not supported (family 0x31)"},
      {"v2 AF_UNIX datagram", v2(kProxy, 0x32, std::string(216, 'u')),
       "v2: AF_UNIX is not supported (family 0x32)"},
      {"v2 AF_INET without a protocol", v2(kProxy, 0x10, kV4),
       "v2: unknown family and protocol 0x10"},
      {"v2 AF_INET6 without a protocol", v2(kProxy, 0x20, kV6),
       "v2: unknown family and protocol 0x20"},
      {"v2 UNSPEC with STREAM", v2(kProxy, 0x01, ""), "v2: unknown family and protocol 0x01"},
      {"v2 family 4", v2(kProxy, 0x41, kV4), "v2: unknown family and protocol 0x41"},
      {"v2 protocol 3", v2(kProxy, 0x13, kV4), "v2: unknown family and protocol 0x13"},
      // v2: lengths
      {"v2 one byte over the cap", v2(kProxy, 0x11, kV4 + tlv(0x04, std::string(4066, 'n'))),
       "v2: header of 4097 bytes, over the 4096-byte cap"},
      {"v2 protocol maximum", v2WithLength(kProxy, 0x11, 0xFFFF, kV4),
       "v2: header of 65551 bytes, over the 4096-byte cap"},
      {"v2 LOCAL over the cap", v2WithLength(kLocal, 0x00, 0xFFFF, ""),
       "v2: header of 65551 bytes, over the 4096-byte cap"},
      {"v2 length 0 for v4", v2WithLength(kProxy, 0x11, 0, kV4),
       "v2: length 0 too short for the addresses"},
      {"v2 length 11 for v4", v2WithLength(kProxy, 0x11, 11, kV4),
       "v2: length 11 too short for the addresses"},
      {"v2 v4 block for v6", v2(kProxy, 0x21, kV4), "v2: length 12 too short for the addresses"},
      {"v2 length 35 for v6", v2WithLength(kProxy, 0x21, 35, kV6),
       "v2: length 35 too short for the addresses"},
      {"v2 one byte after the addresses", v2(kProxy, 0x11, kV4 + "\x04"), kTrailing},
      {"v2 two bytes after the addresses", v2(kProxy, 0x21, kV6 + "\x04\x00"s), kTrailing},
      {"v2 two bytes after a TLV", v2(kProxy, 0x11, kV4 + kVpce + "\x04\x00"s), kTrailing},
      // v2: TLVs
      {"v2 TLV longer than the block", v2(kProxy, 0x11, kV4 + tlv(0x04, "abcd").substr(0, 5)),
       "v2: TLV 0x04 runs past the end of the header"},
      {"v2 vpce TLV cut by the length", v2(kProxy, 0x11, kV4 + kVpce.substr(0, kVpce.size() - 1)),
       "v2: TLV 0xea runs past the end of the header"},
      {"v2 TLV length 0xffff", v2(kProxy, 0x11, kV4 + "\x04\xff\xff"s + std::string(10, 'n')),
       "v2: TLV 0x04 runs past the end of the header"},
      {"v2 second TLV past the end", v2(kProxy, 0x11, kV4 + kVpce + tlv(0x04, "abcd").substr(0, 6)),
       "v2: TLV 0x04 runs past the end of the header"},
      {"v2 empty AWS TLV", v2(kProxy, 0x11, kV4 + tlv(0xEA, "")), "v2: AWS TLV without a subtype"},
      {"v2 empty vpce id", v2(kProxy, 0x11, kV4 + aws(0x01, "")),
       "v2: AWS VPC endpoint id is not visible ASCII"},
      {"v2 vpce id with a space", v2(kProxy, 0x11, kV4 + aws(0x01, "vpce 1")),
       "v2: AWS VPC endpoint id is not visible ASCII"},
      {"v2 vpce id with a NUL", v2(kProxy, 0x11, kV4 + aws(0x01, "vpce-1\0"s)),
       "v2: AWS VPC endpoint id is not visible ASCII"},
      {"v2 vpce id with a newline", v2(kProxy, 0x11, kV4 + aws(0x01, "vpce-1\n\"x\":1")),
       "v2: AWS VPC endpoint id is not visible ASCII"},
      {"v2 vpce id with a high byte", v2(kProxy, 0x11, kV4 + aws(0x01, "vpce-\xc3\xa9")),
       "v2: AWS VPC endpoint id is not visible ASCII"},
      {"v2 two vpce ids", v2(kProxy, 0x11, kV4 + kVpce + kVpce),
       "v2: two AWS VPC endpoint id TLVs"},
      {"v2 CRC32C mismatch",
       [] {
         std::string header = withCrc(kVpce);
         header[20] ^= 0x01;  // the source address
         return header;
       }(),
       "v2: CRC32C mismatch"},
      {"v2 CRC32C of zero", v2(kProxy, 0x11, kV4 + tlv(0x03, be32(0))), "v2: CRC32C mismatch"},
      {"v2 CRC32C of 3 bytes", v2(kProxy, 0x11, kV4 + tlv(0x03, "abc")),
       "v2: CRC32C TLV of 3 bytes, want 4"},
      {"v2 CRC32C of 5 bytes", v2(kProxy, 0x11, kV4 + tlv(0x03, "abcde")),
       "v2: CRC32C TLV of 5 bytes, want 4"},
      {"v2 two CRC32C TLVs", v2(kProxy, 0x11, kV4 + tlv(0x03, be32(0)) + tlv(0x03, be32(0))),
       "v2: two CRC32C TLVs"},
  };
}

}  // namespace

TEST_CASE("accepted headers: every field, however split", "[proxy_protocol]") {
  for (const auto& row : acceptedHeaders()) {
    INFO(row.name);
    const ProxyHeaderResult result = parseEveryWay(row.input);
    REQUIRE(result.status == ProxyHeaderStatus::ok);
    REQUIRE(result.error.empty());
    REQUIRE(result.header.version == row.version);
    REQUIRE(result.header.length == row.input.size());
    REQUIRE(result.header.local == row.local);
    REQUIRE(text(result.header.source) == row.source);
    REQUIRE(text(result.header.destination) == row.destination);
    REQUIRE(result.header.vpce_id == row.vpce_id);
  }
}

TEST_CASE("rejected headers: the exact error, however split", "[proxy_protocol]") {
  for (const auto& row : rejectedHeaders()) {
    INFO(row.name);
    const ProxyHeaderResult result = parseEveryWay(row.input);
    REQUIRE(result.status == ProxyHeaderStatus::invalid);
    REQUIRE(result.error == row.error);
  }
}

TEST_CASE("the address families are kept as sent", "[proxy_protocol]") {
  const auto v1 = parseProxyHeader("PROXY TCP6 ::ffff:10.1.2.3 ::1 1 2\r\n");
  REQUIRE(v1.header.source->ip().isV6());
  const auto v4 = parseProxyHeader(v2(kProxy, 0x11, kV4));
  REQUIRE(v4.header.source->ip().isV4());
  REQUIRE(v4.header.destination->ip().isV4());
  const auto v6 = parseProxyHeader(v2(kProxy, 0x21, kV6));
  REQUIRE(v6.header.source->ip().isV6());
  REQUIRE(v6.header.destination->ip().isV6());
}

TEST_CASE("early answers: an error is named at the byte that makes it one", "[proxy_protocol]") {
  struct Row {
    const char* name;
    std::string input;
    size_t decided_at;  // bytes needed for the answer
  };
  const std::vector<Row> rows = {
      {"first byte", "X", 1},
      {"lower case p", "p", 1},
      {"second byte of PROXY", "PX", 2},
      {"protocol letter", "PROXY TCPX", 10},
      {"protocol too long", "PROXY TCP44", 11},
      {"double space", "PROXY  ", 7},
      {"address character", "PROXY TCP4 1.2.3.a", 18},
      {"IPv6 character in TCP4", "PROXY TCP4 1:", 13},
      {"IPv4 address too long", "PROXY TCP4 1.2.3.4444444444", 27},
      {"finished address", "PROXY TCP4 1.2.3 ", 17},
      {"port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01", 29},
      {"port over 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 65536", 32},
      {"field after the ports", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", 31},
      {"missing fields at the CR", "PROXY TCP4 1.2.3.4\r", 19},
      {"bare LF", "PROXY UNKNOWN\n", 14},
      {"no CRLF: at 106 bytes", "PROXY UNKNOWN " + std::string(200, 'x'), 106},
      {"v2 signature byte 3", "\r\n\n", 3},
      {"v2 signature NUL", "\r\n\r\nX", 5},
      {"v2 signature byte 12", kSignature.substr(0, 11) + "X", 12},
      {"v2 version", kSignature + "\x11", 13},
      {"v2 command", kSignature + "\x23", 13},
      {"v2 family", kSignature + "\x21\x31", 14},
      {"v2 over the cap", kSignature + "\x21\x11\x10\x00"s, 16},
      {"v2 too short for v6", kSignature + "\x21\x21\x00\x0c"s, 16},
      {"v2 stray byte after the addresses", kSignature + "\x21\x11\x00\x0d"s, 16},
      {"v2 TLV overrun at its header", v2WithLength(kProxy, 0x11, 20, kV4 + "\x04\x00\x06"s), 31},
      {"v2 CRC32C TLV length at its header", v2(kProxy, 0x11, kV4 + tlv(0x03, "ab")), 31},
  };
  for (const auto& row : rows) {
    INFO(row.name);
    const auto [result, taken] = feedBytewise(row.input);
    REQUIRE(result.status == ProxyHeaderStatus::invalid);
    REQUIRE(taken == row.decided_at);
  }
}

TEST_CASE("incomplete input", "[proxy_protocol]") {
  const std::string v4 = v2(kProxy, 0x11, kV4 + kVpce);
  const std::vector<std::string> inputs = {
      "",
      "P",
      "PROXY",
      "PROXY ",
      "PROXY TCP4 ",
      "PROXY TCP4 10.1.2.3 10.0.0.7 51514 4001",
      "PROXY TCP4 10.1.2.3 10.0.0.7 51514 4001\r",
      "PROXY UNKNOWN",
      "PROXY UNKNOWN\r",
      "PROXY UNKNOWN " + std::string(90, 'x') + "\r",
      "\r",
      kSignature,
      kSignature + "\x21",
      kSignature + "\x21\x11",
      kSignature + "\x21\x11\x00",
      v4.substr(0, 16),
      v4.substr(0, 27),             // inside the addresses
      v4.substr(0, 29),             // inside the TLV header
      v4.substr(0, v4.size() - 1),  // the last byte of the vpce id
      v2(kLocal, 0x00, "abc").substr(0, 17),
      withCrc("").substr(0, 30),
  };
  for (const auto& input : inputs) {
    INFO(input.size());
    const auto result = parseProxyHeader(input);
    REQUIRE(result.status == ProxyHeaderStatus::incomplete);
    REQUIRE(result.error.empty());
  }
}

TEST_CASE("CRC32C: the test's reference and the parser agree", "[proxy_protocol]") {
  REQUIRE(crc32c("123456789") == 0xE3069283u);  // the standard check value
  SECTION("every single-bit flip in a checked header is refused") {
    // From the addresses on; the CRC32C TLV's own type byte is left alone, as a
    // header whose checksum TLV turned into another TLV is simply unchecked.
    const std::string header = withCrc(kVpce);
    const size_t crc_type_at = header.size() - 7;
    for (size_t i = 16; i < header.size(); ++i) {
      if (i == crc_type_at) {
        continue;
      }
      for (int bit = 0; bit < 8; ++bit) {
        std::string flipped = header;
        flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
        INFO("byte " << i << " bit " << bit);
        REQUIRE(parseProxyHeader(flipped).status == ProxyHeaderStatus::invalid);
      }
    }
  }
  SECTION("the checksum covers the address block") {
    std::string header = withCrc("");
    header[26] = static_cast<char>(header[26] ^ 0x80);  // the destination port
    REQUIRE(parseProxyHeader(header).error == "v2: CRC32C mismatch");
  }
}

TEST_CASE("the header's length: payload after it is left alone", "[proxy_protocol]") {
  const std::string payload = "CONNECT bucket.s3.amazonaws.com:443 HTTP/1.1\r\n\r\n";
  const std::vector<std::string> headers = {
      "PROXY TCP4 10.1.2.3 10.0.0.7 51514 4001\r\n",
      "PROXY UNKNOWN\r\n",
      v2(kLocal, 0x00, ""),
      v2(kProxy, 0x11, kV4 + kVpce),
      v2(kProxy, 0x21, kV6),
  };
  for (const auto& header : headers) {
    const auto result = parseProxyHeader(header + payload);
    REQUIRE(result.status == ProxyHeaderStatus::ok);
    REQUIRE(result.header.length == header.size());
    REQUIRE((header + payload).substr(result.header.length) == payload);
  }
  SECTION("a payload that is itself binary") {
    const auto result = parseProxyHeader(v2(kProxy, 0x11, kV4) + "\x16\x03\x01\x00\xff"s);
    REQUIRE(result.status == ProxyHeaderStatus::ok);
    REQUIRE(result.header.length == 28);
  }
}

TEST_CASE("mutated headers: any split gives the one-shot answer", "[proxy_protocol]") {
  std::vector<std::string> seeds;
  for (const auto& row : acceptedHeaders()) {
    if (row.input.size() < 256) {
      seeds.push_back(row.input);
    }
  }
  std::mt19937 random(20261124);
  int checked = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string input = seeds[random() % seeds.size()];
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const size_t at = random() % input.size();
      switch (random() % 4) {
        case 0:
          input[at] = static_cast<char>(random() % 256);
          break;
        case 1:
          input.erase(at, 1);
          break;
        case 2:
          input.insert(at, 1, " \r\n0.:\x01\xea"[random() % 8]);
          break;
        default:
          input.resize(at);
          break;
      }
    }
    const ProxyHeaderResult one_shot = parseProxyHeader(input);
    if (one_shot.status == ProxyHeaderStatus::incomplete) {
      continue;
    }
    INFO("round " << round);
    const auto [bytewise, taken] = feedBytewise(input);
    requireSame(bytewise, one_shot);
    requireSame(parseProxyHeader(input + "more"), one_shot);
    if (one_shot.status == ProxyHeaderStatus::ok) {
      REQUIRE(one_shot.header.length <= input.size());
      requireSame(parseProxyHeader(input.substr(0, one_shot.header.length)), one_shot);
    } else {
      REQUIRE(!one_shot.error.empty());
    }
    ++checked;
  }
  REQUIRE(checked > 1000);
}
