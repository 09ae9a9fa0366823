# Shared by setup.sh and build-spice-server.sh (sourced, not run): root check and
# installing the Debian packages that are missing. The caller sets LOG_PREFIX.

log() { printf '%s: %s\n' "${LOG_PREFIX:-setup}" "$*"; }

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "${LOG_PREFIX:-setup}: must run as root (it installs Debian packages)" >&2
        exit 1
    fi
}

# Prints the packages among "$@" that are not installed, one a line.
missing_packages() {
    local p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done
}

# apt_install WHAT [apt-get options --] PACKAGE...: installs them (nothing to do: no-op).
apt_install() {
    local what=$1
    shift
    local options=()
    if [[ " $* " == *" -- "* ]]; then
        while [ "$1" != "--" ]; do options+=("$1"); shift; done
        shift
    fi
    [ $# -gt 0 ] || return 0
    log "installing $what: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${options[@]}" "$@" >/dev/null
}
