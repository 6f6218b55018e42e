#include "proxy/runtime.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace s3gate {

namespace {

constexpr size_t kAccessLogQueueBytes = 8 * 1024 * 1024;

std::string listenerKey(const ListenerConfig& l) {
  return l.address.toString() + (l.mode == ListenerMode::sni ? "/sni" : "/forward") +
         (l.proxy_protocol ? "/pp" : "") + (l.tls ? "/tls" : "");
}

bool sameListeners(const Config& a, const Config& b) {
  if (a.listeners.size() != b.listeners.size()) {
    return false;
  }
  for (size_t i = 0; i < a.listeners.size(); ++i) {
    if (listenerKey(a.listeners[i]) != listenerKey(b.listeners[i])) {
      return false;
    }
  }
  return true;
}

// An existing file must open for appending; a new one needs a writable
// directory. A directory that does not exist yet is only a warning: systemd
// creates /var/log/s3gate (LogsDirectory=) as the service starts. Nothing is
// created: --check leaves no trace.
bool checkLogTarget(const std::string& target, std::string* error, std::string* warning) {
  if (target == "off" || target == "stdout") {
    return true;
  }
  UniqueFd fd(::open(target.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY));
  if (fd) {
    return true;
  }
  if (errno != ENOENT) {
    *error = std::strerror(errno);
    return false;
  }
  std::filesystem::path dir = std::filesystem::path(target).parent_path();
  if (dir.empty()) {
    dir = ".";
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    if (errno == ENOENT) {
      *warning = "the directory " + dir.string() +
                 " does not exist yet; start-up fails unless it " +
                 "is made first (the packaged unit's LogsDirectory= makes it)";
      return true;
    }
    *error = "cannot create it in " + dir.string() + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

ResolverSettings resolverSettings(const DnsConfig& dns) {
  ResolverSettings s;
  s.servers = dns.servers;
  s.timeout = dns.timeout;
  s.attempts = dns.attempts;
  s.min_ttl = dns.min_ttl;
  s.max_ttl = dns.max_ttl;
  s.negative_ttl = dns.negative_ttl;
  return s;
}

// Valid settings that open a hole an operator should know about.
std::vector<std::string> riskySettings(const Config& c) {
  std::vector<std::string> out;
  const std::string where = c.source + ": ";
  for (size_t i = 0; i < c.listeners.size(); ++i) {
    if (c.listeners[i].proxy_protocol && c.trusted_proxies.empty()) {
      out.push_back(where + "listeners[" + std::to_string(i) +
                    "].proxy_protocol: trusted_proxies is empty, so any peer may send a PROXY "
                    "header and claim any client address; list the load balancer's subnets");
    }
  }
  if (c.mode == PolicyMode::report) {
    out.push_back(where +
                  "mode: report lets every policy denial through (only bad input and the "
                  "address rules are enforced): s3gate is then an open CONNECT proxy");
  }
  if (c.auth) {
    for (size_t i = 0; i < c.listeners.size(); ++i) {
      const ListenerConfig& l = c.listeners[i];
      const std::string at = where + "listeners[" + std::to_string(i) + "]: ";
      if (l.mode == ListenerMode::sni) {
        out.push_back(at + "auth is set, but an sni listener cannot ask for credentials: its " +
                      "clients are not authenticated");
      } else if (l.tls && !l.tls->client_ca.empty()) {
        continue;  // the client certificate is the identity
      } else if (!l.tls && !l.address.ip().isLoopback()) {
        out.push_back(at + "auth is set on " + l.address.toString() +
                      " without tls: proxy passwords cross the network in clear (Basic is " +
                      "base64, not encryption); add tls or keep the listener on loopback");
      }
    }
  }
  if (!c.admin.ip().isLoopback()) {
    out.push_back(where + "admin.address: " + c.admin.toString() +
                  " is not a loopback address: /metrics is reachable from the network");
  }
  return out;
}

}  // namespace

const std::vector<RestartOnlyKey>& restartOnlyKeys() {
  static const std::vector<RestartOnlyKey> keys = {
      {"listeners", &sameListeners,
       [](Config& fresh, const Config& running) { fresh.listeners = running.listeners; }},
      {"admin", [](const Config& a, const Config& b) { return a.admin == b.admin; },
       [](Config& fresh, const Config& running) { fresh.admin = running.admin; }},
      {"workers", [](const Config& a, const Config& b) { return a.workers == b.workers; },
       [](Config& fresh, const Config& running) { fresh.workers = running.workers; }},
  };
  return keys;
}

RuntimeBuild buildRuntimeFromConfig(ConfigPtr loaded, RuntimeUse use, const Runtime* running,
                                    std::vector<std::string>* restart_warnings) {
  RuntimeBuild result;
  auto config = std::make_shared<Config>(*loaded);
  const std::string where = config->source + ": ";
  if (running != nullptr) {
    for (const RestartOnlyKey& key : restartOnlyKeys()) {
      if (!key.same(*config, running->cfg())) {
        key.keep(*config, running->cfg());
        if (restart_warnings != nullptr) {
          restart_warnings->push_back(std::string(key.name) +
                                      " changed; it needs a restart and keeps its running value");
        }
      }
    }
  }
  auto runtime = std::make_shared<Runtime>();
  std::string error;
  if (config->tunnel.inspect) {
    runtime->inspect_tls = TlsServerContext::create(config->tunnel.inspect_certificate,
                                                    config->tunnel.inspect_private_key, "", &error);
    if (runtime->inspect_tls) {
      runtime->inspect_tls->offerHttp11Only();
    } else {
      result.errors.push_back(where + "tunnel.inspect_certificate: " + error);
    }
  }
  runtime->upstream_tls = TlsClientContext::create(config->http.ca_file, &error);
  if (!runtime->upstream_tls) {
    result.errors.push_back(where + "http.ca_file: " + error);
  }
  for (size_t i = 0; i < config->listeners.size(); ++i) {
    const auto& tls = config->listeners[i].tls;
    if (!tls) {
      runtime->listener_tls.push_back(nullptr);
      continue;
    }
    error.clear();
    auto ctx = TlsServerContext::create(tls->certificate, tls->private_key, tls->client_ca, &error);
    if (!ctx) {
      result.errors.push_back(where + "listeners[" + std::to_string(i) + "].tls: " + error);
    }
    runtime->listener_tls.push_back(std::move(ctx));
  }
  runtime->resolver = resolverSettings(config->dns);
  if (config->auth) {
    std::vector<std::string> user_errors;
    runtime->users = UsersTable::load(config->auth->users_file, &user_errors);
    for (const std::string& e : user_errors) {
      result.errors.push_back(where + "auth.users_file: " + e);
    }
  }
  if (use == RuntimeUse::run) {
    runtime->authenticator = running != nullptr && running->authenticator
                                 ? running->authenticator
                                 : std::make_shared<Authenticator>(Authenticator::defaultOptions());
  }
  error.clear();
  std::string log_warning;
  if (use == RuntimeUse::check) {
    if (!checkLogTarget(config->access_log, &error, &log_warning)) {
      result.errors.push_back(where + "access_log: " + config->access_log + ": " + error);
    }
  } else if (running != nullptr && running->access_log &&
             running->cfg().access_log == config->access_log) {
    runtime->access_log = running->access_log;
  } else if (result.errors.empty()) {
    runtime->access_log = AccessLog::open(config->access_log, kAccessLogQueueBytes, &error);
    if (!runtime->access_log) {
      result.errors.push_back(where + "access_log: " + config->access_log + ": " + error);
    }
  }
  if (!result.errors.empty()) {
    return result;
  }
  runtime->warnings = riskySettings(*config);
  if (!log_warning.empty()) {
    runtime->warnings.push_back(where + "access_log: " + log_warning);
  }
  runtime->config = std::move(config);
  result.runtime = std::move(runtime);
  return result;
}

RuntimeBuild buildRuntime(const std::string& path, RuntimeUse use, const Runtime* running,
                          std::vector<std::string>* restart_warnings) {
  ConfigLoadResult loaded = path.empty() ? loadDefaultConfig() : loadConfigFromFile(path);
  if (!loaded.ok()) {
    RuntimeBuild result;
    result.errors = std::move(loaded.errors);
    return result;
  }
  return buildRuntimeFromConfig(std::move(loaded.config), use, running, restart_warnings);
}

}  // namespace s3gate
