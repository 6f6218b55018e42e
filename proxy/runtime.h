#pragma once
// The runtime snapshot: everything a decision or a connection takes from the
// configuration, built by one function that `--check`, start-up and reload
// all call, then shared immutably by pointer. A request is decided against
// the snapshot in force when its head arrived; an open tunnel keeps the one
// it started with.
//
//   buildRuntime(path)  the file parsed and validated, TLS contexts built from
//                       the files it names, DNS settings, the access log
//   restartOnlyKeys()   the keys a reload cannot change (listeners, admin,
//                       workers): each is warned about and keeps its value

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "proxy/access_log.h"
#include "proxy/auth.h"
#include "proxy/resolver.h"
#include "proxy/tls.h"

namespace s3gate {

struct Runtime {
  ConfigPtr config;
  std::shared_ptr<TlsClientContext> upstream_tls;  // http.ca_file (or the system store)
  std::vector<std::shared_ptr<TlsServerContext>> listener_tls;  // per listener; null without tls
  // tunnel.inspect: the studio-issued certificate for the S3 names served.
  std::shared_ptr<TlsServerContext> inspect_tls;
  ResolverSettings resolver;                // from dns.*
  std::shared_ptr<const UsersTable> users;  // auth.users_file; null without auth
  // The password verifier threads and their cache (absent in --check): made
  // with the first snapshot that runs and handed on to every later one, so
  // that a reload keeps the cache and never stops a thread.
  std::shared_ptr<Authenticator> authenticator;
  // The access log this snapshot writes to (absent in --check). A reload that
  // keeps the target keeps the same log.
  std::shared_ptr<AccessLog> access_log;
  // What --check prints as warnings (risky but valid settings).
  std::vector<std::string> warnings;

  const Config& cfg() const { return *config; }
  // The TLS context of listeners[index], or nullptr.
  std::shared_ptr<TlsServerContext> listenerTls(size_t index) const {
    return index < listener_tls.size() ? listener_tls[index] : nullptr;
  }
};
using RuntimePtr = std::shared_ptr<const Runtime>;

struct RuntimeBuild {
  RuntimePtr runtime;
  std::vector<std::string> errors;  // "FILE:LINE:COL: key: message" or "FILE: key: message"
  bool ok() const { return runtime != nullptr; }
};

enum class RuntimeUse {
  check,  // --check: every file is read and checked, the access log is not opened
  run,    // start-up and reload: the access log is opened (or the running one kept)
};

// `path` empty: the embedded default. `running`: the snapshot in force (reload),
// whose access log is kept when the target is the same and whose restart-only
// keys are kept (each change named in *restart_warnings).
RuntimeBuild buildRuntime(const std::string& path, RuntimeUse use, const Runtime* running,
                          std::vector<std::string>* restart_warnings);

// The same from a configuration already loaded (tests, the embedded default).
RuntimeBuild buildRuntimeFromConfig(ConfigPtr config, RuntimeUse use, const Runtime* running,
                                    std::vector<std::string>* restart_warnings);

// The keys only a restart changes, in one place.
struct RestartOnlyKey {
  std::string_view name;
  bool (*same)(const Config& a, const Config& b);
  void (*keep)(Config& fresh, const Config& running);
};
const std::vector<RestartOnlyKey>& restartOnlyKeys();

}  // namespace s3gate
