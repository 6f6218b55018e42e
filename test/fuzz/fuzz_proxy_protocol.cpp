// libFuzzer harness for the PROXY protocol header parser: whatever the bytes,
// no crash, no read outside the input, and the invariants the session relies on.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/proxy_protocol.h"

namespace {

using s3gate::ProxyHeaderResult;
using s3gate::ProxyHeaderStatus;

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);

// The first input byte picks a prefix, so that random bytes reach past the
// signatures instead of dying on the first byte.
std::string prefixFor(uint8_t selector) {
  switch (selector % 8) {
    case 1:
      return "PROXY ";
    case 2:
      return "PROXY TCP4 ";
    case 3:
      return "PROXY TCP6 ";
    case 4:
      return kSignature;
    case 5:
      return kSignature + "\x21\x11";
    case 6:
      return kSignature + "\x21\x21";
    default:
      return "";
  }
}

bool sameAnswer(const ProxyHeaderResult& a, const ProxyHeaderResult& b) {
  return a.status == b.status && a.error == b.error && a.header.version == b.header.version &&
         a.header.length == b.header.length && a.header.local == b.header.local &&
         a.header.source == b.header.source && a.header.destination == b.header.destination &&
         a.header.vpce_id == b.header.vpce_id;
}

uint16_t be16(std::string_view bytes, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(bytes[at]) << 8 |
                               static_cast<uint8_t>(bytes[at + 1]));
}

void checkOne(std::string_view input) {
  const ProxyHeaderResult r = s3gate::parseProxyHeader(input);
  switch (r.status) {
    case ProxyHeaderStatus::incomplete:
      check(r.error.empty());
      check(input.size() < s3gate::kMaxProxyV2HeaderBytes);
      check(input.empty() || input[0] != 'P' || input.size() < s3gate::kMaxProxyV1HeaderBytes);
      break;
    case ProxyHeaderStatus::invalid:
      check(!r.error.empty());
      break;
    case ProxyHeaderStatus::ok: {
      check(r.error.empty());
      const auto& h = r.header;
      check(h.length > 0 && h.length <= input.size());
      check(h.local == !h.source.has_value());
      check(h.source.has_value() == h.destination.has_value());
      if (h.source) {
        check(h.source->ip().family() == h.destination->ip().family());
        check(h.source->ip().isV4() || h.source->ip().isV6());
      }
      if (h.vpce_id) {
        check(h.version == 2 && !h.local && !h.vpce_id->empty());
        for (char c : *h.vpce_id) {
          check(c > ' ' && c < 0x7F);
        }
      }
      if (h.version == 1) {
        check(h.length <= s3gate::kMaxProxyV1HeaderBytes);
        check(input.substr(0, 6) == "PROXY ");
        check(input.substr(h.length - 2, 2) == "\r\n");
        check(input.substr(0, h.length - 2).find_first_of("\r\n") == std::string_view::npos);
      } else {
        check(h.version == 2);
        check(h.length <= s3gate::kMaxProxyV2HeaderBytes);
        check(input.substr(0, 12) == kSignature);
        check(h.length == 16 + static_cast<size_t>(be16(input, 14)));
      }
      // The header alone gives the same answer: nothing after it was read.
      check(sameAnswer(s3gate::parseProxyHeader(input.substr(0, h.length)), r));
      break;
    }
  }

  // Any split gives the same answer: a prefix answers incomplete or exactly this.
  const size_t cuts[] = {1, input.size() / 3, input.size() / 2, input.size() - 1};
  for (size_t cut : cuts) {
    if (cut == 0 || cut >= input.size()) {
      continue;
    }
    const ProxyHeaderResult early = s3gate::parseProxyHeader(input.substr(0, cut));
    if (early.status != ProxyHeaderStatus::incomplete) {
      check(sameAnswer(early, r));
    } else if (r.status == ProxyHeaderStatus::ok) {
      check(cut < r.header.length);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  checkOne(raw);
  if (size > 0) {
    const std::string prefixed = prefixFor(data[0]) + std::string(raw.substr(1));
    checkOne(prefixed);
  }
  return 0;
}
