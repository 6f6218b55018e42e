#include "proxy/proxy_protocol.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

// Both versions are read in one pass from the first byte to the last, and each
// error is named at the first byte that makes the input impossible to complete
// into a valid header. The answer for a prefix is therefore the answer for any
// longer input, and a split across reads cannot change what is decided.

namespace s3gate {

namespace {

using Status = ProxyHeaderStatus;

ProxyHeaderResult incomplete() {
  return ProxyHeaderResult{};
}

ProxyHeaderResult invalid(std::string error) {
  ProxyHeaderResult result;
  result.status = Status::invalid;
  result.error = std::move(error);
  return result;
}

std::string hexByte(uint8_t value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return std::string("0x") + kDigits[value >> 4] + kDigits[value & 0x0F];
}

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

bool isHexDigit(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// ---- version 1 ----

constexpr std::string_view kV1Prefix = "PROXY ";
// The CR of the closing CRLF is at this index at the latest.
constexpr size_t kV1LastCrIndex = kMaxProxyV1HeaderBytes - 2;
constexpr size_t kMaxIpv4Text = 15;  // 255.255.255.255
constexpr size_t kMaxIpv6Text = 45;  // ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255
constexpr size_t kMaxPortDigits = 5;

enum class V1Protocol { tcp4, tcp6, unknown };

// The fields after "PROXY ", in order.
enum V1Field : int { kProtocol, kSource, kDestination, kSourcePort, kDestinationPort, kFieldCount };

const char* fieldError(int field) {
  switch (field) {
    case kProtocol:
      return "v1: unknown protocol (want TCP4, TCP6 or UNKNOWN)";
    case kSource:
      return "v1: bad source address";
    case kDestination:
      return "v1: bad destination address";
    case kSourcePort:
      return "v1: bad source port";
    default:
      return "v1: bad destination port";
  }
}

// Whether `text` is, or can still grow into, a valid field of that kind. This
// checks characters and lengths only; a finished field is parsed in full.
bool viableField(int field, std::string_view text, V1Protocol protocol) {
  switch (field) {
    case kProtocol:
      return std::string_view("TCP4").starts_with(text) ||
             std::string_view("TCP6").starts_with(text) ||
             std::string_view("UNKNOWN").starts_with(text);
    case kSource:
    case kDestination: {
      const bool v6 = protocol == V1Protocol::tcp6;
      if (text.size() > (v6 ? kMaxIpv6Text : kMaxIpv4Text)) {
        return false;
      }
      return std::all_of(text.begin(), text.end(), [v6](char c) {
        return v6 ? (isHexDigit(c) || c == ':' || c == '.') : (isDigit(c) || c == '.');
      });
    }
    default: {
      if (text.size() > kMaxPortDigits || !std::all_of(text.begin(), text.end(), isDigit)) {
        return false;
      }
      if (text.size() > 1 && text[0] == '0') {
        return false;  // a leading zero: octal to some readers
      }
      uint32_t value = 0;
      for (char c : text) {
        value = value * 10 + static_cast<uint32_t>(c - '0');
      }
      return value <= 65535;
    }
  }
}

struct V1State {
  V1Protocol protocol = V1Protocol::unknown;
  std::optional<IpAddress> source;
  std::optional<IpAddress> destination;
  uint16_t source_port = 0;
  uint16_t destination_port = 0;
};

// Parses a finished field into `state`; false if it is not valid.
bool finishField(int field, std::string_view text, V1State* state) {
  if (text.empty() || !viableField(field, text, state->protocol)) {
    return false;
  }
  switch (field) {
    case kProtocol:
      if (text == "TCP4") {
        state->protocol = V1Protocol::tcp4;
      } else if (text == "TCP6") {
        state->protocol = V1Protocol::tcp6;
      } else if (text == "UNKNOWN") {
        state->protocol = V1Protocol::unknown;
      } else {
        return false;
      }
      return true;
    case kSource:
    case kDestination: {
      auto ip = IpAddress::parse(text);
      const bool v6 = state->protocol == V1Protocol::tcp6;
      if (!ip || ip->isV6() != v6) {
        return false;
      }
      (field == kSource ? state->source : state->destination) = *ip;
      return true;
    }
    default: {
      uint32_t value = 0;
      for (char c : text) {
        value = value * 10 + static_cast<uint32_t>(c - '0');
      }
      (field == kSourcePort ? state->source_port : state->destination_port) =
          static_cast<uint16_t>(value);
      return true;
    }
  }
}

ProxyHeaderResult parseV1(std::string_view bytes) {
  V1State state;
  int field = kProtocol;
  size_t field_start = kV1Prefix.size();
  bool skipping = false;  // after "UNKNOWN ": anything up to the CRLF
  for (size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (i < kV1Prefix.size()) {
      if (c != kV1Prefix[i]) {
        return invalid("v1: the line does not start with \"PROXY \"");
      }
      continue;
    }
    if (c == '\n') {
      return invalid("v1: LF without CR");
    }
    if (i >= kV1LastCrIndex && c != '\r') {
      return invalid("v1: longer than 107 bytes");
    }
    if (skipping && c != '\r') {
      continue;
    }
    if (c == ' ' || c == '\r') {
      if (!skipping) {
        const std::string_view text = bytes.substr(field_start, i - field_start);
        if (text.empty()) {
          return invalid("v1: empty field (a double space, or a space before the CRLF)");
        }
        if (!finishField(field, text, &state)) {
          return invalid(fieldError(field));
        }
        ++field;
        field_start = i + 1;
      }
      if (c == ' ') {
        if (state.protocol == V1Protocol::unknown) {
          skipping = true;
        } else if (field == kFieldCount) {
          return invalid("v1: a field after the destination port");
        }
        continue;
      }
      // The CR: the line is complete.
      if (state.protocol != V1Protocol::unknown && field != kFieldCount) {
        return invalid("v1: missing fields (want protocol, two addresses and two ports)");
      }
      if (i + 1 >= bytes.size()) {
        return incomplete();
      }
      if (bytes[i + 1] != '\n') {
        return invalid("v1: CR without LF");
      }
      ProxyHeaderResult result;
      result.status = Status::ok;
      result.header.version = 1;
      result.header.length = i + 2;
      if (state.protocol == V1Protocol::unknown) {
        result.header.local = true;
      } else {
        result.header.source = SocketAddress(*state.source, state.source_port);
        result.header.destination = SocketAddress(*state.destination, state.destination_port);
      }
      return result;
    }
    if (!viableField(field, bytes.substr(field_start, i + 1 - field_start), state.protocol)) {
      return invalid(fieldError(field));
    }
  }
  return incomplete();
}

// ---- version 2 ----

constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr size_t kV2FixedBytes = 16;  // signature, version and command, family, length
constexpr size_t kTlvHeaderBytes = 3;
constexpr size_t kIpv4Block = 12;  // two addresses, two ports
constexpr size_t kIpv6Block = 36;

constexpr uint8_t kCommandLocal = 0x0;
constexpr uint8_t kCommandProxy = 0x1;

constexpr uint8_t kFamilyUnspec = 0x00;
constexpr uint8_t kTcpOverIpv4 = 0x11;
constexpr uint8_t kUdpOverIpv4 = 0x12;
constexpr uint8_t kTcpOverIpv6 = 0x21;
constexpr uint8_t kUdpOverIpv6 = 0x22;
constexpr uint8_t kUnixStream = 0x31;
constexpr uint8_t kUnixDgram = 0x32;

constexpr uint8_t kTlvCrc32c = 0x03;
constexpr uint8_t kTlvAws = 0xEA;
constexpr uint8_t kAwsSubtypeVpceId = 0x01;
constexpr size_t kCrc32cBytes = 4;

uint8_t byteAt(std::string_view bytes, size_t i) {
  return static_cast<uint8_t>(bytes[i]);
}

uint16_t readBe16(std::string_view bytes, size_t i) {
  return static_cast<uint16_t>(byteAt(bytes, i) << 8 | byteAt(bytes, i + 1));
}

uint32_t readBe32(std::string_view bytes, size_t i) {
  return static_cast<uint32_t>(readBe16(bytes, i)) << 16 | readBe16(bytes, i + 2);
}

constexpr std::array<uint32_t, 256> makeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;  // Castagnoli, reflected
    }
    table[i] = crc;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = makeCrc32cTable();

// CRC32C of `header` with the four bytes at `zeroed` read as zeros.
uint32_t crc32cZeroed(std::string_view header, size_t zeroed) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < header.size(); ++i) {
    const uint8_t byte = (i >= zeroed && i < zeroed + kCrc32cBytes) ? 0 : byteAt(header, i);
    crc = kCrc32cTable[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  }
  return ~crc;
}

bool validVpceId(std::string_view id) {
  return !id.empty() &&
         std::all_of(id.begin(), id.end(), [](char c) { return c >= 0x21 && c <= 0x7E; });
}

ProxyHeaderResult parseV2(std::string_view bytes) {
  const size_t signature = std::min(bytes.size(), kV2Signature.size());
  if (bytes.substr(0, signature) != kV2Signature.substr(0, signature)) {
    return invalid("v2: bad signature");
  }
  if (bytes.size() <= kV2Signature.size()) {
    return incomplete();
  }

  const uint8_t version_command = byteAt(bytes, 12);
  if (version_command >> 4 != 2) {
    return invalid("v2: version " + std::to_string(version_command >> 4) + ", want 2");
  }
  const uint8_t command = version_command & 0x0F;
  if (command != kCommandLocal && command != kCommandProxy) {
    return invalid("v2: unknown command " + std::to_string(command));
  }
  if (bytes.size() < 14) {
    return incomplete();
  }

  // LOCAL: the family is ignored, as is the whole block.
  const uint8_t family = byteAt(bytes, 13);
  bool skip_block = command == kCommandLocal;
  size_t address_block = 0;
  if (!skip_block) {
    switch (family) {
      case kFamilyUnspec:
        skip_block = true;
        break;
      case kTcpOverIpv4:
        address_block = kIpv4Block;
        break;
      case kTcpOverIpv6:
        address_block = kIpv6Block;
        break;
      case kUdpOverIpv4:
      case kUdpOverIpv6:
        return invalid("v2: UDP is not supported (family " + hexByte(family) + ")");
      case kUnixStream:
      case kUnixDgram:
        return invalid("v2: AF_UNIX is not supported (family " + hexByte(family) + ")");
      default:
        return invalid("v2: unknown family and protocol " + hexByte(family));
    }
  }
  if (bytes.size() < kV2FixedBytes) {
    return incomplete();
  }

  const size_t block = readBe16(bytes, 14);
  const size_t total = kV2FixedBytes + block;
  if (total > kMaxProxyV2HeaderBytes) {
    return invalid("v2: header of " + std::to_string(total) + " bytes, over the " +
                   std::to_string(kMaxProxyV2HeaderBytes) + "-byte cap");
  }
  if (block < address_block) {
    return invalid("v2: length " + std::to_string(block) + " too short for the addresses");
  }

  ProxyHeaderResult result;
  result.header.version = 2;
  result.header.length = total;
  if (skip_block) {
    if (bytes.size() < total) {
      return incomplete();
    }
    result.status = Status::ok;
    result.header.local = true;
    return result;
  }

  // The TLVs fill the block after the addresses exactly; walk them as far as
  // the bytes go, judging each as soon as it is all there.
  const size_t available = std::min(bytes.size(), total);
  size_t pos = kV2FixedBytes + address_block;
  if (total - pos > 0 && total - pos < kTlvHeaderBytes) {
    return invalid("v2: bytes after the last TLV");
  }
  if (available < pos) {
    return incomplete();
  }
  if (address_block == kIpv4Block) {
    result.header.source = SocketAddress(IpAddress::v4(readBe32(bytes, 16)), readBe16(bytes, 24));
    result.header.destination =
        SocketAddress(IpAddress::v4(readBe32(bytes, 20)), readBe16(bytes, 26));
  } else {
    std::array<uint8_t, 16> source{};
    std::array<uint8_t, 16> destination{};
    std::memcpy(source.data(), bytes.data() + 16, 16);
    std::memcpy(destination.data(), bytes.data() + 32, 16);
    result.header.source = SocketAddress(IpAddress::v6(source), readBe16(bytes, 48));
    result.header.destination = SocketAddress(IpAddress::v6(destination), readBe16(bytes, 50));
  }

  std::optional<size_t> crc_at;  // offset of the CRC32C value
  while (pos < total) {
    if (total - pos < kTlvHeaderBytes) {
      return invalid("v2: bytes after the last TLV");
    }
    if (available - pos < kTlvHeaderBytes) {
      return incomplete();
    }
    const uint8_t type = byteAt(bytes, pos);
    const size_t length = readBe16(bytes, pos + 1);
    const size_t value_at = pos + kTlvHeaderBytes;
    if (length > total - value_at) {
      return invalid("v2: TLV " + hexByte(type) + " runs past the end of the header");
    }
    if (type == kTlvCrc32c) {
      if (length != kCrc32cBytes) {
        return invalid("v2: CRC32C TLV of " + std::to_string(length) + " bytes, want 4");
      }
      if (crc_at) {
        return invalid("v2: two CRC32C TLVs");
      }
      crc_at = value_at;
    }
    if (available - value_at < length) {
      return incomplete();
    }
    const std::string_view value = bytes.substr(value_at, length);
    if (type == kTlvAws) {
      if (value.empty()) {
        return invalid("v2: AWS TLV without a subtype");
      }
      if (byteAt(value, 0) == kAwsSubtypeVpceId) {
        if (result.header.vpce_id) {
          return invalid("v2: two AWS VPC endpoint id TLVs");
        }
        if (!validVpceId(value.substr(1))) {
          return invalid("v2: AWS VPC endpoint id is not visible ASCII");
        }
        result.header.vpce_id = std::string(value.substr(1));
      }
    }
    pos = value_at + length;
  }

  if (crc_at && crc32cZeroed(bytes.substr(0, total), *crc_at) != readBe32(bytes, *crc_at)) {
    return invalid("v2: CRC32C mismatch");
  }
  result.status = Status::ok;
  return result;
}

}  // namespace

ProxyHeaderResult parseProxyHeader(std::string_view bytes) {
  if (bytes.empty()) {
    return incomplete();
  }
  if (bytes[0] == kV1Prefix[0]) {
    return parseV1(bytes);
  }
  if (bytes[0] == kV2Signature[0]) {
    return parseV2(bytes);
  }
  return invalid("not a PROXY protocol header");
}

}  // namespace s3gate
