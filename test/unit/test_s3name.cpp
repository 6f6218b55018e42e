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
      {"s3-accesspoint.us-west-2.amazonaws.com", S3NameKind::access_point, "us-west-2", ""},
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

TEST_CASE("every service form in every partition", "[s3name]") {
  // The regional S3 services that are not bucket endpoints: SERVICE[-fips][.dualstack].R,
  // bare and behind the labels that name the resource.
  struct Service {
    const char* label;
    S3NameKind kind;
    const char* prefix;  // a typical resource in front ("" for none)
  };
  const Service services[] = {
      {"s3-accesspoint", S3NameKind::access_point, "media-111122223333"},
      {"s3-control", S3NameKind::s3_control, "111122223333"},
      {"s3-object-lambda", S3NameKind::object_lambda, "olap-111122223333"},
      {"s3-outposts", S3NameKind::outposts, "ap-111122223333.op-01ac5d28a6a232904"},
      {"s3express-control", S3NameKind::express, ""},
      {"s3express-usw2-az1", S3NameKind::express, "scratch--usw2-az1--x-s3"},
  };
  const std::vector<std::string> regions = {"us-west-2", "us-gov-west-1", "cn-north-1",
                                            "eu-central-1", "zz-test-9"};
  for (const auto& service : services) {
    for (const auto& region : regions) {
      for (bool fips : {false, true}) {
        for (bool dualstack : {false, true}) {
          std::string label = service.label;
          if (fips) {
            label = label.rfind("s3express-", 0) == 0 && label != "s3express-control"
                        ? "s3express-fips-" + label.substr(10)
                        : label + "-fips";
          }
          const std::string endpoint =
              label + (dualstack ? ".dualstack." : ".") + region + "." + partition(region);
          for (const std::string& host :
               {endpoint, std::string(service.prefix).empty()
                              ? endpoint
                              : std::string(service.prefix) + "." + endpoint}) {
            CAPTURE(host);
            const S3Name name = parseS3Name(host);
            CHECK(s3NameKindName(name.kind) == s3NameKindName(service.kind));
            CHECK(name.region == region);
            // S3 Express is a bucket endpoint: its zonal names carry the bucket.
            const bool express = service.kind == S3NameKind::express;
            CHECK(name.bucket ==
                  (express && host != endpoint ? std::string(service.prefix) : std::string()));
            CHECK(name.dualstack == dualstack);
            CHECK(name.fips == fips);
            CHECK(isBucketEndpoint(name.kind) == express);
          }
          // The other partition's suffix: not an S3 name at all.
          const std::string wrong =
              label + "." + region + "." +
              (partition(region) == "amazonaws.com" ? "amazonaws.com.cn" : "amazonaws.com");
          CAPTURE(wrong);
          CHECK(parseS3Name(wrong).kind == S3NameKind::not_s3);
        }
      }
    }
  }
}

TEST_CASE("parseS3Name: the S3 services that are not bucket endpoints", "[s3name]") {
  struct Row {
    const char* host;
    S3NameKind kind;
    const char* region;
    const char* bucket;
    bool dualstack;
    bool fips;
  };
  const auto AP = S3NameKind::access_point;
  const auto CTL = S3NameKind::s3_control;
  const auto ACC = S3NameKind::accelerate;
  const auto MRAP = S3NameKind::multi_region_access_point;
  const auto OL = S3NameKind::object_lambda;
  const auto OUT = S3NameKind::outposts;
  const auto EXP = S3NameKind::express;
  const auto V = S3NameKind::virtual_hosted;
  const auto N = S3NameKind::not_s3;
  const Row rows[] = {
      // Access points.
      {"media-111122223333.s3-accesspoint.us-west-2.amazonaws.com", AP, "us-west-2", "", false,
       false},
      {"media-111122223333.s3-accesspoint.dualstack.us-west-2.amazonaws.com", AP, "us-west-2", "",
       true, false},
      {"media-111122223333.s3-accesspoint-fips.us-gov-west-1.amazonaws.com", AP, "us-gov-west-1",
       "", false, true},
      {"media-111122223333.s3-accesspoint-fips.dualstack.us-gov-west-1.amazonaws.com", AP,
       "us-gov-west-1", "", true, true},
      {"media-111122223333.s3-accesspoint.cn-north-1.amazonaws.com.cn", AP, "cn-north-1", "", false,
       false},
      {"my.ap-111122223333.s3-accesspoint.us-west-2.amazonaws.com", AP, "us-west-2", "", false,
       false},
      {"media-111122223333.s3-accesspoint.us-west-2.amazonaws.com.evil.com", N, "", "", false,
       false},
      {"media-111122223333.s3-accesspoint.cn-north-1.amazonaws.com", N, "", "", false, false},
      {"media-111122223333.s3-accesspoint.us-west.amazonaws.com", N, "", "", false, false},
      {"media-111122223333.s3-accesspointx.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media-111122223333.s3-accesspoint-fipsx.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media-111122223333.xs3-accesspoint.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media.s3-accesspoint.dualstack.dualstack.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media.s3-accesspoint.fips.us-west-2.amazonaws.com", N, "", "", false, false},
      // An access point alias is used as a bucket name on a bucket endpoint.
      {"media-ab12cd34ef56gh78ij90kl12mn34op56-s3alias.s3.us-west-2.amazonaws.com", V, "us-west-2",
       "media-ab12cd34ef56gh78ij90kl12mn34op56-s3alias", false, false},
      // A bucket named like a service, on a bucket endpoint: a bucket.
      {"s3-accesspoint.s3.us-west-2.amazonaws.com", V, "us-west-2", "s3-accesspoint", false, false},
      {"media.s3-accelerate.s3.us-west-2.amazonaws.com", V, "us-west-2", "media.s3-accelerate",
       false, false},
      {"s3-control.s3.amazonaws.com", V, "us-east-1", "s3-control", false, false},
      // S3 Control.
      {"111122223333.s3-control.us-west-2.amazonaws.com", CTL, "us-west-2", "", false, false},
      {"s3-control.us-west-2.amazonaws.com", CTL, "us-west-2", "", false, false},
      {"s3-control-fips.us-east-1.amazonaws.com", CTL, "us-east-1", "", false, true},
      {"s3-control.dualstack.eu-west-1.amazonaws.com", CTL, "eu-west-1", "", true, false},
      {"111122223333.s3-control-fips.dualstack.us-gov-west-1.amazonaws.com", CTL, "us-gov-west-1",
       "", true, true},
      {"s3-control.amazonaws.com", N, "", "", false, false},
      {"s3-control-us-west-2.amazonaws.com", N, "", "", false, false},
      // Transfer Acceleration (global, commercial partition only).
      {"media.s3-accelerate.amazonaws.com", ACC, "", "media", false, false},
      {"media.s3-accelerate.dualstack.amazonaws.com", ACC, "", "media", true, false},
      {"s3-accelerate.amazonaws.com", ACC, "", "", false, false},
      {"s3-accelerate.dualstack.amazonaws.com", ACC, "", "", true, false},
      {"my_bucket.s3-accelerate.amazonaws.com", ACC, "", "", false, false},  // not a bucket name
      {"media.s3-accelerate.amazonaws.com.cn", N, "", "", false, false},
      {"media.s3-accelerate.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media.s3-accelerate.dualstack.us-west-2.amazonaws.com", N, "", "", false, false},
      // A bucket "media.dualstack" (the dualstack label goes after s3-accelerate).
      {"media.dualstack.s3-accelerate.amazonaws.com", ACC, "", "media.dualstack", false, false},
      {"media.s3-accelerate.amazonaws.com.evil.com", N, "", "", false, false},
      // Multi-Region Access Points.
      {"mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com", MRAP, "", "", false, false},
      {"accesspoint.s3-global.amazonaws.com", MRAP, "", "", false, false},
      {"s3-global.amazonaws.com", N, "", "", false, false},
      {"mfzwi23gnjvgw.mrap.s3-global.amazonaws.com", N, "", "", false, false},
      {"mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com.cn", N, "", "", false, false},
      // S3 Object Lambda.
      {"olap-111122223333.s3-object-lambda.us-west-2.amazonaws.com", OL, "us-west-2", "", false,
       false},
      {"olap-111122223333.s3-object-lambda-fips.us-east-1.amazonaws.com", OL, "us-east-1", "",
       false, true},
      // S3 on Outposts.
      {"ap-111122223333.op-01ac5d28a6a232904.s3-outposts.us-west-2.amazonaws.com", OUT, "us-west-2",
       "", false, false},
      {"s3-outposts.us-west-2.amazonaws.com", OUT, "us-west-2", "", false, false},
      {"s3-outposts-fips.us-gov-west-1.amazonaws.com", OUT, "us-gov-west-1", "", false, true},
      // S3 Express One Zone: zonal names carry the directory bucket (a bucket endpoint).
      {"media--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com", EXP, "us-west-2",
       "media--usw2-az1--x-s3", false, false},
      {"s3express-usw2-az1.us-west-2.amazonaws.com", EXP, "us-west-2", "", false, false},
      {"s3express-control.us-west-2.amazonaws.com", EXP, "us-west-2", "", false, false},
      {"s3express-control-fips.us-east-1.amazonaws.com", EXP, "us-east-1", "", false, true},
      {"media--use1-az4--x-s3.s3express-fips-use1-az4.us-east-1.amazonaws.com", EXP, "us-east-1",
       "media--use1-az4--x-s3", false, true},
      // The zone is decide()'s question: a bucket of another zone, or not a directory
      // bucket at all, is still the name's bucket here.
      {"media--use1-az4--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com", EXP, "us-west-2",
       "media--use1-az4--x-s3", false, false},
      {"media.s3express-usw2-az1.us-west-2.amazonaws.com", EXP, "us-west-2", "media", false, false},
      // In front of an S3 Express endpoint, only a bucket name S3 would serve: anything
      // else is not an S3 name (never a bucket rule's), and s3express-control has none.
      {"my_bucket--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com", N, "", "", false,
       false},
      {"ab.s3express-usw2-az1.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media--usw2-az1--x-s3.s3express-control.us-west-2.amazonaws.com", N, "", "", false, false},
      {"s3express.us-west-2.amazonaws.com", N, "", "", false, false},
      {"s3express-.us-west-2.amazonaws.com", N, "", "", false, false},
      {"s3express-1az.us-west-2.amazonaws.com", N, "", "", false, false},
      {"media.s3express-usw2-az1.us-west-2.amazonaws.com.evil.com", N, "", "", false, false},
  };
  for (const auto& row : rows) {
    CAPTURE(row.host);
    const S3Name name = parseS3Name(row.host);
    CHECK(s3NameKindName(name.kind) == s3NameKindName(row.kind));
    CHECK(name.region == row.region);
    CHECK(name.bucket == row.bucket);
    CHECK(name.dualstack == row.dualstack);
    CHECK(name.fips == row.fips);
    CHECK(isBucketEndpoint(name.kind) == (row.kind == V || row.kind == EXP));
  }
}

TEST_CASE("parseS3Name: the zone of an S3 Express name", "[s3name]") {
  struct Row {
    const char* host;
    const char* zone;
    bool bucket_outside_name;
  };
  const Row rows[] = {
      {"scratch--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com", "usw2-az1", false},
      {"scratch--use1-az4--x-s3.s3express-fips-use1-az4.us-east-1.amazonaws.com", "use1-az4",
       false},
      {"scratch--usw2-lax1-az1--x-s3.s3express-usw2-lax1-az1.us-west-2.amazonaws.com",
       "usw2-lax1-az1", false},
      {"s3express-usw2-az1.us-west-2.amazonaws.com", "usw2-az1", true},
      {"s3express-control.us-west-2.amazonaws.com", "", true},
      {"s3express-control-fips.us-gov-west-1.amazonaws.com", "", true},
      {"s3express-control.cn-north-1.amazonaws.com.cn", "", true},
  };
  for (const auto& row : rows) {
    CAPTURE(row.host);
    const S3Name name = parseS3Name(row.host);
    CHECK(name.kind == S3NameKind::express);
    CHECK(name.zone == row.zone);
    CHECK(bucketOutsideName(name) == row.bucket_outside_name);
  }
  // Other kinds have no zone; only the bare endpoints have the bucket outside the name.
  CHECK(parseS3Name("media.s3.us-west-2.amazonaws.com").zone.empty());
  CHECK(bucketOutsideName(parseS3Name("s3.us-west-2.amazonaws.com")));
  CHECK_FALSE(bucketOutsideName(parseS3Name("media.s3.us-west-2.amazonaws.com")));
  CHECK_FALSE(bucketOutsideName(parseS3Name("s3-control.us-west-2.amazonaws.com")));
  CHECK_FALSE(bucketOutsideName(parseS3Name("example.com")));
}

TEST_CASE("isValidHostPattern", "[s3name]") {
  struct Row {
    std::string pattern;
    bool valid;
    const char* why;  // a part of the reason given
  };
  const std::vector<Row> rows = {
      {"sts.us-west-2.amazonaws.com", true, ""},
      {"sts.*.amazonaws.com", true, ""},
      {"*.internal.example", true, ""},
      {"*.*.internal.example", true, ""},
      {"*.s3-accesspoint.*.amazonaws.com", true, ""},
      {"_svc.internal.example", true, ""},
      {"localhost", true, ""},
      {"a-b.c_d.example", true, ""},
      {"x.123", false, "IP address"},
      {"10.0.0.1", false, "IP address"},
      {"*.10", false, "\"*\" may not stand for the last two labels"},
      {"*", false, "\"*\" may not stand for the last two labels"},
      {"*.com", false, "\"*\" may not stand for the last two labels"},
      {"sts.*.*", false, "\"*\" may not stand for the last two labels"},
      {"sts.us-west-2.*", false, "\"*\" may not stand for the last two labels"},
      {"sts-*.amazonaws.com", false, "a whole label"},
      {"**.amazonaws.com", false, "a whole label"},
      {"s?s.amazonaws.com", false, "only lower-case letters"},
      {"STS.amazonaws.com", false, "only lower-case letters"},
      {"sts amazonaws.com", false, "only lower-case letters"},
      {"sts..amazonaws.com", false, "a label is empty"},
      {".amazonaws.com", false, "a label is empty"},
      {"amazonaws.com.", false, "a label is empty"},  // normalised names have no dot there
      {"", false, "empty"},
      {"-sts.amazonaws.com", false, "begin or end with '-'"},
      {"sts-.amazonaws.com", false, "begin or end with '-'"},
      {std::string(64, 'a') + ".example", false, "longer than 63"},
      {std::string(63, 'a') + ".example", true, ""},
      {std::string(250, 'a').insert(60, ".").insert(120, ".").insert(180, ".") + ".com", false,
       "longer than 253"},
  };
  for (const auto& row : rows) {
    CAPTURE(row.pattern);
    std::string why;
    CHECK(isValidHostPattern(row.pattern, &why) == row.valid);
    if (row.valid) {
      CHECK(why.empty());
    } else {
      CAPTURE(why);
      CHECK(why.find(row.why) != std::string::npos);
    }
    CHECK(isValidHostPattern(row.pattern) == row.valid);  // `why` is optional
  }
}

TEST_CASE("s3NameKindName", "[s3name]") {
  CHECK(s3NameKindName(S3NameKind::not_s3) == "not_s3");
  CHECK(s3NameKindName(S3NameKind::endpoint) == "endpoint");
  CHECK(s3NameKindName(S3NameKind::virtual_hosted) == "virtual_hosted");
  CHECK(s3NameKindName(S3NameKind::access_point) == "access_point");
  CHECK(s3NameKindName(S3NameKind::s3_control) == "s3_control");
  CHECK(s3NameKindName(S3NameKind::accelerate) == "accelerate");
  CHECK(s3NameKindName(S3NameKind::multi_region_access_point) == "multi_region_access_point");
  CHECK(s3NameKindName(S3NameKind::object_lambda) == "object_lambda");
  CHECK(s3NameKindName(S3NameKind::outposts) == "outposts");
  CHECK(s3NameKindName(S3NameKind::express) == "express");
}

TEST_CASE("isBucketEndpoint", "[s3name]") {
  CHECK(isBucketEndpoint(S3NameKind::endpoint));
  CHECK(isBucketEndpoint(S3NameKind::virtual_hosted));
  CHECK(isBucketEndpoint(S3NameKind::express));
  for (S3NameKind kind : {S3NameKind::not_s3, S3NameKind::access_point, S3NameKind::s3_control,
                          S3NameKind::accelerate, S3NameKind::multi_region_access_point,
                          S3NameKind::object_lambda, S3NameKind::outposts}) {
    CAPTURE(s3NameKindName(kind));
    CHECK_FALSE(isBucketEndpoint(kind));
  }
}

TEST_CASE("parseS3Name: a name of more labels than DNS allows is not S3", "[s3name]") {
  // 127 labels fit in a DNS name; the labels are held without an allocation up
  // to that, and a name past it is not an S3 name (nor a crash).
  std::string host;
  for (int i = 0; i < 200; ++i) {
    host += "a.";
  }
  host += "s3.us-west-2.amazonaws.com";
  CHECK(parseS3Name(host).kind == S3NameKind::not_s3);
  // The most labels a bucket can have (63 bytes) still parse.
  std::string bucket = "abc";
  for (int i = 1; i < 16; ++i) {
    bucket += ".abc";
  }
  REQUIRE(bucket.size() == 63);
  S3Name fits = parseS3Name(bucket + ".s3.us-west-2.amazonaws.com");
  CHECK(fits.kind == S3NameKind::virtual_hosted);
  CHECK(fits.bucket == bucket);
}
