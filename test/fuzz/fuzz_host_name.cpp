// libFuzzer harness for host names as clients write them: the normalisation of
// acl/decision.h (SPEC section 3, step 2), the S3 name parser of acl/s3name.h
// and the IP-literal reader. Whatever the bytes, no crash, and the properties
// the decision relies on: normalising is idempotent and ignores ASCII case and
// one trailing dot; an S3 bucket name splits into the bucket and an endpoint
// that parses on its own.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "acl/decision.h"
#include "acl/s3name.h"
#include "common/net.h"

namespace {

using s3gate::S3Name;
using s3gate::S3NameKind;

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

bool endsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string swapCase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') {
      c = static_cast<char>(c - 'a' + 'A');
    } else if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

void checkS3Name(const std::string& host) {
  const S3Name name = s3gate::parseS3Name(host);
  if (name.kind == S3NameKind::not_s3) {
    check(name.region.empty() && name.bucket.empty() && !name.dualstack && !name.fips);
    return;
  }
  check(endsWith(host, ".amazonaws.com") || endsWith(host, ".amazonaws.com.cn"));
  if (!name.bucket.empty()) {
    check(name.bucket.size() >= 3 && name.bucket.size() <= 63);
    check(host.size() > name.bucket.size() && host.starts_with(name.bucket) &&
          host[name.bucket.size()] == '.');
  }
  if (!name.region.empty()) {
    check(s3gate::isRegionName(name.region));
    check(name.region.starts_with("cn-") == endsWith(host, ".amazonaws.com.cn"));
  }
  if (!s3gate::isBucketEndpoint(name.kind)) {
    return;
  }
  check(!name.region.empty());
  if (name.kind == S3NameKind::express) {
    return;  // the endpoint/virtual-hosted round trip below is for the s3 endpoints only
  }
  if (name.kind == S3NameKind::endpoint) {
    check(name.bucket.empty());
    // A bucket in front of an endpoint makes the virtual-hosted name.
    const S3Name with = s3gate::parseS3Name("fuzz-bucket." + host);
    check(with.kind == S3NameKind::virtual_hosted && with.bucket == "fuzz-bucket");
    check(with.region == name.region && with.dualstack == name.dualstack && with.fips == name.fips);
  } else {
    // Without its bucket, a virtual-hosted name is the endpoint it names.
    check(!name.bucket.empty());
    const S3Name endpoint = s3gate::parseS3Name(host.substr(name.bucket.size() + 1));
    check(endpoint.kind == S3NameKind::endpoint && endpoint.bucket.empty());
    check(endpoint.region == name.region && endpoint.dualstack == name.dualstack &&
          endpoint.fips == name.fips);
  }
}

void checkHost(std::string_view raw) {
  std::string host = "not cleared";
  const bool ok = s3gate::normalizeHostName(raw, &host);
  check(ok == !host.empty());
  if (ok) {
    check(host.size() <= 253 && host.back() != '.');
    for (char c : host) {
      check((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.');
    }
    std::string again;
    check(s3gate::normalizeHostName(host, &again) && again == host);
    checkS3Name(host);
  }
  // ASCII case and one trailing dot do not change the answer.
  std::string swapped;
  check(s3gate::normalizeHostName(swapCase(raw), &swapped) == ok && swapped == host);
  if (!raw.empty() && raw.back() != '.') {
    std::string dotted;
    check(s3gate::normalizeHostName(std::string(raw) + ".", &dotted) == ok && dotted == host);
  }
  // The S3 parser is only given normalised names, but must not misbehave on others.
  (void)s3gate::parseS3Name(raw);
  (void)s3gate::isRegionName(raw);

  s3gate::IpAddress ip;
  if (s3gate::parseIpLiteral(raw, &ip)) {
    check(ip.isV4() || ip.isV6());
    // Its canonical text reads back as the same address.
    s3gate::IpAddress back;
    check(s3gate::parseIpLiteral(ip.toString(), &back) && back == ip);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  checkHost(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
