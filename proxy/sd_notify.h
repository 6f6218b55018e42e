#pragma once
// systemd readiness notifications (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1).
// A no-op when NOTIFY_SOCKET is not set or the build has no libsystemd.

namespace s3gate {

void notifySystemd(const char* state);

}  // namespace s3gate
