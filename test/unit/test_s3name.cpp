// S3 endpoint names (acl/s3name.h, SPEC section 3).

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "acl/s3name.h"

using namespace s3gate;

namespace {

struct Form {
  std::string endpoint;  // the endpoint labels for region R, R spelled "{R}"
  bool dualstack;
  bool fips;
};

std::string withRegion(std::string text, const std::string& region) {
  const std::string marker = "{R}";
  size_t at = text.find(marker);
  if (at != std::string::npos) {
    text.replace(at, marker.size(), region);
  }
  return text;
}

std::string partition(const std::string& region) {
  return region.rfind("cn-", 0) == 0 ? "amazonaws.com.cn" : "amazonaws.com";
}

}  // namespace

TEST_CASE("isRegionName", "[s3name]") {
  struct Row {
    const char* text;
    bool region;
  };
  const Row rows[] = {
      {"us-west-2", true},      {"us-east-1", true},
      {"us-gov-west-1", true},  {"cn-north-1", true},
      {"cn-northwest-1", true}, {"ap-southeast-2", true},
      {"eu-central-1", true},   {"il-central-1", true},
      {"us-isob-east-1", true}, {"zz-nowhere-99", true},  // real or not
      {"us-west", false},       {"west-2", false},
      {"external-1", false},    {"fips-us-gov-west-1", false},  // the area is two letters
      {"u-west-2", false},      {"us-west-2a", false},
      {"us-west-", false},      {"us--west-2", false},
      {"-us-west-2", false},    {"US-WEST-2", false},
      {"us-west2-2", false},    {"us_west_2", false},
      {"us-west-2.", false},    {"", false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.text);
    CHECK(isRegionName(row.text) == row.region);
  }
}

TEST_CASE("every endpoint form in every partition, bare and virtual-hosted", "[s3name]") {
  const std::vector<Form> forms = {
      {"s3.{R}", false, false},
      {"s3-{R}", false, false},
      {"s3.dualstack.{R}", true, false},
      {"s3-fips.{R}", false, true},
      {"s3-fips.dualstack.{R}", true, true},
  };
  const std::vector<std::string> regions = {"us-west-2",      "us-east-1",  "eu-central-1",
                                            "us-gov-west-1",  "cn-north-1", "cn-northwest-1",
                                            "ap-southeast-2", "zz-test-9"};
  const std::vector<std::string> buckets = {"media", "studio-media",  "my.dotted.bucket",
                                            "a-b",   "s3.s3",         "dualstack",
                                            "123",   "x.s3.us-west-2"};
  for (const auto& region : regions) {
    for (const auto& form : forms) {
      const std::string endpoint = withRegion(form.endpoint, region) + "." + partition(region);
      {
        CAPTURE(endpoint);
        S3Name name = parseS3Name(endpoint);
        CHECK(name.kind == S3NameKind::endpoint);
        CHECK(name.region == region);
        CHECK(name.bucket.empty());
        CHECK(name.dualstack == form.dualstack);
        CHECK(name.fips == form.fips);
      }
      for (const auto& bucket : buckets) {
        const std::string host = bucket + "." + endpoint;
        CAPTURE(host);
        S3Name name = parseS3Name(host);
        CHECK(name.kind == S3NameKind::virtual_hosted);
        CHECK(name.region == region);
        CHECK(name.bucket == bucket);
        CHECK(name.dualstack == form.dualstack);
        CHECK(name.fips == form.fips);
      }
    }
  }
}

TEST_CASE("parseS3Name: the global names and other single cases", "[s3name]") {
  struct Row {
    const char* host;
    S3NameKind kind;
    const char* region;
    const char* bucket;
  };
  const auto E = S3NameKind::endpoint;
  const auto V = S3NameKind::virtual_hosted;
  const auto N = S3NameKind::not_s3;
  const Row rows[] = {
      // The global names are us-east-1.
      {"s3.amazonaws.com", E, "us-east-1", ""},
      {"s3-external-1.amazonaws.com", E, "us-east-1", ""},
      {"media.s3.amazonaws.com", V, "us-east-1", "media"},
      {"my.dotted.bucket.s3.amazonaws.com", V, "us-east-1", "my.dotted.bucket"},
      {"media.s3-external-1.amazonaws.com", V, "us-east-1", "media"},
      // A bucket whose own name looks like an endpoint: the endpoint is matched from
      // the right, so the bucket is everything before it.
      {"s3.us-west-2.s3.amazonaws.com", V, "us-east-1", "s3.us-west-2"},
      {"s3.s3.s3.us-west-2.amazonaws.com", V, "us-west-2", "s3.s3"},
      {"s3.s3.us-west-2.amazonaws.com", N, "", ""},  // "s3" is too short for a bucket
      {"dualstack.s3.dualstack.us-west-2.amazonaws.com", V, "us-west-2", "dualstack"},
      // Bucket names at the limits.
      {"abc.s3.us-west-2.amazonaws.com", V, "us-west-2", "abc"},
      {"ab.s3.us-west-2.amazonaws.com", N, "", ""},
      {"a23456789012345678901234567890123456789012345678901234567890123.s3.us-west-2."
       "amazonaws.com",
       V, "us-west-2", "a23456789012345678901234567890123456789012345678901234567890123"},
      {"a.234567890123456789012345678901234567890123456789012345678901234.s3.us-west-2."
       "amazonaws.com",
       N, "", ""},  // 65 characters with the dot
      // Bucket names S3 would refuse: not S3 names.
      {"-media.s3.us-west-2.amazonaws.com", N, "", ""},
      {"media-.s3.us-west-2.amazonaws.com", N, "", ""},
      {"my_bucket.s3.us-west-2.amazonaws.com", N, "", ""},
      {"192.168.5.4.s3.us-west-2.amazonaws.com", N, "", ""},
      {"1.2.3.4.5.s3.us-west-2.amazonaws.com", V, "us-west-2", "1.2.3.4.5"},
      {"a..b.s3.us-west-2.amazonaws.com", N, "", ""},
      {".s3.us-west-2.amazonaws.com", N, "", ""},
      // Look-alikes.
      {"allowed.s3.us-west-2.amazonaws.com.evil.com", N, "", ""},
      {"s3.us-west-2.amazonaws.com.evil.com", N, "", ""},
      {"s3.us-west-2.amazonaws.com.cn", N, "", ""},  // a commercial region under .cn
      {"s3.cn-north-1.amazonaws.com", N, "", ""},    // a China region under .com
      {"s3-cn-north-1.amazonaws.com", N, "", ""},
      {"s3.amazonaws.com.cn", N, "", ""},  // no global name in China
      {"s3-external-1.amazonaws.com.cn", N, "", ""},
      {"xs3.us-west-2.amazonaws.com", N, "", ""},
      {"s3x.us-west-2.amazonaws.com", N, "", ""},
      {"s3.us-west-2.xamazonaws.com", N, "", ""},
      {"s3.us-west-2.amazonaws.co", N, "", ""},
      {"s3.us-west-2amazonaws.com", N, "", ""},
      {"s3.us-west.amazonaws.com", N, "", ""},
      {"s3.west-2.amazonaws.com", N, "", ""},
      {"s3-us-west.amazonaws.com", N, "", ""},
      {"s3-fips-us-gov-west-1.amazonaws.com", N, "", ""},  // not a listed form
      {"dualstack.us-west-2.amazonaws.com", N, "", ""},
      {"media.dualstack.us-west-2.amazonaws.com", N, "", ""},
      {"s3.fips.us-west-2.amazonaws.com", N, "", ""},
      {"s3.dualstack.s3.amazonaws.com", V, "us-east-1", "s3.dualstack"},
      {"us-west-2.amazonaws.com", N, "", ""},
      {"sts.us-west-2.amazonaws.com", N, "", ""},
      {"s3-accesspoint.us-west-2.amazonaws.com", N, "", ""},
      {"s3-website-us-west-2.amazonaws.com", N, "", ""},
      {"s3-website.us-west-2.amazonaws.com", N, "", ""},
      {"amazonaws.com", N, "", ""},
      {".amazonaws.com", N, "", ""},
      {"s3", N, "", ""},
      {"s3.us-west-2", N, "", ""},
      {"example.com", N, "", ""},
      {"", N, "", ""},
  };
  for (const auto& row : rows) {
    CAPTURE(row.host);
    S3Name name = parseS3Name(row.host);
    CHECK(s3NameKindName(name.kind) == s3NameKindName(row.kind));
    CHECK(name.region == row.region);
    CHECK(name.bucket == row.bucket);
  }
}

TEST_CASE("s3NameKindName", "[s3name]") {
  CHECK(s3NameKindName(S3NameKind::not_s3) == "not_s3");
  CHECK(s3NameKindName(S3NameKind::endpoint) == "endpoint");
  CHECK(s3NameKindName(S3NameKind::virtual_hosted) == "virtual_hosted");
}
