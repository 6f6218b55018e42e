#include "acl/config.h"

#include "acl/s3name.h"
#include "acl/text.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <tuple>
#include <utility>

namespace s3gate {
namespace {

// The path token for errors that belong to no key: unreadable file, YAML syntax,
// a document that is not a map.
constexpr std::string_view kFilePath = "(file)";

constexpr int64_t kMaxDurationMs = int64_t{1000} * 60 * 60 * 24 * 365 * 100;

// A value and where an error about it points: the key of a map entry (what an
// operator looks for), or the item itself for a list item.
struct Item {
  YAML::Node node;
  YAML::Mark mark;
  std::string path;
};

std::string childPath(const std::string& parent, std::string_view key) {
  if (parent.empty()) {
    return std::string(key);
  }
  return parent + "." + std::string(key);
}

std::string indexPath(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

std::string quoteText(std::string_view text) {
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

std::string describe(const YAML::Node& node) {
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

bool isDigits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool isLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

size_t editDistance(std::string_view a, std::string_view b) {
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
std::string alternatives(const std::vector<std::string>& words, std::string_view last = " or ") {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) {
      out += (i + 1 == words.size()) ? last : ", ";
    }
    out += words[i];
  }
  return out;
}

bool isHostName(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    std::string_view label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!isLowerAlnum(c) && c != '-' && c != '_') {
        return false;
      }
    }
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  return true;
}

// Lower case, one trailing dot removed: the form section 3 compares names in.
std::string normalizeName(std::string_view raw) {
  std::string name = toLowerAscii(raw);
  if (name.size() > 1 && name.back() == '.') {
    name.pop_back();
  }
  return name;
}

bool isBucketPattern(std::string_view name) {
  // Underscores and upper case survive in legacy us-east-1 bucket names; the
  // rule is compared in lower case like the names it matches.
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return isLowerAlnum(c) || c == '.' || c == '-' || c == '_' || c == '*' || c == '?';
  });
}

// The largest unit that states the value exactly: 10m, 90s, 1500ms.
std::string formatDuration(Duration d) {
  int64_t ms = d.count();
  if (ms != 0 && ms % (60 * 60 * 1000) == 0) {
    return std::to_string(ms / (60 * 60 * 1000)) + "h";
  }
  if (ms != 0 && ms % (60 * 1000) == 0) {
    return std::to_string(ms / (60 * 1000)) + "m";
  }
  if (ms % 1000 == 0) {
    return std::to_string(ms / 1000) + "s";
  }
  return std::to_string(ms) + "ms";
}

struct Error {
  int line;
  int column;
  std::string text;
};

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

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
  MapView(Loader& loader, const Item& item, std::initializer_list<std::string_view> known)
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

SocketAddress defaultAddress(std::string_view text) {
  return SocketAddress::parse(text).value_or(SocketAddress());
}

class ConfigReader {
 public:
  ConfigReader(Loader& loader, Config& config) : l_(loader), c_(config) {}

  void read(const YAML::Node& root) {
    Item top{root, root.Mark(), ""};
    if (!root.IsNull() && !root.IsMap()) {
      l_.fail(root.Mark(), kFilePath,
              "expected a map of settings such as \"listeners:\" at the top level, got " +
                  describe(root));
      return;
    }
    MapView map(
        l_, top,
        {"version", "listeners", "admin", "workers", "clients", "trusted_proxies", "mode", "dns",
         "s3", "buckets", "hosts", "ports", "http", "tunnel", "limits", "access_log"});
    if (auto item = map.get("version")) {
      if (auto version =
              l_.integer(*item, std::numeric_limits<int>::min(), std::numeric_limits<int>::max())) {
        if (*version != 1) {
          l_.fail(*item,
                  "unsupported version " + std::to_string(*version) + "; the only version is 1");
        }
      }
    }
    // The admin address first, so that a listener on it is the one reported.
    readAdmin(map);
    readListeners(map);
    assign(map, "workers", &c_.workers, [&](const Item& i) { return l_.integer(i, 0, 1024); });
    for (std::string_view loopback : {"127.0.0.0/8", "::1/128"}) {
      if (auto network = Network::parse(loopback)) {
        c_.clients.push_back(*network);
      }
    }
    assign(map, "clients", &c_.clients, [&](const Item& i) { return l_.networks(i); });
    assign(map, "trusted_proxies", &c_.trusted_proxies,
           [&](const Item& i) { return l_.networks(i); });
    assign(map, "mode", &c_.mode, [&](const Item& i) {
      return l_.choice<PolicyMode>(
          i, {{"enforce", PolicyMode::enforce}, {"report", PolicyMode::report}});
    });
    if (auto item = map.get("dns")) {
      readDns(*item);
    }
    if (auto item = map.get("s3")) {
      readS3(*item);
    }
    if (auto item = map.get("buckets")) {
      readBuckets(*item);
    }
    if (auto item = map.get("hosts")) {
      readHosts(*item);
    }
    assign(map, "ports", &c_.ports, [&](const Item& i) { return l_.ports(i); });
    if (auto item = map.get("http")) {
      MapView http(l_, *item, {"upstream_tls", "ca_file"});
      assign(http, "upstream_tls", &c_.http.upstream_tls,
             [&](const Item& i) { return l_.boolean(i); });
      assign(http, "ca_file", &c_.http.ca_file, [&](const Item& i) { return l_.string(i); });
    }
    if (auto item = map.get("tunnel")) {
      readTunnel(*item);
    }
    if (auto item = map.get("limits")) {
      readLimits(*item);
    }
    if (auto item = map.get("access_log")) {
      readAccessLog(*item);
    }
  }

 private:
  void readListeners(const MapView& top) {
    auto item = top.get("listeners");
    if (!item) {
      ListenerConfig listener;
      listener.address = defaultAddress("127.0.0.1:3128");
      c_.listeners.push_back(std::move(listener));
      return;
    }
    auto items = l_.list(*item);
    if (!items) {
      return;
    }
    if (items->empty()) {
      l_.fail(*item, "at least one listener is required");
      return;
    }
    std::vector<Item> address_items;
    for (const Item& entry : *items) {
      MapView map(l_, entry, {"address", "mode", "proxy_protocol", "tls"});
      if (!map.valid()) {
        continue;
      }
      ListenerConfig listener;
      if (auto address = map.get("address")) {
        if (auto value = l_.socketAddress(*address)) {
          listener.address = *value;
          checkAddressUnique(*address, *value);
        }
      } else {
        l_.fail(map.missing("address"),
                "missing; a listener needs an address such as \"0.0.0.0:3128\"");
      }
      assign(map, "mode", &listener.mode, [&](const Item& i) {
        return l_.choice<ListenerMode>(
            i, {{"forward", ListenerMode::forward}, {"sni", ListenerMode::sni}});
      });
      assign(map, "proxy_protocol", &listener.proxy_protocol,
             [&](const Item& i) { return l_.boolean(i); });
      if (auto tls = map.get("tls")) {
        if (listener.mode == ListenerMode::sni) {
          l_.fail(*tls,
                  "tls is for forward listeners only; an sni listener relays the client's TLS "
                  "unchanged");
        } else {
          listener.tls = readListenerTls(*tls);
        }
      }
      c_.listeners.push_back(std::move(listener));
    }
  }

  std::optional<ListenerTls> readListenerTls(const Item& item) {
    MapView map(l_, item, {"certificate", "private_key", "client_ca"});
    if (!map.valid()) {
      return std::nullopt;
    }
    ListenerTls tls;
    for (auto [key, out] :
         {std::pair{"certificate", &tls.certificate}, std::pair{"private_key", &tls.private_key}}) {
      if (map.get(key)) {
        assign(map, key, out, [&](const Item& i) { return l_.nonEmptyString(i); });
      } else {
        l_.fail(map.missing(key), "missing; tls needs a certificate and a private_key");
      }
    }
    assign(map, "client_ca", &tls.client_ca, [&](const Item& i) { return l_.string(i); });
    return tls;
  }

  void readAdmin(const MapView& top) {
    c_.admin = defaultAddress("127.0.0.1:9464");
    if (auto item = top.get("admin")) {
      MapView admin(l_, *item, {"address"});
      if (auto address = admin.get("address")) {
        if (auto value = l_.socketAddress(*address)) {
          c_.admin = *value;
          checkAddressUnique(*address, *value);
        }
        return;
      }
    }
    bound_.emplace_back("the admin endpoint (admin.address is left out)", c_.admin);
  }

  // Two sockets on one address cannot both bind; say which entries collide
  // rather than leave it to a bind error at start.
  void checkAddressUnique(const Item& item, const SocketAddress& address) {
    for (const auto& [owner, seen] : bound_) {
      if (seen == address) {
        l_.fail(item, address.toString() + " is already used by " + owner);
        return;
      }
    }
    bound_.emplace_back(item.path.substr(0, item.path.rfind('.')), address);
  }

  void readDns(const Item& item) {
    MapView map(l_, item,
                {"servers", "timeout", "attempts", "min_ttl", "max_ttl", "negative_ttl", "pins",
                 "allowed_networks"});
    DnsConfig& dns = c_.dns;
    assign(map, "servers", &dns.servers, [&](const Item& i) {
      return l_.listOf<SocketAddress>(
          i, [&](const Item& server) { return l_.socketAddress(server, uint16_t{53}); });
    });
    assign(map, "timeout", &dns.timeout,
           [&](const Item& i) { return l_.duration(i, Duration(1)); });
    assign(map, "attempts", &dns.attempts, [&](const Item& i) { return l_.integer(i, 1, 100); });
    assign(map, "min_ttl", &dns.min_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    assign(map, "max_ttl", &dns.max_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    assign(map, "negative_ttl", &dns.negative_ttl,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    if (dns.min_ttl > dns.max_ttl) {
      auto at = map.get("min_ttl");
      Item where = at ? *at : *map.get("max_ttl");
      l_.fail(where, "min_ttl (" + formatDuration(dns.min_ttl) + ") is greater than max_ttl (" +
                         formatDuration(dns.max_ttl) + ")");
    }
    assign(map, "pins", &dns.pins, [&](const Item& i) {
      return l_.listOf<DnsPin>(i, [&](const Item& pin) { return readPin(pin); });
    });
    assign(map, "allowed_networks", &dns.allowed_networks,
           [&](const Item& i) { return l_.networks(i); });
  }

  std::optional<DnsPin> readPin(const Item& item) {
    MapView map(l_, item, {"host", "addresses"});
    if (!map.valid()) {
      return std::nullopt;
    }
    DnsPin pin;
    bool good = true;
    if (auto host = map.get("host")) {
      if (auto text = l_.string(*host)) {
        pin.host = normalizeName(*text);
        std::string_view name = pin.host;
        if (name.substr(0, 2) == "*.") {
          name.remove_prefix(2);
        }
        if (!isHostName(name)) {
          l_.fail(*host, "expected a host name, or \"*.\" and a domain, got " + quoteText(*text));
          good = false;
        }
      } else {
        good = false;
      }
    } else {
      l_.fail(map.missing("host"), "missing; a pin needs a host (exact, or \"*.\" + suffix)");
      good = false;
    }
    if (auto addresses = map.get("addresses")) {
      auto values =
          l_.listOf<IpAddress>(*addresses, [&](const Item& i) { return l_.ipAddress(i); });
      if (values && values->empty()) {
        l_.fail(*addresses, "at least one address is required");
        good = false;
      } else if (values) {
        pin.addresses = std::move(*values);
      } else {
        good = false;
      }
    } else {
      l_.fail(map.missing("addresses"), "missing; a pin needs a list of addresses");
      good = false;
    }
    if (!good) {
      return std::nullopt;
    }
    return pin;
  }

  void readS3(const Item& item) {
    MapView map(l_, item, {"regions", "path_style"});
    if (auto regions = map.get("regions")) {
      auto values =
          l_.listOf<std::string>(*regions, [&](const Item& i) -> std::optional<std::string> {
            auto text = l_.scalar(i, "a region such as us-west-2, or \"*\"");
            if (text && *text != "*" && !isRegionName(*text)) {
              l_.fail(i, "expected \"*\" or a region such as us-west-2, got " + quoteText(*text));
              return std::nullopt;
            }
            return text;
          });
      if (values && values->empty()) {
        l_.fail(*regions, "at least one region is required; \"*\" allows any");
      } else if (values) {
        c_.s3.regions = std::move(*values);
      }
    }
    assign(map, "path_style", &c_.s3.path_style, [&](const Item& i) {
      return l_.choice<PathStyle>(i, {{"allow", PathStyle::allow}, {"deny", PathStyle::deny}});
    });
  }

  void readBuckets(const Item& item) {
    auto rules = l_.listOf<BucketRule>(item, [&](const Item& entry) -> std::optional<BucketRule> {
      MapView map(l_, entry, {"name", "access", "clients", "identities"});
      if (!map.valid()) {
        return std::nullopt;
      }
      BucketRule rule;
      if (auto name = map.get("name")) {
        if (auto text = l_.string(*name)) {
          rule.name = toLowerAscii(*text);
          if (!isBucketPattern(rule.name)) {
            l_.fail(*name,
                    "expected a bucket name or a glob with * and ?, got " + quoteText(*text));
          }
        }
      } else {
        l_.fail(map.missing("name"),
                "missing; a bucket rule needs a name (exact, or a glob such as \"media-*\")");
      }
      assign(map, "access", &rule.access, [&](const Item& i) {
        return l_.choice<Access>(
            i, {{"read-only", Access::read_only}, {"read-write", Access::read_write}});
      });
      assign(map, "clients", &rule.clients, [&](const Item& i) { return l_.networks(i); });
      assign(map, "identities", &rule.identities, [&](const Item& i) {
        return l_.listOf<std::string>(i, [&](const Item& s) { return l_.nonEmptyString(s); });
      });
      return rule;
    });
    if (rules) {
      c_.buckets = std::move(*rules);
    }
  }

  void readHosts(const Item& item) {
    auto rules = l_.listOf<HostRule>(item, [&](const Item& entry) -> std::optional<HostRule> {
      MapView map(l_, entry, {"name", "ports"});
      if (!map.valid()) {
        return std::nullopt;
      }
      HostRule rule;
      if (auto name = map.get("name")) {
        if (auto text = l_.string(*name)) {
          rule.name = normalizeName(*text);
          if (!isHostName(rule.name)) {
            // Host rules are compared exactly: a pattern here would never match.
            l_.fail(*name, "expected an exact host name such as sts.us-west-2.amazonaws.com, got " +
                               quoteText(*text));
          }
        }
      } else {
        l_.fail(map.missing("name"), "missing; a hosts entry needs a name");
      }
      assign(map, "ports", &rule.ports, [&](const Item& i) { return l_.ports(i); });
      return rule;
    });
    if (rules) {
      c_.hosts = std::move(*rules);
    }
  }

  void readTunnel(const Item& item) {
    MapView map(l_, item, {"verify_sni", "inspect", "inspect_certificate", "inspect_private_key"});
    TunnelConfig& tunnel = c_.tunnel;
    assign(map, "verify_sni", &tunnel.verify_sni, [&](const Item& i) { return l_.boolean(i); });
    assign(map, "inspect", &tunnel.inspect, [&](const Item& i) { return l_.boolean(i); });
    assign(map, "inspect_certificate", &tunnel.inspect_certificate,
           [&](const Item& i) { return l_.string(i); });
    assign(map, "inspect_private_key", &tunnel.inspect_private_key,
           [&](const Item& i) { return l_.string(i); });
    if (tunnel.inspect &&
        (tunnel.inspect_certificate.empty() || tunnel.inspect_private_key.empty())) {
      l_.fail(*map.get("inspect"),
              "inspect: true needs inspect_certificate and inspect_private_key");
    }
  }

  void readLimits(const Item& item) {
    MapView map(
        l_, item,
        {"max_connections", "max_header_bytes", "max_headers", "header_timeout", "connect_timeout",
         "idle_timeout", "tcp_keepalive", "shutdown_delay", "drain_timeout"});
    Limits& limits = c_.limits;
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    assign(map, "max_connections", &limits.max_connections,
           [&](const Item& i) { return l_.integer(i, 1, kMax); });
    // Below 1 KiB not even an ordinary S3 request head with a SigV4 signature fits.
    assign(map, "max_header_bytes", &limits.max_header_bytes,
           [&](const Item& i) { return l_.integer(i, 1024, 64 * 1024 * 1024); });
    assign(map, "max_headers", &limits.max_headers,
           [&](const Item& i) { return l_.integer(i, 1, 10000); });
    for (auto [key, out] : {std::pair{"header_timeout", &limits.header_timeout},
                            std::pair{"connect_timeout", &limits.connect_timeout},
                            std::pair{"idle_timeout", &limits.idle_timeout}}) {
      assign(map, key, out, [&](const Item& i) { return l_.duration(i, Duration(1)); });
    }
    // Keepalive intervals are whole seconds in the kernel.
    assign(map, "tcp_keepalive", &limits.tcp_keepalive,
           [&](const Item& i) { return l_.duration(i, std::chrono::seconds(1)); });
    assign(map, "shutdown_delay", &limits.shutdown_delay,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
    assign(map, "drain_timeout", &limits.drain_timeout,
           [&](const Item& i) { return l_.duration(i, Duration(0)); });
  }

  void readAccessLog(const Item& item) {
    // A bare `off` is the string "off" to yaml-cpp; `false` is accepted for
    // readers who think of YAML 1.1 booleans.
    auto text = l_.scalar(item, "stdout, off or a file path");
    if (!text) {
      return;
    }
    if (*text == "false") {
      c_.access_log = "off";
    } else if (text->empty()) {
      l_.fail(item, "expected stdout, off or a file path, got \"\"");
    } else {
      c_.access_log = *text;
    }
  }

  Loader& l_;
  Config& c_;
  std::vector<std::pair<std::string, SocketAddress>> bound_;
};

}  // namespace

std::optional<Duration> parseDuration(std::string_view text) {
  // One or more number-and-unit groups ("1m30s"); a unit is always required so
  // that "30" is never read as seconds by one reader and milliseconds by another.
  if (text.empty()) {
    return std::nullopt;
  }
  int64_t total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t digits_end = pos;
    while (digits_end < text.size() && text[digits_end] >= '0' && text[digits_end] <= '9') {
      ++digits_end;
    }
    if (digits_end == pos) {
      return std::nullopt;
    }
    int64_t number = 0;
    auto [stop, ec] = std::from_chars(text.data() + pos, text.data() + digits_end, number);
    if (ec != std::errc() || stop != text.data() + digits_end) {
      return std::nullopt;
    }
    size_t unit_end = digits_end;
    while (unit_end < text.size() && !(text[unit_end] >= '0' && text[unit_end] <= '9')) {
      ++unit_end;
    }
    std::string_view unit = text.substr(digits_end, unit_end - digits_end);
    int64_t scale = 0;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60 * 1000;
    } else if (unit == "h") {
      scale = 60 * 60 * 1000;
    } else {
      return std::nullopt;
    }
    if (number > kMaxDurationMs / scale || total + number * scale > kMaxDurationMs) {
      return std::nullopt;
    }
    total += number * scale;
    pos = unit_end;
  }
  return Duration(total);
}

ConfigLoadResult loadConfigFromString(std::string_view yaml, const std::string& source_name) {
  Loader loader(source_name);
  auto config = std::make_shared<Config>();
  config->source = source_name;
  try {
    std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
    if (documents.size() > 1) {
      loader.fail(documents[1].Mark(), kFilePath,
                  "only one YAML document is allowed; remove the second \"---\"");
    }
    YAML::Node root = documents.empty() ? YAML::Node() : documents.front();
    ConfigReader(loader, *config).read(root);
  } catch (const YAML::Exception& e) {
    loader.fail(e.mark, kFilePath, "YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    loader.fail(YAML::Mark::null_mark(), kFilePath, std::string("cannot be loaded: ") + e.what());
  }
  ConfigLoadResult result;
  if (loader.hasErrors()) {
    result.errors = loader.takeErrors();
  } else {
    result.config = std::move(config);
  }
  return result;
}

ConfigLoadResult loadConfigFromFile(const std::string& path) {
  // A directory opens as an empty stream; it must not read as an empty file.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    ConfigLoadResult result;
    result.errors.push_back(path + ":1:1: " + std::string(kFilePath) +
                            ": cannot be read: it is a directory");
    return result;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int saved = errno;
    ConfigLoadResult result;
    result.errors.push_back(path + ":1:1: " + std::string(kFilePath) +
                            ": cannot be read: " + std::strerror(saved));
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    ConfigLoadResult result;
    result.errors.push_back(path + ":1:1: " + std::string(kFilePath) + ": cannot be read");
    return result;
  }
  return loadConfigFromString(text.str(), path);
}

ConfigLoadResult loadDefaultConfig() {
  return loadConfigFromString(defaultConfigYaml(), "<default>");
}

}  // namespace s3gate
