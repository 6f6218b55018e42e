#pragma once
// S3 endpoint names (SPEC section 3): turns a normalised host into the endpoint
// kind, region and bucket. Pure; no configuration involved.
//
// Besides the bucket endpoints (endpoint, virtual_hosted, and S3 Express One Zone's
// express), it recognises the names of other S3 services that share the
// amazonaws.com namespace (access points, S3 Control, Transfer Acceleration, ...).
// Those are not bucket endpoints: no bucket rule can judge them, and decide() allows
// them only through `hosts`.

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
  express,                    // S3 Express One Zone: BUCKET.s3express-AZID.R (zonal, the
                              // directory bucket in the name), s3express-control.R
                              // (regional, the bucket in the path), and their -fips forms
};

struct S3Name {
  S3NameKind kind = S3NameKind::not_s3;
  std::string region;  // "us-west-2"; "us-east-1" for the global names; "" for the
                       // global services (accelerate, multi_region_access_point)
  std::string bucket;  // virtual_hosted and zonal express names; also accelerate names that
                       // carry one (for the log and `explain` only: no bucket rule applies)
  std::string zone;    // express: the zonal endpoint's availability-zone ID ("usw2-az1");
                       // "" for s3express-control
  bool dualstack = false;
  bool fips = false;
};

// "not_s3", "endpoint", "virtual_hosted", "access_point", "s3_control", "accelerate",
// "multi_region_access_point", "object_lambda", "outposts", "express".
std::string_view s3NameKindName(S3NameKind kind);

// endpoint, virtual_hosted and express: the names the bucket, region and port rules
// judge (and the only ones a tunnel may be inspected for). Every other S3 kind is a
// name that only a `hosts` entry can allow.
bool isBucketEndpoint(S3NameKind kind);

// A bucket endpoint whose name does not carry the bucket (endpoint, s3express-control,
// a bare zonal express name): the bucket travels in the path, like path-style.
bool bucketOutsideName(const S3Name& name);

// `host` must already be normalised (lower case, no trailing dot).
S3Name parseS3Name(std::string_view host);

// A region is any name of the form xx-name-N ("us-west-2", "us-gov-west-1").
bool isRegionName(std::string_view text);

// S3's bucket naming rules for names that can appear in a host name: 3 to 63
// characters of lower-case letters, digits, dots and hyphens, beginning and ending
// with a letter or digit, no "..", not shaped like an IPv4 address.
bool isValidBucketName(std::string_view bucket);

// The availability-zone ID of a directory bucket name, BASE--ZONEID--x-s3
// ("scratch--usw2-az1--x-s3" gives "usw2-az1"); "" when `bucket` is not one (which
// includes a name with dots: directory bucket names have none).
std::string_view directoryBucketZone(std::string_view bucket);

// A `hosts` entry's name, already normalised (lower case, no trailing dot): a DNS
// name whose labels may each be "*" alone, one whole label of any value
// ("sts.*.amazonaws.com"). True exactly for the names decide() can match: labels of
// 1-63 letters, digits, '-' and '_' with no '-' at either end, 253 characters at
// most, a top-level label that is not all digits (that is an address). The last two
// labels may not be "*": a pattern names its domain ("*.com" would open a whole
// top-level domain). On false, `why` (when given) says what is wrong in a phrase
// that fits after "expected a host name: ".
bool isValidHostPattern(std::string_view pattern, std::string* why = nullptr);

}  // namespace s3gate
