#include "common/net.h"
#include "common/text.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace s3gate {

namespace {

// The IPv4 address carried by ::ffff:a.b.c.d, if `bytes` is one.
bool isV4Mapped(const std::array<uint8_t, 16>& bytes) {
  for (int i = 0; i < 10; ++i) {
    if (bytes[i] != 0) {
      return false;
    }
  }
  return bytes[10] == 0xff && bytes[11] == 0xff;
}

// The four IPv4 bytes an address stands for: its own for IPv4, the embedded
// ones for the IPv6 forms that carry an IPv4 address a packet can end up at, so
// that the classification sees through them (with no allowed_networks, an
// answer of 64:ff9b::a9fe:a9fe must be refused like 169.254.169.254):
// - IPv4-mapped ::ffff:a.b.c.d (a socket connecting to ::ffff:127.0.0.1
//   reaches 127.0.0.1);
// - NAT64's well-known prefix 64:ff9b::a.b.c.d (RFC 6052): the translator
//   connects to a.b.c.d;
// - 6to4 2002:AABB:CCDD::/48 (RFC 3056): the relay sends to AA.BB.CC.DD;
// - IPv4-compatible ::a.b.c.d (RFC 4291, deprecated; a host with a SIT tunnel
//   still routes it to a.b.c.d), but not :: and ::1, IPv6's own unspecified
//   and loopback addresses.
bool v4View(const IpAddress& ip, std::array<uint8_t, 4>* out) {
  const auto& b = ip.bytes();
  if (ip.isV4()) {
    *out = {b[0], b[1], b[2], b[3]};
    return true;
  }
  if (!ip.isV6()) {
    return false;
  }
  static constexpr std::array<uint8_t, 12> kNat64 = {0x00, 0x64, 0xff, 0x9b, 0, 0,
                                                     0,    0,    0,    0,    0, 0};
  const bool first_ten_zero =
      std::all_of(b.begin(), b.begin() + 10, [](uint8_t x) { return x == 0; });
  const bool mapped = first_ten_zero && b[10] == 0xff && b[11] == 0xff;
  const bool compatible = first_ten_zero && b[10] == 0 && b[11] == 0 &&
                          (b[12] != 0 || b[13] != 0 || b[14] != 0 || b[15] > 1);
  const bool nat64 = std::equal(kNat64.begin(), kNat64.end(), b.begin());
  if (mapped || compatible || nat64) {
    *out = {b[12], b[13], b[14], b[15]};
    return true;
  }
  if (b[0] == 0x20 && b[1] == 0x02) {
    *out = {b[2], b[3], b[4], b[5]};
    return true;
  }
  return false;
}

bool allZero(const std::array<uint8_t, 16>& bytes) {
  for (uint8_t b : bytes) {
    if (b != 0) {
      return false;
    }
  }
  return true;
}

// A port: 1..65535 in plain decimal, no sign, no leading zero.
std::optional<uint16_t> parsePort(std::string_view text) {
  if (text.empty() || text.size() > 5 || text[0] == '0') {
    return std::nullopt;
  }
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

IpAddress IpAddress::v4(uint32_t host_order) {
  IpAddress ip;
  ip.family_ = AF_INET;
  ip.bytes_[0] = static_cast<uint8_t>(host_order >> 24);
  ip.bytes_[1] = static_cast<uint8_t>(host_order >> 16);
  ip.bytes_[2] = static_cast<uint8_t>(host_order >> 8);
  ip.bytes_[3] = static_cast<uint8_t>(host_order);
  return ip;
}

IpAddress IpAddress::v6(const std::array<uint8_t, 16>& bytes) {
  IpAddress ip;
  ip.family_ = AF_INET6;
  ip.bytes_ = bytes;
  return ip;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  // inet_pton needs a terminated string; the longest IPv6 text is 45 characters.
  char buffer[64];
  if (text.empty() || text.size() >= sizeof(buffer)) {
    return std::nullopt;
  }
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  // inet_pton would stop at a NUL inside the view and accept "1.2.3.4\0junk".
  if (std::memchr(buffer, '\0', text.size()) != nullptr) {
    return std::nullopt;
  }
  IpAddress ip;
  if (text.find(':') == std::string_view::npos) {
    in_addr a4{};
    if (inet_pton(AF_INET, buffer, &a4) != 1) {
      return std::nullopt;
    }
    ip.family_ = AF_INET;
    std::memcpy(ip.bytes_.data(), &a4, 4);
    return ip;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, buffer, &a6) != 1) {
    return std::nullopt;
  }
  ip.family_ = AF_INET6;
  std::memcpy(ip.bytes_.data(), &a6, 16);
  return ip;
}

IpAddress IpAddress::fromSockaddr(const sockaddr* sa) {
  IpAddress ip;
  if (sa == nullptr) {
    return ip;
  }
  if (sa->sa_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, sa, sizeof(sin));
    ip.family_ = AF_INET;
    std::memcpy(ip.bytes_.data(), &sin.sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, sa, sizeof(sin6));
    std::array<uint8_t, 16> bytes{};
    std::memcpy(bytes.data(), &sin6.sin6_addr, 16);
    if (isV4Mapped(bytes)) {
      // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; the rules are
      // written in IPv4.
      ip.family_ = AF_INET;
      std::memcpy(ip.bytes_.data(), bytes.data() + 12, 4);
    } else {
      ip.family_ = AF_INET6;
      ip.bytes_ = bytes;
    }
  }
  return ip;
}

std::string IpAddress::toString() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  if (isV4()) {
    inet_ntop(AF_INET, bytes_.data(), buffer, sizeof(buffer));
  } else if (isV6()) {
    inet_ntop(AF_INET6, bytes_.data(), buffer, sizeof(buffer));
  } else {
    return "-";
  }
  return buffer;
}

bool IpAddress::isLoopback() const {
  std::array<uint8_t, 4> v4{};
  if (v4View(*this, &v4)) {
    return v4[0] == 127;
  }
  if (!isV6()) {
    return false;
  }
  for (int i = 0; i < 15; ++i) {
    if (bytes_[i] != 0) {
      return false;
    }
  }
  return bytes_[15] == 1;
}

bool IpAddress::isLinkLocal() const {
  std::array<uint8_t, 4> v4{};
  if (v4View(*this, &v4)) {
    return v4[0] == 169 && v4[1] == 254;
  }
  return isV6() && bytes_[0] == 0xfe && (bytes_[1] & 0xc0) == 0x80;
}

bool IpAddress::isUnspecified() const {
  std::array<uint8_t, 4> v4{};
  if (v4View(*this, &v4)) {
    // All of 0.0.0.0/8 ("this network", RFC 1122): never a destination, and
    // Linux connects 0.0.0.0 to the local host.
    return v4[0] == 0;
  }
  return isV6() && allZero(bytes_);
}

bool IpAddress::isMulticast() const {
  std::array<uint8_t, 4> v4{};
  if (v4View(*this, &v4)) {
    return (v4[0] & 0xf0) == 224;
  }
  return isV6() && bytes_[0] == 0xff;
}

bool IpAddress::isBroadcast() const {
  std::array<uint8_t, 4> v4{};
  return v4View(*this, &v4) && v4[0] == 255 && v4[1] == 255 && v4[2] == 255 && v4[3] == 255;
}

std::optional<SocketAddress> SocketAddress::parse(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    auto ip = IpAddress::parse(host);
    auto p = parsePort(port);
    if (!ip || !ip->isV6() || !p) {
      return std::nullopt;
    }
    return SocketAddress(*ip, *p);
  }
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return std::nullopt;
  }
  host = text.substr(0, colon);
  port = text.substr(colon + 1);
  auto ip = IpAddress::parse(host);
  auto p = parsePort(port);
  // An unbracketed IPv6 address ("::1:80") is ambiguous: refused.
  if (!ip || !ip->isV4() || !p) {
    return std::nullopt;
  }
  return SocketAddress(*ip, *p);
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa) {
  if (sa == nullptr) {
    return {};
  }
  uint16_t port = 0;
  if (sa->sa_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, sa, sizeof(sin));
    port = ntohs(sin.sin_port);
  } else if (sa->sa_family == AF_INET6) {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, sa, sizeof(sin6));
    port = ntohs(sin6.sin6_port);
  }
  return SocketAddress(IpAddress::fromSockaddr(sa), port);
}

socklen_t SocketAddress::toSockaddr(sockaddr_storage* storage) const {
  std::memset(storage, 0, sizeof(*storage));
  if (ip_.isV4()) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port_);
    std::memcpy(&sin.sin_addr, ip_.bytes().data(), 4);
    std::memcpy(storage, &sin, sizeof(sin));
    return sizeof(sin);
  }
  if (ip_.isV6()) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port_);
    std::memcpy(&sin6.sin6_addr, ip_.bytes().data(), 16);
    std::memcpy(storage, &sin6, sizeof(sin6));
    return sizeof(sin6);
  }
  return 0;
}

std::string SocketAddress::toString() const {
  std::string out;
  if (ip_.isV6()) {
    out += '[';
    out += ip_.toString();
    out += ']';
  } else {
    out = ip_.toString();
  }
  out += ':';
  out += std::to_string(port_);
  return out;
}

std::optional<Network> Network::parse(std::string_view text) {
  size_t slash = text.find('/');
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) {
    return std::nullopt;
  }
  const int max_prefix = ip->isV4() ? 32 : 128;
  int prefix = max_prefix;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    // Plain decimal, no sign, no leading zero ("/08" is a typo, not a prefix).
    if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) {
      return std::nullopt;
    }
    prefix = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') {
        return std::nullopt;
      }
      prefix = prefix * 10 + (c - '0');
    }
    if (prefix > max_prefix) {
      return std::nullopt;
    }
  }
  // Host bits beyond the prefix are accepted and cleared: "10.1.2.3/8" is 10.0.0.0/8,
  // as `ip route` and most firewalls read it.
  std::array<uint8_t, 16> bytes = ip->bytes();
  const int total_bytes = max_prefix / 8;
  for (int i = 0; i < total_bytes; ++i) {
    const int bits_kept = std::min(8, std::max(0, prefix - i * 8));
    const uint8_t mask = bits_kept == 0 ? 0 : static_cast<uint8_t>(0xff << (8 - bits_kept));
    bytes[i] &= mask;
  }
  Network network;
  if (ip->isV4()) {
    network.base_ = IpAddress::v4((uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) |
                                  (uint32_t{bytes[2]} << 8) | uint32_t{bytes[3]});
  } else {
    network.base_ = IpAddress::v6(bytes);
  }
  network.prefix_ = prefix;
  return network;
}

bool Network::contains(const IpAddress& ip) const {
  // Families never mix: an IPv4 network does not contain ::ffff:a.b.c.d (addresses
  // reaching the rules from sockets are already unmapped by fromSockaddr()).
  if (base_.family() == AF_UNSPEC || ip.family() != base_.family()) {
    return false;
  }
  const auto& a = base_.bytes();
  const auto& b = ip.bytes();
  int remaining = prefix_;
  for (int i = 0; remaining > 0; ++i, remaining -= 8) {
    const int bits = std::min(8, remaining);
    const uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits));
    if ((a[i] & mask) != (b[i] & mask)) {
      return false;
    }
  }
  return true;
}

std::string Network::toString() const {
  return base_.toString() + "/" + std::to_string(prefix_);
}

bool anyContains(const std::vector<Network>& networks, const IpAddress& ip) {
  for (const auto& network : networks) {
    if (network.contains(ip)) {
      return true;
    }
  }
  return false;
}

bool globMatch(std::string_view pattern, std::string_view text) {
  // Greedy matching that remembers only the last '*': on a mismatch the last star
  // absorbs one more character and matching resumes after it. An earlier star never
  // needs revisiting (the last one can absorb anything it could), so the cost is
  // O(pattern * text) at worst, never exponential.
  size_t p = 0;
  size_t t = 0;
  size_t star = std::string_view::npos;
  size_t star_text = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_text = t;
    } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_text;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

bool hostPatternMatch(std::string_view pattern, std::string_view host) {
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    std::string_view suffix = pattern.substr(1);  // ".b.c"
    // At least one non-empty label before the suffix; the dot keeps it label-exact.
    return host.size() > suffix.size() && host[host.size() - suffix.size() - 1] != '.' &&
           equalsIgnoreCase(host.substr(host.size() - suffix.size()), suffix);
  }
  return equalsIgnoreCase(pattern, host);
}

IpAddress IpAddress::unmapped() const {
  std::array<uint8_t, 4> v4{};
  if (isV6() && v4View(*this, &v4)) {
    return IpAddress::v4((uint32_t{v4[0]} << 24) | (uint32_t{v4[1]} << 16) |
                         (uint32_t{v4[2]} << 8) | uint32_t{v4[3]});
  }
  return *this;
}

}  // namespace s3gate
