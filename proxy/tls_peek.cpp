#include "proxy/tls_peek.h"

#include <cstdint>
#include <utility>

#include "acl/decision.h"

namespace s3gate {

namespace {

constexpr uint8_t kFirstRecordType = 20;  // change_cipher_spec
constexpr uint8_t kHandshakeRecord = 22;
constexpr uint8_t kLastRecordType = 24;  // heartbeat
constexpr uint8_t kTlsMajor = 3;         // SSL 3.0 and every TLS version
constexpr uint8_t kSsl2ClientHello = 1;
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

// How the first bytes look before any record is parsed. A TLS server takes for
// a ClientHello more than a well-formed TLS 1.x record: OpenSSL reads an
// SSLv2-format hello (a two-byte header with the high bit set, then message
// type 1), any stack may be lenient about a record's version, and OpenSSL skips
// warning alerts that come before the hello. So anything that starts like one
// of those is TLS here, and must carry a ClientHello with a server name; only
// bytes that no TLS server would read as the start of a handshake are not_tls.
ClientHelloStatus firstBytesClass(std::string_view bytes) {
  const auto first = static_cast<uint8_t>(bytes[0]);
  if ((first & 0x80) != 0) {
    // SSLv2 record header: length (15 bits), then the message type. An
    // SSLv2-format ClientHello has no extensions, hence no server name.
    if (bytes.size() < 3) {
      return ClientHelloStatus::incomplete;
    }
    return static_cast<uint8_t>(bytes[2]) == kSsl2ClientHello ? ClientHelloStatus::no_sni
                                                              : ClientHelloStatus::not_tls;
  }
  if (first == kHandshakeRecord) {
    return ClientHelloStatus::incomplete;  // a handshake record, whatever its version
  }
  if (first >= kFirstRecordType && first <= kLastRecordType) {
    // Another TLS record type (change_cipher_spec, alert, application_data,
    // heartbeat) with a TLS version: a TLS stream that does not start with
    // its ClientHello.
    if (bytes.size() < 2) {
      return ClientHelloStatus::incomplete;
    }
    return static_cast<uint8_t>(bytes[1]) == kTlsMajor ? ClientHelloStatus::malformed
                                                       : ClientHelloStatus::not_tls;
  }
  return ClientHelloStatus::not_tls;
}

}  // namespace

ClientHelloInfo peekClientHello(std::string_view bytes, size_t max_bytes) {
  ClientHelloInfo info;
  if (bytes.empty()) {
    return info;  // incomplete
  }
  info.status = firstBytesClass(bytes);
  if (info.status != ClientHelloStatus::incomplete ||
      static_cast<uint8_t>(bytes[0]) != kHandshakeRecord) {
    return info;
  }
  // Gather the handshake message from consecutive handshake records. The
  // records' version is not looked at: a server might not either.
  std::string handshake;
  size_t pos = 0;
  while (true) {
    if (bytes.size() - pos < 5) {
      return info;  // incomplete
    }
    auto type = static_cast<uint8_t>(bytes[pos]);
    size_t len = static_cast<uint8_t>(bytes[pos + 3]) << 8 | static_cast<uint8_t>(bytes[pos + 4]);
    if (type != kHandshakeRecord) {
      info.status = ClientHelloStatus::malformed;
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

InspectVerdict inspectSni(std::string_view client_bytes, std::string_view expected_host) {
  ClientHelloInfo hello = peekClientHello(client_bytes);
  switch (hello.status) {
    case ClientHelloStatus::incomplete:
      return InspectVerdict::need_more;
    case ClientHelloStatus::not_tls:
      return InspectVerdict::pass;  // SPEC: non-TLS client bytes are relayed as they are
    case ClientHelloStatus::malformed:
    case ClientHelloStatus::no_sni:
      return InspectVerdict::deny;
    case ClientHelloStatus::ok: {
      std::string name;
      if (!normalizeHostName(hello.server_name, &name)) {
        return InspectVerdict::deny;
      }
      return name == expected_host ? InspectVerdict::pass : InspectVerdict::deny;
    }
  }
  return InspectVerdict::deny;
}

FirstBytesInspector sniInspector(std::string expected_host) {
  return [expected = std::move(expected_host)](std::string_view bytes) {
    return inspectSni(bytes, expected);
  };
}

}  // namespace s3gate
