#pragma once
// S3 endpoint names (SPEC section 3): turns a normalised host into the endpoint
// kind, region and bucket. Pure; no configuration involved.

#include <string>
#include <string_view>

namespace s3gate {

enum class S3NameKind {
  not_s3,          // not an S3 name: the `hosts` entries decide
  endpoint,        // a bare regional endpoint (path-style): s3.us-west-2.amazonaws.com
  virtual_hosted,  // BUCKET. + an endpoint
};

struct S3Name {
  S3NameKind kind = S3NameKind::not_s3;
  std::string region;  // "us-west-2"; "us-east-1" for the global names
  std::string bucket;  // virtual-hosted only
  bool dualstack = false;
  bool fips = false;
};

std::string_view s3NameKindName(S3NameKind kind);  // "not_s3", "endpoint", "virtual_hosted"

// `host` must already be normalised (lower case, no trailing dot).
S3Name parseS3Name(std::string_view host);

// A region is any name of the form xx-name-N ("us-west-2", "us-gov-west-1").
bool isRegionName(std::string_view text);

}  // namespace s3gate
