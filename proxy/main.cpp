// s3gate: the command line (SPEC section 1). Everything else lives in the libraries.

#include <event2/event.h>
#include <event2/thread.h>
#include <malloc.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "acl/decision.h"
#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/http_parser.h"
#include "proxy/runtime.h"
#include "proxy/server.h"

namespace {

using namespace s3gate;

const char* kUsage =
    "usage: s3gate [-c FILE]                  run (no -c: the embedded default configuration)\n"
    "       s3gate [-c FILE] --check          validate the configuration and exit\n"
    "       s3gate [-c FILE] explain CLIENT_IP METHOD TARGET\n"
    "                                         print the decision for one request, exit 0 allow / 1 "
    "deny\n"
    "       s3gate --print-default-config     print the embedded default configuration\n"
    "       s3gate --version | --help\n"
    "\n"
    "examples:\n"
    "  s3gate -c /etc/s3gate/s3gate.yaml explain 10.1.2.3 CONNECT "
    "media.s3.us-west-2.amazonaws.com:443\n"
    "  s3gate explain 10.1.2.3 PUT http://media.s3.us-west-2.amazonaws.com/shot/010.exr\n"
    "\n"
    "signals: HUP reloads the configuration, TERM/INT drain and exit (a second one exits at "
    "once),\n"
    "USR1 reopens the access log file.\n";

int usageError(const std::string& message) {
  fprintf(stderr, "s3gate: %s\n%s", message.c_str(), kUsage);
  return 2;
}

ConfigLoadResult loadConfig(const std::string& path) {
  return path.empty() ? loadDefaultConfig() : loadConfigFromFile(path);
}

int printErrors(const std::vector<std::string>& errors) {
  for (const auto& e : errors) {
    fprintf(stderr, "%s\n", e.c_str());
  }
  return 1;
}

int explain(const Config& config, const std::vector<std::string>& args) {
  if (args.size() != 3) {
    return usageError("explain takes CLIENT_IP METHOD TARGET");
  }
  auto client = IpAddress::parse(args[0]);
  if (!client) {
    return usageError("explain: not an IP address: " + args[0]);
  }
  RequestTarget target;
  Reason parse = parseRequestTarget(args[1], args[2], &target);
  DecisionInput input;
  input.client = *client;
  input.kind =
      args[1] == "CONNECT" ? RequestKindForDecision::connect : RequestKindForDecision::http;
  input.method = args[1];
  input.host = target.host;
  input.host_is_ipv6_literal = target.host_is_ipv6_literal;
  input.port = target.port;
  input.port_given = target.port_given;
  input.path = target.path;
  Decision d;
  if (parse != Reason::none) {
    d.reason = parse;
  } else {
    d = decide(config, input);
  }
  printf("verdict: %s\n", std::string(verdictName(d.verdict)).c_str());
  printf("reason:  %s\n",
         d.reason == Reason::none ? "-" : std::string(reasonName(d.reason)).c_str());
  if (d.reason != Reason::none && d.verdict == Verdict::deny) {
    printf("status:  %d %s (Proxy-Status error=%s)\n", reasonStatus(d.reason),
           std::string(reasonStatusText(d.reason)).c_str(),
           std::string(proxyStatusError(d.reason)).c_str());
  }
  printf("rule:    %s\n", d.rule.c_str());
  printf("host:    %s\n", d.host.empty() ? "-" : d.host.c_str());
  printf("port:    %u\n", static_cast<unsigned>(d.port != 0 ? d.port : target.port));
  printf("name:    kind=%s region=%s bucket=%s\n", std::string(s3NameKindName(d.name.kind)).c_str(),
         d.name.region.empty() ? "-" : d.name.region.c_str(),
         d.name.bucket.empty() ? "-" : d.name.bucket.c_str());
  if (!d.detail.empty()) {
    printf("detail:  %s\n", d.detail.c_str());
  }
  if (const DnsPin* pin = d.host.empty() ? nullptr : findPin(config, d.host)) {
    printf("pinned:  %s\n", pin->host.c_str());
  }
  return d.verdict == Verdict::deny ? 1 : 0;
}

// glibc gives the top of a heap back to the kernel once more than the trim
// threshold is free there, and its mmap threshold moves with what is freed.
// OpenSSL frees a TLS stream's 64 KiB read buffer whenever it is drained
// (SSL_MODE_RELEASE_BUFFERS, so that idle tunnels hold none) and takes it
// again at the next record: once handshakes have grown and fragmented the
// workers' heaps, that churn returned pages and faulted them in again,
// measured at +0.7 CPU-s per GiB for an inspected download. Fixed thresholds
// keep freed memory for reuse (up to 32 MiB per heap) and leave mmap to the
// few allocations above 1 MiB.
void tuneMalloc() {
  mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
}

}  // namespace

int main(int argc, char** argv) {
  tuneMalloc();
  std::string config_path;
  bool check = false;
  std::vector<std::string> explain_args;
  bool explaining = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (explaining) {
      explain_args.push_back(arg);
    } else if (arg == "-c" || arg == "--config") {
      if (i + 1 >= argc) {
        return usageError(arg + " needs a file");
      }
      config_path = argv[++i];
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "explain") {
      explaining = true;
    } else if (arg == "--print-default-config") {
      fwrite(defaultConfigYaml().data(), 1, defaultConfigYaml().size(), stdout);
      return 0;
    } else if (arg == "--version") {
      printf("s3gate %s\n", S3GATE_VERSION);
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      printf("%s", kUsage);
      return 0;
    } else {
      return usageError("unknown argument: " + arg);
    }
  }

  if (explaining) {
    ConfigLoadResult loaded = loadConfig(config_path);
    if (!loaded.ok()) {
      return printErrors(loaded.errors);
    }
    return explain(*loaded.config, explain_args);
  }
  // --check builds exactly what start-up builds (files included), so that a
  // file it calls OK starts and reloads.
  RuntimeBuild built =
      buildRuntime(config_path, check ? RuntimeUse::check : RuntimeUse::run, nullptr, nullptr);
  if (!built.ok()) {
    return printErrors(built.errors);
  }
  for (const auto& warning : built.runtime->warnings) {
    fprintf(stderr, "warning: %s\n", warning.c_str());
  }
  if (check) {
    printf("configuration OK\n");
    return 0;
  }

  // Writes to a closed peer are errors to handle, not a reason to die.
  signal(SIGPIPE, SIG_IGN);
  if (evthread_use_pthreads() != 0) {
    fprintf(stderr, "s3gate: error: libevent thread support is missing\n");
    return 1;
  }
  Metrics metrics;
  Server server(built.runtime, config_path, metrics);
  return server.run();
}
