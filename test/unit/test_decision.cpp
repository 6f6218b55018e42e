// The decision (acl/decision.h) and the reasons (acl/reason.h): tables that assert
// the verdict, the reason and the rule, never just allow/deny.

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "acl/decision.h"
#include "acl/reason.h"
#include "config/config.h"
#include "proxy/http_parser.h"
#include "test/unit/test_helpers.h"

using namespace s3gate;
using s3gate::test::ip;
using s3gate::test::net;

namespace {

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
      {"underscore is a valid name", B, "10.1.2.3", CONNECT, "CONNECT", "_svc.internal.example",
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
      {"wildcard hosts entry is one label, not deeper", B, "10.1.2.3", CONNECT, "CONNECT",
       "a.b.vault.internal.example", 443, "", "", false, DENY, host_not_allowed, "-"},
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
      {"mapped public", {}, "::ffff:52.218.1.7", true},
      // NAT64, 6to4 and IPv4-compatible answers reach the IPv4 address they carry.
      {"NAT64 loopback", {}, "64:ff9b::7f00:1", false},
      {"NAT64 metadata", {}, "64:ff9b::169.254.169.254", false},
      {"NAT64 unspecified", {}, "64:ff9b::", false},
      {"NAT64 this network", {}, "64:ff9b::1", false},
      {"NAT64 multicast", {}, "64:ff9b::e000:fb", false},
      {"NAT64 broadcast", {}, "64:ff9b::ffff:ffff", false},
      {"NAT64 public", {}, "64:ff9b::52.218.1.7", true},
      {"6to4 loopback", {}, "2002:7f00:1::1", false},
      {"6to4 metadata", {}, "2002:a9fe:a9fe::", false},
      {"6to4 unspecified", {}, "2002::", false},
      {"6to4 multicast", {}, "2002:e000:fb::1", false},
      {"6to4 broadcast", {}, "2002:ffff:ffff::1", false},
      {"6to4 public", {}, "2002:34da:107::1", true},
      {"compatible loopback", {}, "::127.0.0.1", false},
      {"compatible metadata", {}, "::169.254.169.254", false},
      {"compatible this network", {}, "::2", false},
      {"compatible public", {}, "::52.218.1.7", true},
      {"NAT64 loopback, v4 loopback listed", {"127.0.0.0/8"}, "64:ff9b::7f00:1", false},
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
      {copy_source_not_allowed, "copy_source_not_allowed", 403, "Forbidden", "http_request_denied",
       true, false},
      {inspect_not_covered, "inspect_not_covered", 403, "Forbidden", "http_request_denied", false,
       false},
      {dns_pin_violation, "dns_pin_violation", 403, "Forbidden", "destination_ip_prohibited", false,
       false},
      {auth_required, "auth_required", 407, "Proxy Authentication Required", "http_request_denied",
       false, false},
      {auth_failed, "auth_failed", 407, "Proxy Authentication Required", "http_request_denied",
       false, false},
      {client_limit, "client_limit", 429, "Too Many Requests", "connection_limit_reached", false,
       false},
      {rate_limited, "rate_limited", 429, "Too Many Requests", "connection_limit_reached", false,
       false},
      {sni_mismatch, "sni_mismatch", 200, "Connection established", "", false, false},
      {header_too_large, "header_too_large", 431, "Request Header Fields Too Large",
       "http_request_error", false, false},
      {dns_failed, "dns_failed", 502, "Bad Gateway", "dns_error", false, true},
      {connect_failed, "connect_failed", 502, "Bad Gateway", "connection_refused", false, true},
      {upstream_tls_failed, "upstream_tls_failed", 502, "Bad Gateway", "tls_certificate_error",
       false, true},
      {upstream_bad_response, "upstream_bad_response", 502, "Bad Gateway", "http_protocol_error",
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

// ---------------------------------------------------------------------------
// Host spellings end to end: the request target as a client writes it, through the
// target parser (proxy/http_parser.h: userinfo, '#', percent signs and port
// spellings are refused there) and decide(), to the parsed name and the reason.

namespace {

Config spellingConfig(PolicyMode mode = PolicyMode::enforce) {
  Config c;
  c.mode = mode;
  c.clients = {net("10.0.0.0/8")};
  c.s3.regions = {"us-west-2", "us-east-1", "cn-north-1", "us-gov-west-1"};
  c.s3.path_style = PathStyle::deny;
  c.buckets = {bucket("media", Access::read_write), bucket("allowed", Access::read_write),
               bucket("vfx.*", Access::read_only), bucket("media--*--x-s3", Access::read_write)};
  c.hosts = {
      hostRule("sts.us-west-2.amazonaws.com", {443}),
      hostRule("listed-111122223333.s3-accesspoint.us-west-2.amazonaws.com", {443}),
      hostRule("111122223333.s3-control.us-west-2.amazonaws.com", {443, 8443}),
      hostRule("fast.s3-accelerate.amazonaws.com", {443}),
  };
  c.ports = {443};
  return c;
}

struct Spelling {
  const char* method;
  std::string target;  // as written on the request line
  Reason parse;        // the target parser's verdict (none: parsed, decide() ran)
  S3NameKind kind;
  const char* region;
  std::string bucket;
  bool dualstack;
  bool fips;
  Verdict verdict;
  Reason reason;  // decide()'s (or the parser's) reason
};

std::vector<Spelling> spellingTable() {
  const auto N = S3NameKind::not_s3;
  const auto E = S3NameKind::endpoint;
  const auto V = S3NameKind::virtual_hosted;
  const auto AP = S3NameKind::access_point;
  const auto CTL = S3NameKind::s3_control;
  const auto ACC = S3NameKind::accelerate;
  const auto MRAP = S3NameKind::multi_region_access_point;
  const auto OL = S3NameKind::object_lambda;
  const auto OUT = S3NameKind::outposts;
  const auto EXP = S3NameKind::express;
  const std::string media = "media.s3.us-west-2.amazonaws.com";
  const std::string label63(63, 'a');
  const std::string label64(64, 'a');
  const std::string label58(58, 'c');
  const std::string name254 = label63 + "." + label63 + "." + label63 + "." + label58 + ".com";
  using enum Reason;
  const auto C = "CONNECT";
  const auto G = "GET";
  return {
      // The bucket endpoints, every form and case.
      {C, media + ":443", none, V, "us-west-2", "media", false, false, ALLOW, none},
      {C, "MEDIA.S3.US-WEST-2.AMAZONAWS.COM:443", none, V, "us-west-2", "media", false, false,
       ALLOW, none},
      {C, "Media.S3.Us-West-2.AmazonAWS.Com.:443", none, V, "us-west-2", "media", false, false,
       ALLOW, none},
      {C, media + "..:443", none, N, "", "", false, false, DENY, bad_host},
      {C, "media.s3-us-west-2.amazonaws.com:443", none, V, "us-west-2", "media", false, false,
       ALLOW, none},
      {C, "media.s3.dualstack.us-west-2.amazonaws.com:443", none, V, "us-west-2", "media", true,
       false, ALLOW, none},
      {C, "media.s3-fips.us-gov-west-1.amazonaws.com:443", none, V, "us-gov-west-1", "media", false,
       true, ALLOW, none},
      {C, "media.s3-fips.dualstack.us-gov-west-1.amazonaws.com:443", none, V, "us-gov-west-1",
       "media", true, true, ALLOW, none},
      {C, "media.s3.amazonaws.com:443", none, V, "us-east-1", "media", false, false, ALLOW, none},
      {C, "media.s3-external-1.amazonaws.com:443", none, V, "us-east-1", "media", false, false,
       ALLOW, none},
      {C, "media.s3.cn-north-1.amazonaws.com.cn:443", none, V, "cn-north-1", "media", false, false,
       ALLOW, none},
      {C, "vfx.seq.010.s3.us-west-2.amazonaws.com:443", none, V, "us-west-2", "vfx.seq.010", false,
       false, ALLOW, none},
      {C, "other.s3.us-west-2.amazonaws.com:443", none, V, "us-west-2", "other", false, false, DENY,
       bucket_not_allowed},
      {C, "media.s3.eu-west-1.amazonaws.com:443", none, V, "eu-west-1", "media", false, false, DENY,
       region_not_allowed},
      {C, "s3.us-west-2.amazonaws.com:443", none, E, "us-west-2", "", false, false, DENY,
       path_style_denied},
      {C, media + ":8443", none, V, "us-west-2", "media", false, false, DENY, port_not_allowed},
      {C, media + ":65535", none, V, "us-west-2", "media", false, false, DENY, port_not_allowed},
      {C, label63 + ".s3.us-west-2.amazonaws.com:443", none, V, "us-west-2", label63, false, false,
       DENY, bucket_not_allowed},

      // Port spellings: only plain decimal 1-65535, always written for CONNECT.
      {C, media + ":0443", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":65536", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":99999999999", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":0", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media, bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":+443", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":0x1bb", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, media + ":443:443", bad_host, N, "", "", false, false, DENY, bad_host},
      {G, "http://" + media + ":0080/x", bad_request, N, "", "", false, false, DENY, bad_request},

      // Userinfo, '#', percent signs, schemes.
      {C, "user@" + media + ":443", bad_request, N, "", "", false, false, DENY, bad_request},
      {C, "user:pw@" + media + ":443", bad_request, N, "", "", false, false, DENY, bad_request},
      {G, "http://user@" + media + "/x", bad_request, N, "", "", false, false, DENY, bad_request},
      {G, "http://allowed.s3.us-west-2.amazonaws.com@evil.com/", bad_request, N, "", "", false,
       false, DENY, bad_request},
      {G, "http://allowed.s3.us-west-2.amazonaws.com:443@evil.com/", bad_request, N, "", "", false,
       false, DENY, bad_request},
      {G, "http://" + media + "/x#frag", bad_request, N, "", "", false, false, DENY, bad_request},
      {G, "http://evil.com#@" + media + "/", bad_request, N, "", "", false, false, DENY,
       bad_request},
      {C, media + "#.evil.com:443", bad_host, N, "", "", false, false, DENY, bad_host},
      {C, "media%2es3.us-west-2.amazonaws.com:443", bad_host, N, "", "", false, false, DENY,
       bad_host},
      {G, "http://media%2Es3.us-west-2.amazonaws.com/", bad_host, N, "", "", false, false, DENY,
       bad_host},
      {G, "http://" + media + "%00.evil.com/", bad_host, N, "", "", false, false, DENY, bad_host},
      {C, "media.s3.us-west-2.amazonaws.com/:443", bad_request, N, "", "", false, false, DENY,
       bad_request},
      {G, "https://" + media + "/x", bad_request, N, "", "", false, false, DENY, bad_request},
      {G, "http://" + media + "/x", none, V, "us-west-2", "media", false, false, ALLOW, none},
      {G, "HTTP://Media.S3.us-west-2.amazonaws.com./x", none, V, "us-west-2", "media", false, false,
       ALLOW, none},
      {G, "http://" + media + ":80/x", none, V, "us-west-2", "media", false, false, ALLOW, none},
      {G, "http://" + media + ":443/x", none, V, "us-west-2", "media", false, false, DENY,
       port_not_allowed},
      {G, "http://s3.us-west-2.amazonaws.com/media/x", none, E, "us-west-2", "media", false, false,
       ALLOW, none},
      {G, "http://s3.us-west-2.amazonaws.com/med%69a/x", none, E, "us-west-2", "media", false,
       false, ALLOW, none},
      {G, "http://s3.us-west-2.amazonaws.com/other/x", none, E, "us-west-2", "other", false, false,
       DENY, bucket_not_allowed},
      {G, "http://s3.us-west-2.amazonaws.com/media%2Fx/y", none, E, "us-west-2", "", false, false,
       DENY, bad_request},

      // Empty and over-long labels and names.
      {C, "media..s3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY, bad_host},
      {C, ".media.s3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY, bad_host},
      {C, ":443", bad_host, N, "", "", false, false, DENY, bad_host},
      {C, label64 + ".s3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY,
       bad_host},
      {C, name254 + ":443", none, N, "", "", false, false, DENY, bad_host},
      {C, "-media.s3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY, bad_host},
      {C, "media-.s3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY, bad_host},

      // IP literals in every spelling.
      {C, "52.218.1.7:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "127.0.0.1:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "2130706433:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "0x7f000001:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "0X7F000001:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "0177.0.0.1:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "017700000001:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "127.1:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "0x7f.1:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "169.254.169.254.:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "[::1]:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "[::ffff:169.254.169.254]:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "[::ffff:a9fe:a9fe]:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "[fd00:ec2::254]:443", none, N, "", "", false, false, DENY, ip_literal_denied},
      {C, "[fe80::1%25eth0]:443", bad_host, N, "", "", false, false, DENY, bad_host},
      {C, "::1:443", bad_host, N, "", "", false, false, DENY, bad_host},
      {C, "1.2.3.256:443", none, N, "", "", false, false, DENY, bad_host},
      {G, "http://169.254.169.254/latest/meta-data/", none, N, "", "", false, false, DENY,
       ip_literal_denied},
      {G, "http://0xa9fea9fe/latest/meta-data/", none, N, "", "", false, false, DENY,
       ip_literal_denied},
      {G, "http://[::1]/", none, N, "", "", false, false, DENY, ip_literal_denied},

      // Label-exact look-alikes.
      {C, "allowed.s3.us-west-2.amazonaws.com.evil.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "xallowed.s3.us-west-2.amazonaws.com:443", none, V, "us-west-2", "xallowed", false, false,
       DENY, bucket_not_allowed},
      {C, "allowedx.s3.us-west-2.amazonaws.com:443", none, V, "us-west-2", "allowedx", false, false,
       DENY, bucket_not_allowed},
      {C, "allowed.s3.us-west-2.amazonaws.com.:443", none, V, "us-west-2", "allowed", false, false,
       ALLOW, none},
      {C, "allowed.s3.us-west-2.amazonaws.comx:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "allowed-s3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "allowed.s3.us-west-2.amazonaws.com.cn:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "allowed.s3.us-west-2.evil.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "allowed.s3.us-west-2.amazonaws.com-evil.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "allowed.xs3.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "sts.us-west-2.amazonaws.com:443", none, N, "", "", false, false, ALLOW, none},
      {C, "xsts.us-west-2.amazonaws.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "sts.us-west-2.amazonaws.com.evil.com:443", none, N, "", "", false, false, DENY,
       host_not_allowed},

      // The S3 services that are not bucket endpoints: denied unless listed in hosts,
      // even where the bucket in front is one a rule allows.
      {C, "media-111122223333.s3-accesspoint.us-west-2.amazonaws.com:443", none, AP, "us-west-2",
       "", false, false, DENY, host_not_allowed},
      {C, "media-111122223333.s3-accesspoint.dualstack.us-west-2.amazonaws.com:443", none, AP,
       "us-west-2", "", true, false, DENY, host_not_allowed},
      {C, "media-111122223333.s3-accesspoint-fips.us-gov-west-1.amazonaws.com:443", none, AP,
       "us-gov-west-1", "", false, true, DENY, host_not_allowed},
      {C, "media-111122223333.s3-accesspoint-fips.dualstack.us-gov-west-1.amazonaws.com:443", none,
       AP, "us-gov-west-1", "", true, true, DENY, host_not_allowed},
      {C, "media-111122223333.s3-accesspoint.cn-north-1.amazonaws.com.cn:443", none, AP,
       "cn-north-1", "", false, false, DENY, host_not_allowed},
      {C, "media-111122223333.s3-accesspoint.eu-west-1.amazonaws.com:443", none, AP, "eu-west-1",
       "", false, false, DENY, host_not_allowed},
      {C, "Listed-111122223333.S3-AccessPoint.us-west-2.amazonaws.com.:443", none, AP, "us-west-2",
       "", false, false, ALLOW, none},
      {C, "listed-111122223333.s3-accesspoint.us-west-2.amazonaws.com:8443", none, AP, "us-west-2",
       "", false, false, DENY, port_not_allowed},
      {C, "xlisted-111122223333.s3-accesspoint.us-west-2.amazonaws.com:443", none, AP, "us-west-2",
       "", false, false, DENY, host_not_allowed},
      {C, "listed-111122223333.s3-accesspoint.us-west-2.amazonaws.com.evil.com:443", none, N, "",
       "", false, false, DENY, host_not_allowed},
      {G, "http://media-111122223333.s3-accesspoint.us-west-2.amazonaws.com/x", none, AP,
       "us-west-2", "", false, false, DENY, host_not_allowed},
      {C, "111122223333.s3-control.us-west-2.amazonaws.com:443", none, CTL, "us-west-2", "", false,
       false, ALLOW, none},
      {C, "111122223333.s3-control.us-west-2.amazonaws.com:8443", none, CTL, "us-west-2", "", false,
       false, ALLOW, none},
      {C, "s3-control.us-west-2.amazonaws.com:443", none, CTL, "us-west-2", "", false, false, DENY,
       host_not_allowed},
      {C, "s3-control-fips.us-gov-west-1.amazonaws.com:443", none, CTL, "us-gov-west-1", "", false,
       true, DENY, host_not_allowed},
      {C, "s3-control.dualstack.us-west-2.amazonaws.com:443", none, CTL, "us-west-2", "", true,
       false, DENY, host_not_allowed},
      {C, "999999999999.s3-control-fips.dualstack.us-east-1.amazonaws.com:443", none, CTL,
       "us-east-1", "", true, true, DENY, host_not_allowed},
      {C, "media.s3-accelerate.amazonaws.com:443", none, ACC, "", "media", false, false, DENY,
       host_not_allowed},
      {C, "media.s3-accelerate.dualstack.amazonaws.com:443", none, ACC, "", "media", true, false,
       DENY, host_not_allowed},
      {C, "s3-accelerate.amazonaws.com:443", none, ACC, "", "", false, false, DENY,
       host_not_allowed},
      {C, "fast.s3-accelerate.amazonaws.com:443", none, ACC, "", "fast", false, false, ALLOW, none},
      {G, "http://media.s3-accelerate.amazonaws.com/x", none, ACC, "", "media", false, false, DENY,
       host_not_allowed},
      {C, "media.s3-accelerate.amazonaws.com.cn:443", none, N, "", "", false, false, DENY,
       host_not_allowed},
      {C, "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com:443", none, MRAP, "", "", false,
       false, DENY, host_not_allowed},
      {C, "olap-111122223333.s3-object-lambda.us-west-2.amazonaws.com:443", none, OL, "us-west-2",
       "", false, false, DENY, host_not_allowed},
      {C, "ap-111122223333.op-01ac5d28a6a232904.s3-outposts.us-west-2.amazonaws.com:443", none, OUT,
       "us-west-2", "", false, false, DENY, host_not_allowed},
      // S3 Express One Zone is a bucket endpoint: its directory buckets are held to the
      // bucket rules, its regional endpoint to s3.path_style.
      {C, "media--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443", none, EXP,
       "us-west-2", "media--usw2-az1--x-s3", false, false, ALLOW, none},
      {C, "Media--USW2-AZ1--x-s3.S3Express-usw2-az1.us-west-2.amazonaws.com.:443", none, EXP,
       "us-west-2", "media--usw2-az1--x-s3", false, false, ALLOW, none},
      {C, "other--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443", none, EXP,
       "us-west-2", "other--usw2-az1--x-s3", false, false, DENY, bucket_not_allowed},
      {C, "media--use1-az4--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443", none, EXP,
       "us-west-2", "media--use1-az4--x-s3", false, false, DENY, host_not_allowed},
      {C, "media.s3express-usw2-az1.us-west-2.amazonaws.com:443", none, EXP, "us-west-2", "media",
       false, false, DENY, host_not_allowed},
      {C, "media--usw2-az1--x-s3.s3express-usw2-az1.eu-west-1.amazonaws.com:443", none, EXP,
       "eu-west-1", "media--usw2-az1--x-s3", false, false, DENY, region_not_allowed},
      {C, "media--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:8443", none, EXP,
       "us-west-2", "media--usw2-az1--x-s3", false, false, DENY, port_not_allowed},
      {C, "s3express-control.us-west-2.amazonaws.com:443", none, EXP, "us-west-2", "", false, false,
       DENY, path_style_denied},
      {C, "s3express-usw2-az1.us-west-2.amazonaws.com:443", none, EXP, "us-west-2", "", false,
       false, DENY, path_style_denied},
      {G, "http://s3express-control.us-west-2.amazonaws.com/media--usw2-az1--x-s3", none, EXP,
       "us-west-2", "media--usw2-az1--x-s3", false, false, ALLOW, none},
      {G, "http://s3express-control.us-west-2.amazonaws.com/other--usw2-az1--x-s3", none, EXP,
       "us-west-2", "other--usw2-az1--x-s3", false, false, DENY, bucket_not_allowed},
      {G, "http://media--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com/k", none, EXP,
       "us-west-2", "media--usw2-az1--x-s3", false, false, ALLOW, none},
      {C, "my_bucket.s3express-usw2-az1.us-west-2.amazonaws.com:443", none, N, "", "", false, false,
       DENY, host_not_allowed},
      // ...and a bucket named like one of them is a bucket.
      {C, "s3-accelerate.s3.us-west-2.amazonaws.com:443", none, V, "us-west-2", "s3-accelerate",
       false, false, DENY, bucket_not_allowed},
      {C, "media.s3-accesspoint.s3.us-west-2.amazonaws.com:443", none, V, "us-west-2",
       "media.s3-accesspoint", false, false, DENY, bucket_not_allowed},
  };
}

}  // namespace

TEST_CASE("decide: host spellings through the target parser", "[decision][spelling]") {
  const Config config = spellingConfig();
  const auto rows = spellingTable();
  CHECK(rows.size() >= 80);
  for (const auto& row : rows) {
    CAPTURE(row.method, row.target);
    RequestTarget target;
    const Reason parsed = parseRequestTarget(row.method, row.target, &target);
    CHECK(reasonName(parsed) == reasonName(row.parse));
    Decision d;
    if (parsed != Reason::none) {
      d.reason = parsed;  // as the session and `explain` do: decide() never runs
    } else {
      DecisionInput in;
      in.client = ip("10.1.2.3");
      in.kind = std::string_view(row.method) == "CONNECT" ? CONNECT : HTTP;
      in.method = row.method;
      in.host = target.host;
      in.host_is_ipv6_literal = target.host_is_ipv6_literal;
      in.port = target.port;
      in.port_given = target.port_given;
      in.path = target.path;
      d = decide(config, in);
    }
    CAPTURE(d.host, d.detail);
    CHECK(verdictName(d.verdict) == verdictName(row.verdict));
    CHECK(reasonName(d.reason) == reasonName(row.reason));
    CHECK(s3NameKindName(d.name.kind) == s3NameKindName(row.kind));
    CHECK(d.name.region == row.region);
    CHECK(d.name.bucket == row.bucket);
    CHECK(d.name.dualstack == row.dualstack);
    CHECK(d.name.fips == row.fips);
  }
}

TEST_CASE("decide: the S3 services that are not bucket endpoints say what they are", "[decision]") {
  struct Row {
    const char* host;
    const char* says;
  };
  const Row rows[] = {
      {"media-111122223333.s3-accesspoint.us-west-2.amazonaws.com", "an S3 Access Point name"},
      {"111122223333.s3-control.us-west-2.amazonaws.com", "an S3 Control name"},
      {"media.s3-accelerate.amazonaws.com", "an S3 Transfer Acceleration name"},
      {"mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com",
       "an S3 Multi-Region Access Point name"},
      {"olap-111122223333.s3-object-lambda.us-west-2.amazonaws.com", "an S3 Object Lambda name"},
      {"s3-outposts.us-west-2.amazonaws.com", "an S3 on Outposts name"},
  };
  Config config = makeConfig(Cfg::base);
  config.buckets.push_back(bucket("*", Access::read_write));  // no bucket rule helps
  config.s3.regions = {"*"};
  for (const auto& row : rows) {
    CAPTURE(row.host);
    DecisionInput in;
    in.client = ip("10.1.2.3");
    in.host = row.host;
    in.port = 443;
    in.port_given = true;
    Decision d = decide(config, in);
    CAPTURE(d.detail);
    CHECK(d.verdict == DENY);
    CHECK(d.reason == Reason::host_not_allowed);
    CHECK(d.rule == "-");
    CHECK(d.detail.rfind(std::string(row.host) + " is " + row.says, 0) == 0);
    CHECK(d.detail.find("list it under hosts to allow it") != std::string::npos);
    CHECK(d.detail.find('\n') == std::string::npos);

    // Report mode lets it through with the same reason and detail.
    Config report = config;
    report.mode = PolicyMode::report;
    const Decision r = decide(report, in);
    CHECK(r.verdict == REPORT);
    CHECK(r.reason == Reason::host_not_allowed);
    CHECK(r.detail == d.detail);

    // Listed in hosts: its ports, no region or bucket step.
    config.hosts.push_back(hostRule(row.host, {443}));
    d = decide(config, in);
    CHECK(d.verdict == ALLOW);
    CHECK(d.reason == Reason::none);
    CHECK(d.rule == "-");
    in.port = 8443;
    CHECK(decide(config, in).reason == Reason::port_not_allowed);
    config.hosts.pop_back();
  }
  // A plain unknown name keeps the plain wording.
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.host = "example.com";
  in.port = 443;
  in.port_given = true;
  CHECK(decide(config, in).detail == "example.com is not an S3 endpoint or an allowed host");
}

TEST_CASE("decide: a listed service name is not held to s3.regions or ports", "[decision]") {
  Config config = spellingConfig();
  config.s3.regions = {"eu-west-1"};
  config.ports = {9999};
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.host = "111122223333.s3-control.us-west-2.amazonaws.com";
  in.port = 8443;
  in.port_given = true;
  const Decision d = decide(config, in);
  CHECK(d.verdict == ALLOW);
  CHECK(d.name.kind == S3NameKind::s3_control);
  CHECK(d.name.region == "us-west-2");
}

// ---------------------------------------------------------------------------
// S3 Express One Zone (SPEC section 3): a bucket endpoint, held to the bucket,
// region and port rules; a `hosts` entry cannot widen it.

TEST_CASE("decide: S3 Express names and their denials", "[decision][express]") {
  Config config = makeConfig(Cfg::base);
  config.buckets.push_back(bucket("scratch--*--x-s3", Access::read_only));
  config.hosts.push_back(
      hostRule("scratch--use1-az4--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com", {443}));
  auto run = [&](const char* host, RequestKindForDecision kind = CONNECT,
                 const char* method = "CONNECT", const char* path = "") {
    DecisionInput in;
    in.client = ip("10.1.2.3");
    in.kind = kind;
    in.method = method;
    in.host = host;
    in.port = kind == HTTP ? 80 : 443;
    in.port_given = true;
    in.path = path;
    return decide(config, in);
  };

  Decision d = run("scratch--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com");
  CHECK(d.verdict == ALLOW);
  CHECK(d.rule == "scratch--*--x-s3");
  CHECK(s3NameKindName(d.name.kind) == "express");
  CHECK(d.name.bucket == "scratch--usw2-az1--x-s3");
  CHECK(d.name.zone == "usw2-az1");

  // Read-only rule: the method step applies to what s3gate can see.
  d = run("scratch--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com", HTTP, "PUT", "/k");
  CHECK(d.reason == Reason::method_not_allowed);
  CHECK(d.rule == "scratch--*--x-s3");

  // A bucket of another zone: host_not_allowed naming both zones, even when a `hosts`
  // entry lists the exact name (an S3 endpoint is never widened by `hosts`).
  d = run("scratch--use1-az4--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com");
  CHECK(d.verdict == DENY);
  CHECK(d.reason == Reason::host_not_allowed);
  CHECK(d.rule == "-");
  CHECK(d.detail.find("is in zone use1-az4, not in the endpoint's zone usw2-az1") !=
        std::string::npos);

  // Not a directory bucket name.
  d = run("scratch.s3express-usw2-az1.us-west-2.amazonaws.com");
  CHECK(d.reason == Reason::host_not_allowed);
  CHECK(d.detail.find("is not a directory bucket name") != std::string::npos);

  // The regional endpoint: like path-style.
  d = run("s3express-control.us-west-2.amazonaws.com");
  CHECK(d.reason == Reason::path_style_denied);
  CHECK(d.detail.find("S3 Express") != std::string::npos);
  CHECK(d.detail.find("BUCKET.") == std::string::npos);  // no virtual-hosted advice
  d = run("s3express-control.us-west-2.amazonaws.com", HTTP, "PUT", "/scratch--usw2-az1--x-s3");
  CHECK(d.reason == Reason::method_not_allowed);
  CHECK(d.name.bucket == "scratch--usw2-az1--x-s3");
  config.s3.path_style = PathStyle::allow;
  d = run("s3express-control.us-west-2.amazonaws.com");
  CHECK(d.verdict == ALLOW);
  CHECK(d.rule == "-");

  // The regions step.
  config.s3.regions = {"us-east-1"};
  d = run("scratch--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com");
  CHECK(d.reason == Reason::region_not_allowed);

  // Report mode: the zone mismatch is a policy denial like any host_not_allowed.
  config.s3.regions = {"*"};
  config.mode = PolicyMode::report;
  d = run("scratch--use1-az4--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com");
  CHECK(d.verdict == REPORT);
  CHECK(d.reason == Reason::host_not_allowed);
}

// ---------------------------------------------------------------------------
// `hosts` globs: a label "*" is one whole label.

TEST_CASE("hostsEntryMatches", "[decision][hosts]") {
  struct Row {
    const char* pattern;
    const char* host;
    bool match;
  };
  const Row rows[] = {
      {"sts.us-west-2.amazonaws.com", "sts.us-west-2.amazonaws.com", true},
      {"sts.us-west-2.amazonaws.com", "STS.US-West-2.amazonaws.com", true},
      {"sts.us-west-2.amazonaws.com", "sts.us-west-1.amazonaws.com", false},
      {"sts.us-west-2.amazonaws.com", "xsts.us-west-2.amazonaws.com", false},
      {"sts.us-west-2.amazonaws.com", "sts.us-west-2.amazonaws.com.evil.com", false},
      {"sts.*.amazonaws.com", "sts.us-west-2.amazonaws.com", true},
      {"sts.*.amazonaws.com", "sts.eu-central-1.amazonaws.com", true},
      {"sts.*.amazonaws.com", "sts.amazonaws.com", false},      // "*" is one label, never none
      {"sts.*.amazonaws.com", "sts.a.b.amazonaws.com", false},  // ...nor two
      {"sts.*.amazonaws.com", "sts..amazonaws.com", false},
      {"sts.*.amazonaws.com", "xsts.us-west-2.amazonaws.com", false},
      {"sts.*.amazonaws.com", "sts.us-west-2.amazonaws.com.cn", false},
      {"sts.*.amazonaws.com", "sts.us-west-2.amazonaws.comx", false},
      {"sts.*.amazonaws.com", "sts.us-west-2.xamazonaws.com", false},
      {"*.internal.example", "vault.internal.example", true},
      {"*.internal.example", "internal.example", false},
      {"*.internal.example", "a.b.internal.example", false},
      {"*.internal.example", "xinternal.example", false},
      {"*.internal.example", ".internal.example", false},
      {"*.*.internal.example", "a.b.internal.example", true},
      {"*.*.internal.example", "a.internal.example", false},
      {"*.s3-accesspoint.*.amazonaws.com", "ap-111122223333.s3-accesspoint.us-west-2.amazonaws.com",
       true},
      {"*.s3-accesspoint.*.amazonaws.com",
       "ap-111122223333.s3-accesspoint.dualstack.us-west-2.amazonaws.com", false},
      // '*' inside a label is no wildcard (the loader refuses such a pattern).
      {"sts-*.amazonaws.com", "sts-x.amazonaws.com", false},
      {"", "", false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.pattern, row.host);
    CHECK(hostsEntryMatches(row.pattern, row.host) == row.match);
    // Every pattern the matcher treats as a glob is one the loader accepts.
    if (row.match) {
      CHECK(isValidHostPattern(row.pattern));
    }
  }
}

TEST_CASE("decide: hosts globs, their ports, and what they cannot widen", "[decision][hosts]") {
  Config config = makeConfig(Cfg::base);
  config.hosts = {hostRule("sts.*.amazonaws.com", {443}),
                  hostRule("*.s3-accesspoint.us-west-2.amazonaws.com", {443}),
                  hostRule("*.s3.us-west-2.amazonaws.com", {443})};
  auto run = [&](const char* host, uint16_t port = 443) {
    DecisionInput in;
    in.client = ip("10.1.2.3");
    in.host = host;
    in.port = port;
    in.port_given = true;
    return decide(config, in);
  };
  CHECK(run("sts.us-west-2.amazonaws.com").verdict == ALLOW);
  CHECK(run("STS.EU-West-1.amazonaws.com.").verdict == ALLOW);
  CHECK(run("sts.us-west-2.amazonaws.com", 8443).reason == Reason::port_not_allowed);
  CHECK(run("sts.amazonaws.com").reason == Reason::host_not_allowed);
  CHECK(run("sts.a.b.amazonaws.com").reason == Reason::host_not_allowed);
  Decision d = run("media-111122223333.s3-accesspoint.us-west-2.amazonaws.com");
  CHECK(d.verdict == ALLOW);
  CHECK(d.name.kind == S3NameKind::access_point);
  CHECK(run("media-111122223333.s3-accesspoint.eu-west-1.amazonaws.com").reason ==
        Reason::host_not_allowed);
  // A glob over a bucket endpoint widens nothing: the bucket rules still decide.
  d = run("other-bucket.s3.us-west-2.amazonaws.com");
  CHECK(d.reason == Reason::bucket_not_allowed);
}

// ---------------------------------------------------------------------------
// Step 7: the copy source of a request s3gate can see.

namespace {

struct CopyRow {
  const char* what;
  PolicyMode mode;
  const char* client;
  RequestKindForDecision kind;
  const char* method;
  const char* host;
  const char* path;
  const char* identity;
  std::string copy_source;
  Verdict verdict;
  Reason reason;
  const char* rule;
  const char* logged;  // Decision::copy_source->logText(); "" when none
};

Config copyConfig(PolicyMode mode) {
  Config c = makeConfig(Cfg::base);
  c.mode = mode;
  c.buckets.push_back(bucket("scratch--*--x-s3", Access::read_write));
  c.hosts.push_back(hostRule("listed-111122223333.s3-accesspoint.us-west-2.amazonaws.com", {443}));
  c.hosts.push_back(
      hostRule("op-ap-111122223333.op-01ac5d28a6a232904.s3-outposts.us-west-2."
               "amazonaws.com",
               {443}));
  return c;
}

std::vector<CopyRow> copyTable() {
  const auto E = PolicyMode::enforce;
  const auto R = PolicyMode::report;
  const char* const dst = "studio-media.s3.us-west-2.amazonaws.com";
  const char* const arn = "arn:aws:s3:us-west-2:111122223333:accesspoint/";
  using enum Reason;
  return {
      // Allowed sources, every spelling.
      {"no copy source", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "", ALLOW, none, "studio-media",
       ""},
      {"same bucket", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "/studio-media/a.exr", ALLOW, none,
       "studio-media", "studio-media/a.exr"},
      {"read-only source is enough", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "renders-1/f.exr",
       ALLOW, none, "studio-media", "renders-1/f.exr"},
      {"encoded whole", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "renders-1%2Ff%20x.exr", ALLOW,
       none, "studio-media", "renders-1/f x.exr"},
      {"encoded bucket", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "render%73-1/f", ALLOW, none,
       "studio-media", "renders-1/f"},
      {"with a version", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "renders-1/f?versionId=Lq3.x_y",
       ALLOW, none, "studio-media", "renders-1/f"},
      {"UploadPartCopy", E, "10.1.2.3", HTTP, "PUT", dst, "/k?partNumber=2&uploadId=u", "",
       "renders-1/f", ALLOW, none, "studio-media", "renders-1/f"},
      {"directory bucket source", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "scratch--usw2-az1--x-s3/tmp", ALLOW, none, "studio-media", "scratch--usw2-az1--x-s3/tmp"},
      {"inspected request", E, "10.1.2.3", INSPECT, "PUT", dst, "/k", "", "renders-1/f", ALLOW,
       none, "studio-media", "renders-1/f"},
      {"access point listed in hosts", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       std::string(arn) + "listed/object/k", ALLOW, none, "studio-media",
       "arn:aws:s3:us-west-2:111122223333:accesspoint/listed/object/k"},
      {"Outposts access point listed", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-01ac5d28a6a232904/accesspoint/"
       "op-ap/object/k",
       ALLOW, none, "studio-media",
       "arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-01ac5d28a6a232904/accesspoint/"
       "op-ap/object/k"},
      {"narrowed source rule, inside", E, "10.9.1.1", HTTP, "PUT", dst, "/k", "", "secure-vault/k",
       ALLOW, none, "studio-media", "secure-vault/k"},
      {"identity source rule, right identity", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "render-farm",
       "cert-only/k", ALLOW, none, "studio-media", "cert-only/k"},
      {"CONNECT ignores it", E, "10.1.2.3", CONNECT, "CONNECT", dst, "", "", "other-bucket/k",
       ALLOW, none, "studio-media", ""},

      // Sources not allowed.
      {"unknown bucket", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "other-bucket/k", DENY,
       copy_source_not_allowed, "-", "other-bucket/k"},
      {"unknown bucket, leading slash", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "/other-bucket/k", DENY, copy_source_not_allowed, "-", "other-bucket/k"},
      {"unknown bucket, encoded", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "other-bucket%2Fk",
       DENY, copy_source_not_allowed, "-", "other-bucket/k"},
      {"encoding cannot disguise the bucket", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "studio-media%2Fx%2F..%2F..%2Fother-bucket/k", ALLOW, none, "studio-media",
       "studio-media/x/../../other-bucket/k"},
      {"narrowed source rule, outside", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "secure-vault/k",
       DENY, copy_source_not_allowed, "-", "secure-vault/k"},
      {"identity source rule, other identity", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "workstation",
       "cert-only/k", DENY, copy_source_not_allowed, "-", "cert-only/k"},
      {"access point not listed", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       std::string(arn) + "studio-media/object/k", DENY, copy_source_not_allowed, "-",
       "arn:aws:s3:us-west-2:111122223333:accesspoint/studio-media/object/k"},
      {"access point listed for another account", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "arn:aws:s3:us-west-2:999999999999:accesspoint/listed/object/k", DENY,
       copy_source_not_allowed, "-",
       "arn:aws:s3:us-west-2:999999999999:accesspoint/listed/object/k"},
      {"access point listed in another region", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "arn:aws:s3:eu-west-1:111122223333:accesspoint/listed/object/k", DENY,
       copy_source_not_allowed, "-",
       "arn:aws:s3:eu-west-1:111122223333:accesspoint/listed/object/k"},
      {"inspected, unknown bucket", E, "10.1.2.3", INSPECT, "PUT", dst, "/k", "", "other-bucket/k",
       DENY, copy_source_not_allowed, "-", "other-bucket/k"},
      {"path-style destination", E, "10.1.2.3", HTTP, "PUT", kEndpoint, "/studio-media/k", "",
       "other-bucket/k", DENY, copy_source_not_allowed, "-", "other-bucket/k"},
      {"hosts entry destination is held to it too", E, "10.1.2.3", HTTP, "PUT", "plain.example",
       "/k", "", "other-bucket/k", DENY, copy_source_not_allowed, "-", "other-bucket/k"},
      {"hosts entry destination, allowed source", E, "10.1.2.3", HTTP, "PUT", "plain.example", "/k",
       "", "renders-1/k", ALLOW, none, "-", "renders-1/k"},

      // Earlier steps come first.
      {"method before copy source", E, "10.1.2.3", HTTP, "PUT",
       "renders-1.s3.us-west-2.amazonaws.com", "/k", "", "other-bucket/k", DENY, method_not_allowed,
       "renders-*", "other-bucket/k"},
      {"bucket before copy source", E, "10.1.2.3", HTTP, "PUT",
       "other-bucket.s3.us-west-2.amazonaws.com", "/k", "", "other-bucket/k", DENY,
       bucket_not_allowed, "-", "other-bucket/k"},
      {"client before malformed copy source", E, "192.168.1.1", HTTP, "PUT", dst, "/k", "", "media",
       DENY, client_not_allowed, "-", ""},

      // Malformed: 400 bad_request, in every mode.
      {"no key", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "studio-media", DENY, bad_request, "-",
       ""},
      {"bad escape", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "studio-media/k%2", DENY,
       bad_request, "-", ""},
      {"encoded CR LF", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "studio-media/k%0d%0ax", DENY,
       bad_request, "-", ""},
      {"invalid bucket", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "Studio-Media/k", DENY,
       bad_request, "-", ""},
      {"bad ARN", E, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       "arn:aws:s3:us-west-2:111122223333:bucket/x/object/k", DENY, bad_request, "-", ""},
      {"report: malformed still denied", R, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "/", DENY,
       bad_request, "-", ""},
      {"report: malformed beats an earlier policy denial", R, "10.1.2.3", HTTP, "PUT",
       "other-bucket.s3.us-west-2.amazonaws.com", "/k", "", "media", DENY, bad_request, "-", ""},

      // Report mode lets a source that is not allowed through, with its reason.
      {"report: unknown bucket", R, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "other-bucket/k",
       REPORT, copy_source_not_allowed, "studio-media", "other-bucket/k"},
      {"report: access point not listed", R, "10.1.2.3", HTTP, "PUT", dst, "/k", "",
       std::string(arn) + "studio-media/object/k", REPORT, copy_source_not_allowed, "studio-media",
       "arn:aws:s3:us-west-2:111122223333:accesspoint/studio-media/object/k"},
      {"report: allowed stays allow", R, "10.1.2.3", HTTP, "PUT", dst, "/k", "", "renders-1/k",
       ALLOW, none, "studio-media", "renders-1/k"},
  };
}

}  // namespace

TEST_CASE("decide: step 7, the copy source", "[decision][copy_source]") {
  for (const auto& row : copyTable()) {
    const Config config = copyConfig(row.mode);
    DecisionInput in;
    const IpAddress client = ip(row.client);
    in.client = client;
    in.kind = row.kind;
    in.method = row.method;
    in.host = row.host;
    in.port = row.kind == HTTP ? 80 : 443;
    in.port_given = true;
    in.path = row.path;
    in.identity = row.identity;
    in.copy_source = row.copy_source;
    const Decision d = decide(config, in);
    CAPTURE(row.what, row.copy_source, d.detail);
    CHECK(verdictName(d.verdict) == verdictName(row.verdict));
    CHECK(reasonName(d.reason) == reasonName(row.reason));
    CHECK(d.rule == row.rule);
    CHECK((d.copy_source ? d.copy_source->logText() : std::string()) == row.logged);
    if (d.reason == Reason::copy_source_not_allowed) {
      CHECK(d.detail.rfind("copy source ", 0) == 0);
    }
    if (d.reason == Reason::bad_request) {
      CHECK(d.detail.find("x-amz-copy-source") != std::string::npos);
    }
    CHECK(d.detail.find('\n') == std::string::npos);
  }
}

TEST_CASE("decide: the copy-source denial names what is missing", "[decision][copy_source]") {
  const Config config = copyConfig(PolicyMode::enforce);
  DecisionInput in;
  in.client = ip("10.1.2.3");
  in.kind = HTTP;
  in.method = "PUT";
  in.host = "studio-media.s3.us-west-2.amazonaws.com";
  in.port = 80;
  in.path = "/k";
  in.copy_source = "other-bucket/k";
  CHECK(decide(config, in).detail == "copy source bucket other-bucket is not allowed");
  in.copy_source = "arn:aws:s3:us-west-2:111122223333:accesspoint/ap1/object/k";
  CHECK(decide(config, in).detail ==
        "copy source access point ap1-111122223333.s3-accesspoint.us-west-2.amazonaws.com is not "
        "listed under hosts");
  in.copy_source = "studio-media";
  CHECK(decide(config, in).detail == "the x-amz-copy-source header cannot be read (no_key)");
}
