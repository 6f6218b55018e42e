#include "config/config.h"

namespace s3gate {
namespace {

// What `s3gate` runs with when no -c is given and what --print-default-config
// prints: SPEC section 2 with `buckets: [{name: "*"}]`. Every key is written out
// with the value in force, so that an operator can start from a copy of it.
constexpr std::string_view kDefaultConfig = R"yaml(# s3gate configuration (the embedded default).
# Durations are strings with a unit (500ms, 30s, 5m, 1h). Addresses are
# "IPv4:port" or "[IPv6]:port". Networks are CIDRs; a bare address is a /32 or /128.
# Every key may be left out; the value shown here is then the one in force,
# except `buckets`: a file that leaves it out allows no bucket.

version: 1                        # the schema version; the only one so far

listeners:
  - address: "127.0.0.1:3128"
    mode: forward                 # forward: HTTP proxy requests (CONNECT and absolute-form)
                                  # sni: transparent TLS; the target is the ClientHello's server name
    proxy_protocol: false         # true: every connection must start with a PROXY v1 or v2 header
    # tls:                        # forward mode only: an HTTPS proxy, TLS from the client to s3gate
    #   certificate: /etc/s3gate/tls/proxy.pem
    #   private_key: /etc/s3gate/tls/proxy.key
    #   client_ca: /etc/s3gate/tls/clients.pem   # then a client certificate signed by this CA is
    #                             # required; its subject CN is the client's identity

admin:
  address: "127.0.0.1:9464"       # GET /metrics (Prometheus text format) and GET /ping

workers: 0                        # event-loop threads; 0 = one per CPU

clients: ["127.0.0.0/8", "::1/128"]   # who may use the proxy at all
trusted_proxies: []               # peers allowed to send PROXY headers (the NLB's subnets); empty = any peer

mode: enforce                     # enforce | report: policy denials are logged and counted but allowed;
                                  # bad input and the address rules are enforced in every mode

dns:
  servers: []                     # "ip", "ip:port" or "[ipv6]:port"; empty = /etc/resolv.conf
  timeout: 2s                     # per try
  attempts: 2                     # tries per server
  min_ttl: 5s                     # cache TTL is the answer's TTL clamped to [min_ttl, max_ttl]
  max_ttl: 300s
  negative_ttl: 5s
  pins: []                        # answers that never come from DNS (an interface endpoint), e.g.
  #  - host: "*.s3.us-west-2.amazonaws.com"   # exact name, or "*." + suffix
  #    addresses: ["10.0.1.10", "10.0.2.10"]
  allowed_networks: []            # if set, every address s3gate connects to must lie inside one of these
                                  # (the gateway endpoint's prefix-list ranges)

s3:
  regions: ["*"]                  # regions whose S3 endpoints may be reached; "*" = any
  path_style: deny                # CONNECT to a bare S3 endpoint, where the bucket cannot be seen: allow | deny

buckets:                          # the per-bucket allow-list
  - name: "*"                     # exact name, or a glob with * and ?
    access: read-write            # read-only: requests s3gate can see (plain HTTP, inspected tunnels)
                                  # limited to GET and HEAD
    clients: []                   # optional: narrows this rule to these networks
    identities: []                # optional: narrows this rule to these client-certificate CNs

hosts: []                         # other names that may be tunnelled, e.g.
#  - name: sts.us-west-2.amazonaws.com   # (through an interface endpoint)
#    ports: [443]

ports: [443]                      # ports a CONNECT to an S3 name may name

http:                             # plain (absolute-form) HTTP requests; their URL names port 80 or none
  upstream_tls: true              # send them to the S3 endpoint over TLS on port 443 (false: plain, port 80)
  ca_file: ""                     # CA bundle for upstream verification; empty = the system store

tunnel:
  verify_sni: true                # close a tunnel whose TLS ClientHello names another host
  inspect: false                  # true: terminate the client's TLS inside CONNECT tunnels to S3 names with
  inspect_certificate: ""         #   this certificate (issued by the studio's CA for the S3 names served),
  inspect_private_key: ""         #   apply the per-request rules (bucket from Host or path, method) to every
                                  #   request, and send it on over verified TLS; SigV4 stays intact

limits:
  max_connections: 20000          # beyond it, new connections get 503 (overloaded)
  max_header_bytes: 65536         # request head larger: 431
  max_headers: 100                # more header fields: 431
  header_timeout: 30s             # the whole request head must arrive within this
  connect_timeout: 10s
  idle_timeout: 300s              # a tunnel or connection with no bytes either way is closed
  tcp_keepalive: 60s              # keepalive probes on both sides (they keep the NLB's 350 s idle timer alive)
  shutdown_delay: 0s              # on SIGTERM: /ping answers 503 at once, new connections are still
                                  # accepted and served this long (so NLB health checks fail first)
  drain_timeout: 30s              # then listeners close, and open work may finish for this long

access_log: stdout                # stdout | off | a file path
)yaml";

}  // namespace

std::string_view defaultConfigYaml() {
  return kDefaultConfig;
}

}  // namespace s3gate
