// The x-amz-copy-source parser (acl/copy_source.h): every spelling S3 accepts, each
// field asserted, and every way a value can be wrong, each with its error.

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "acl/copy_source.h"
#include "acl/s3name.h"

using namespace s3gate;

namespace {

struct Good {
  std::string value;
  CopySourceKind kind;
  const char* bucket;
  std::string key;
  const char* version;
  const char* region;        // access points
  const char* account;       // access points
  const char* access_point;  // access points
  const char* outpost;       // Outposts access points
  const char* endpoint;      // accessPointEndpoint()
  std::string log;           // logText()
};

const auto BKT = CopySourceKind::bucket;
const auto AP = CopySourceKind::access_point;

std::vector<Good> goodTable() {
  const std::string key1024(1024, 'k');
  return {
      // Buckets, with and without the leading slash.
      {"/media/shot/010.exr", BKT, "media", "shot/010.exr", "", "", "", "", "", "",
       "media/shot/010.exr"},
      {"media/shot/010.exr", BKT, "media", "shot/010.exr", "", "", "", "", "", "",
       "media/shot/010.exr"},
      {"media/k", BKT, "media", "k", "", "", "", "", "", "", "media/k"},
      {"vfx.shots.010/a/b/c", BKT, "vfx.shots.010", "a/b/c", "", "", "", "", "", "",
       "vfx.shots.010/a/b/c"},
      // The key keeps what follows the first '/', slashes included.
      {"media//double", BKT, "media", "/double", "", "", "", "", "", "", "media//double"},
      {"media/dir/", BKT, "media", "dir/", "", "", "", "", "", "", "media/dir/"},
      // Blanks around the value are not part of it.
      {"  media/k \t", BKT, "media", "k", "", "", "", "", "", "", "media/k"},
      // Percent-encoded: the whole value, parts of it, the key's spaces and UTF-8.
      {"media%2Fshot%2F010.exr", BKT, "media", "shot/010.exr", "", "", "", "", "", "",
       "media/shot/010.exr"},
      {"%2Fmedia%2Fk", BKT, "media", "k", "", "", "", "", "", "", "media/k"},
      {"med%69a/k", BKT, "media", "k", "", "", "", "", "", "", "media/k"},
      {"media/my%20file.exr", BKT, "media", "my file.exr", "", "", "", "", "", "",
       "media/my file.exr"},
      {"media/caf%C3%A9", BKT, "media", "caf\xc3\xa9", "", "", "", "", "", "", "media/caf\xc3\xa9"},
      {"media/caf\xc3\xa9", BKT, "media", "caf\xc3\xa9", "", "", "", "", "", "",
       "media/caf\xc3\xa9"},
      {"media/a+b", BKT, "media", "a+b", "", "", "", "", "", "", "media/a+b"},  // '+' is '+'
      {"media/100%25", BKT, "media", "100%", "", "", "", "", "", "", "media/100%"},
      // Decoded once only: %2525 is "%25" in the key, not '%'.
      {"media/%2525", BKT, "media", "%25", "", "", "", "", "", "", "media/%25"},
      // An encoded '?' is part of the key; the first literal '?' starts the query.
      {"media/what%3FversionId=x", BKT, "media", "what?versionId=x", "", "", "", "", "", "",
       "media/what?versionId=x"},
      // Versions.
      {"media/k?versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", BKT, "media", "k",
       "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", "", "", "", "", "", "media/k"},
      {"/media/k?versionId=null", BKT, "media", "k", "null", "", "", "", "", "", "media/k"},
      {"media%2Fk?versionId=a%2Bb", BKT, "media", "k", "a+b", "", "", "", "", "", "media/k"},
      // Directory buckets and access point aliases are buckets by name.
      {"scratch--usw2-az1--x-s3/tmp/x", BKT, "scratch--usw2-az1--x-s3", "tmp/x", "", "", "", "", "",
       "", "scratch--usw2-az1--x-s3/tmp/x"},
      {"media-ab12cd34ef56gh78ij90kl12mn34op56-s3alias/k", BKT,
       "media-ab12cd34ef56gh78ij90kl12mn34op56-s3alias", "k", "", "", "", "", "", "",
       "media-ab12cd34ef56gh78ij90kl12mn34op56-s3alias/k"},
      // "arn" without its colon is a bucket like any other.
      {"arn/k", BKT, "arn", "k", "", "", "", "", "", "", "arn/k"},
      // The longest key S3 takes.
      {"media/" + key1024, BKT, "media", key1024, "", "", "", "", "", "", "media/" + key1024},
      // Access point ARNs, plain and encoded, in the three partitions.
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/shot/010.exr", AP, "",
       "shot/010.exr", "", "us-west-2", "111122223333", "my-ap", "",
       "my-ap-111122223333.s3-accesspoint.us-west-2.amazonaws.com",
       "arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/shot/010.exr"},
      {"arn%3Aaws%3As3%3Aus-west-2%3A111122223333%3Aaccesspoint%2Fmy-ap%2Fobject%2Fa%20b", AP, "",
       "a b", "", "us-west-2", "111122223333", "my-ap", "",
       "my-ap-111122223333.s3-accesspoint.us-west-2.amazonaws.com",
       "arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/a b"},
      {"/arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/k?versionId=v1", AP, "", "k",
       "v1", "us-west-2", "111122223333", "my-ap", "",
       "my-ap-111122223333.s3-accesspoint.us-west-2.amazonaws.com",
       "arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/k"},
      {"arn:aws-cn:s3:cn-north-1:111122223333:accesspoint/ap1/object/k", AP, "", "k", "",
       "cn-north-1", "111122223333", "ap1", "",
       "ap1-111122223333.s3-accesspoint.cn-north-1.amazonaws.com.cn",
       "arn:aws-cn:s3:cn-north-1:111122223333:accesspoint/ap1/object/k"},
      {"arn:aws-us-gov:s3:us-gov-west-1:111122223333:accesspoint/ap1/object/k", AP, "", "k", "",
       "us-gov-west-1", "111122223333", "ap1", "",
       "ap1-111122223333.s3-accesspoint.us-gov-west-1.amazonaws.com",
       "arn:aws-us-gov:s3:us-gov-west-1:111122223333:accesspoint/ap1/object/k"},
      // S3 on Outposts.
      {"arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-01ac5d28a6a232904/accesspoint/"
       "my-ap/object/k/1",
       AP, "", "k/1", "", "us-west-2", "111122223333", "my-ap", "op-01ac5d28a6a232904",
       "my-ap-111122223333.op-01ac5d28a6a232904.s3-outposts.us-west-2.amazonaws.com",
       "arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-01ac5d28a6a232904/accesspoint/my-ap/"
       "object/k/1"},
      {"arn%3Aaws%3As3-outposts%3Aus-west-2%3A111122223333%3Aoutpost%2Fop-01ac5d28a6a232904%2F"
       "accesspoint%2Fmy-ap%2Fobject%2Fk",
       AP, "", "k", "", "us-west-2", "111122223333", "my-ap", "op-01ac5d28a6a232904",
       "my-ap-111122223333.op-01ac5d28a6a232904.s3-outposts.us-west-2.amazonaws.com",
       "arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-01ac5d28a6a232904/accesspoint/my-ap/"
       "object/k"},
  };
}

struct Bad {
  std::string value;
  CopySourceError error;
};

std::vector<Bad> badTable() {
  using enum CopySourceError;
  return {
      {"", empty},
      {"   ", empty},
      // Percent-encoding that cannot be decoded.
      {"media/k%", bad_encoding},
      {"media/k%2", bad_encoding},
      {"media/k%zz", bad_encoding},
      {"media/k%g0", bad_encoding},
      {"med%/k", bad_encoding},
      {"media/k?versionId=%", bad_encoding},
      // Control characters, raw or encoded.
      {std::string("media/k\0x", 9), control_character},
      {"media/k\x01", control_character},
      {"media/k\x7f", control_character},
      {"media/a\tb", control_character},
      {"media/k%00", control_character},
      {"media/k%0d%0aX-Evil: 1", control_character},
      {"media/k%7F", control_character},
      {"media/k?versionId=a%0a", control_character},
      // No bucket.
      {"/", no_bucket},
      {"//media/k", no_bucket},
      {"%2F%2Fmedia/k", no_bucket},
      {"//k", no_bucket},
      {"/?versionId=1", no_bucket},
      // Not a bucket name S3 would serve.
      {"Media/k", bad_bucket},
      {"my_bucket/k", bad_bucket},
      {"ab/k", bad_bucket},
      {std::string(64, 'a') + "/k", bad_bucket},
      {"-media/k", bad_bucket},
      {"media-/k", bad_bucket},
      {"me..dia/k", bad_bucket},
      {"192.168.5.4/k", bad_bucket},
      {"media%20x/k", bad_bucket},
      {"media%25/k", bad_bucket},
      {"media:x/k", bad_bucket},
      {"/k", bad_bucket},    // the bucket "k", too short
      {"%2Fk", bad_bucket},  // the same
      // No key.
      {"media", no_key},
      {"/media", no_key},
      {"media/", no_key},
      {"/media/", no_key},
      {"media%2F", no_key},
      {"media/?versionId=1", no_key},
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/", no_key},
      // Too long a key.
      {"media/" + std::string(1025, 'k'), key_too_long},
      // Queries other than one versionId.
      {"media/k?", bad_query},
      {"media/k?versionid=1", bad_query},
      {"media/k?versionId", bad_query},
      {"media/k?partNumber=1", bad_query},
      {"media/k?versionId=1&x=2", bad_query},
      {"media/k?x=2&versionId=1", bad_query},
      {"media/k?versionId=1?versionId=2", bad_query},
      {"media/k?versionId=", bad_version},
      // ARNs S3 would not take.
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap", bad_arn},
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/k", bad_arn},
      {"arn:aws:s3:us-west-2:111122223333:accesspoint:my-ap/object/k", bad_arn},
      {"arn:aws:s3:us-west-2:111122223333:bucket/media/object/k", bad_arn},
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/My-AP/object/k", bad_arn},
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/ap/object/k", bad_arn},  // 2 characters
      {"arn:aws:s3:us-west-2:111122223333:accesspoint/-ap1/object/k", bad_arn},
      {"arn:aws:s3:us-west-2:111122223333:accesspoint//object/k", bad_arn},
      {"arn:aws:s3:us-west-2:11112222333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3:us-west-2:11112222333x:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3:us-west:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3::111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3:cn-north-1:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws-cn:s3:us-west-2:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3:us-gov-west-1:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws-iso:s3:us-iso-east-1:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3-object-lambda:us-west-2:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:iam::111122223333:role/x", bad_arn},
      {"arn:aws:s3:::media/k", bad_arn},
      {"arn:aws:s3-outposts:us-west-2:111122223333:accesspoint/my-ap/object/k", bad_arn},
      {"arn:aws:s3-outposts:us-west-2:111122223333:outpost/x-1/accesspoint/my-ap/object/k",
       bad_arn},
      {"arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-/accesspoint/my-ap/object/k",
       bad_arn},
      {"arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-1/bucket/b/object/k", bad_arn},
      {"arn:", bad_arn},
      {"ARN:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/k", bad_bucket},
  };
}

}  // namespace

TEST_CASE("parseCopySource: every spelling S3 accepts, every field", "[copy_source]") {
  const auto rows = goodTable();
  CHECK(rows.size() >= 25);
  for (const auto& row : rows) {
    CAPTURE(row.value);
    CopySource source;
    const CopySourceError error = parseCopySource(row.value, &source);
    REQUIRE(copySourceErrorName(error) == std::string_view("none"));
    CHECK(source.kind == row.kind);
    CHECK(source.bucket == row.bucket);
    CHECK(source.key == row.key);
    CHECK(source.version_id == row.version);
    CHECK(source.region == row.region);
    CHECK(source.account == row.account);
    CHECK(source.access_point == row.access_point);
    CHECK(source.outpost == row.outpost);
    CHECK(accessPointEndpoint(source) == row.endpoint);
    CHECK(source.logText() == row.log);
    if (row.kind == CopySourceKind::bucket) {
      CHECK(isValidBucketName(source.bucket));
      CHECK(source.partition.empty());
    } else {
      CHECK(source.bucket.empty());
      // The endpoint is an access point or Outposts name to the name parser too.
      const S3Name name = parseS3Name(accessPointEndpoint(source));
      CHECK(name.kind ==
            (source.outpost.empty() ? S3NameKind::access_point : S3NameKind::outposts));
      CHECK(name.region == source.region);
    }
  }
}

TEST_CASE("parseCopySource: every error", "[copy_source]") {
  const auto rows = badTable();
  CHECK(rows.size() >= 60);
  for (const auto& row : rows) {
    CAPTURE(row.value);
    CopySource source;
    const CopySourceError error = parseCopySource(row.value, &source);
    CHECK(copySourceErrorName(error) == copySourceErrorName(row.error));
  }
}

TEST_CASE("parseCopySource: a value is parsed afresh into a used CopySource", "[copy_source]") {
  CopySource source;
  REQUIRE(parseCopySource("arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/k?"
                          "versionId=v",
                          &source) == CopySourceError::none);
  REQUIRE(parseCopySource("media/k", &source) == CopySourceError::none);
  CHECK(source.kind == CopySourceKind::bucket);
  CHECK(source.bucket == "media");
  CHECK(source.version_id.empty());
  CHECK(source.access_point.empty());
  CHECK(source.account.empty());
  CHECK(accessPointEndpoint(source).empty());
}

TEST_CASE("copySourceErrorName: one distinct name per error", "[copy_source]") {
  using enum CopySourceError;
  const CopySourceError all[] = {none,      empty,       bad_encoding, control_character,
                                 no_bucket, bad_bucket,  no_key,       key_too_long,
                                 bad_query, bad_version, bad_arn};
  std::vector<std::string_view> names;
  for (auto error : all) {
    const std::string_view name = copySourceErrorName(error);
    CAPTURE(name);
    CHECK_FALSE(name.empty());
    CHECK(std::find(names.begin(), names.end(), name) == names.end());
    names.push_back(name);
  }
  CHECK(copySourceErrorName(bad_encoding) == "bad_encoding");
  CHECK(copySourceErrorName(control_character) == "control_character");
}

TEST_CASE("isValidBucketName and directoryBucketZone", "[copy_source][s3name]") {
  CHECK(isValidBucketName("media"));
  CHECK(isValidBucketName("vfx.shots.010"));
  CHECK_FALSE(isValidBucketName("Media"));
  CHECK_FALSE(isValidBucketName("192.168.5.4"));
  CHECK(directoryBucketZone("scratch--usw2-az1--x-s3") == "usw2-az1");
  CHECK(directoryBucketZone("a--b--use1-az4--x-s3") == "use1-az4");
  CHECK(directoryBucketZone("renders--usw2-lax1-az1--x-s3") == "usw2-lax1-az1");
  CHECK(directoryBucketZone("scratch").empty());
  CHECK(directoryBucketZone("scratch--x-s3").empty());
  CHECK(directoryBucketZone("--usw2-az1--x-s3").empty());
  CHECK(directoryBucketZone("scratch--usw2-az1-x-s3").empty());
  CHECK(directoryBucketZone("scratch.x--usw2-az1--x-s3").empty());
  CHECK(directoryBucketZone("scratch--1az--x-s3").empty());
  CHECK(directoryBucketZone("scratch--usw2-az1--x-s3x").empty());
}
