#!/usr/bin/env bash
# Builds the Debian package of the server: kodama-server_<version>_<arch>.deb
# with the binary, a hardened systemd unit (its own user, writes only
# /var/lib/kodama), /etc/kodama/kodama-server.toml and the README.
#
#   scripts/build-deb.sh                      # release build, then package
#   scripts/build-deb.sh --binary PATH        # package an already-built binary
#   scripts/build-deb.sh --out DIR            # where the .deb goes (default target/debian)
#
# Install on the box:  sudo apt install ./target/debian/kodama-server_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
out=target/debian
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
    esac
done
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }
if [ -z "$binary" ]; then
    cargo build --release -p kodama-server
    binary=target/release/kodama-server
fi
[ -x "$binary" ] || { echo "$binary: no such executable" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg="$root/kodama-server"
install -D -m 0755 "$binary" "$pkg/usr/bin/kodama-server"
# Shipped stripped, as Debian binaries are (a debug build shrinks ~4x).
command -v strip >/dev/null && strip --strip-debug "$pkg/usr/bin/kodama-server"
install -D -m 0644 server/debian/kodama-server.service "$pkg/lib/systemd/system/kodama-server.service"
install -D -m 0644 server/debian/kodama-server.toml "$pkg/etc/kodama/kodama-server.toml"
install -D -m 0644 README.md "$pkg/usr/share/doc/kodama-server/README.md"
install -d "$pkg/DEBIAN"
install -m 0755 server/debian/postinst server/debian/prerm server/debian/postrm "$pkg/DEBIAN/"
echo /etc/kodama/kodama-server.toml > "$pkg/DEBIAN/conffiles"
size=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: kodama-server
Version: $version
Architecture: $arch
Maintainer: Kodama developers <kodama@localhost>
Installed-Size: $size
Depends: libc6, libgcc-s1, adduser
Section: video
Priority: optional
Description: Kodama recording server for peer-to-peer security cameras
 Accepts paired Kodama cameras over iroh (QUIC, end-to-end encrypted, no
 cloud), routes live video to authorised viewers, records fragmented MP4
 with a SQLite index, plays back, and serves the web app. Runs as the
 kodama system user under a hardened systemd unit; data in /var/lib/kodama,
 configuration in /etc/kodama.
CONTROL
mkdir -p "$out"
deb="$out/kodama-server_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$pkg" "$deb" >/dev/null
echo "$deb"
