// libspice-server 0.15 (Debian libspice-server-dev), reached through pkg-config spice-server.
#include <spice.h>
