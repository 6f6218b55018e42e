// libFuzzer harness for proxy/tls_peek.h, the ClientHello reader behind
// tunnel.verify_sni and the sni listeners: whatever the client's first bytes,
// no crash, no read outside the input, and an answer that does not depend on
// how the bytes were split into reads.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/tls_peek.h"

namespace {

using s3gate::ClientHelloInfo;
using s3gate::ClientHelloStatus;

// Aborts so that libFuzzer records the input; assert() could be compiled out.
void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

bool same(const ClientHelloInfo& a, const ClientHelloInfo& b) {
  return a.status == b.status && a.server_name == b.server_name;
}

void checkOne(std::string_view input, size_t max_bytes) {
  const ClientHelloInfo r = s3gate::peekClientHello(input, max_bytes);
  check((r.status == ClientHelloStatus::ok) == !r.server_name.empty());
  if (r.status == ClientHelloStatus::not_tls) {
    check(!input.empty());
    check(static_cast<uint8_t>(input[0]) != 22 || (input.size() >= 5 && input[1] != 3));
  }
  if (r.status == ClientHelloStatus::ok) {
    check(input.size() > 5 + r.server_name.size() && static_cast<uint8_t>(input[0]) == 22);
  }
  if (input.size() > max_bytes) {
    return;  // past the limit a prefix may answer malformed where more bytes would not
  }
  // The session calls again as bytes arrive: a prefix answers incomplete or
  // exactly the answer for the whole input.
  const size_t cuts[] = {1, 5, input.size() / 3, input.size() / 2, input.size() - 1};
  for (size_t cut : cuts) {
    if (cut == 0 || cut >= input.size()) {
      continue;
    }
    const ClientHelloInfo early = s3gate::peekClientHello(input.substr(0, cut), max_bytes);
    check(early.status == ClientHelloStatus::incomplete || same(early, r));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  checkOne(input, 16384 + 5);  // the default, what the session uses
  // A small limit reaches the limit checks with short inputs.
  checkOne(input, 5 + size / 2);
  return 0;
}
