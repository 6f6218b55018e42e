#pragma once
// S3 endpoint names (SPEC section 3): turns a normalised host into the endpoint
// kind, region and bucket. Pure; no configuration involved.
//
// Besides the bucket endpoints (endpoint, virtual_hosted), it recognises the names
// of other S3 services that share the amazonaws.com namespace (access points,
// S3 Control, Transfer Acceleration, ...). Those are not bucket endpoints: no bucket
// rule can judge them, and decide() allows them only through `hosts`.

#include <string>
#include <string_view>

namespace s3gate {

enum class S3NameKind {
  not_s3,                     // not an S3 name: the `hosts` entries decide
  endpoint,                   // a bare regional endpoint (path-style): s3.us-west-2.amazonaws.com
  virtual_hosted,             // BUCKET. + an endpoint
  access_point,               // NAME-ACCOUNTID.s3-accesspoint[-fips][.dualstack].R
  s3_control,                 // [ACCOUNTID.]s3-control[-fips][.dualstack].R
  accelerate,                 // [BUCKET.]s3-accelerate[.dualstack].amazonaws.com
  multi_region_access_point,  // ALIAS.accesspoint.s3-global.amazonaws.com
  object_lambda,              // NAME-ACCOUNTID.s3-object-lambda[-fips][.dualstack].R
  outposts,                   // [NAME-ACCOUNTID.OUTPOSTID.]s3-outposts[-fips][.dualstack].R
  express,                    // S3 Express One Zone: [BUCKET.]s3express-AZID.R,
                              // s3express-control.R (and their -fips forms)
};

struct S3Name {
  S3NameKind kind = S3NameKind::not_s3;
  std::string region;  // "us-west-2"; "us-east-1" for the global names; "" for the
                       // global services (accelerate, multi_region_access_point)
  std::string bucket;  // virtual_hosted; also accelerate and express names that carry
                       // one (for the log and `explain` only: no bucket rule applies)
  bool dualstack = false;
  bool fips = false;
};

// "not_s3", "endpoint", "virtual_hosted", "access_point", "s3_control", "accelerate",
// "multi_region_access_point", "object_lambda", "outposts", "express".
std::string_view s3NameKindName(S3NameKind kind);

// endpoint and virtual_hosted: the names the bucket, region and port rules judge
// (and the only ones a tunnel may be inspected for). Every other S3 kind is a name
// that only a `hosts` entry can allow.
bool isBucketEndpoint(S3NameKind kind);

// `host` must already be normalised (lower case, no trailing dot).
S3Name parseS3Name(std::string_view host);

// A region is any name of the form xx-name-N ("us-west-2", "us-gov-west-1").
bool isRegionName(std::string_view text);

}  // namespace s3gate
