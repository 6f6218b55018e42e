#include "proxy/sd_notify.h"

#ifdef S3GATE_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace s3gate {

void notifySystemd(const char* state) {
#ifdef S3GATE_HAVE_SYSTEMD
  // unset_environment = 0: worker processes are not forked, nothing inherits it.
  sd_notify(0, state);
#else
  (void)state;
#endif
}

}  // namespace s3gate
