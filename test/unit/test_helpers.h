#pragma once
// Small builders shared by the unit tests: a malformed literal fails the test.

#include <catch2/catch.hpp>

#include "common/net.h"

namespace s3gate::test {

inline IpAddress ip(const char* text) {
  auto parsed = IpAddress::parse(text);
  REQUIRE(parsed.has_value());
  return *parsed;
}

inline Network net(const char* text) {
  auto parsed = Network::parse(text);
  REQUIRE(parsed.has_value());
  return *parsed;
}

}  // namespace s3gate::test
