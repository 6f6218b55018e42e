// Addresses, networks, globs and host patterns (acl/net.h).

#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "common/net.h"
#include "test/unit/test_helpers.h"

using namespace s3gate;
using s3gate::test::ip;
using s3gate::test::net;

TEST_CASE("IpAddress::parse accepts only the strict textual forms", "[net]") {
  struct Row {
    const char* text;
    bool ok;
    int family;
    const char* canonical;
  };
  const Row rows[] = {
      {"10.0.0.1", true, AF_INET, "10.0.0.1"},
      {"0.0.0.0", true, AF_INET, "0.0.0.0"},
      {"255.255.255.255", true, AF_INET, "255.255.255.255"},
      {"::1", true, AF_INET6, "::1"},
      {"::", true, AF_INET6, "::"},
      {"2001:DB8::1", true, AF_INET6, "2001:db8::1"},
      {"::ffff:10.0.0.1", true, AF_INET6, "::ffff:10.0.0.1"},
      // Everything a permissive resolver would read as an address, refused here:
      {"127.1", false, 0, ""},
      {"0177.0.0.1", false, 0, ""},
      {"0x7f000001", false, 0, ""},
      {"2130706433", false, 0, ""},
      {"010.0.0.1", false, 0, ""},
      {"256.0.0.1", false, 0, ""},
      {"1.2.3.4.5", false, 0, ""},
      {"1.2.3.", false, 0, ""},
      {" 1.2.3.4", false, 0, ""},
      {"1.2.3.4 ", false, 0, ""},
      {"[::1]", false, 0, ""},
      {"fe80::1%eth0", false, 0, ""},
      {"1:2:3:4:5:6:7:8:9", false, 0, ""},
      {"", false, 0, ""},
      {"example.com", false, 0, ""},
  };
  for (const auto& row : rows) {
    CAPTURE(row.text);
    auto parsed = IpAddress::parse(row.text);
    REQUIRE(parsed.has_value() == row.ok);
    if (row.ok) {
      CHECK(parsed->family() == row.family);
      CHECK(parsed->toString() == row.canonical);
    }
  }
}

TEST_CASE("IpAddress::parse refuses an embedded NUL", "[net]") {
  const std::string text("1.2.3.4\0junk", 12);
  CHECK_FALSE(IpAddress::parse(text).has_value());
}

TEST_CASE("IpAddress::v4 is host order", "[net]") {
  CHECK(IpAddress::v4(0x7f000001).toString() == "127.0.0.1");
  CHECK(IpAddress::v4(0x7f000001) == ip("127.0.0.1"));
  CHECK_FALSE(IpAddress::v4(0x7f000001) == ip("::ffff:127.0.0.1"));
  CHECK(IpAddress().toString() == "-");
}

TEST_CASE("IpAddress::fromSockaddr unmaps IPv4-mapped IPv6 addresses", "[net]") {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6.sin6_addr);
  sin6.sin6_port = htons(4000);
  auto unmapped = IpAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6));
  CHECK(unmapped.isV4());
  CHECK(unmapped == ip("10.1.2.3"));
  auto sa = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6));
  CHECK(sa.toString() == "10.1.2.3:4000");

  inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr);
  auto v6 = IpAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6));
  CHECK(v6.isV6());
  CHECK(v6.toString() == "2001:db8::7");

  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(80);
  inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
  CHECK(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin)).toString() ==
        "192.0.2.1:80");

  CHECK(IpAddress::fromSockaddr(nullptr).family() == AF_UNSPEC);
}

TEST_CASE("IpAddress classification", "[net]") {
  struct Row {
    const char* text;
    bool loopback;
    bool link_local;
    bool unspecified;
    bool multicast;
    bool broadcast;
  };
  const Row rows[] = {
      {"127.0.0.1", true, false, false, false, false},
      {"127.255.255.254", true, false, false, false, false},
      {"128.0.0.1", false, false, false, false, false},
      {"::1", true, false, false, false, false},
      // IPv4-compatible ::0.0.0.2: "this network", like 0.0.0.2.
      {"::2", false, false, true, false, false},
      {"169.254.169.254", false, true, false, false, false},
      {"169.253.0.1", false, false, false, false, false},
      {"fe80::1", false, true, false, false, false},
      {"febf::1", false, true, false, false, false},
      {"fec0::1", false, false, false, false, false},
      {"0.0.0.0", false, false, true, false, false},
      {"0.1.2.3", false, false, true, false, false},
      {"::", false, false, true, false, false},
      {"224.0.0.1", false, false, false, true, false},
      {"239.255.255.255", false, false, false, true, false},
      {"240.0.0.1", false, false, false, false, false},
      {"ff02::1", false, false, false, true, false},
      {"255.255.255.255", false, false, false, false, true},
      {"255.255.255.254", false, false, false, false, false},
      {"10.0.0.1", false, false, false, false, false},
      {"52.218.1.7", false, false, false, false, false},
      {"2600:1f14::1", false, false, false, false, false},
      // An IPv4-mapped IPv6 address reaches the IPv4 address: classified as it.
      {"::ffff:127.0.0.1", true, false, false, false, false},
      {"::ffff:169.254.169.254", false, true, false, false, false},
      {"::ffff:0.0.0.0", false, false, true, false, false},
      {"::ffff:224.0.0.1", false, false, false, true, false},
      {"::ffff:255.255.255.255", false, false, false, false, true},
      // NAT64 (64:ff9b::/96), 6to4 (2002::/16) and IPv4-compatible (::/96)
      // addresses carry an IPv4 address too: classified as it.
      {"64:ff9b::127.0.0.1", true, false, false, false, false},
      {"64:ff9b::a9fe:a9fe", false, true, false, false, false},
      {"64:ff9b::", false, false, true, false, false},
      {"64:ff9b::224.0.0.1", false, false, false, true, false},
      {"64:ff9b::255.255.255.255", false, false, false, false, true},
      {"64:ff9b::52.218.1.7", false, false, false, false, false},
      {"64:ff9b:0:0:1::7f00:1", false, false, false, false, false},  // not the /96 prefix
      {"2002:7f00:1::", true, false, false, false, false},
      {"2002:7f00:1:ffff::1", true, false, false, false, false},
      {"2002:a9fe:a9fe::1", false, true, false, false, false},
      {"2002::1", false, false, true, false, false},
      {"2002:e000:1::", false, false, false, true, false},
      {"2002:ffff:ffff::", false, false, false, false, true},
      {"2002:34da:107::1", false, false, false, false, false},
      {"2003:7f00:1::", false, false, false, false, false},
      {"::127.0.0.1", true, false, false, false, false},
      {"::169.254.169.254", false, true, false, false, false},
      {"::224.0.0.1", false, false, false, true, false},
      {"::255.255.255.255", false, false, false, false, true},
      {"::52.218.1.7", false, false, false, false, false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.text);
    const IpAddress a = ip(row.text);
    CHECK(a.isLoopback() == row.loopback);
    CHECK(a.isLinkLocal() == row.link_local);
    CHECK(a.isUnspecified() == row.unspecified);
    CHECK(a.isMulticast() == row.multicast);
    CHECK(a.isBroadcast() == row.broadcast);
  }
  const IpAddress none;
  CHECK_FALSE(none.isLoopback());
  CHECK_FALSE(none.isUnspecified());
}

TEST_CASE("SocketAddress::parse", "[net]") {
  struct Row {
    const char* text;
    bool ok;
    const char* canonical;
  };
  const Row rows[] = {
      {"127.0.0.1:3128", true, "127.0.0.1:3128"},
      {"0.0.0.0:1", true, "0.0.0.0:1"},
      {"10.0.0.1:65535", true, "10.0.0.1:65535"},
      {"[::1]:9464", true, "[::1]:9464"},
      {"[::]:80", true, "[::]:80"},
      {"[2001:DB8::1]:443", true, "[2001:db8::1]:443"},
      {"127.0.0.1:0", false, ""},
      {"127.0.0.1:65536", false, ""},
      {"127.0.0.1:080", false, ""},
      {"127.0.0.1:+80", false, ""},
      {"127.0.0.1:", false, ""},
      {"127.0.0.1", false, ""},
      {"127.0.0.1:80x", false, ""},
      {"localhost:80", false, ""},
      {"::1:80", false, ""},
      {"[::1]", false, ""},
      {"[::1]80", false, ""},
      {"[::1]:", false, ""},
      {"[10.0.0.1]:80", false, ""},
      {"[::1:80", false, ""},
      {":80", false, ""},
      {"", false, ""},
  };
  for (const auto& row : rows) {
    CAPTURE(row.text);
    auto parsed = SocketAddress::parse(row.text);
    REQUIRE(parsed.has_value() == row.ok);
    if (row.ok) {
      CHECK(parsed->toString() == row.canonical);
    }
  }
}

TEST_CASE("SocketAddress::toSockaddr round-trips", "[net]") {
  for (const char* text : {"192.0.2.9:8080", "[2001:db8::9]:443"}) {
    CAPTURE(text);
    auto sa = SocketAddress::parse(text);
    REQUIRE(sa.has_value());
    sockaddr_storage storage{};
    socklen_t len = sa->toSockaddr(&storage);
    CHECK(len == (sa->ip().isV4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)));
    CHECK(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&storage)) == *sa);
  }
  sockaddr_storage storage{};
  CHECK(SocketAddress().toSockaddr(&storage) == 0);
}

TEST_CASE("Network::parse", "[net]") {
  struct Row {
    const char* text;
    bool ok;
    const char* canonical;
  };
  const Row rows[] = {
      {"10.0.0.0/8", true, "10.0.0.0/8"},
      {"10.1.2.3/8", true, "10.0.0.0/8"},  // host bits accepted and cleared
      {"10.1.2.3", true, "10.1.2.3/32"},
      {"10.1.2.3/32", true, "10.1.2.3/32"},
      {"192.168.1.200/25", true, "192.168.1.128/25"},
      {"0.0.0.0/0", true, "0.0.0.0/0"},
      {"1.2.3.4/0", true, "0.0.0.0/0"},
      {"::1", true, "::1/128"},
      {"::/0", true, "::/0"},
      {"2001:db8:ffff::1/33", true, "2001:db8:8000::/33"},
      {"fe80::1/10", true, "fe80::/10"},
      {"10.0.0.0/33", false, ""},
      {"::/129", false, ""},
      {"10.0.0.0/", false, ""},
      {"10.0.0.0/08", false, ""},
      {"10.0.0.0/-8", false, ""},
      {"10.0.0.0/8x", false, ""},
      {"10.0.0.0/8/8", false, ""},
      {"10.0.0/8", false, ""},
      {"/8", false, ""},
      {"", false, ""},
      {"[::1]/128", false, ""},
  };
  for (const auto& row : rows) {
    CAPTURE(row.text);
    auto parsed = Network::parse(row.text);
    REQUIRE(parsed.has_value() == row.ok);
    if (row.ok) {
      CHECK(parsed->toString() == row.canonical);
    }
  }
}

TEST_CASE("Network::contains", "[net]") {
  struct Row {
    const char* network;
    const char* address;
    bool contains;
  };
  const Row rows[] = {
      {"10.0.0.0/8", "10.255.255.255", true},
      {"10.0.0.0/8", "11.0.0.0", false},
      {"10.0.0.0/8", "9.255.255.255", false},
      {"192.168.1.128/25", "192.168.1.128", true},
      {"192.168.1.128/25", "192.168.1.127", false},
      {"10.1.2.3", "10.1.2.3", true},
      {"10.1.2.3", "10.1.2.4", false},
      {"0.0.0.0/0", "203.0.113.1", true},
      {"172.16.0.0/12", "172.31.255.255", true},
      {"172.16.0.0/12", "172.32.0.0", false},
      {"2001:db8::/32", "2001:db8:1::1", true},
      {"2001:db8::/32", "2001:db9::1", false},
      {"::1/128", "::1", true},
      {"fe80::/10", "febf:ffff::1", true},
      {"fe80::/10", "fec0::1", false},
      // Families never mix, even for "any":
      {"0.0.0.0/0", "::1", false},
      {"::/0", "10.0.0.1", false},
      {"10.0.0.0/8", "::ffff:10.0.0.1", false},
      {"::ffff:0:0/96", "10.0.0.1", false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.network, row.address);
    CHECK(net(row.network).contains(ip(row.address)) == row.contains);
  }
  CHECK_FALSE(Network().contains(ip("10.0.0.1")));
}

TEST_CASE("anyContains", "[net]") {
  const std::vector<Network> networks{net("10.0.0.0/8"), net("::1")};
  CHECK(anyContains(networks, ip("10.2.3.4")));
  CHECK(anyContains(networks, ip("::1")));
  CHECK_FALSE(anyContains(networks, ip("127.0.0.1")));
  CHECK_FALSE(anyContains({}, ip("10.2.3.4")));
}

TEST_CASE("globMatch", "[net]") {
  struct Row {
    const char* pattern;
    const char* text;
    bool match;
  };
  const Row rows[] = {
      {"studio-media", "studio-media", true},
      {"studio-media", "studio-media2", false},
      {"studio-media", "studio-medi", false},
      {"*", "", true},
      {"*", "anything.at.all", true},
      {"", "", true},
      {"", "a", false},
      {"a", "", false},
      {"studio-*", "studio-media", true},
      {"studio-*", "studio-", true},
      {"studio-*", "studio", false},
      {"*-media", "studio-media", true},
      {"*-media", "studio-media-x", false},
      {"*.logs", "a.b.logs", true},  // '*' crosses dots
      {"a*b*c", "abc", true},
      {"a*b*c", "axxbyyc", true},
      {"a*b*c", "axxbyycz", false},
      {"a*b*c", "acb", false},
      {"shot-???", "shot-010", true},
      {"shot-???", "shot-01", false},
      {"shot-???", "shot-0100", false},
      {"?", "", false},
      {"*?", "", false},
      {"*?", "x", true},
      {"**", "x", true},
      {"*a", "aaaa", true},
      {"*ab", "aab", true},
      {"*aab", "aaab", true},
      {"a*", "b", false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.pattern, row.text);
    CHECK(globMatch(row.pattern, row.text) == row.match);
  }
}

TEST_CASE("globMatch does not backtrack exponentially", "[net]") {
  // Classic recursive matchers take exponential time on these; ours is O(p*t).
  const std::string text(4000, 'a');
  std::string pattern;
  for (int i = 0; i < 60; ++i) {
    pattern += "*a";
  }
  CHECK(globMatch(pattern, text));
  CHECK_FALSE(globMatch(pattern + "b", text));
  CHECK_FALSE(globMatch(std::string(500, '*') + "b", text));
  CHECK(globMatch("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*", text));
  CHECK_FALSE(globMatch("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", text));
  const std::string long_pattern(5000, '?');
  CHECK_FALSE(globMatch(long_pattern, text));
}

TEST_CASE("hostPatternMatch", "[net]") {
  struct Row {
    const char* pattern;
    const char* host;
    bool match;
  };
  const Row rows[] = {
      {"sts.us-west-2.amazonaws.com", "sts.us-west-2.amazonaws.com", true},
      {"sts.us-west-2.amazonaws.com", "STS.us-west-2.amazonaws.com", true},
      {"sts.us-west-2.amazonaws.com", "xsts.us-west-2.amazonaws.com", false},
      {"sts.us-west-2.amazonaws.com", "sts.us-west-2.amazonaws.com.evil", false},
      {"*.b.c", "a.b.c", true},
      {"*.b.c", "x.a.b.c", true},
      {"*.b.c", "b.c", false},
      {"*.b.c", "ab.c", false},
      {"*.b.c", ".b.c", false},
      {"*.b.c", "a..b.c", false},
      {"*.b.c", "a.b.c.d", false},
      {"*.B.C", "a.b.c", true},
      {"*", "a", false},  // only "*." + suffix is a pattern
      {"*.", "a.", false},
      {"a.*.c", "a.b.c", false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.pattern, row.host);
    CHECK(hostPatternMatch(row.pattern, row.host) == row.match);
  }
}
