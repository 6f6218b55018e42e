#include "acl/copy_source.h"

#include "acl/s3name.h"

namespace s3gate {

namespace {

// S3's limit on a key's length, in bytes of UTF-8.
constexpr size_t kMaxKeyBytes = 1024;

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
bool isLower(char c) {
  return c >= 'a' && c <= 'z';
}
bool isControl(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

int hexValue(char c) {
  if (isDigit(c)) {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// One pass of percent-decoding, as S3 applies it to the header. '+' stays '+': the
// value is a path, not a form.
CopySourceError percentDecode(std::string_view text, std::string* out) {
  out->clear();
  out->reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) {
        return CopySourceError::bad_encoding;
      }
      const int hi = hexValue(text[i + 1]);
      const int lo = hexValue(text[i + 2]);
      if (hi < 0 || lo < 0) {
        return CopySourceError::bad_encoding;
      }
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (isControl(c)) {
      return CopySourceError::control_character;
    }
    *out += c;
  }
  return CopySourceError::none;
}

// Splits off the text before the first `sep`; `rest` gets what follows it. False
// when there is no `sep`.
bool splitAt(std::string_view text, char sep, std::string_view* head, std::string_view* rest) {
  const size_t at = text.find(sep);
  if (at == std::string_view::npos) {
    return false;
  }
  *head = text.substr(0, at);
  *rest = text.substr(at + 1);
  return true;
}

bool isAccountId(std::string_view text) {
  if (text.size() != 12) {
    return false;
  }
  for (char c : text) {
    if (!isDigit(c)) {
      return false;
    }
  }
  return true;
}

// Access point names: 3 to 50 lower-case letters, digits and hyphens, beginning and
// ending with a letter or digit.
bool isAccessPointName(std::string_view text) {
  if (text.size() < 3 || text.size() > 50) {
    return false;
  }
  for (char c : text) {
    if (!isLower(c) && !isDigit(c) && c != '-') {
      return false;
    }
  }
  return text.front() != '-' && text.back() != '-';
}

// "op-" and then letters and digits ("op-01ac5d28a6a232904").
bool isOutpostId(std::string_view text) {
  if (!text.starts_with("op-") || text.size() == 3 || text.size() > 63) {
    return false;
  }
  for (char c : text.substr(3)) {
    if (!isLower(c) && !isDigit(c)) {
      return false;
    }
  }
  return true;
}

// The partitions whose S3 names live under amazonaws.com[.cn], each with the regions
// it holds. A partition that does not fit its region is an ARN S3 would refuse.
bool partitionFitsRegion(std::string_view partition, std::string_view region) {
  const bool china = region.starts_with("cn-");
  const bool gov = region.starts_with("us-gov-");
  if (partition == "aws") {
    return !china && !gov;
  }
  if (partition == "aws-cn") {
    return china;
  }
  if (partition == "aws-us-gov") {
    return gov;
  }
  return false;
}

// arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME/object/KEY
// arn:PARTITION:s3-outposts:REGION:ACCOUNT:outpost/ID/accesspoint/NAME/object/KEY
CopySourceError parseArn(std::string_view arn, CopySource* out) {
  std::string_view prefix;
  std::string_view partition;
  std::string_view service;
  std::string_view region;
  std::string_view account;
  std::string_view rest = arn;
  if (!splitAt(rest, ':', &prefix, &rest) || !splitAt(rest, ':', &partition, &rest) ||
      !splitAt(rest, ':', &service, &rest) || !splitAt(rest, ':', &region, &rest) ||
      !splitAt(rest, ':', &account, &rest)) {
    return CopySourceError::bad_arn;
  }
  if (prefix != "arn" || !isRegionName(region) || !partitionFitsRegion(partition, region) ||
      !isAccountId(account)) {
    return CopySourceError::bad_arn;
  }
  out->kind = CopySourceKind::access_point;
  out->partition = std::string(partition);
  out->region = std::string(region);
  out->account = std::string(account);
  std::string_view word;
  if (service == "s3-outposts") {
    std::string_view outpost;
    if (!splitAt(rest, '/', &word, &rest) || word != "outpost" ||
        !splitAt(rest, '/', &outpost, &rest) || !isOutpostId(outpost)) {
      return CopySourceError::bad_arn;
    }
    out->outpost = std::string(outpost);
  } else if (service != "s3") {
    return CopySourceError::bad_arn;
  }
  std::string_view name;
  if (!splitAt(rest, '/', &word, &rest) || word != "accesspoint" ||
      !splitAt(rest, '/', &name, &rest) || !isAccessPointName(name) ||
      !splitAt(rest, '/', &word, &rest) || word != "object") {
    return CopySourceError::bad_arn;
  }
  out->access_point = std::string(name);
  if (rest.empty()) {
    return CopySourceError::no_key;
  }
  out->key = std::string(rest);
  return CopySourceError::none;
}

// What follows the first literal '?': exactly one versionId=VALUE (a version ID never
// holds a raw '&' or '?').
CopySourceError parseQuery(std::string_view query, CopySource* out) {
  constexpr std::string_view kVersionId = "versionId=";
  if (!query.starts_with(kVersionId) || query.find_first_of("&?") != std::string_view::npos) {
    return CopySourceError::bad_query;
  }
  const CopySourceError error = percentDecode(query.substr(kVersionId.size()), &out->version_id);
  if (error != CopySourceError::none) {
    return error;
  }
  return out->version_id.empty() ? CopySourceError::bad_version : CopySourceError::none;
}

}  // namespace

std::string CopySource::logText() const {
  if (kind == CopySourceKind::access_point) {
    std::string arn = "arn:" + partition + (outpost.empty() ? ":s3:" : ":s3-outposts:") + region +
                      ":" + account + ":";
    if (!outpost.empty()) {
      arn += "outpost/" + outpost + "/";
    }
    return arn + "accesspoint/" + access_point + "/object/" + key;
  }
  return bucket + "/" + key;
}

std::string accessPointEndpoint(const CopySource& source) {
  if (source.kind != CopySourceKind::access_point) {
    return {};
  }
  const std::string suffix =
      source.region.starts_with("cn-") ? ".amazonaws.com.cn" : ".amazonaws.com";
  std::string host = source.access_point + "-" + source.account + ".";
  if (!source.outpost.empty()) {
    host += source.outpost + ".s3-outposts.";
  } else {
    host += "s3-accesspoint.";
  }
  return host + source.region + suffix;
}

std::string_view copySourceErrorName(CopySourceError error) {
  switch (error) {
    case CopySourceError::none:
      return "none";
    case CopySourceError::empty:
      return "empty";
    case CopySourceError::bad_encoding:
      return "bad_encoding";
    case CopySourceError::control_character:
      return "control_character";
    case CopySourceError::no_bucket:
      return "no_bucket";
    case CopySourceError::bad_bucket:
      return "bad_bucket";
    case CopySourceError::no_key:
      return "no_key";
    case CopySourceError::key_too_long:
      return "key_too_long";
    case CopySourceError::bad_query:
      return "bad_query";
    case CopySourceError::bad_version:
      return "bad_version";
    case CopySourceError::bad_arn:
      return "bad_arn";
  }
  return "bad_arn";
}

CopySourceError parseCopySource(std::string_view value, CopySource* out) {
  *out = CopySource{};
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  if (value.empty()) {
    return CopySourceError::empty;
  }
  std::string_view path = value;
  std::string_view query;
  const bool has_query = splitAt(value, '?', &path, &query);

  std::string decoded;
  CopySourceError error = percentDecode(path, &decoded);
  if (error != CopySourceError::none) {
    return error;
  }
  if (has_query) {
    const CopySourceError query_error = parseQuery(query, out);
    if (query_error != CopySourceError::none) {
      return query_error;
    }
  }
  std::string_view source = decoded;
  if (!source.empty() && source.front() == '/') {
    source.remove_prefix(1);
  }
  if (source.starts_with("arn:")) {
    error = parseArn(source, out);
  } else {
    std::string_view bucket;
    std::string_view key;
    if (!splitAt(source, '/', &bucket, &key)) {
      bucket = source;
      key = {};
    }
    if (bucket.empty()) {
      return CopySourceError::no_bucket;
    }
    if (!isValidBucketName(bucket)) {
      return CopySourceError::bad_bucket;
    }
    if (key.empty()) {
      return CopySourceError::no_key;
    }
    out->kind = CopySourceKind::bucket;
    out->bucket = std::string(bucket);
    out->key = std::string(key);
  }
  if (error != CopySourceError::none) {
    return error;
  }
  if (out->key.size() > kMaxKeyBytes) {
    return CopySourceError::key_too_long;
  }
  return CopySourceError::none;
}

}  // namespace s3gate
