#pragma once
// The SPEC's reasons: one list of named constants, each mapped to one status and
// one RFC 9209 Proxy-Status error.

#include <string_view>

namespace s3gate {

enum class Reason {
  none,
  // 400
  bad_request,
  bad_host,
  bad_framing,
  // 403 http_request_denied
  client_not_allowed,
  host_not_allowed,
  region_not_allowed,
  bucket_not_allowed,
  port_not_allowed,
  ip_literal_denied,
  path_style_denied,
  method_not_allowed,
  untrusted_proxy,
  client_certificate_required,
  copy_source_not_allowed,
  inspect_not_covered,
  // 403 destination_ip_prohibited
  dns_pin_violation,
  // 407 http_request_denied (with Proxy-Authenticate)
  auth_required,
  auth_failed,
  // 429 connection_limit_reached
  client_limit,
  rate_limited,
  // 200, then closed
  sni_mismatch,
  // 431
  header_too_large,
  // 502
  dns_failed,
  connect_failed,
  upstream_tls_failed,
  upstream_bad_response,
  // 504
  dns_timeout,
  connect_timeout,
  // 503
  overloaded,
  draining,
  // 408
  header_timeout,
};

inline constexpr int kReasonCount = static_cast<int>(Reason::header_timeout) + 1;

std::string_view reasonName(Reason r);        // "bucket_not_allowed"; "" for none
int reasonStatus(Reason r);                   // 403
std::string_view reasonStatusText(Reason r);  // "Forbidden"
std::string_view proxyStatusError(Reason r);  // "http_request_denied"
// Policy denials (SPEC section 3): the ones mode: report lets through.
bool isPolicyDenial(Reason r);
// Upstream failures of an allowed request (502/504): logged with decision "allow".
bool isUpstreamFailure(Reason r);

}  // namespace s3gate
