#!/usr/bin/env bash
# CI check of the Debian package: builds it from the binary the workspace
# tests already built (no second release build), installs it with dpkg -i,
# and checks the binary runs, the kodama user and /var/lib/kodama exist, the
# service user can start from the packaged config, and the systemd unit is
# valid (systemd-analyze verify). Removes and purges it again at the end.
# Needs root for dpkg -i; under CI=true a missing tool or privilege fails.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/debug/kodama-server}
[ -x "$binary" ] || cargo build -p kodama-server
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
deb=$(bash scripts/build-deb.sh --binary "$binary" --out "$out")
echo "built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | grep "Package: kodama-server" >/dev/null
dpkg-deb --contents "$deb" | grep "./lib/systemd/system/kodama-server.service" >/dev/null

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL: installing the package needs root" >&2
        exit 1
    fi
    echo "SKIPPED: dpkg -i needs root (the package was built: $deb)"
    exit 0
fi
if dpkg -s kodama-server >/dev/null 2>&1; then
    echo "FAIL: kodama-server is already installed on this machine; not touching it" >&2
    exit 1
fi
if [ -e /var/lib/kodama ] || getent passwd kodama >/dev/null; then
    echo "FAIL: /var/lib/kodama or a kodama user exists already; not touching them" >&2
    exit 1
fi
cleanup() {
    dpkg --purge kodama-server >/dev/null 2>&1 || true
    rm -rf "$out" /var/lib/kodama
    if getent passwd kodama >/dev/null; then deluser --system --quiet kodama >/dev/null 2>&1 || userdel kodama || true; fi
    if getent group kodama >/dev/null; then delgroup --system --quiet kodama >/dev/null 2>&1 || groupdel kodama || true; fi
}
trap cleanup EXIT
dpkg -i "$deb"
/usr/bin/kodama-server --version
getent passwd kodama >/dev/null || { echo "FAIL: no kodama user" >&2; exit 1; }
[ "$(stat -c %U:%a /var/lib/kodama)" = "kodama:750" ] || { echo "FAIL: /var/lib/kodama is $(stat -c %U:%a /var/lib/kodama)" >&2; exit 1; }
[ "$(stat -c %G:%a /etc/kodama/kodama-server.toml)" = "kodama:640" ]
# The service's user can read the packaged config and write its data directory.
runuser -u kodama -- env KODAMA_SERVER_CONFIG=/etc/kodama/kodama-server.toml /usr/bin/kodama-server id
[ -s /var/lib/kodama/server.key ] || { echo "FAIL: no key in /var/lib/kodama" >&2; exit 1; }
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/kodama-server.service
    echo "systemd-analyze verify: the unit is valid"
elif [ "${CI:-}" = true ]; then
    echo "FAIL: systemd-analyze is needed to verify the unit (apt-get install systemd)" >&2
    exit 1
else
    echo "SKIPPED: no systemd-analyze to verify the unit"
fi
dpkg -r kodama-server >/dev/null
[ ! -e /usr/bin/kodama-server ] || { echo "FAIL: the binary survived dpkg -r" >&2; exit 1; }
[ -s /var/lib/kodama/server.key ] || { echo "FAIL: removing the package lost the server's key" >&2; exit 1; }
dpkg --purge kodama-server >/dev/null
echo "Debian package: built, installed with dpkg -i, unit verified, removed"
