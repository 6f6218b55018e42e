#pragma once
// The one decision function: the session, `s3gate explain` and the tests all
// call decide(). A decision is a value: verdict, reason, the rule that decided,
// and the parsed name. Every decision starts as deny.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "acl/copy_source.h"
#include "acl/reason.h"
#include "acl/s3name.h"
#include "common/host_name.h"
#include "common/net.h"
#include "config/config.h"

namespace s3gate {

enum class Verdict { allow, deny, report };
std::string_view verdictName(Verdict v);  // "allow", "deny", "report"

// connect: a CONNECT tunnel or an sni listener's connection (name and port only).
// http: a plain (absolute-form) HTTP request; its URL names port 80 or none.
// inspect: a request inside an inspected tunnel to an S3 name: the port is the
// tunnel's (held to `ports`), the bucket comes from the name or path, and the
// method is checked, as for plain HTTP.
enum class RequestKindForDecision { connect, http, inspect };

struct DecisionInput {
  IpAddress client;
  RequestKindForDecision kind = RequestKindForDecision::connect;
  std::string_view method;  // "CONNECT", "GET", ...
  std::string_view host;    // as the client wrote it (not yet normalised)
  bool host_is_ipv6_literal = false;
  uint16_t port = 0;
  bool port_given = false;
  std::string_view path;         // plain HTTP: path and query
  std::string_view identity;     // client-certificate CN; empty: none
  std::string_view copy_source;  // the x-amz-copy-source value (http, inspect); empty: none
};

struct Decision {
  Verdict verdict = Verdict::deny;
  Reason reason = Reason::none;  // the failing step's reason (also in report mode)
  std::string rule = "-";        // the bucket rule's name; "-" where none decided (in a
                                 // denial, set only for method_not_allowed)
  std::string host;              // the normalised name ("" when it was not a valid name; an IP
                                 // literal's canonical text when ip_literal)
  uint16_t port = 0;             // the port in effect (80 for a plain-HTTP URL without one)
  S3Name name;                   // kind, region, bucket
  bool ip_literal = false;       // the target is an IP literal (report mode may let it through)
  IpAddress literal;             // the literal's address, when ip_literal
  std::string detail;            // one line for the error body (e.g. the regions served)
  std::optional<CopySource> copy_source;  // the request's copy source, when it has one that
                                          // parsed (log field copy_source: logText())

  bool allowed() const { return verdict != Verdict::deny; }
};

// Step 3 judges S3 bucket endpoints (endpoint, virtual_hosted, express) by region and
// bucket; every other name, the other S3 services' names (access points, S3 Control,
// Transfer Acceleration, ...) included, is allowed only by a `hosts` entry, and its
// host_not_allowed detail says what kind of name it is.
// Step 7 judges the copy source of a request s3gate can see (http, inspect): its
// bucket against `buckets` as a GET by the same client would be, an access point ARN
// by a `hosts` entry for its endpoint.
Decision decide(const Config& config, const DecisionInput& input);

// A `hosts` entry's name against a normalised host, label by label: a label "*"
// matches any one whole label, every other label only itself (ASCII case ignored).
// "sts.*.amazonaws.com" matches "sts.us-west-2.amazonaws.com", never
// "sts.amazonaws.com" or "sts.a.b.amazonaws.com".
bool hostsEntryMatches(std::string_view pattern, std::string_view host);

// An IP literal in any spelling a resolver or client might accept
// (dotted, decimal, hex, octal, IPv4-mapped IPv6, bracketed IPv6).
bool parseIpLiteral(std::string_view host, IpAddress* out);

// The pinned addresses for a normalised name, or nullptr.
const DnsPin* findPin(const Config& config, std::string_view host);

// The address rules: keeps the addresses of a DNS answer that may be connected to.
std::vector<IpAddress> filterResolvedAddresses(const Config& config,
                                               const std::vector<IpAddress>& addresses);

}  // namespace s3gate
