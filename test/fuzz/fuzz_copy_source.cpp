// libFuzzer harness for the x-amz-copy-source parser: whatever the bytes, no crash,
// no read outside the input, and the properties decide() relies on:
//   - a parsed bucket always passes the bucket-name rule, and no parsed field holds a
//     control character;
//   - an access point's endpoint is the access point (or Outposts) name of the ARN's
//     region to the S3 name parser;
//   - the parse is a fixed point: the parsed source, percent-encoded whole and parsed
//     again, gives the same fields (one decoding, no field leaking into another).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "acl/copy_source.h"
#include "acl/s3name.h"

namespace {

using s3gate::CopySource;
using s3gate::CopySourceError;
using s3gate::CopySourceKind;

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

// The first input byte picks a prefix, so that random bytes reach past the ARN's
// fixed parts instead of dying on the first colon.
std::string prefixFor(uint8_t selector) {
  switch (selector % 8) {
    case 1:
      return "media/";
    case 2:
      return "/";
    case 3:
      return "arn:aws:s3:us-west-2:111122223333:accesspoint/";
    case 4:
      return "arn:aws:s3:us-west-2:111122223333:accesspoint/my-ap/object/";
    case 5:
      return "arn:aws:s3-outposts:us-west-2:111122223333:outpost/op-01ac5d28a6a232904/"
             "accesspoint/my-ap/object/";
    case 6:
      return "arn%3Aaws%3As3%3Aus-west-2%3A111122223333%3Aaccesspoint%2Fmy-ap%2Fobject%2F";
    default:
      return "";
  }
}

bool hasControl(std::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return true;
    }
  }
  return false;
}

// Every byte but the unreserved ones as %XX: the spelling a careful client sends.
std::string encodeAll(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

bool sameSource(const CopySource& a, const CopySource& b) {
  return a.kind == b.kind && a.bucket == b.bucket && a.key == b.key &&
         a.version_id == b.version_id && a.partition == b.partition && a.region == b.region &&
         a.account == b.account && a.access_point == b.access_point && a.outpost == b.outpost;
}

void checkOne(std::string_view input) {
  CopySource source;
  const CopySourceError error = s3gate::parseCopySource(input, &source);

  // The same bytes give the same answer.
  CopySource again;
  check(s3gate::parseCopySource(input, &again) == error);
  if (error != CopySourceError::none) {
    check(!s3gate::copySourceErrorName(error).empty());
    return;
  }
  check(sameSource(source, again));

  check(!source.key.empty() && source.key.size() <= 1024);
  check(!hasControl(source.key) && !hasControl(source.version_id));
  if (source.kind == CopySourceKind::bucket) {
    check(s3gate::isValidBucketName(source.bucket));
    check(source.logText() == source.bucket + "/" + source.key);
    check(s3gate::accessPointEndpoint(source).empty());
  } else {
    check(source.bucket.empty());
    check(s3gate::isRegionName(source.region));
    check(source.account.size() == 12);
    const s3gate::S3Name name = s3gate::parseS3Name(s3gate::accessPointEndpoint(source));
    check(name.kind == (source.outpost.empty() ? s3gate::S3NameKind::access_point
                                               : s3gate::S3NameKind::outposts));
    check(name.region == source.region);
  }

  // Encoded whole (the '?' of the query kept literal) and parsed again: the same source.
  std::string encoded = encodeAll(source.logText());
  if (!source.version_id.empty()) {
    encoded += "?versionId=" + encodeAll(source.version_id);
  }
  CopySource round;
  check(s3gate::parseCopySource(encoded, &round) == CopySourceError::none);
  check(sameSource(source, round));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  checkOne(bytes);
  if (size > 0) {
    std::string input = prefixFor(data[0]);
    input.append(bytes.substr(1));
    checkOne(input);
  }
  return 0;
}
