#pragma once
// The x-amz-copy-source header of CopyObject and UploadPartCopy (SPEC section 3,
// step 7): the bucket, or the access point, and the key a copy reads from. Pure.
//
// S3 accepts the value in several spellings, all of which name the same source:
//   /bucket/key   bucket/key   bucket%2Fkey (the whole value percent-encoded)
//   bucket/key?versionId=V
//   arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME/object/KEY
//   arn:aws:s3-outposts:REGION:ACCOUNT:outpost/ID/accesspoint/NAME/object/KEY
// and the ARNs percent-encoded too. The value is split at its first literal '?' (an
// encoded %3F belongs to the key), the part before it is percent-decoded once, as S3
// decodes it, and only then split into bucket and key, so that "med%69a/k" is the
// bucket "media" and "media%2Fk" is the bucket "media" too.

#include <string>
#include <string_view>

namespace s3gate {

enum class CopySourceKind {
  bucket,        // a bucket by name (a directory bucket, an access point alias: any name)
  access_point,  // an access point ARN (S3, or S3 on Outposts)
};

struct CopySource {
  CopySourceKind kind = CopySourceKind::bucket;
  std::string bucket;      // bucket: the source bucket
  std::string key;         // the object key, decoded; never empty
  std::string version_id;  // decoded; "" when none was given
  // access_point: what the ARN says.
  std::string partition;     // "aws", "aws-cn", "aws-us-gov", ...
  std::string region;        // "us-west-2"
  std::string account;       // 12 digits
  std::string access_point;  // the access point's name
  std::string outpost;       // S3 on Outposts: the outpost ID ("op-..."); "" otherwise

  // For the access log's copy_source field: "bucket/key", or for an access point
  // the ARN and its key ("arn:aws:s3:us-west-2:111122223333:accesspoint/ap/object/key").
  std::string logText() const;
};

// The host name an access point source is served at, the name a `hosts` entry must
// list for the copy to be allowed:
//   NAME-ACCOUNT.s3-accesspoint.REGION.amazonaws.com[.cn]
//   NAME-ACCOUNT.OUTPOST.s3-outposts.REGION.amazonaws.com[.cn]
// "" for a bucket source.
std::string accessPointEndpoint(const CopySource& source);

enum class CopySourceError {
  none,
  empty,              // nothing (or only blanks)
  bad_encoding,       // '%' not followed by two hex digits
  control_character,  // a control character (NUL included), raw or percent-encoded
  no_bucket,          // "/key", "//bucket/key": the bucket is empty
  bad_bucket,         // not a bucket name S3 would serve (acl/s3name.h isValidBucketName)
  no_key,             // "bucket", "bucket/": no object named
  key_too_long,       // more than S3's 1024 bytes
  bad_query,          // after '?', anything but one versionId=...
  bad_version,        // an empty version ID
  bad_arn,            // "arn:" that is not an access point object ARN S3 would accept
};

// "empty", "bad_encoding", ...: for the detail line of a 400 and for the tests.
std::string_view copySourceErrorName(CopySourceError error);

// Parses one x-amz-copy-source value (blanks at either end ignored). On an error,
// `out` is left in an unspecified state.
[[nodiscard]] CopySourceError parseCopySource(std::string_view value, CopySource* out);

}  // namespace s3gate
