#include "acl/reason.h"

namespace s3gate {

namespace {

// One row per reason, in enum order; reasonInfo() checks the order at compile time.
struct ReasonInfo {
  Reason reason;
  std::string_view name;
  int status;
  std::string_view status_text;
  std::string_view proxy_status_error;  // RFC 9209; "" where nothing is sent
};

constexpr ReasonInfo kReasons[] = {
    // none: an allowed request; the status is the success the proxy answers with.
    {Reason::none, "", 200, "OK", ""},
    {Reason::bad_request, "bad_request", 400, "Bad Request", "http_request_error"},
    {Reason::bad_host, "bad_host", 400, "Bad Request", "http_request_error"},
    {Reason::bad_framing, "bad_framing", 400, "Bad Request", "http_request_error"},
    {Reason::client_not_allowed, "client_not_allowed", 403, "Forbidden", "http_request_denied"},
    {Reason::host_not_allowed, "host_not_allowed", 403, "Forbidden", "http_request_denied"},
    {Reason::region_not_allowed, "region_not_allowed", 403, "Forbidden", "http_request_denied"},
    {Reason::bucket_not_allowed, "bucket_not_allowed", 403, "Forbidden", "http_request_denied"},
    {Reason::port_not_allowed, "port_not_allowed", 403, "Forbidden", "http_request_denied"},
    {Reason::ip_literal_denied, "ip_literal_denied", 403, "Forbidden", "http_request_denied"},
    {Reason::path_style_denied, "path_style_denied", 403, "Forbidden", "http_request_denied"},
    {Reason::method_not_allowed, "method_not_allowed", 403, "Forbidden", "http_request_denied"},
    {Reason::untrusted_proxy, "untrusted_proxy", 403, "Forbidden", "http_request_denied"},
    {Reason::client_certificate_required, "client_certificate_required", 403, "Forbidden",
     "http_request_denied"},
    {Reason::copy_source_not_allowed, "copy_source_not_allowed", 403, "Forbidden",
     "http_request_denied"},
    {Reason::inspect_not_covered, "inspect_not_covered", 403, "Forbidden", "http_request_denied"},
    {Reason::dns_pin_violation, "dns_pin_violation", 403, "Forbidden", "destination_ip_prohibited"},
    {Reason::auth_required, "auth_required", 407, "Proxy Authentication Required",
     "http_request_denied"},
    {Reason::auth_failed, "auth_failed", 407, "Proxy Authentication Required",
     "http_request_denied"},
    {Reason::client_limit, "client_limit", 429, "Too Many Requests", "connection_limit_reached"},
    {Reason::rate_limited, "rate_limited", 429, "Too Many Requests", "connection_limit_reached"},
    // The tunnel was already established (200) when the ClientHello was read; the
    // close is only logged, so there is no Proxy-Status to send.
    {Reason::sni_mismatch, "sni_mismatch", 200, "Connection established", ""},
    {Reason::header_too_large, "header_too_large", 431, "Request Header Fields Too Large",
     "http_request_error"},
    {Reason::dns_failed, "dns_failed", 502, "Bad Gateway", "dns_error"},
    {Reason::connect_failed, "connect_failed", 502, "Bad Gateway", "connection_refused"},
    {Reason::upstream_tls_failed, "upstream_tls_failed", 502, "Bad Gateway",
     "tls_certificate_error"},
    {Reason::upstream_bad_response, "upstream_bad_response", 502, "Bad Gateway",
     "http_protocol_error"},
    {Reason::dns_timeout, "dns_timeout", 504, "Gateway Timeout", "dns_timeout"},
    {Reason::connect_timeout, "connect_timeout", 504, "Gateway Timeout", "connection_timeout"},
    {Reason::overloaded, "overloaded", 503, "Service Unavailable", "connection_limit_reached"},
    {Reason::draining, "draining", 503, "Service Unavailable", "connection_limit_reached"},
    {Reason::header_timeout, "header_timeout", 408, "Request Timeout", "http_request_error"},
};

static_assert(sizeof(kReasons) / sizeof(kReasons[0]) == kReasonCount,
              "every reason needs a row in kReasons");

constexpr bool rowsInEnumOrder() {
  for (int i = 0; i < kReasonCount; ++i) {
    if (static_cast<int>(kReasons[i].reason) != i) {
      return false;
    }
  }
  return true;
}
static_assert(rowsInEnumOrder(), "kReasons rows must follow the enum's order");

const ReasonInfo& reasonInfo(Reason r) {
  const int index = static_cast<int>(r);
  if (index < 0 || index >= kReasonCount) {
    return kReasons[0];
  }
  return kReasons[index];
}

}  // namespace

std::string_view reasonName(Reason r) {
  return reasonInfo(r).name;
}

int reasonStatus(Reason r) {
  return reasonInfo(r).status;
}

std::string_view reasonStatusText(Reason r) {
  return reasonInfo(r).status_text;
}

std::string_view proxyStatusError(Reason r) {
  return reasonInfo(r).proxy_status_error;
}

bool isPolicyDenial(Reason r) {
  // SPEC section 3: the reasons of steps 1 and 3 to 7, and ip_literal_denied.
  // dns_pin_violation is not one (the address rules hold in every mode), nor are
  // untrusted_proxy, client_certificate_required and the steps 1a and 1b
  // (auth_required, auth_failed, client_limit, rate_limited): they are about who is
  // talking to s3gate, and hold in every mode. inspect_not_covered is not a step of
  // the decision either: a name the inspection certificate cannot serve cannot be
  // inspected, whatever the mode.
  switch (r) {
    case Reason::client_not_allowed:
    case Reason::host_not_allowed:
    case Reason::region_not_allowed:
    case Reason::bucket_not_allowed:
    case Reason::port_not_allowed:
    case Reason::path_style_denied:
    case Reason::method_not_allowed:
    case Reason::copy_source_not_allowed:
    case Reason::ip_literal_denied:
      return true;
    default:
      return false;
  }
}

bool isUpstreamFailure(Reason r) {
  switch (r) {
    case Reason::dns_failed:
    case Reason::dns_timeout:
    case Reason::connect_failed:
    case Reason::connect_timeout:
    case Reason::upstream_tls_failed:
    case Reason::upstream_bad_response:
      return true;
    default:
      return false;
  }
}

}  // namespace s3gate
