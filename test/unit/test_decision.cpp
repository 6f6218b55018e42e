// The decision (acl/decision.h) and the reasons (acl/reason.h): tables that assert
// the verdict, the reason and the rule, never just allow/deny.

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "acl/config.h"
#include "acl/decision.h"
#include "acl/reason.h"

using namespace s3gate;

namespace {

IpAddress ip(const char* text) {
  auto parsed = IpAddress::parse(text);
  REQUIRE(parsed.has_value());
  return *parsed;
}

Network net(const char* text) {
  auto parsed = Network::parse(text);
  REQUIRE(parsed.has_value());
  return *parsed;
}

BucketRule bucket(const char* name, Access access, std::vector<Network> clients = {},
                  std::vector<std::string> identities = {}) {
  BucketRule rule;
  rule.name = name;
  rule.access = access;
  rule.clients = std::move(clients);
  rule.identities = std::move(identities);
  return rule;
}

HostRule hostRule(const char* name, std::vector<uint16_t> ports) {
  HostRule rule;
  rule.name = name;
  rule.ports = std::move(ports);
  return rule;
}

enum class Cfg {
  base,        // enforce, the rules below
  report,      // base in mode: report
  west_only,   // base with s3.regions [us-west-2]
  path_allow,  // base with s3.path_style: allow
  star,        // base plus a read-only "*" rule for 10.5.0.0/16
};

Config makeConfig(Cfg which) {
  const auto RO = Access::read_only;
  const auto RW = Access::read_write;
  Config c;
  c.clients = {net("10.0.0.0/8"), net("127.0.0.0/8"), net("::1"), net("2001:db8::/32")};
  c.s3.regions = {"us-west-2", "us-east-1", "cn-north-1", "us-gov-west-1"};
  c.s3.path_style = PathStyle::deny;
  c.buckets = {
      bucket("studio-media", RW),
      bucket("renders-*", RO),
      bucket("vfx.shots.*", RW),
      bucket("secure-vault", RW, {net("10.9.0.0/16")}),
      bucket("cert-only", RW, {}, {"render-farm"}),
      bucket("shot-???", RO),
      // The first matching rule decides, even when a later one is wider.
      bucket("archive-*", RO, {net("10.1.0.0/16")}),
      bucket("archive-2024", RW),
  };
  c.hosts = {
      hostRule("sts.us-west-2.amazonaws.com", {443}),
      hostRule("*.internal.example", {443, 8443}),
      hostRule("plain.example", {80, 443}),
  };
  c.ports = {443};
  switch (which) {
    case Cfg::base:
      break;
    case Cfg::report:
      c.mode = PolicyMode::report;
      break;
    case Cfg::west_only:
      c.s3.regions = {"us-west-2"};
      break;
    case Cfg::path_allow:
      c.s3.path_style = PathStyle::allow;
      break;
    case Cfg::star:
      c.buckets.push_back(bucket("*", RO, {net("10.5.0.0/16")}));
      break;
  }
  return c;
}

const auto CONNECT = RequestKindForDecision::connect;
const auto HTTP = RequestKindForDecision::http;
const auto INSPECT = RequestKindForDecision::inspect;
const auto ALLOW = Verdict::allow;
const auto DENY = Verdict::deny;
const auto REPORT = Verdict::report;

struct Row {
  const char* what;
  Cfg cfg;
  const char* client;
  RequestKindForDecision kind;
  const char* method;
  std::string host;
  int port;  // -1: none written
  const char* path;
  const char* identity;
  bool ipv6_literal;
  Verdict verdict;
  Reason reason;
  const char* rule;
};

const char* const kMedia = "studio-media.s3.us-west-2.amazonaws.com";
const char* const kEndpoint = "s3.us-west-2.amazonaws.com";

std::vector<Row> decisionTable() {
  const auto B = Cfg::base;
  const auto R = Cfg::report;
  const std::string long_label(64, 'a');
  std::string long_name;
  for (int i = 0; i < 4; ++i) {
    long_name += std::string(62, 'b') + ".";
  }
  long_name += "com";  // 255 characters
  using enum Reason;
  return {
      // Allowed, every endpoint form.
      {"virtual-hosted", B, "10.1.2.3", CONNECT, "CONNECT", kMedia, 443, "", "", false, ALLOW, none,
       "studio-media"},
      {"dualstack", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.dualstack.us-west-2.amazonaws.com", 443, "", "", false, ALLOW, none,
       "studio-media"},
      {"dash form", B, "10.1.2.3", CONNECT, "CONNECT", "studio-media.s3-us-west-2.amazonaws.com",
       443, "", "", false, ALLOW, none, "studio-media"},
      {"fips gov", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3-fips.us-gov-west-1.amazonaws.com", 443, "", "", false, ALLOW, none,
       "studio-media"},
      {"fips dualstack gov", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3-fips.dualstack.us-gov-west-1.amazonaws.com", 443, "", "", false, ALLOW,
       none, "studio-media"},
      {"global name", B, "10.1.2.3", CONNECT, "CONNECT", "studio-media.s3.amazonaws.com", 443, "",
       "", false, ALLOW, none, "studio-media"},
      {"external-1", B, "10.1.2.3", CONNECT, "CONNECT", "studio-media.s3-external-1.amazonaws.com",
       443, "", "", false, ALLOW, none, "studio-media"},
      {"china", B, "10.1.2.3", CONNECT, "CONNECT", "studio-media.s3.cn-north-1.amazonaws.com.cn",
       443, "", "", false, ALLOW, none, "studio-media"},
      {"glob", B, "10.1.2.3", CONNECT, "CONNECT", "renders-2024.s3.us-west-2.amazonaws.com", 443,
       "", "", false, ALLOW, none, "renders-*"},
      {"glob across dots", B, "10.1.2.3", CONNECT, "CONNECT",
       "vfx.shots.seq010.sh020.s3.us-west-2.amazonaws.com", 443, "", "", false, ALLOW, none,
       "vfx.shots.*"},
      {"? glob", B, "10.1.2.3", CONNECT, "CONNECT", "shot-010.s3.us-west-2.amazonaws.com", 443, "",
       "", false, ALLOW, none, "shot-???"},
      {"upper case and trailing dot", B, "10.1.2.3", CONNECT, "CONNECT",
       "STUDIO-Media.S3.US-West-2.AmazonAWS.com.", 443, "", "", false, ALLOW, none, "studio-media"},
      {"IPv6 client", B, "2001:db8::5", CONNECT, "CONNECT", kMedia, 443, "", "", false, ALLOW, none,
       "studio-media"},
      {"loopback client", B, "127.0.0.1", CONNECT, "CONNECT", kMedia, 443, "", "", false, ALLOW,
       none, "studio-media"},

      // 1. The client comes first, whatever else is wrong.
      {"client not allowed", B, "192.168.1.1", CONNECT, "CONNECT", kMedia, 443, "", "", false, DENY,
       client_not_allowed, "-"},
      {"client before bad host", B, "192.168.1.1", CONNECT, "CONNECT", "bad host!", 443, "", "",
       false, DENY, client_not_allowed, "-"},
      {"client before IP literal", B, "192.168.1.1", CONNECT, "CONNECT", "127.0.0.1", 443, "", "",
       false, DENY, client_not_allowed, "-"},
      {"client before unknown host", B, "192.168.1.1", CONNECT, "CONNECT", "example.com", 443, "",
       "", false, DENY, client_not_allowed, "-"},
      {"client before port", B, "192.168.1.1", CONNECT, "CONNECT", kMedia, 22, "", "", false, DENY,
       client_not_allowed, "-"},
      {"IPv6 client outside", B, "2001:db9::5", CONNECT, "CONNECT", kMedia, 443, "", "", false,
       DENY, client_not_allowed, "-"},
      {"mapped client is not unmapped by decide", B, "::ffff:10.1.2.3", CONNECT, "CONNECT", kMedia,
       443, "", "", false, DENY, client_not_allowed, "-"},

      // 2. The name: not a DNS name.
      {"space", B, "10.1.2.3", CONNECT, "CONNECT", "exa mple.com", 443, "", "", false, DENY,
       bad_host, "-"},
      {"empty", B, "10.1.2.3", CONNECT, "CONNECT", "", 443, "", "", false, DENY, bad_host, "-"},
      {"just a dot", B, "10.1.2.3", CONNECT, "CONNECT", ".", 443, "", "", false, DENY, bad_host,
       "-"},
      {"two trailing dots", B, "10.1.2.3", CONNECT, "CONNECT", std::string(kMedia) + "..", 443, "",
       "", false, DENY, bad_host, "-"},
      {"empty label", B, "10.1.2.3", CONNECT, "CONNECT", "studio-media..s3.us-west-2.amazonaws.com",
       443, "", "", false, DENY, bad_host, "-"},
      {"leading hyphen", B, "10.1.2.3", CONNECT, "CONNECT", "-x.internal.example", 443, "", "",
       false, DENY, bad_host, "-"},
      {"trailing hyphen", B, "10.1.2.3", CONNECT, "CONNECT", "x-.internal.example", 443, "", "",
       false, DENY, bad_host, "-"},
      {"label of 64", B, "10.1.2.3", CONNECT, "CONNECT", long_label + ".internal.example", 443, "",
       "", false, DENY, bad_host, "-"},
      {"name of 255", B, "10.1.2.3", CONNECT, "CONNECT", long_name, 443, "", "", false, DENY,
       bad_host, "-"},
      {"non-ASCII", B, "10.1.2.3", CONNECT, "CONNECT", "\xc3\xbc.internal.example", 443, "", "",
       false, DENY, bad_host, "-"},
      {"NUL", B, "10.1.2.3", CONNECT, "CONNECT", std::string("a\0b.internal.example", 20), 443, "",
       "", false, DENY, bad_host, "-"},
      {"slash", B, "10.1.2.3", CONNECT, "CONNECT", "a/b.internal.example", 443, "", "", false, DENY,
       bad_host, "-"},
      {"numeric top-level label", B, "10.1.2.3", CONNECT, "CONNECT", "1.2.3.256", 443, "", "",
       false, DENY, bad_host, "-"},
      {"bracketed non-address", B, "10.1.2.3", CONNECT, "CONNECT", "[zz::1]", 443, "", "", false,
       DENY, bad_host, "-"},
      {"IPv6 flag, not an address", B, "10.1.2.3", CONNECT, "CONNECT", "zz::1", 443, "", "", true,
       DENY, bad_host, "-"},
      {"IPv6 flag on a name", B, "10.1.2.3", CONNECT, "CONNECT", "sts.us-west-2.amazonaws.com", 443,
       "", "", true, DENY, bad_host, "-"},
      {"underscore is a valid name", B, "10.1.2.3", CONNECT, "CONNECT", "_svc.x.internal.example",
       443, "", "", false, ALLOW, none, "-"},

      // 2. IP literals, every spelling.
      {"dotted quad", B, "10.1.2.3", CONNECT, "CONNECT", "52.218.1.7", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"loopback", B, "10.1.2.3", CONNECT, "CONNECT", "127.0.0.1", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"decimal", B, "10.1.2.3", CONNECT, "CONNECT", "2130706433", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"hex", B, "10.1.2.3", CONNECT, "CONNECT", "0x7f000001", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"upper-case hex", B, "10.1.2.3", CONNECT, "CONNECT", "0X7F000001", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"octal", B, "10.1.2.3", CONNECT, "CONNECT", "0177.0.0.1", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"short form", B, "10.1.2.3", CONNECT, "CONNECT", "127.1", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"hex parts", B, "10.1.2.3", CONNECT, "CONNECT", "0x7f.0x0.0x0.0x1", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"trailing dot", B, "10.1.2.3", CONNECT, "CONNECT", "169.254.169.254.", 443, "", "", false,
       DENY, ip_literal_denied, "-"},
      {"bracketed IPv6", B, "10.1.2.3", CONNECT, "CONNECT", "[::1]", 443, "", "", false, DENY,
       ip_literal_denied, "-"},
      {"unbracketed IPv6", B, "10.1.2.3", CONNECT, "CONNECT", "::1", 443, "", "", true, DENY,
       ip_literal_denied, "-"},
      {"IPv4-mapped", B, "10.1.2.3", CONNECT, "CONNECT", "[::ffff:169.254.169.254]", 443, "", "",
       false, DENY, ip_literal_denied, "-"},
      {"IPv6 upper case", B, "10.1.2.3", CONNECT, "CONNECT", "2600:1F14::1", 443, "", "", true,
       DENY, ip_literal_denied, "-"},
      {"plain HTTP literal", B, "10.1.2.3", HTTP, "GET", "52.218.1.7", -1, "/studio-media/x", "",
       false, DENY, ip_literal_denied, "-"},

      // 3. The name against S3 and `hosts`.
      {"unknown host", B, "10.1.2.3", CONNECT, "CONNECT", "example.com", 443, "", "", false, DENY,
       host_not_allowed, "-"},
      {"suffix bypass", B, "10.1.2.3", CONNECT, "CONNECT",
       "allowed.s3.us-west-2.amazonaws.com.evil.com", 443, "", "", false, DENY, host_not_allowed,
       "-"},
      {"commercial region under .cn", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.us-west-2.amazonaws.com.cn", 443, "", "", false, DENY, host_not_allowed,
       "-"},
      {"China region under .com", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.cn-north-1.amazonaws.com", 443, "", "", false, DENY, host_not_allowed, "-"},
      {"prefix look-alike", B, "10.1.2.3", CONNECT, "CONNECT", "xs3.us-west-2.amazonaws.com", 443,
       "", "", false, DENY, host_not_allowed, "-"},
      {"invalid bucket name", B, "10.1.2.3", CONNECT, "CONNECT",
       "my_bucket.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, host_not_allowed, "-"},
      {"address-shaped bucket", B, "10.1.2.3", CONNECT, "CONNECT",
       "192.168.5.4.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, host_not_allowed, "-"},
      {"wildcard host needs a label", B, "10.1.2.3", CONNECT, "CONNECT", "internal.example", 443,
       "", "", false, DENY, host_not_allowed, "-"},
      {"wildcard host is label-exact", B, "10.1.2.3", CONNECT, "CONNECT", "xinternal.example", 443,
       "", "", false, DENY, host_not_allowed, "-"},
      {"region not served", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.eu-west-1.amazonaws.com", 443, "", "", false, DENY, region_not_allowed,
       "-"},
      {"made-up region", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.zz-nowhere-9.amazonaws.com", 443, "", "", false, DENY, region_not_allowed,
       "-"},
      {"region before port", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.eu-west-1.amazonaws.com", 8443, "", "", false, DENY, region_not_allowed,
       "-"},
      {"region before bucket", B, "10.1.2.3", CONNECT, "CONNECT",
       "nobody.s3.eu-west-1.amazonaws.com", 443, "", "", false, DENY, region_not_allowed, "-"},
      {"global name, us-east-1 not served", Cfg::west_only, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.amazonaws.com", 443, "", "", false, DENY, region_not_allowed, "-"},
      {"bare global endpoint, us-east-1 not served", Cfg::west_only, "10.1.2.3", CONNECT, "CONNECT",
       "s3.amazonaws.com", 443, "", "", false, DENY, region_not_allowed, "-"},
      {"external-1, us-east-1 not served", Cfg::west_only, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3-external-1.amazonaws.com", 443, "", "", false, DENY, region_not_allowed,
       "-"},

      // 4. The port.
      {"S3 port not in ports", B, "10.1.2.3", CONNECT, "CONNECT", kMedia, 8443, "", "", false, DENY,
       port_not_allowed, "-"},
      {"S3 CONNECT to 80", B, "10.1.2.3", CONNECT, "CONNECT", kMedia, 80, "", "", false, DENY,
       port_not_allowed, "-"},
      {"port before bucket", B, "10.1.2.3", CONNECT, "CONNECT", "nobody.s3.us-west-2.amazonaws.com",
       8443, "", "", false, DENY, port_not_allowed, "-"},
      {"port before path style", B, "10.1.2.3", CONNECT, "CONNECT", kEndpoint, 8443, "", "", false,
       DENY, port_not_allowed, "-"},
      {"hosts entry", B, "10.1.2.3", CONNECT, "CONNECT", "sts.us-west-2.amazonaws.com", 443, "", "",
       false, ALLOW, none, "-"},
      {"hosts entry, upper case", B, "10.1.2.3", CONNECT, "CONNECT", "STS.us-west-2.amazonaws.com.",
       443, "", "", false, ALLOW, none, "-"},
      {"hosts entry, other port", B, "10.1.2.3", CONNECT, "CONNECT", "sts.us-west-2.amazonaws.com",
       8443, "", "", false, DENY, port_not_allowed, "-"},
      {"wildcard hosts entry, its port", B, "10.1.2.3", CONNECT, "CONNECT",
       "vault.internal.example", 8443, "", "", false, ALLOW, none, "-"},
      {"wildcard hosts entry, deeper", B, "10.1.2.3", CONNECT, "CONNECT",
       "a.b.vault.internal.example", 443, "", "", false, ALLOW, none, "-"},
      {"wildcard hosts entry, other port", B, "10.1.2.3", CONNECT, "CONNECT",
       "vault.internal.example", 22, "", "", false, DENY, port_not_allowed, "-"},

      // 5. The bucket.
      {"no rule", B, "10.1.2.3", CONNECT, "CONNECT", "other-bucket.s3.us-west-2.amazonaws.com", 443,
       "", "", false, DENY, bucket_not_allowed, "-"},
      {"exact name is exact", B, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media2.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, bucket_not_allowed,
       "-"},
      {"glob needs its prefix", B, "10.1.2.3", CONNECT, "CONNECT",
       "renders.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, bucket_not_allowed, "-"},
      {"? is one character", B, "10.1.2.3", CONNECT, "CONNECT",
       "shot-0100.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, bucket_not_allowed, "-"},
      {"clients-narrowed rule, inside", B, "10.9.1.1", CONNECT, "CONNECT",
       "secure-vault.s3.us-west-2.amazonaws.com", 443, "", "", false, ALLOW, none, "secure-vault"},
      {"clients-narrowed rule, outside", B, "10.1.2.3", CONNECT, "CONNECT",
       "secure-vault.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, bucket_not_allowed,
       "-"},
      {"identity-narrowed rule, right CN", B, "10.1.2.3", CONNECT, "CONNECT",
       "cert-only.s3.us-west-2.amazonaws.com", 443, "", "render-farm", false, ALLOW, none,
       "cert-only"},
      {"identity-narrowed rule, other CN", B, "10.1.2.3", CONNECT, "CONNECT",
       "cert-only.s3.us-west-2.amazonaws.com", 443, "", "workstation", false, DENY,
       bucket_not_allowed, "-"},
      {"identity-narrowed rule, no certificate", B, "10.1.2.3", CONNECT, "CONNECT",
       "cert-only.s3.us-west-2.amazonaws.com", 443, "", "", false, DENY, bucket_not_allowed, "-"},
      {"path-style CONNECT", B, "10.1.2.3", CONNECT, "CONNECT", kEndpoint, 443, "", "", false, DENY,
       path_style_denied, "-"},
      {"path-style CONNECT, global", B, "10.1.2.3", CONNECT, "CONNECT", "s3.amazonaws.com", 443, "",
       "", false, DENY, path_style_denied, "-"},
      {"path-style CONNECT, path_style allow", Cfg::path_allow, "10.1.2.3", CONNECT, "CONNECT",
       kEndpoint, 443, "", "", false, ALLOW, none, "-"},
      {"path-style CONNECT, \"*\" rule covers the client", Cfg::star, "10.5.1.1", CONNECT,
       "CONNECT", kEndpoint, 443, "", "", false, ALLOW, none, "*"},
      {"path-style CONNECT, \"*\" rule not for this client", Cfg::star, "10.1.2.3", CONNECT,
       "CONNECT", kEndpoint, 443, "", "", false, DENY, path_style_denied, "-"},
      {"a \"*\" rule allows any bucket", Cfg::star, "10.5.1.1", CONNECT, "CONNECT",
       "anything.s3.us-west-2.amazonaws.com", 443, "", "", false, ALLOW, none, "*"},
      {"earlier rule before \"*\"", Cfg::star, "10.5.1.1", CONNECT, "CONNECT", kMedia, 443, "", "",
       false, ALLOW, none, "studio-media"},

      // Plain HTTP: port rule, path-style bucket, method.
      {"http GET, no port", B, "10.1.2.3", HTTP, "GET", kMedia, -1, "/shot/010.exr", "", false,
       ALLOW, none, "studio-media"},
      {"http PUT read-write", B, "10.1.2.3", HTTP, "PUT", kMedia, -1, "/shot/010.exr", "", false,
       ALLOW, none, "studio-media"},
      {"http port 80", B, "10.1.2.3", HTTP, "GET", kMedia, 80, "/x", "", false, ALLOW, none,
       "studio-media"},
      {"http port 443", B, "10.1.2.3", HTTP, "GET", kMedia, 443, "/x", "", false, DENY,
       port_not_allowed, "-"},
      {"http port 8080", B, "10.1.2.3", HTTP, "GET", kMedia, 8080, "/x", "", false, DENY,
       port_not_allowed, "-"},
      {"http GET read-only", B, "10.1.2.3", HTTP, "GET", "renders-1.s3.us-west-2.amazonaws.com", -1,
       "/f.exr", "", false, ALLOW, none, "renders-*"},
      {"http HEAD read-only", B, "10.1.2.3", HTTP, "HEAD", "renders-1.s3.us-west-2.amazonaws.com",
       -1, "/f.exr", "", false, ALLOW, none, "renders-*"},
      {"http PUT read-only", B, "10.1.2.3", HTTP, "PUT", "renders-1.s3.us-west-2.amazonaws.com", -1,
       "/f.exr", "", false, DENY, method_not_allowed, "renders-*"},
      {"http DELETE read-only", B, "10.1.2.3", HTTP, "DELETE",
       "renders-1.s3.us-west-2.amazonaws.com", -1, "/f.exr", "", false, DENY, method_not_allowed,
       "renders-*"},
      {"http POST read-only", B, "10.1.2.3", HTTP, "POST", "renders-1.s3.us-west-2.amazonaws.com",
       -1, "/f.exr?uploads", "", false, DENY, method_not_allowed, "renders-*"},
      {"methods are case-sensitive", B, "10.1.2.3", HTTP, "get",
       "renders-1.s3.us-west-2.amazonaws.com", -1, "/f.exr", "", false, DENY, method_not_allowed,
       "renders-*"},
      {"first matching rule decides", B, "10.1.2.3", HTTP, "PUT",
       "archive-2024.s3.us-west-2.amazonaws.com", -1, "/x", "", false, DENY, method_not_allowed,
       "archive-*"},
      {"narrowed rule skipped for others", B, "10.2.0.1", HTTP, "PUT",
       "archive-2024.s3.us-west-2.amazonaws.com", -1, "/x", "", false, ALLOW, none, "archive-2024"},
      {"path-style GET", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/studio-media/shot/010.exr",
       "", false, ALLOW, none, "studio-media"},
      {"path-style bucket only", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/studio-media", "",
       false, ALLOW, none, "studio-media"},
      {"path-style with query", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1,
       "/studio-media?list-type=2", "", false, ALLOW, none, "studio-media"},
      {"path-style PUT read-only", B, "10.1.2.3", HTTP, "PUT", kEndpoint, -1, "/renders-9/f.exr",
       "", false, DENY, method_not_allowed, "renders-*"},
      {"path-style unknown bucket", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/other/x", "",
       false, DENY, bucket_not_allowed, "-"},
      {"path-style bucket is decoded", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1,
       "/studio%2dmedia/x", "", false, ALLOW, none, "studio-media"},
      {"path-style encoded slash", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/renders-1%2Fx/y",
       "", false, DENY, bad_request, "-"},
      {"path-style broken escape", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/studio-media%2", "",
       false, DENY, bad_request, "-"},
      {"path-style bad hex", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/studio%zzmedia/x", "",
       false, DENY, bad_request, "-"},
      {"path-style no bucket (ListBuckets)", B, "10.1.2.3", HTTP, "GET", kEndpoint, -1, "/", "",
       false, DENY, bucket_not_allowed, "-"},
      {"path-style no bucket, \"*\" rule", Cfg::star, "10.5.1.1", HTTP, "GET", kEndpoint, -1, "/",
       "", false, ALLOW, none, "*"},
      {"path_style allow is for CONNECT only", Cfg::path_allow, "10.1.2.3", HTTP, "GET", kEndpoint,
       -1, "/other/x", "", false, DENY, bucket_not_allowed, "-"},
      {"path-style on the global endpoint", B, "10.1.2.3", HTTP, "GET", "s3.amazonaws.com", -1,
       "/studio-media/x", "", false, ALLOW, none, "studio-media"},
      {"http hosts entry with 80", B, "10.1.2.3", HTTP, "GET", "plain.example", -1, "/", "", false,
       ALLOW, none, "-"},
      {"http hosts entry, any method", B, "10.1.2.3", HTTP, "DELETE", "plain.example", 80, "/x", "",
       false, ALLOW, none, "-"},
      {"http hosts entry without 80", B, "10.1.2.3", HTTP, "GET", "sts.us-west-2.amazonaws.com", -1,
       "/", "", false, DENY, port_not_allowed, "-"},
      {"http hosts entry, URL port", B, "10.1.2.3", HTTP, "GET", "plain.example", 443, "/", "",
       false, DENY, port_not_allowed, "-"},

      // Inside an inspected tunnel: the tunnel's port, the method checked.
      {"inspect GET", B, "10.1.2.3", INSPECT, "GET", kMedia, 443, "/x", "", false, ALLOW, none,
       "studio-media"},
      {"inspect PUT read-only", B, "10.1.2.3", INSPECT, "PUT",
       "renders-1.s3.us-west-2.amazonaws.com", 443, "/x", "", false, DENY, method_not_allowed,
       "renders-*"},
      {"inspect path-style", B, "10.1.2.3", INSPECT, "PUT", kEndpoint, 443, "/renders-1/x", "",
       false, DENY, method_not_allowed, "renders-*"},
      {"inspect path-style allowed", B, "10.1.2.3", INSPECT, "PUT", kEndpoint, 443,
       "/studio-media/x", "", false, ALLOW, none, "studio-media"},
      {"inspect, port not in ports", B, "10.1.2.3", INSPECT, "GET", kMedia, 8443, "/x", "", false,
       DENY, port_not_allowed, "-"},

      // Report mode: policy denials pass with their reason; bad input still denies.
      {"report: allowed stays allow", R, "10.1.2.3", CONNECT, "CONNECT", kMedia, 443, "", "", false,
       ALLOW, none, "studio-media"},
      {"report: client", R, "192.168.1.1", CONNECT, "CONNECT", kMedia, 443, "", "", false, REPORT,
       client_not_allowed, "studio-media"},
      {"report: host", R, "10.1.2.3", CONNECT, "CONNECT", "example.com", 443, "", "", false, REPORT,
       host_not_allowed, "-"},
      {"report: region", R, "10.1.2.3", CONNECT, "CONNECT",
       "studio-media.s3.eu-west-1.amazonaws.com", 443, "", "", false, REPORT, region_not_allowed,
       "studio-media"},
      {"report: port", R, "10.1.2.3", CONNECT, "CONNECT", kMedia, 8443, "", "", false, REPORT,
       port_not_allowed, "studio-media"},
      {"report: bucket", R, "10.1.2.3", CONNECT, "CONNECT",
       "other-bucket.s3.us-west-2.amazonaws.com", 443, "", "", false, REPORT, bucket_not_allowed,
       "-"},
      {"report: path style", R, "10.1.2.3", CONNECT, "CONNECT", kEndpoint, 443, "", "", false,
       REPORT, path_style_denied, "-"},
      {"report: method", R, "10.1.2.3", HTTP, "PUT", "renders-1.s3.us-west-2.amazonaws.com", -1,
       "/x", "", false, REPORT, method_not_allowed, "renders-*"},
      {"report: IP literal", R, "10.1.2.3", CONNECT, "CONNECT", "0x7f000001", 443, "", "", false,
       REPORT, ip_literal_denied, "-"},
      {"report: first policy reason wins", R, "192.168.1.1", CONNECT, "CONNECT",
       "other-bucket.s3.us-west-2.amazonaws.com", 8443, "", "", false, REPORT, client_not_allowed,
       "-"},
      {"report: bad host still denied", R, "10.1.2.3", CONNECT, "CONNECT", "bad host", 443, "", "",
       false, DENY, bad_host, "-"},
      {"report: bad input beats a policy denial", R, "192.168.1.1", CONNECT, "CONNECT", "bad host",
       443, "", "", false, DENY, bad_host, "-"},
      {"report: encoded slash still denied", R, "10.1.2.3", HTTP, "GET", kEndpoint, -1,
       "/renders-1%2Fx/y", "", false, DENY, bad_request, "-"},
  };
}

DecisionInput inputFor(const Row& row, IpAddress* client_storage) {
  *client_storage = ip(row.client);
  DecisionInput in;
  in.client = *client_storage;
  in.kind = row.kind;
  in.method = row.method;
  in.host = row.host;
  in.host_is_ipv6_literal = row.ipv6_literal;
  in.port_given = row.port >= 0;
  in.port = row.port >= 0 ? static_cast<uint16_t>(row.port) : (row.kind == HTTP ? 80 : 443);
  in.path = row.path;
  in.identity = row.identity;
  return in;
}

}  // namespace

TEST_CASE("decide: the table", "[decision]") {
  for (const auto& row : decisionTable()) {
    const Config config = makeConfig(row.cfg);
    IpAddress client;
    const DecisionInput in = inputFor(row, &client);
    const Decision d = decide(config, in);
    CAPTURE(row.what, row.host, d.detail);
    CHECK(verdictName(d.verdict) == verdictName(row.verdict));
    CHECK(reasonName(d.reason) == reasonName(row.reason));
    CHECK(d.rule == row.rule);
    CHECK(d.allowed() == (row.verdict != DENY));
    if (d.reason != Reason::none) {
      CHECK_FALSE(d.detail.empty());
      CHECK(d.detail.find('\n') == std::string::npos);
    } else {
      CHECK(d.detail.empty());
    }
  }
}

TEST_CASE("decide: every reason decide() can give is in the table", "[decision]") {
  std::set<Reason> seen;
  std::set<Verdict> verdicts;
  for (const auto& row : decisionTable()) {
    seen.insert(row.reason);
    verdicts.insert(row.verdict);
  }
  for (Reason r : {Reason::none, Reason::bad_request, Reason::bad_host, Reason::client_not_allowed,
                   Reason::host_not_allowed, Reason::region_not_allowed, Reason::bucket_not_allowed,
                   Reason::port_not_allowed, Reason::ip_literal_denied, Reason::path_style_denied,
                   Reason::method_not_allowed}) {
    CAPTURE(reasonName(r));
    CHECK(seen.count(r) == 1);
  }
  CHECK(verdicts.size() == 3);
}

TEST_CASE("decide: the parsed name and normalised host", "[decision]") {
  const Config config = makeConfig(Cfg::base);
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.kind = CONNECT;
  in.method = "CONNECT";
  in.host = "Studio-Media.S3.Dualstack.US-West-2.amazonaws.com.";
  in.port = 443;
  in.port_given = true;
  Decision d = decide(config, in);
  CHECK(d.verdict == ALLOW);
  CHECK(d.host == "studio-media.s3.dualstack.us-west-2.amazonaws.com");
  CHECK(d.port == 443);
  CHECK(d.name.kind == S3NameKind::virtual_hosted);
  CHECK(d.name.region == "us-west-2");
  CHECK(d.name.bucket == "studio-media");
  CHECK(d.name.dualstack);
  CHECK_FALSE(d.ip_literal);

  // Plain HTTP path-style: the bucket comes from the path, the port defaults to 80.
  in.kind = HTTP;
  in.method = "GET";
  in.host = kEndpoint;
  in.port = 0;
  in.port_given = false;
  in.path = "/studio-media/shot/010.exr";
  d = decide(config, in);
  CHECK(d.verdict == ALLOW);
  CHECK(d.port == 80);
  CHECK(d.name.kind == S3NameKind::endpoint);
  CHECK(d.name.bucket == "studio-media");

  // A denied client still gets its host and name parsed, for the log.
  in.client = ip("192.168.1.1");
  d = decide(config, in);
  CHECK(d.reason == Reason::client_not_allowed);
  CHECK(d.host == kEndpoint);
  CHECK(d.name.region == "us-west-2");
}

TEST_CASE("decide: IP literals carry the address", "[decision]") {
  struct Row {
    const char* host;
    bool ipv6;
    const char* address;
  };
  const Row rows[] = {
      {"2130706433", false, "127.0.0.1"},
      {"0x7f000001", false, "127.0.0.1"},
      {"0177.0.0.1", false, "127.0.0.1"},
      {"127.1", false, "127.0.0.1"},
      {"10.1", false, "10.0.0.1"},
      {"10.1.258", false, "10.1.1.2"},
      {"0xA9.0xFE.0xA9.0xFE", false, "169.254.169.254"},
      {"[::1]", false, "::1"},
      {"::1", true, "::1"},
      {"[::ffff:127.0.0.1]", false, "127.0.0.1"},  // unmapped: held to the IPv4 rules
      {"[2600:1f14::1]", false, "2600:1f14::1"},
  };
  Config config = makeConfig(Cfg::report);
  for (const auto& row : rows) {
    CAPTURE(row.host);
    DecisionInput in;
    in.client = ip("10.1.2.3");
    in.kind = CONNECT;
    in.host = row.host;
    in.host_is_ipv6_literal = row.ipv6;
    in.port = 443;
    in.port_given = true;
    const Decision d = decide(config, in);
    CHECK(d.verdict == REPORT);
    CHECK(d.reason == Reason::ip_literal_denied);
    CHECK(d.ip_literal);
    CHECK(d.literal.toString() == row.address);
    CHECK(d.host == row.address);
  }
}

TEST_CASE("decide: region_not_allowed names the region and the regions served", "[decision]") {
  const Config config = makeConfig(Cfg::west_only);
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.host = "media.s3.eu-central-1.amazonaws.com";
  in.port = 443;
  in.port_given = true;
  Decision d = decide(config, in);
  CHECK(d.reason == Reason::region_not_allowed);
  CHECK(d.detail.find("eu-central-1") != std::string::npos);
  CHECK(d.detail.find("us-west-2") != std::string::npos);

  in.host = "s3.amazonaws.com";
  d = decide(config, in);
  CHECK(d.reason == Reason::region_not_allowed);
  CHECK(d.detail.find("us-east-1") != std::string::npos);
}

TEST_CASE("decide: regions \"*\" serves any region", "[decision]") {
  Config config = makeConfig(Cfg::base);
  config.s3.regions = {"*"};
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.port = 443;
  in.port_given = true;
  for (const char* host :
       {"studio-media.s3.eu-west-1.amazonaws.com", "studio-media.s3.zz-made-up-7.amazonaws.com",
        "studio-media.s3.cn-northwest-1.amazonaws.com.cn", "studio-media.s3.amazonaws.com"}) {
    CAPTURE(host);
    in.host = host;
    const Decision d = decide(config, in);
    CHECK(d.verdict == ALLOW);
    CHECK(d.rule == "studio-media");
  }
}

TEST_CASE("decide: no buckets allows no bucket", "[decision]") {
  Config config = makeConfig(Cfg::base);
  config.buckets.clear();
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.host = kMedia;
  in.port = 443;
  in.port_given = true;
  CHECK(decide(config, in).reason == Reason::bucket_not_allowed);
  in.host = "sts.us-west-2.amazonaws.com";  // hosts entries are unaffected
  CHECK(decide(config, in).verdict == ALLOW);
}

TEST_CASE("normalizeHostName", "[decision]") {
  struct Row {
    const char* raw;
    bool ok;
    const char* normalised;
  };
  const Row rows[] = {
      {"Example.COM", true, "example.com"},
      {"example.com.", true, "example.com"},
      {"example.com..", false, ""},
      {"a", true, "a"},
      {"_dmarc.example.com", true, "_dmarc.example.com"},
      {"xn--bcher-kva.example", true, "xn--bcher-kva.example"},
      {"a-b.c", true, "a-b.c"},
      {"-a.c", false, ""},
      {"a-.c", false, ""},
      {".example.com", false, ""},
      {"", false, ""},
      {".", false, ""},
      {"1.2.3.4", false, ""},  // an address is not a host name
      {"host.123", false, ""},
      {"123.host", true, "123.host"},
      {"a b", false, ""},
      {"a:b", false, ""},
      {"[::1]", false, ""},
      {"a*.com", false, ""},
  };
  for (const auto& row : rows) {
    CAPTURE(row.raw);
    std::string out = "junk";
    CHECK(normalizeHostName(row.raw, &out) == row.ok);
    CHECK(out == row.normalised);
  }
  std::string out;
  CHECK(normalizeHostName(std::string(63, 'a') + ".com", &out));
  CHECK_FALSE(normalizeHostName(std::string(64, 'a') + ".com", &out));
  std::string name253;
  while (name253.size() < 253) {
    name253 += name253.empty() ? "a" : ".a";
  }
  name253.back() = 'b';
  REQUIRE(name253.size() == 253);
  CHECK(normalizeHostName(name253, &out));
  CHECK(normalizeHostName(name253 + ".", &out));  // the trailing dot does not count
  CHECK_FALSE(normalizeHostName(name253 + "c", &out));
}

TEST_CASE("parseIpLiteral", "[decision]") {
  struct Row {
    const char* host;
    bool literal;
    const char* address;
  };
  const Row rows[] = {
      {"10.0.0.1", true, "10.0.0.1"},
      {"3232235777", true, "192.168.1.1"},
      {"0xc0a80101", true, "192.168.1.1"},
      {"0300.0250.01.01", true, "192.168.1.1"},
      {"192.168.257", true, "192.168.1.1"},
      {"192.11010305", true, "192.168.1.1"},
      {"0", true, "0.0.0.0"},
      {"0x", true, "0.0.0.0"},
      {"4294967295", true, "255.255.255.255"},
      {"127.0.0.1.", true, "127.0.0.1"},
      {"[::1]", true, "::1"},
      {"::", true, "::"},
      {"[::ffff:10.0.0.1]", true, "10.0.0.1"},
      {"4294967296", false, ""},
      {"256.0.0.1", false, ""},
      {"1.2.3.4.5", false, ""},
      {"1.2.65536", false, ""},
      {"08.0.0.1", false, ""},  // not octal, and not a name either (bad_host)
      {"0xg", false, ""},
      {"1..2", false, ""},
      {".1.2.3", false, ""},
      {"example.com", false, ""},
      {"1e3", false, ""},
      {"[::1", false, ""},
      {"[]", false, ""},
      {"[1.2.3.4]", true, "1.2.3.4"},
      {"fe80::1%eth0", false, ""},
      {"", false, ""},
      {"99999999999999999999999", false, ""},
  };
  for (const auto& row : rows) {
    CAPTURE(row.host);
    IpAddress out;
    REQUIRE(parseIpLiteral(row.host, &out) == row.literal);
    if (row.literal) {
      CHECK(out.toString() == row.address);
    }
  }
}

TEST_CASE("findPin", "[decision]") {
  Config config;
  DnsPin exact;
  exact.host = "studio-media.s3.us-west-2.amazonaws.com";
  exact.addresses = {ip("10.0.9.9")};
  DnsPin wildcard;
  wildcard.host = "*.s3.us-west-2.amazonaws.com";
  wildcard.addresses = {ip("10.0.1.10"), ip("10.0.2.10")};
  DnsPin sts;
  sts.host = "sts.us-west-2.amazonaws.com";
  sts.addresses = {ip("10.0.3.10")};
  config.dns.pins = {exact, wildcard, sts};

  struct Row {
    const char* host;
    const char* pin;  // nullptr: none
  };
  const Row rows[] = {
      {"studio-media.s3.us-west-2.amazonaws.com", "studio-media.s3.us-west-2.amazonaws.com"},
      {"other.s3.us-west-2.amazonaws.com", "*.s3.us-west-2.amazonaws.com"},
      {"a.b.s3.us-west-2.amazonaws.com", "*.s3.us-west-2.amazonaws.com"},
      {"s3.us-west-2.amazonaws.com", nullptr},  // "*." needs a label before the suffix
      {"xs3.us-west-2.amazonaws.com", nullptr},
      {"sts.us-west-2.amazonaws.com", "sts.us-west-2.amazonaws.com"},
      {"other.s3.us-west-2.amazonaws.com.evil.com", nullptr},
      {"example.com", nullptr},
  };
  for (const auto& row : rows) {
    CAPTURE(row.host);
    const DnsPin* pin = findPin(config, row.host);
    if (row.pin == nullptr) {
      CHECK(pin == nullptr);
    } else {
      REQUIRE(pin != nullptr);
      CHECK(pin->host == row.pin);
    }
  }

  // The first match wins: a wildcard listed first shadows the exact pin after it.
  config.dns.pins = {wildcard, exact};
  const DnsPin* pin = findPin(config, "studio-media.s3.us-west-2.amazonaws.com");
  REQUIRE(pin != nullptr);
  CHECK(pin->host == "*.s3.us-west-2.amazonaws.com");
}

TEST_CASE("filterResolvedAddresses", "[decision]") {
  struct Row {
    const char* what;
    std::vector<const char*> allowed_networks;
    const char* address;
    bool kept;
  };
  const Row rows[] = {
      {"public, no networks", {}, "52.218.1.7", true},
      {"private, no networks", {}, "10.0.1.10", true},
      {"IPv6 public", {}, "2600:1f14::1", true},
      {"loopback", {}, "127.0.0.1", false},
      {"loopback v6", {}, "::1", false},
      {"metadata service", {}, "169.254.169.254", false},
      {"link-local v6", {}, "fe80::1", false},
      {"unspecified", {}, "0.0.0.0", false},
      {"this network", {}, "0.1.2.3", false},
      {"unspecified v6", {}, "::", false},
      {"multicast", {}, "224.0.0.251", false},
      {"multicast v6", {}, "ff02::fb", false},
      {"broadcast", {}, "255.255.255.255", false},
      {"mapped loopback", {}, "::ffff:127.0.0.1", false},
      {"mapped metadata", {}, "::ffff:169.254.169.254", false},
      {"inside", {"52.218.0.0/17"}, "52.218.1.7", true},
      {"outside", {"52.218.0.0/17"}, "52.219.1.7", false},
      {"v6 outside v4 networks", {"52.218.0.0/17"}, "2600:1f14::1", false},
      {"mapped outside v4 networks", {"52.218.0.0/17"}, "::ffff:52.218.1.7", false},
      {"special outside", {"52.218.0.0/17"}, "127.0.0.1", false},
      {"special listed", {"127.0.0.0/8"}, "127.0.0.1", true},
      {"metadata listed exactly", {"169.254.169.254/32"}, "169.254.169.254", true},
      {"metadata, another link-local listed", {"169.254.1.0/24"}, "169.254.169.254", false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.what);
    Config config;
    for (const char* n : row.allowed_networks) {
      config.dns.allowed_networks.push_back(net(n));
    }
    const auto kept = filterResolvedAddresses(config, {ip(row.address)});
    CHECK(kept.size() == (row.kept ? 1u : 0u));
  }

  // Order is kept, and only the bad addresses go.
  Config config;
  const auto kept = filterResolvedAddresses(
      config, {ip("52.218.1.7"), ip("127.0.0.1"), ip("52.218.1.8"), IpAddress()});
  REQUIRE(kept.size() == 2);
  CHECK(kept[0] == ip("52.218.1.7"));
  CHECK(kept[1] == ip("52.218.1.8"));
  CHECK(filterResolvedAddresses(config, {}).empty());
}

TEST_CASE("verdictName", "[decision]") {
  CHECK(verdictName(Verdict::allow) == "allow");
  CHECK(verdictName(Verdict::deny) == "deny");
  CHECK(verdictName(Verdict::report) == "report");
  CHECK_FALSE(Decision().allowed());  // every decision starts as deny
  CHECK(Decision().rule == "-");
}

TEST_CASE("reasons: names, statuses and Proxy-Status errors", "[reason]") {
  struct Row {
    Reason reason;
    const char* name;
    int status;
    const char* status_text;
    const char* proxy_status;
    bool policy;
    bool upstream;
  };
  using enum Reason;
  const Row rows[] = {
      {none, "", 200, "OK", "", false, false},
      {bad_request, "bad_request", 400, "Bad Request", "http_request_error", false, false},
      {bad_host, "bad_host", 400, "Bad Request", "http_request_error", false, false},
      {bad_framing, "bad_framing", 400, "Bad Request", "http_request_error", false, false},
      {client_not_allowed, "client_not_allowed", 403, "Forbidden", "http_request_denied", true,
       false},
      {host_not_allowed, "host_not_allowed", 403, "Forbidden", "http_request_denied", true, false},
      {region_not_allowed, "region_not_allowed", 403, "Forbidden", "http_request_denied", true,
       false},
      {bucket_not_allowed, "bucket_not_allowed", 403, "Forbidden", "http_request_denied", true,
       false},
      {port_not_allowed, "port_not_allowed", 403, "Forbidden", "http_request_denied", true, false},
      {ip_literal_denied, "ip_literal_denied", 403, "Forbidden", "http_request_denied", true,
       false},
      {path_style_denied, "path_style_denied", 403, "Forbidden", "http_request_denied", true,
       false},
      {method_not_allowed, "method_not_allowed", 403, "Forbidden", "http_request_denied", true,
       false},
      {untrusted_proxy, "untrusted_proxy", 403, "Forbidden", "http_request_denied", false, false},
      {client_certificate_required, "client_certificate_required", 403, "Forbidden",
       "http_request_denied", false, false},
      {dns_pin_violation, "dns_pin_violation", 403, "Forbidden", "destination_ip_prohibited", false,
       false},
      {sni_mismatch, "sni_mismatch", 200, "Connection established", "", false, false},
      {header_too_large, "header_too_large", 431, "Request Header Fields Too Large",
       "http_request_error", false, false},
      {dns_failed, "dns_failed", 502, "Bad Gateway", "dns_error", false, true},
      {connect_failed, "connect_failed", 502, "Bad Gateway", "connection_refused", false, true},
      {upstream_tls_failed, "upstream_tls_failed", 502, "Bad Gateway", "tls_certificate_error",
       false, true},
      {dns_timeout, "dns_timeout", 504, "Gateway Timeout", "dns_timeout", false, true},
      {connect_timeout, "connect_timeout", 504, "Gateway Timeout", "connection_timeout", false,
       true},
      {overloaded, "overloaded", 503, "Service Unavailable", "connection_limit_reached", false,
       false},
      {draining, "draining", 503, "Service Unavailable", "connection_limit_reached", false, false},
      {header_timeout, "header_timeout", 408, "Request Timeout", "http_request_error", false,
       false},
  };
  REQUIRE(sizeof(rows) / sizeof(rows[0]) == static_cast<size_t>(kReasonCount));
  std::set<std::string_view> names;
  for (const auto& row : rows) {
    CAPTURE(row.name);
    CHECK(reasonName(row.reason) == row.name);
    CHECK(reasonStatus(row.reason) == row.status);
    CHECK(reasonStatusText(row.reason) == row.status_text);
    CHECK(proxyStatusError(row.reason) == row.proxy_status);
    CHECK(isPolicyDenial(row.reason) == row.policy);
    CHECK(isUpstreamFailure(row.reason) == row.upstream);
    names.insert(reasonName(row.reason));
  }
  CHECK(names.size() == static_cast<size_t>(kReasonCount));  // no two share a name
}
