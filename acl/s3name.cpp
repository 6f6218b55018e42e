#include "acl/s3name.h"

#include "common/host_name.h"

#include <algorithm>
#include <array>
#include <span>

namespace s3gate {

namespace {

constexpr std::string_view kCommercialSuffix = ".amazonaws.com";
constexpr std::string_view kChinaSuffix = ".amazonaws.com.cn";

bool isLower(char c) {
  return c >= 'a' && c <= 'z';
}
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

bool endsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// The pieces of `text` between `separator`s, held without a heap allocation
// (names are decided for every request): a DNS name has at most 127 labels in
// its 253 bytes. More pieces than that mark the list overflowed.
class Pieces {
 public:
  static constexpr size_t kMax = 128;
  Pieces(std::string_view text, char separator) {
    size_t start = 0;
    while (true) {
      if (size_ == kMax) {
        overflow_ = true;
        return;
      }
      size_t at = text.find(separator, start);
      if (at == std::string_view::npos) {
        items_[size_++] = text.substr(start);
        return;
      }
      items_[size_++] = text.substr(start, at - start);
      start = at + 1;
    }
  }
  bool overflow() const { return overflow_; }
  size_t size() const { return size_; }
  std::string_view operator[](size_t i) const { return items_[i]; }
  std::span<const std::string_view> all() const { return {items_.data(), size_}; }
  const std::string_view* begin() const { return items_.data(); }
  const std::string_view* end() const { return items_.data() + size_; }
  std::string_view back() const { return items_[size_ - 1]; }  // never empty

 private:
  std::array<std::string_view, kMax> items_;
  size_t size_ = 0;
  bool overflow_ = false;
};

// "192.168.5.4": four groups of digits. S3 refuses such bucket names, and a
// virtual-hosted name made of one is an address in disguise.
bool looksLikeIpv4(std::string_view text) {
  const Pieces labels(text, '.');
  if (labels.size() != 4 || labels.overflow()) {
    return false;
  }
  for (auto label : labels) {
    if (label.empty()) {
      return false;
    }
    for (char c : label) {
      if (!isDigit(c)) {
        return false;
      }
    }
  }
  return true;
}

// Joins labels[0, count) with dots: the bucket part of a virtual-hosted name.
std::string joinLabels(std::span<const std::string_view> labels, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) {
      out += '.';
    }
    out += labels[i];
  }
  return out;
}

// The endpoint labels at the end of `labels` (everything before the partition
// suffix): how many there are, and what they say. Matched from the right, one whole
// label at a time, so that a bucket ending in "s3" or a look-alike label never counts.
struct EndpointMatch {
  size_t label_count = 0;  // 0: no endpoint form matched
  std::string region;
  bool dualstack = false;
  bool fips = false;
};

EndpointMatch matchEndpoint(std::span<const std::string_view> labels, bool china) {
  EndpointMatch m;
  const size_t n = labels.size();
  if (n == 0) {
    return m;
  }
  const std::string_view last = labels[n - 1];
  // The partition must agree with the region: cn-* lives under amazonaws.com.cn,
  // everything else under amazonaws.com.
  auto regionFitsPartition = [china](std::string_view region) {
    return (region.substr(0, 3) == "cn-") == china;
  };

  if (isRegionName(last)) {
    if (!regionFitsPartition(last) || n < 2) {
      return m;
    }
    m.region = std::string(last);
    const std::string_view before = labels[n - 2];
    if (before == "s3" || before == "s3-fips") {  // s3.R, s3-fips.R
      m.label_count = 2;
      m.fips = before == "s3-fips";
      return m;
    }
    if (before == "dualstack" && n >= 3 &&
        (labels[n - 3] == "s3" || labels[n - 3] == "s3-fips")) {  // s3[-fips].dualstack.R
      m.label_count = 3;
      m.dualstack = true;
      m.fips = labels[n - 3] == "s3-fips";
      return m;
    }
    return m;
  }

  // s3-R: the region inside the label.
  if (last.substr(0, 3) == "s3-" && isRegionName(last.substr(3))) {
    const std::string_view region = last.substr(3);
    if (regionFitsPartition(region)) {
      m.region = std::string(region);
      m.label_count = 1;
    }
    return m;
  }

  // The global names, which AWS serves from us-east-1 (commercial partition only).
  if (!china && (last == "s3" || last == "s3-external-1")) {
    m.region = "us-east-1";
    m.label_count = 1;
  }
  return m;
}

// The names of the S3 services that are not bucket endpoints. Which of these kinds a
// name gets only changes how its denial is explained: none of them reaches a bucket
// rule, and every one is allowed only by a `hosts` entry. What matters for safety is
// the other direction, that none of them is ever taken for a bucket endpoint; that
// holds because matchEndpoint() is tried first and wants the exact labels s3[-fips].
struct ServiceMatch {
  S3NameKind kind = S3NameKind::not_s3;
  size_t label_count = 0;  // 0: no service form matched
  std::string region;      // empty for the global services
  std::string zone;        // a zonal S3 Express endpoint's availability-zone ID
  bool dualstack = false;
  bool fips = false;
};

// An availability-zone ID as S3 Express writes it ("usw2-az1", "use1-az4"): letters,
// digits and hyphens, beginning with a letter.
bool isZoneId(std::string_view text) {
  if (text.empty() || !isLower(text.front())) {
    return false;
  }
  for (char c : text) {
    if (!isLower(c) && !isDigit(c) && c != '-') {
      return false;
    }
  }
  return true;
}

// The label in front of the region (or of "dualstack.R") of a regional service:
// "s3-accesspoint", "s3-accesspoint-fips", "s3express-usw2-az1", ... `zone` gets a
// zonal S3 Express endpoint's zone ID, and is left alone otherwise.
bool matchRegionalServiceLabel(std::string_view label, S3NameKind* kind, bool* fips,
                               std::string_view* zone) {
  struct Service {
    std::string_view label;
    S3NameKind kind;
  };
  static constexpr Service kServices[] = {
      {"s3-accesspoint", S3NameKind::access_point},    {"s3-control", S3NameKind::s3_control},
      {"s3-object-lambda", S3NameKind::object_lambda}, {"s3-outposts", S3NameKind::outposts},
      {"s3express-control", S3NameKind::express},
  };
  constexpr std::string_view kFips = "-fips";
  for (const auto& service : kServices) {
    if (label == service.label) {
      *kind = service.kind;
      *fips = false;
      return true;
    }
    if (label.size() == service.label.size() + kFips.size() && label.starts_with(service.label) &&
        label.ends_with(kFips)) {
      *kind = service.kind;
      *fips = true;
      return true;
    }
  }
  // A zonal S3 Express endpoint: s3express-AZID, s3express-fips-AZID.
  constexpr std::string_view kZonal = "s3express-";
  constexpr std::string_view kZonalFips = "s3express-fips-";
  if (label.starts_with(kZonalFips) && isZoneId(label.substr(kZonalFips.size()))) {
    *kind = S3NameKind::express;
    *fips = true;
    *zone = label.substr(kZonalFips.size());
    return true;
  }
  if (label.starts_with(kZonal) && isZoneId(label.substr(kZonal.size()))) {
    *kind = S3NameKind::express;
    *fips = false;
    *zone = label.substr(kZonal.size());
    return true;
  }
  return false;
}

ServiceMatch matchService(std::span<const std::string_view> labels, bool china) {
  ServiceMatch m;
  const size_t n = labels.size();
  if (n == 0) {
    return m;
  }
  const std::string_view last = labels[n - 1];
  if (isRegionName(last)) {
    if ((last.substr(0, 3) == "cn-") != china || n < 2) {
      return m;
    }
    S3NameKind kind = S3NameKind::not_s3;
    bool fips = false;
    std::string_view zone;
    if (matchRegionalServiceLabel(labels[n - 2], &kind, &fips, &zone)) {
      m.label_count = 2;
    } else if (labels[n - 2] == "dualstack" && n >= 3 &&
               matchRegionalServiceLabel(labels[n - 3], &kind, &fips, &zone)) {
      m.label_count = 3;
      m.dualstack = true;
    } else {
      return m;
    }
    m.kind = kind;
    m.fips = fips;
    m.region = std::string(last);
    m.zone = std::string(zone);
    return m;
  }
  if (china) {
    return m;  // the global services are commercial-partition names
  }
  if (last == "s3-accelerate") {  // [BUCKET.]s3-accelerate
    m.kind = S3NameKind::accelerate;
    m.label_count = 1;
  } else if (last == "dualstack" && n >= 2 && labels[n - 2] == "s3-accelerate") {
    m.kind = S3NameKind::accelerate;
    m.label_count = 2;
    m.dualstack = true;
  } else if (last == "s3-global" && n >= 2 && labels[n - 2] == "accesspoint") {
    m.kind = S3NameKind::multi_region_access_point;  // ALIAS.accesspoint.s3-global
    m.label_count = 2;
  }
  return m;
}

}  // namespace

std::string_view s3NameKindName(S3NameKind kind) {
  switch (kind) {
    case S3NameKind::not_s3:
      return "not_s3";
    case S3NameKind::endpoint:
      return "endpoint";
    case S3NameKind::virtual_hosted:
      return "virtual_hosted";
    case S3NameKind::access_point:
      return "access_point";
    case S3NameKind::s3_control:
      return "s3_control";
    case S3NameKind::accelerate:
      return "accelerate";
    case S3NameKind::multi_region_access_point:
      return "multi_region_access_point";
    case S3NameKind::object_lambda:
      return "object_lambda";
    case S3NameKind::outposts:
      return "outposts";
    case S3NameKind::express:
      return "express";
  }
  return "not_s3";
}

bool isBucketEndpoint(S3NameKind kind) {
  return kind == S3NameKind::endpoint || kind == S3NameKind::virtual_hosted ||
         kind == S3NameKind::express;
}

bool bucketOutsideName(const S3Name& name) {
  return name.kind == S3NameKind::endpoint ||
         (name.kind == S3NameKind::express && name.bucket.empty());
}

bool isValidBucketName(std::string_view bucket) {
  if (bucket.size() < 3 || bucket.size() > 63) {
    return false;
  }
  for (char c : bucket) {
    if (!isLower(c) && !isDigit(c) && c != '.' && c != '-') {
      return false;
    }
  }
  auto alnum = [](char c) { return isLower(c) || isDigit(c); };
  if (!alnum(bucket.front()) || !alnum(bucket.back())) {
    return false;
  }
  if (bucket.find("..") != std::string_view::npos) {
    return false;
  }
  return !looksLikeIpv4(bucket);
}

std::string_view directoryBucketZone(std::string_view bucket) {
  constexpr std::string_view kSuffix = "--x-s3";
  if (!isValidBucketName(bucket) || bucket.find('.') != std::string_view::npos ||
      !bucket.ends_with(kSuffix)) {
    return {};
  }
  const std::string_view rest = bucket.substr(0, bucket.size() - kSuffix.size());
  const size_t sep = rest.rfind("--");
  if (sep == std::string_view::npos || sep == 0) {
    return {};  // no zone, or no base name in front of it
  }
  const std::string_view zone = rest.substr(sep + 2);
  if (!isZoneId(zone) || zone.back() == '-') {
    return {};
  }
  return zone;
}

bool isValidHostPattern(std::string_view pattern, std::string* why) {
  auto fail = [why](std::string text) {
    if (why != nullptr) {
      *why = std::move(text);
    }
    return false;
  };
  if (pattern.empty()) {
    return fail("the name is empty");
  }
  if (pattern.size() > 253) {
    return fail("the name is longer than 253 characters");
  }
  const Pieces labels(pattern, '.');  // 253 bytes: at most 127 labels
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string_view label = labels[i];
    if (label.empty()) {
      return fail("a label is empty (\"..\", or a dot at either end)");
    }
    if (label == "*") {
      if (i + 2 >= labels.size()) {
        return fail(
            "\"*\" may not stand for the last two labels: a pattern names its domain (\"*.com\" "
            "would open a whole top-level domain)");
      }
      continue;
    }
    if (label.size() > 63) {
      return fail("a label is longer than 63 characters");
    }
    for (char c : label) {
      if (c == '*') {
        return fail("\"*\" must be a whole label, not part of one");
      }
      if (!isLower(c) && !isDigit(c) && c != '-' && c != '_') {
        return fail(
            "a label may hold only lower-case letters, digits, '-' and '_' (or be \"*\" alone)");
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return fail("a label may not begin or end with '-'");
    }
  }
  const std::string_view top = labels.back();
  if (std::all_of(top.begin(), top.end(), isDigit)) {
    return fail("an IP address is not a host name (clients are refused IP literals)");
  }
  // The one host-name rule decides in the end: with each "*" as one concrete
  // label, the pattern is a name the proxy accepts as a target.
  std::string concrete;
  for (std::string_view label : labels) {
    concrete += concrete.empty() ? "" : ".";
    concrete += label == "*" ? std::string_view("x") : label;
  }
  if (!isValidHostName(concrete)) {
    return fail("not a valid host name");
  }
  return true;
}

bool isRegionName(std::string_view text) {
  // xx-name[-name...]-N: a two-letter area, one or more letter groups, a number.
  // Real or not: the list of regions grows, and `s3.regions` is what limits them.
  if (text.size() > 63) {
    return false;
  }
  const Pieces parts(text, '-');  // 63 bytes: at most 32 parts
  if (parts.size() < 3 || parts[0].size() != 2) {
    return false;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const bool number = i + 1 == parts.size();
    if (parts[i].empty()) {
      return false;
    }
    for (char c : parts[i]) {
      if (number ? !isDigit(c) : !isLower(c)) {
        return false;
      }
    }
  }
  return true;
}

S3Name parseS3Name(std::string_view host) {
  S3Name name;
  bool china = false;
  std::string_view rest;
  if (endsWith(host, kChinaSuffix)) {
    china = true;
    rest = host.substr(0, host.size() - kChinaSuffix.size());
  } else if (endsWith(host, kCommercialSuffix)) {
    rest = host.substr(0, host.size() - kCommercialSuffix.size());
  } else {
    return name;
  }
  if (rest.empty()) {
    return name;
  }
  const Pieces pieces(rest, '.');
  if (pieces.overflow()) {
    return name;  // not a DNS name
  }
  const std::span<const std::string_view> labels = pieces.all();
  const EndpointMatch m = matchEndpoint(labels, china);
  if (m.label_count == 0) {
    const ServiceMatch service = matchService(labels, china);
    if (service.label_count == 0) {
      return name;
    }
    const size_t prefix_labels = labels.size() - service.label_count;
    std::string bucket = prefix_labels > 0 ? joinLabels(labels, prefix_labels) : std::string();
    if (service.kind == S3NameKind::express && !bucket.empty()) {
      // S3 Express is a bucket endpoint: its names are held to the bucket rules like
      // virtual-hosted ones, so anything in front of the endpoint must be a bucket S3
      // would serve there. s3express-control carries none; a name that is not a
      // bucket falls through to `hosts`, never to a bucket rule that might glob-match
      // it. (Whether the bucket is a directory bucket of the endpoint's zone is
      // decide()'s question, so that the denial can say so.)
      if (service.zone.empty() || !isValidBucketName(bucket)) {
        return name;
      }
    }
    name.kind = service.kind;
    name.region = service.region;
    name.zone = service.zone;
    name.dualstack = service.dualstack;
    name.fips = service.fips;
    // Transfer Acceleration and S3 Express names carry the bucket in front; an
    // accelerate bucket is kept for the log when it is one S3 would serve. (An access
    // point's labels name the access point and the account, not a bucket.)
    if ((service.kind == S3NameKind::accelerate || service.kind == S3NameKind::express) &&
        isValidBucketName(bucket)) {
      name.bucket = std::move(bucket);
    }
    return name;
  }
  const size_t bucket_labels = labels.size() - m.label_count;
  if (bucket_labels > 0) {
    std::string bucket = joinLabels(labels, bucket_labels);
    // A name S3 would not serve as a bucket is not an S3 name: it falls through to
    // `hosts`, never to a bucket rule that might glob-match it.
    if (!isValidBucketName(bucket)) {
      return name;
    }
    name.kind = S3NameKind::virtual_hosted;
    name.bucket = std::move(bucket);
  } else {
    name.kind = S3NameKind::endpoint;
  }
  name.region = m.region;
  name.dualstack = m.dualstack;
  name.fips = m.fips;
  return name;
}

}  // namespace s3gate
