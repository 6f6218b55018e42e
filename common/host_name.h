#pragma once
// The one host-name rule: what the proxy accepts as a target name is what the
// configuration accepts in `hosts` and `dns.pins`, so an entry that loads can
// match.

#include <string>
#include <string_view>

namespace s3gate {

// A DNS host name, already lower case: labels of 1-63 letters, digits, hyphens
// and underscores, no hyphen at either end of a label, 253 characters at most,
// and a top-level label that is not all digits (RFC 1123 2.1: that shape is an
// address).
bool isValidHostName(std::string_view name);

// Name normalisation (SPEC section 3, step 2): lower case, one trailing dot
// removed; false when the result is not a valid host name. `out` is empty on
// false.
bool normalizeHostName(std::string_view raw, std::string* out);

}  // namespace s3gate
