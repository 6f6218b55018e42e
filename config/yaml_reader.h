#pragma once
// A generic typed YAML reader: scalars, durations, addresses, networks, ports,
// lists and maps of known keys, each error naming FILE:LINE:COLUMN and the key's
// dotted path ("buckets[2].access"). It knows nothing of s3gate's schema
// (config/config.cpp reads that with it); only the loader includes it.

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "common/duration.h"
#include "common/net.h"
#include "common/text.h"

namespace s3gate::yaml {

// The path token for errors that belong to no key: unreadable file, YAML syntax,
// a document that is not a map.
inline constexpr std::string_view kFilePath = "(file)";

// A value and where an error about it points: the key of a map entry (what an
// operator looks for), or the item itself for a list item.
struct Item {
  YAML::Node node;
  YAML::Mark mark;
  std::string path;
};

// An empty key is shown as "" so that the path still points somewhere.
inline std::string childPath(const std::string& parent, std::string_view key) {
  std::string shown = key.empty() ? std::string("\"\"") : std::string(key);
  if (parent.empty()) {
    return shown;
  }
  return parent + "." + shown;
}

inline std::string indexPath(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

inline std::string quoteText(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[(c >> 4) & 0xf];
      out += kHex[c & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

inline std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return quoteText(node.Scalar());
    default:
      return "nothing";
  }
}

inline bool isDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

inline bool isLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

inline size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t substitution = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitution});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "a", "a or b", "a, b or c"
inline std::string alternatives(const std::vector<std::string>& words,
                                std::string_view last = " or ") {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) {
      out += (i + 1 == words.size()) ? last : ", ";
    }
    out += words[i];
  }
  return out;
}

struct Error {
  int line;
  int column;
  std::string text;
};

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  void fail(const YAML::Mark& mark, std::string_view path, std::string_view message) {
    // yaml-cpp counts from 0; editors count from 1. A node without a mark
    // (never expected) points at the start of the file.
    int line = mark.is_null() ? 1 : mark.line + 1;
    int column = mark.is_null() ? 1 : mark.column + 1;
    std::string text = source_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " +
                       std::string(path) + ": " + std::string(message);
    errors_.push_back(Error{line, column, std::move(text)});
  }
  void fail(const Item& item, std::string_view message) { fail(item.mark, item.path, message); }

  bool hasErrors() const { return !errors_.empty(); }

  std::vector<std::string> takeErrors() {
    std::stable_sort(errors_.begin(), errors_.end(), [](const Error& a, const Error& b) {
      return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    std::vector<std::string> out;
    out.reserve(errors_.size());
    for (Error& e : errors_) {
      out.push_back(std::move(e.text));
    }
    errors_.clear();
    return out;
  }

  // ---- scalars ---------------------------------------------------------------

  std::optional<std::string> scalar(const Item& item, std::string_view expected) {
    if (!item.node.IsScalar()) {
      fail(item, "expected " + std::string(expected) + ", got " + describe(item.node));
      return std::nullopt;
    }
    return item.node.Scalar();
  }

  std::optional<std::string> string(const Item& item) { return scalar(item, "a string"); }

  std::optional<std::string> nonEmptyString(const Item& item) {
    auto text = string(item);
    if (text && text->empty()) {
      fail(item, "must not be empty");
      return std::nullopt;
    }
    return text;
  }

  std::optional<bool> boolean(const Item& item) {
    auto text = scalar(item, "true or false");
    if (!text) {
      return std::nullopt;
    }
    bool value = false;
    if (!YAML::convert<bool>::decode(item.node, value)) {
      fail(item, "expected true or false, got " + quoteText(*text));
      return std::nullopt;
    }
    return value;
  }

  std::optional<int64_t> integer(const Item& item, int64_t min, int64_t max) {
    auto text = scalar(item, "a whole number");
    if (!text) {
      return std::nullopt;
    }
    int64_t value = 0;
    const char* begin = text->data();
    const char* end = text->data() + text->size();
    auto [stop, ec] = std::from_chars(begin, end, value);
    const std::string range =
        max == std::numeric_limits<int64_t>::max()
            ? "must be at least " + std::to_string(min)
            : "must be between " + std::to_string(min) + " and " + std::to_string(max);
    if (ec == std::errc::result_out_of_range) {
      fail(item, range + ", got " + *text);
      return std::nullopt;
    }
    if (ec != std::errc() || stop != end || text->empty()) {
      fail(item, "expected a whole number, got " + quoteText(*text));
      return std::nullopt;
    }
    if (value < min || value > max) {
      fail(item, range + ", got " + std::to_string(value));
      return std::nullopt;
    }
    return value;
  }

  std::optional<Duration> duration(const Item& item, Duration min) {
    auto text = scalar(item, "a duration such as 500ms, 30s, 5m or 1h");
    if (!text) {
      return std::nullopt;
    }
    if (isDigits(*text)) {
      fail(item, "a duration needs a unit: write \"" + *text + "s\" for " + *text +
                     " seconds (units: ms, s, m, h)");
      return std::nullopt;
    }
    auto value = parseDuration(*text);
    if (!value) {
      fail(item, "expected a duration such as 500ms, 30s, 5m or 1h, got " + quoteText(*text));
      return std::nullopt;
    }
    if (*value < min) {
      fail(item, (min == Duration(1) ? std::string("must be more than 0s")
                                     : "must be at least " + formatDuration(min)) +
                     ", got " + quoteText(*text));
      return std::nullopt;
    }
    return value;
  }

  std::optional<uint16_t> port(const Item& item) {
    auto value = integer(item, 1, 65535);
    if (!value) {
      return std::nullopt;
    }
    return static_cast<uint16_t>(*value);
  }

  std::optional<IpAddress> ipAddress(const Item& item) {
    auto text = scalar(item, "an IP address");
    if (!text) {
      return std::nullopt;
    }
    auto ip = IpAddress::parse(*text);
    if (!ip) {
      fail(item, "expected an IP address such as 10.0.1.10 or fd00::1, got " + quoteText(*text));
    }
    return ip;
  }

  // `default_port` set: the port may be left out, and a bare IPv6 address is
  // then accepted without brackets (dns.servers).
  std::optional<SocketAddress> socketAddress(const Item& item,
                                             std::optional<uint16_t> default_port = {}) {
    const std::string expected =
        default_port ? "\"ip\", \"ip:port\" or \"[ipv6]:port\"" : "IPv4:port or [IPv6]:port";
    auto text = scalar(item, expected);
    if (!text) {
      return std::nullopt;
    }
    std::string_view view = *text;
    std::string_view host;
    std::optional<std::string_view> port_text;
    if (!view.empty() && view.front() == '[') {
      size_t close = view.find(']');
      if (close == std::string_view::npos) {
        fail(item, "expected " + expected + ", got " + quoteText(*text) + " (no closing ']')");
        return std::nullopt;
      }
      host = view.substr(1, close - 1);
      std::string_view rest = view.substr(close + 1);
      if (!rest.empty()) {
        if (rest.front() != ':') {
          fail(item, "expected " + expected + ", got " + quoteText(*text));
          return std::nullopt;
        }
        port_text = rest.substr(1);
      }
    } else if (std::count(view.begin(), view.end(), ':') > 1) {
      if (default_port) {
        if (auto ip = IpAddress::parse(view)) {
          return SocketAddress(*ip, *default_port);
        }
      }
      fail(item, "an IPv6 address with a port is written in brackets, e.g. \"[::1]:3128\"; got " +
                     quoteText(*text));
      return std::nullopt;
    } else {
      size_t colon = view.find(':');
      host = view.substr(0, colon);
      if (colon != std::string_view::npos) {
        port_text = view.substr(colon + 1);
      }
    }
    if (!port_text && !default_port) {
      fail(item, quoteText(*text) + " has no port; expected " + expected);
      return std::nullopt;
    }
    auto ip = IpAddress::parse(host);
    if (!ip) {
      fail(item, "expected " + expected + " with an IP address (not a host name), got " +
                     quoteText(*text));
      return std::nullopt;
    }
    uint16_t port = default_port.value_or(0);
    if (port_text) {
      int value = 0;
      auto [stop, ec] =
          std::from_chars(port_text->data(), port_text->data() + port_text->size(), value);
      if (!isDigits(*port_text) || ec != std::errc() ||
          stop != port_text->data() + port_text->size()) {
        if (isDigits(*port_text)) {
          fail(item, "port " + std::string(*port_text) + " is out of range 1..65535");
        } else {
          fail(item, "expected " + expected + ", got " + quoteText(*text) +
                         " (the port is not a number)");
        }
        return std::nullopt;
      }
      if (value < 1 || value > 65535) {
        fail(item, "port " + std::to_string(value) + " is out of range 1..65535");
        return std::nullopt;
      }
      port = static_cast<uint16_t>(value);
    }
    return SocketAddress(*ip, port);
  }

  std::optional<Network> network(const Item& item) {
    auto text = scalar(item, "a network such as 10.0.0.0/8");
    if (!text) {
      return std::nullopt;
    }
    std::string_view view = *text;
    size_t slash = view.find('/');
    auto ip = IpAddress::parse(view.substr(0, slash));
    if (!ip) {
      fail(item, "expected a network such as 10.0.0.0/8 or fd00::/8, or an IP address, got " +
                     quoteText(*text));
      return std::nullopt;
    }
    if (slash != std::string_view::npos) {
      std::string_view prefix = view.substr(slash + 1);
      int max = ip->isV4() ? 32 : 128;
      int length = -1;
      if (isDigits(prefix) && prefix.size() <= 3) {
        std::from_chars(prefix.data(), prefix.data() + prefix.size(), length);
      }
      if (length < 0 || length > max) {
        fail(item, "the prefix length of " + quoteText(*text) + " must be a number from 0 to " +
                       std::to_string(max));
        return std::nullopt;
      }
    }
    auto network = Network::parse(view);
    if (!network) {
      fail(item, "expected a network such as 10.0.0.0/8 or fd00::/8, or an IP address, got " +
                     quoteText(*text));
    }
    return network;
  }

  template <typename E>
  std::optional<E> choice(const Item& item,
                          std::initializer_list<std::pair<std::string_view, E>> choices) {
    std::vector<std::string> names;
    for (const auto& [name, value] : choices) {
      names.emplace_back(name);
    }
    auto text = scalar(item, alternatives(names));
    if (!text) {
      return std::nullopt;
    }
    for (const auto& [name, value] : choices) {
      if (*text == name) {
        return value;
      }
    }
    std::string message = "expected " + alternatives(names) + ", got " + quoteText(*text);
    for (const std::string& name : names) {
      if (editDistance(*text, name) <= 2) {
        message += "; did you mean " + name + "?";
        break;
      }
    }
    fail(item, message);
    return std::nullopt;
  }

  // ---- containers ------------------------------------------------------------

  // The items of a list; null reads as an empty list so that a list whose
  // entries are all commented out is accepted.
  std::optional<std::vector<Item>> list(const Item& item) {
    std::vector<Item> items;
    if (item.node.IsNull()) {
      return items;
    }
    if (!item.node.IsSequence()) {
      fail(item, "expected a list, got " + describe(item.node));
      return std::nullopt;
    }
    size_t index = 0;
    for (const YAML::Node& child : item.node) {
      items.push_back(Item{child, child.Mark(), indexPath(item.path, index)});
      ++index;
    }
    return items;
  }

  // Every item parsed by `parse`; nullopt when the value or any item was bad
  // (each bad item has been reported).
  template <typename T>
  std::optional<std::vector<T>> listOf(const Item& item,
                                       const std::function<std::optional<T>(const Item&)>& parse) {
    auto items = list(item);
    if (!items) {
      return std::nullopt;
    }
    std::vector<T> out;
    bool good = true;
    for (const Item& child : *items) {
      if (auto value = parse(child)) {
        out.push_back(std::move(*value));
      } else {
        good = false;
      }
    }
    if (!good) {
      return std::nullopt;
    }
    return out;
  }

  std::optional<std::vector<Network>> networks(const Item& item) {
    return listOf<Network>(item, [this](const Item& i) { return network(i); });
  }

  std::optional<std::vector<uint16_t>> ports(const Item& item) {
    auto values = listOf<uint16_t>(item, [this](const Item& i) { return port(i); });
    if (values && values->empty()) {
      fail(item, "at least one port is required, e.g. [443]");
      return std::nullopt;
    }
    return values;
  }

 private:
  std::string source_;
  std::vector<Error> errors_;
};

// The keys of one map, checked against the keys it may hold.
class MapView {
 public:
  // A null node reads as an empty map so that a section whose keys are all
  // commented out is accepted.
  MapView(Reader& loader, const Item& item, std::initializer_list<std::string_view> known)
      : item_(item) {
    if (item.node.IsNull()) {
      return;
    }
    if (!item.node.IsMap()) {
      loader.fail(item, "expected a map of keys, got " + describe(item.node));
      valid_ = false;
      return;
    }
    for (auto it = item.node.begin(); it != item.node.end(); ++it) {
      // Copies: the iterator hands out a proxy that dies with the expression.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar()) {
        loader.fail(key.Mark(), item.path.empty() ? std::string(kFilePath) : item.path,
                    "a key must be a plain name, got " + describe(key));
        continue;
      }
      const std::string& name = key.Scalar();
      Item child{value, key.Mark(), childPath(item.path, name)};
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        loader.fail(child, unknownKeyMessage(name, known));
        continue;
      }
      auto first = std::find_if(entries_.begin(), entries_.end(),
                                [&](const auto& entry) { return entry.first == name; });
      if (first != entries_.end()) {
        loader.fail(child, "repeated key; it was first given at line " +
                               std::to_string(first->second.mark.line + 1));
        continue;
      }
      entries_.emplace_back(name, std::move(child));
    }
  }

  bool valid() const { return valid_; }
  const Item& item() const { return item_; }

  std::optional<Item> get(std::string_view key) const {
    for (const auto& [name, child] : entries_) {
      if (name == key) {
        return child;
      }
    }
    return std::nullopt;
  }

  // Where to point when a required key is missing: the map itself.
  Item missing(std::string_view key) const {
    return Item{item_.node, item_.mark, childPath(item_.path, key)};
  }

 private:
  static std::string unknownKeyMessage(const std::string& name,
                                       std::initializer_list<std::string_view> known) {
    std::string best;
    size_t best_distance = std::numeric_limits<size_t>::max();
    std::string lower = toLowerAscii(name);
    for (std::string_view candidate : known) {
      size_t distance = editDistance(lower, candidate);
      if (distance < best_distance) {
        best_distance = distance;
        best = std::string(candidate);
      }
    }
    if (best_distance <= 2 && best_distance < best.size()) {
      return "unknown key; did you mean \"" + best + "\"?";
    }
    std::vector<std::string> names(known.begin(), known.end());
    return "unknown key; the keys here are " + alternatives(names, " and ");
  }

  Item item_;
  std::vector<std::pair<std::string, Item>> entries_;
  bool valid_ = true;
};

// Assigns the parsed value of `key` when it is present and good; a key left
// out keeps the default already in *out.
template <typename T, typename Parse>
void assign(const MapView& map, std::string_view key, T* out, Parse parse) {
  if (auto item = map.get(key)) {
    if (auto value = parse(*item)) {
      *out = static_cast<T>(std::move(*value));
    }
  }
}

}  // namespace s3gate::yaml
