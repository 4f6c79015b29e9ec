#!/bin/sh
# Buildroot post-build: last touches to the target tree before the
# read-only root image (ext4) is made.
set -eu

TARGET_DIR=$1

# The root is read-only: resolv.conf and the DHCP leases live in /run.
ln -sf ../run/resolv.conf "$TARGET_DIR/etc/resolv.conf"

# Mount points the init scripts use.
mkdir -p "$TARGET_DIR/boot" "$TARGET_DIR/data"

# The slot's own kernel: U-Boot's boot.scr loads /kernel/Image from the
# root slot it boots, so an update replaces kernel and root together.
install -D -m 0644 "$BINARIES_DIR/Image" "$TARGET_DIR/kernel/Image"

# /var is a tmpfs (see /etc/fstab); the skeleton's /var symlinks would be
# hidden under it, so drop them to keep the tree honest.
find "$TARGET_DIR/var" -mindepth 1 -maxdepth 1 -type l -delete

# Record what was built, for kodama-status.txt and bug reports.
git_rev=$(git -C "$BR2_EXTERNAL_KODAMA_PATH" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "kodama-image $git_rev" > "$TARGET_DIR/etc/kodama-release"

# Signed updates: the owner's CA certificate is RAUC's keyring
# (scripts/update-keys.sh makes it; KODAMA_UPDATE_KEYRING names the file).
# Without one the camera refuses every bundle, so the build stops.
keyring=${KODAMA_UPDATE_KEYRING:-}
[ -f "$keyring" ] || { echo "post-build: set KODAMA_UPDATE_KEYRING to the owner's ca.cert.pem (scripts/update-keys.sh)" >&2; exit 1; }
install -D -m 0644 "$keyring" "$TARGET_DIR/etc/rauc/keyring.pem"
# The version the firmware reports and bundles carry.
echo "${KODAMA_VERSION:-$git_rev}" > "$TARGET_DIR/etc/kodama-version"
# S05rauc starts the system bus for RAUC itself (before the firmware runs);
# the dbus package's own start script would start a second one.
rm -f "$TARGET_DIR/etc/init.d/S30dbus"
