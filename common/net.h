#pragma once
// Addresses, networks and name matching: pure values, no I/O.

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s3gate {

// An IPv4 or IPv6 address. IPv4 is kept as such (never as a mapped IPv6 address),
// except that fromSockaddr() unmaps ::ffff:a.b.c.d so that rules see the IPv4 address.
class IpAddress {
 public:
  IpAddress() = default;
  static IpAddress v4(uint32_t host_order);
  static IpAddress v6(const std::array<uint8_t, 16>& bytes);
  // Strict textual form only (inet_pton): "10.0.0.1", "::1". No brackets.
  static std::optional<IpAddress> parse(std::string_view text);
  static IpAddress fromSockaddr(const sockaddr* sa);

  bool isV4() const { return family_ == AF_INET; }
  bool isV6() const { return family_ == AF_INET6; }
  int family() const { return family_; }
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }  // v4 uses the first 4
  std::string toString() const;
  // ::ffff:a.b.c.d as the IPv4 address it stands for; any other address as it is.
  IpAddress unmapped() const;

  bool isLoopback() const;
  bool isLinkLocal() const;
  bool isUnspecified() const;
  bool isMulticast() const;
  bool isBroadcast() const;

  bool operator==(const IpAddress&) const = default;

 private:
  int family_ = AF_UNSPEC;
  std::array<uint8_t, 16> bytes_{};
};

// An address with a port.
class SocketAddress {
 public:
  SocketAddress() = default;
  SocketAddress(IpAddress ip, uint16_t port) : ip_(ip), port_(port) {}
  // "IPv4:port" or "[IPv6]:port".
  static std::optional<SocketAddress> parse(std::string_view text);
  static SocketAddress fromSockaddr(const sockaddr* sa);

  const IpAddress& ip() const { return ip_; }
  uint16_t port() const { return port_; }
  // Fills storage; returns the length to pass to bind/connect.
  socklen_t toSockaddr(sockaddr_storage* storage) const;
  std::string toString() const;  // "1.2.3.4:80", "[::1]:80"

  bool operator==(const SocketAddress&) const = default;

 private:
  IpAddress ip_;
  uint16_t port_ = 0;
};

// A CIDR network; a bare address is a /32 or /128.
class Network {
 public:
  static std::optional<Network> parse(std::string_view text);
  bool contains(const IpAddress& ip) const;
  std::string toString() const;
  const IpAddress& base() const { return base_; }
  int prefixLength() const { return prefix_; }

 private:
  IpAddress base_;
  int prefix_ = 0;
};

bool anyContains(const std::vector<Network>& networks, const IpAddress& ip);

// Glob with '*' (any run of characters, dots included) and '?' (one character).
bool globMatch(std::string_view pattern, std::string_view text);

// Exact name, or "*." + suffix matching any name that ends with "." + suffix
// (label-exact: "*.b.c" matches "a.b.c" and "x.a.b.c", never "b.c" or "ab.c").
bool hostPatternMatch(std::string_view pattern, std::string_view host);

}  // namespace s3gate
