#include "proxy/tls_peek.h"

#include <cstdint>

namespace s3gate {

namespace {

constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kClientHello = 1;
constexpr uint16_t kServerNameExtension = 0;
constexpr uint8_t kHostNameType = 0;

// A bounds-checked reader over the handshake message.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool u8(uint8_t* out) {
    if (pos_ + 1 > data_.size()) {
      return false;
    }
    *out = static_cast<uint8_t>(data_[pos_++]);
    return true;
  }
  bool u16(uint16_t* out) {
    uint8_t hi = 0;
    uint8_t lo = 0;
    if (!u8(&hi) || !u8(&lo)) {
      return false;
    }
    *out = static_cast<uint16_t>(hi << 8 | lo);
    return true;
  }
  bool u24(uint32_t* out) {
    uint8_t a = 0;
    uint16_t rest = 0;
    if (!u8(&a) || !u16(&rest)) {
      return false;
    }
    *out = static_cast<uint32_t>(a) << 16 | rest;
    return true;
  }
  bool skip(size_t n) {
    if (pos_ + n > data_.size()) {
      return false;
    }
    pos_ += n;
    return true;
  }
  bool take(size_t n, std::string_view* out) {
    if (pos_ + n > data_.size()) {
      return false;
    }
    *out = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool atEnd() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

ClientHelloInfo parseClientHelloBody(std::string_view body) {
  ClientHelloInfo info;
  info.status = ClientHelloStatus::malformed;
  Reader r(body);
  uint16_t legacy_version = 0;
  uint8_t session_id_len = 0;
  uint16_t ciphers_len = 0;
  uint8_t compression_len = 0;
  if (!r.u16(&legacy_version) || !r.skip(32) || !r.u8(&session_id_len) || !r.skip(session_id_len) ||
      !r.u16(&ciphers_len) || !r.skip(ciphers_len) || !r.u8(&compression_len) ||
      !r.skip(compression_len)) {
    return info;
  }
  if (r.atEnd()) {
    info.status = ClientHelloStatus::no_sni;
    return info;
  }
  uint16_t extensions_len = 0;
  std::string_view extensions;
  if (!r.u16(&extensions_len) || !r.take(extensions_len, &extensions)) {
    return info;
  }
  Reader ext(extensions);
  while (!ext.atEnd()) {
    uint16_t type = 0;
    uint16_t len = 0;
    std::string_view data;
    if (!ext.u16(&type) || !ext.u16(&len) || !ext.take(len, &data)) {
      return info;
    }
    if (type != kServerNameExtension) {
      continue;
    }
    Reader sni(data);
    uint16_t list_len = 0;
    std::string_view list;
    if (!sni.u16(&list_len) || !sni.take(list_len, &list)) {
      return info;
    }
    Reader names(list);
    while (!names.atEnd()) {
      uint8_t name_type = 0;
      uint16_t name_len = 0;
      std::string_view name;
      if (!names.u8(&name_type) || !names.u16(&name_len) || !names.take(name_len, &name)) {
        return info;
      }
      if (name_type == kHostNameType) {
        info.status = name.empty() ? ClientHelloStatus::malformed : ClientHelloStatus::ok;
        info.server_name.assign(name);
        return info;
      }
    }
    info.status = ClientHelloStatus::no_sni;
    return info;
  }
  info.status = ClientHelloStatus::no_sni;
  return info;
}

}  // namespace

ClientHelloInfo peekClientHello(std::string_view bytes, size_t max_bytes) {
  ClientHelloInfo info;
  // Gather the handshake message from consecutive handshake records.
  std::string handshake;
  size_t pos = 0;
  while (true) {
    if (bytes.size() - pos < 5) {
      if (pos == 0 && !bytes.empty() && static_cast<uint8_t>(bytes[0]) != kHandshakeRecord) {
        info.status = ClientHelloStatus::not_tls;
      }
      return info;  // incomplete
    }
    auto type = static_cast<uint8_t>(bytes[pos]);
    auto major = static_cast<uint8_t>(bytes[pos + 1]);
    size_t len = static_cast<uint8_t>(bytes[pos + 3]) << 8 | static_cast<uint8_t>(bytes[pos + 4]);
    if (type != kHandshakeRecord || major != 3) {
      info.status = pos == 0 ? ClientHelloStatus::not_tls : ClientHelloStatus::malformed;
      return info;
    }
    if (len == 0 || len > 16384) {
      info.status = ClientHelloStatus::malformed;
      return info;
    }
    if (bytes.size() - pos - 5 < len) {
      if (pos + 5 + len > max_bytes) {
        info.status = ClientHelloStatus::malformed;
      }
      return info;  // incomplete
    }
    handshake.append(bytes.substr(pos + 5, len));
    pos += 5 + len;
    if (handshake.size() >= 4) {
      if (static_cast<uint8_t>(handshake[0]) != kClientHello) {
        info.status = ClientHelloStatus::malformed;
        return info;
      }
      size_t body_len = static_cast<uint8_t>(handshake[1]) << 16 |
                        static_cast<uint8_t>(handshake[2]) << 8 |
                        static_cast<uint8_t>(handshake[3]);
      if (handshake.size() - 4 >= body_len) {
        return parseClientHelloBody(std::string_view(handshake).substr(4, body_len));
      }
      if (4 + body_len > max_bytes) {
        info.status = ClientHelloStatus::malformed;
        return info;
      }
    }
    if (pos >= max_bytes) {
      info.status = ClientHelloStatus::malformed;
      return info;
    }
  }
}

}  // namespace s3gate
