#include "acl/decision.h"
#include "common/text.h"

#include <algorithm>

namespace s3gate {

namespace {

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

// One part of an inet_aton() address: decimal, octal with a leading 0, or hex with
// 0x. Returns false when it is not a number in any of these spellings.
bool parseAtonPart(std::string_view part, uint64_t* value) {
  if (part.empty()) {
    return false;
  }
  int base = 10;
  if (part.size() >= 2 && part[0] == '0' && (part[1] == 'x' || part[1] == 'X')) {
    base = 16;
    part.remove_prefix(2);  // "0x" alone is 0 to inet_aton
  } else if (part.size() >= 2 && part[0] == '0') {
    base = 8;
    part.remove_prefix(1);
  }
  uint64_t v = 0;
  for (char c : part) {
    int digit;
    if (isDigit(c)) {
      digit = c - '0';
    } else if (base == 16 && lowerAscii(c) >= 'a' && lowerAscii(c) <= 'f') {
      digit = lowerAscii(c) - 'a' + 10;
    } else {
      return false;
    }
    if (digit >= base) {
      return false;
    }
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(digit);
    if (v > 0xffffffffULL) {
      return false;  // also keeps the arithmetic from overflowing
    }
  }
  *value = v;
  return true;
}

// inet_aton()'s grammar: 1 to 4 parts; every part but the last is one byte, the
// last fills the remaining bytes ("127.1" is 127.0.0.1, "2130706433" is 127.0.0.1).
bool parseAtonAddress(std::string_view text, uint32_t* out) {
  uint64_t parts[4];
  size_t count = 0;
  size_t start = 0;
  while (true) {
    if (count == 4) {
      return false;
    }
    size_t dot = text.find('.', start);
    std::string_view part = text.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (!parseAtonPart(part, &parts[count])) {
      return false;
    }
    ++count;
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  uint64_t address = 0;
  for (size_t i = 0; i + 1 < count; ++i) {
    if (parts[i] > 0xff) {
      return false;
    }
    address |= parts[i] << (8 * (3 - i));
  }
  const uint64_t last_max = 0xffffffffULL >> (8 * (count - 1));
  if (parts[count - 1] > last_max) {
    return false;
  }
  *out = static_cast<uint32_t>(address | parts[count - 1]);
  return true;
}

// A bucket or path segment for the error body: one printable line.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 100)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  return out;
}

bool containsString(const std::vector<std::string>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

bool containsPort(const std::vector<uint16_t>& ports, uint16_t port) {
  return std::find(ports.begin(), ports.end(), port) != ports.end();
}

bool regionServed(const Config& config, std::string_view region) {
  return containsString(config.s3.regions, "*") || containsString(config.s3.regions, region);
}

std::string regionsServed(const Config& config) {
  std::string out;
  for (const auto& region : config.s3.regions) {
    if (!out.empty()) {
      out += ", ";
    }
    out += region;
  }
  return out.empty() ? "none" : out;
}

// The denial of an S3 service name that is not a bucket endpoint and not in `hosts`:
// what the name is, and why a bucket rule cannot allow it.
std::string notServedDetail(S3NameKind kind, const std::string& host) {
  std::string what;
  switch (kind) {
    case S3NameKind::access_point:
      what =
          "an S3 Access Point name: the bucket behind it cannot be seen, so no bucket rule "
          "can allow it";
      break;
    case S3NameKind::s3_control:
      what = "an S3 Control name: the account-level API, not a bucket";
      break;
    case S3NameKind::accelerate:
      what =
          "an S3 Transfer Acceleration name: it is served through CloudFront edge locations, "
          "not the gateway endpoint";
      break;
    case S3NameKind::multi_region_access_point:
      what =
          "an S3 Multi-Region Access Point name: it is routed through AWS Global Accelerator, "
          "not the gateway endpoint, to buckets that cannot be seen";
      break;
    case S3NameKind::object_lambda:
      what = "an S3 Object Lambda name: its answers come from a Lambda function, not a bucket";
      break;
    case S3NameKind::outposts:
      what = "an S3 on Outposts name: served by an Outpost, not the gateway endpoint";
      break;
    case S3NameKind::not_s3:
    case S3NameKind::endpoint:
    case S3NameKind::virtual_hosted:
    case S3NameKind::express:  // bucket endpoints: judged by the bucket rules, never here
      return host + " is not an S3 endpoint or an allowed host";
  }
  return host + " is " + what + "; list it under hosts to allow it";
}

const HostRule* findHostRule(const Config& config, std::string_view host) {
  for (const auto& rule : config.hosts) {
    if (hostsEntryMatches(rule.name, host)) {
      return &rule;
    }
  }
  return nullptr;
}

bool ruleCovers(const BucketRule& rule, const DecisionInput& input) {
  return (rule.clients.empty() || anyContains(rule.clients, input.client)) &&
         (rule.identities.empty() || containsString(rule.identities, input.identity));
}

// The first bucket rule whose name matches and whose narrowing covers the client.
const BucketRule* findBucketRule(const Config& config, std::string_view bucket,
                                 const DecisionInput& input) {
  for (const auto& rule : config.buckets) {
    if (globMatch(rule.name, bucket) && ruleCovers(rule, input)) {
      return &rule;
    }
  }
  return nullptr;
}

// A rule named exactly "*" that covers the client: the only rule that can allow a
// tunnel whose bucket cannot be seen.
const BucketRule* findWildcardRule(const Config& config, const DecisionInput& input) {
  for (const auto& rule : config.buckets) {
    if (rule.name == "*" && ruleCovers(rule, input)) {
      return &rule;
    }
  }
  return nullptr;
}

int hexValue(char c) {
  c = lowerAscii(c);
  if (isDigit(c)) {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

// The bucket of a path-style request: the first path segment, percent-decoded as
// S3 decodes it. False when the segment cannot be read unambiguously (a broken
// escape, or an encoded '/' that S3 would split on and a naive reader would not).
bool bucketFromPath(std::string_view path, std::string* bucket) {
  bucket->clear();
  path = path.substr(0, path.find_first_of("?#"));
  if (path.empty() || path.front() != '/') {
    return true;  // "*" or nothing: no bucket
  }
  path.remove_prefix(1);
  std::string_view segment = path.substr(0, path.find('/'));
  for (size_t i = 0; i < segment.size(); ++i) {
    if (segment[i] != '%') {
      *bucket += segment[i];
      continue;
    }
    if (i + 2 >= segment.size()) {
      return false;
    }
    const int hi = hexValue(segment[i + 1]);
    const int lo = hexValue(segment[i + 2]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    const char decoded = static_cast<char>(hi * 16 + lo);
    if (decoded == '/' || decoded == '\0') {
      return false;
    }
    *bucket += decoded;
    i += 2;
  }
  return true;
}

// A zonal S3 Express name must carry a directory bucket of the endpoint's own zone
// (BASE--ZONE--x-s3 at s3express-ZONE): S3 serves nothing else there, and a bucket
// rule should never be asked about a name S3 would not answer for. "" when it does.
std::string expressNameProblem(const Decision& d) {
  const std::string_view zone = directoryBucketZone(d.name.bucket);
  if (zone.empty()) {
    return d.host + " is an S3 Express One Zone name, but " + d.name.bucket +
           " is not a directory bucket name (NAME--" + d.name.zone + "--x-s3)";
  }
  if (zone != d.name.zone) {
    return d.host + ": directory bucket " + d.name.bucket + " is in zone " + std::string(zone) +
           ", not in the endpoint's zone " + d.name.zone;
  }
  return {};
}

}  // namespace

bool hostsEntryMatches(std::string_view pattern, std::string_view host) {
  if (pattern.empty()) {
    return false;
  }
  while (true) {
    const size_t pattern_dot = pattern.find('.');
    const size_t host_dot = host.find('.');
    const std::string_view pattern_label = pattern.substr(0, pattern_dot);
    const std::string_view host_label = host.substr(0, host_dot);
    if (pattern_label == "*" ? host_label.empty() : !equalsIgnoreCase(pattern_label, host_label)) {
      return false;
    }
    if (pattern_dot == std::string_view::npos || host_dot == std::string_view::npos) {
      return pattern_dot == std::string_view::npos && host_dot == std::string_view::npos;
    }
    pattern.remove_prefix(pattern_dot + 1);
    host.remove_prefix(host_dot + 1);
  }
}

std::string_view verdictName(Verdict v) {
  switch (v) {
    case Verdict::allow:
      return "allow";
    case Verdict::deny:
      return "deny";
    case Verdict::report:
      return "report";
  }
  return "deny";
}

bool parseIpLiteral(std::string_view host, IpAddress* out) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (!host.empty() && host.back() == '.') {
    host.remove_suffix(1);  // "127.0.0.1." is the same address to most resolvers
  }
  if (host.empty()) {
    return false;
  }
  if (host.find(':') != std::string_view::npos) {
    auto ip = IpAddress::parse(host);
    if (!ip || !ip->isV6()) {
      return false;
    }
    // ::ffff:a.b.c.d is the IPv4 address to a dual-stack socket: held to the IPv4
    // rules as that address.
    const auto& b = ip->bytes();
    if (std::all_of(b.begin(), b.begin() + 10, [](uint8_t x) { return x == 0; }) && b[10] == 0xff &&
        b[11] == 0xff) {
      *out = IpAddress::v4((uint32_t{b[12]} << 24) | (uint32_t{b[13]} << 16) |
                           (uint32_t{b[14]} << 8) | uint32_t{b[15]});
    } else {
      *out = *ip;
    }
    return true;
  }
  uint32_t v4 = 0;
  if (!parseAtonAddress(host, &v4)) {
    return false;
  }
  *out = IpAddress::v4(v4);
  return true;
}

const DnsPin* findPin(const Config& config, std::string_view host) {
  for (const auto& pin : config.dns.pins) {
    if (hostPatternMatch(pin.host, host)) {
      return &pin;
    }
  }
  return nullptr;
}

std::vector<IpAddress> filterResolvedAddresses(const Config& config,
                                               const std::vector<IpAddress>& addresses) {
  const auto& allowed = config.dns.allowed_networks;
  std::vector<IpAddress> kept;
  for (const auto& ip : addresses) {
    const bool inside = anyContains(allowed, ip);
    if (!allowed.empty() && !inside) {
      continue;
    }
    // Whatever the configuration: an answer pointing at this host, the link
    // (169.254.169.254 is the instance metadata service) or no host at all is
    // refused, unless the operator listed a network that contains it.
    const bool special = ip.isLoopback() || ip.isLinkLocal() || ip.isUnspecified() ||
                         ip.isMulticast() || ip.isBroadcast();
    if (special && !inside) {
      continue;
    }
    if (ip.family() == AF_UNSPEC) {
      continue;
    }
    kept.push_back(ip);
  }
  return kept;
}

Decision decide(const Config& config, const DecisionInput& input) {
  Decision d;  // deny until every step has passed
  const bool http_like = input.kind != RequestKindForDecision::connect;
  const bool plain_http = input.kind == RequestKindForDecision::http;
  // A plain-HTTP URL without a port means 80; a CONNECT always names one (the
  // parser refuses one that does not), an sni listener's target is 443.
  d.port = input.port_given ? input.port : (plain_http ? 80 : (input.port ? input.port : 443));

  // Every step runs, so that the decision carries the host, name and rule for the
  // log whatever failed. The first failing step gives the reason; in report mode a
  // failure that is not a policy denial (bad input) still denies, and wins.
  Reason first = Reason::none;
  Reason hard = Reason::none;
  std::string first_detail;
  std::string hard_detail;
  auto fail = [&](Reason r, std::string detail) {
    if (first == Reason::none) {
      first = r;
      first_detail = detail;
    }
    if (!isPolicyDenial(r) && hard == Reason::none) {
      hard = r;
      hard_detail = std::move(detail);
    }
  };
  // 7. The copy source of a request s3gate can see. It runs with every outcome of
  // the steps before it (from finish()), so that the log has the source and an
  // unreadable value is refused in report mode too, whatever else failed; its reason
  // counts only where no earlier step failed. `hosts` entries are held to it as well:
  // the header means the same to every S3 API, and an access point listed in `hosts`
  // would otherwise copy out of any bucket the client's credentials can read.
  bool copy_source_judged = false;
  auto judgeCopySource = [&]() {
    if (copy_source_judged || !http_like || input.copy_source.empty()) {
      return;
    }
    copy_source_judged = true;
    CopySource source;
    const CopySourceError error = parseCopySource(input.copy_source, &source);
    if (error != CopySourceError::none) {
      // Bad input, not a policy question: 400 bad_request in every mode, as for a
      // bucket in the path that cannot be read. A source s3gate cannot read is one it
      // cannot judge, and report mode must not pass on a copy nobody checked; S3
      // answers such a value with 400 InvalidArgument itself, so a working client
      // loses nothing (the one exception, a legacy bucket name outside today's naming
      // rules, is a bucket no rule could name safely).
      fail(Reason::bad_request, "the x-amz-copy-source header cannot be read (" +
                                    std::string(copySourceErrorName(error)) + ")");
      return;
    }
    if (source.kind == CopySourceKind::access_point) {
      // The bucket behind an access point cannot be seen: only a `hosts` entry for the
      // access point's own name vouches for it.
      const std::string endpoint = accessPointEndpoint(source);
      if (findHostRule(config, endpoint) == nullptr) {
        fail(Reason::copy_source_not_allowed,
             "copy source access point " + endpoint + " is not listed under hosts");
      }
    } else if (findBucketRule(config, source.bucket, input) == nullptr) {
      // As a GET by the same client and identity: any rule that matches allows it,
      // a read-only one included.
      fail(Reason::copy_source_not_allowed,
           "copy source bucket " + printable(source.bucket) + " is not allowed");
    }
    d.copy_source = std::move(source);
  };
  auto finish = [&]() {
    judgeCopySource();
    if (first == Reason::none) {
      d.verdict = Verdict::allow;
      d.reason = Reason::none;
      d.detail.clear();
    } else if (config.mode == PolicyMode::report && hard == Reason::none) {
      d.verdict = Verdict::report;
      d.reason = first;
      d.detail = first_detail;
    } else {
      d.verdict = Verdict::deny;
      const bool use_hard = config.mode == PolicyMode::report && hard != Reason::none;
      d.reason = use_hard ? hard : first;
      d.detail = use_hard ? hard_detail : first_detail;
      // In a denial the rule is the one that denied: only a read-only rule refusing a
      // method does. (A would-be denial in report mode keeps the rule the bytes will
      // be counted under.)
      if (d.reason != Reason::method_not_allowed) {
        d.rule = "-";
      }
    }
    return d;
  };

  // 1. The client.
  if (!anyContains(config.clients, input.client)) {
    fail(Reason::client_not_allowed,
         "client " + input.client.toString() + " may not use this proxy");
  }

  // 2. The name: an address in any spelling first (an IPv6 literal is not a DNS
  // name, and "0177.0.0.1" looks like one), then a valid DNS name.
  std::string lowered;
  for (char c : input.host) {
    lowered += lowerAscii(c);
  }
  IpAddress literal;
  if (parseIpLiteral(lowered, &literal)) {
    d.ip_literal = true;
    d.literal = literal;
    d.host = literal.toString();
    fail(Reason::ip_literal_denied, "IP address targets are not allowed; use the S3 name");
    return finish();  // an address has no name for steps 3 to 6
  }
  if (input.host_is_ipv6_literal || !normalizeHostName(input.host, &d.host)) {
    d.host.clear();
    fail(Reason::bad_host, "the target is not a valid host name");
    return finish();
  }

  // 3. S3 endpoint or `hosts` entry. An S3 bucket endpoint is always judged as S3
  // (buckets, regions): a `hosts` entry cannot widen it. The names of the other S3
  // services (access points, S3 Control, Transfer Acceleration, ...) have no bucket a
  // rule could judge: like any other name, only a `hosts` entry allows them (its
  // ports, no region or bucket step), and the denial says what they are.
  d.name = parseS3Name(d.host);
  const bool s3 = isBucketEndpoint(d.name.kind);
  const HostRule* host_rule = nullptr;
  if (s3) {
    if (d.name.kind == S3NameKind::express && !d.name.bucket.empty()) {
      std::string problem = expressNameProblem(d);
      if (!problem.empty()) {
        fail(Reason::host_not_allowed, std::move(problem));
        return finish();
      }
    }
    if (!regionServed(config, d.name.region)) {
      fail(Reason::region_not_allowed,
           "region " + d.name.region + " is not served; regions served: " + regionsServed(config));
    }
  } else {
    host_rule = findHostRule(config, d.host);
    if (host_rule == nullptr) {
      fail(Reason::host_not_allowed, notServedDetail(d.name.kind, d.host));
      return finish();
    }
  }

  // 4. The port.
  if (plain_http && d.port != 80) {
    fail(Reason::port_not_allowed, "plain HTTP requests must use port 80");
  } else if (s3 && !plain_http && !containsPort(config.ports, d.port)) {
    fail(Reason::port_not_allowed, "port " + std::to_string(d.port) + " is not allowed");
  } else if (host_rule != nullptr && !containsPort(host_rule->ports, d.port)) {
    fail(Reason::port_not_allowed,
         "port " + std::to_string(d.port) + " is not allowed for " + d.host);
  }
  if (!s3) {
    return finish();  // `hosts` entries have no bucket or method step
  }

  // 5. The bucket.
  const bool bucket_outside_name = bucketOutsideName(d.name);
  if (bucket_outside_name && !http_like) {
    // CONNECT path-style (and S3 Express's regional s3express-control, whose bucket is
    // never in the name): the bucket travels inside the tunnel, unseen.
    const BucketRule* wildcard = findWildcardRule(config, input);
    if (config.s3.path_style == PathStyle::allow) {
      d.rule = "-";
    } else if (wildcard != nullptr) {
      d.rule = wildcard->name;
    } else if (d.name.kind == S3NameKind::express) {
      fail(Reason::path_style_denied,
           "tunnel to " + d.host +
               ": the bucket is not in this S3 Express name, so it cannot be seen "
               "(s3.path_style: allow, or a bucket rule \"*\", allows it)");
    } else {
      fail(Reason::path_style_denied, "path-style tunnel to " + d.host +
                                          ": the bucket cannot be seen; use " +
                                          "virtual-hosted names (BUCKET." + d.host + ")");
    }
    return finish();
  }
  if (bucket_outside_name) {
    // Plain HTTP path-style: the first path segment. No segment (ListBuckets) is the
    // empty bucket, which only a rule matching everything ("*") allows.
    if (!bucketFromPath(input.path, &d.name.bucket)) {
      d.name.bucket.clear();
      fail(Reason::bad_request, "the bucket in the path is not readable (encoded '/'?)");
      return finish();
    }
  }
  const BucketRule* rule = findBucketRule(config, d.name.bucket, input);
  if (rule == nullptr) {
    fail(Reason::bucket_not_allowed, "bucket " + printable(d.name.bucket) + " is not allowed");
    return finish();
  }
  d.rule = rule->name;

  // 6. The method, for requests s3gate can see.
  if (http_like && rule->access == Access::read_only && input.method != "GET" &&
      input.method != "HEAD") {
    fail(Reason::method_not_allowed,
         "rule " + rule->name + " is read-only: " + printable(input.method) + " is not allowed");
  }
  return finish();
}

}  // namespace s3gate
