#!/bin/sh
# Buildroot post-build: last touches to the target tree before the
# read-only squashfs is made.
set -eu

TARGET_DIR=$1

# The root is read-only: resolv.conf and the DHCP leases live in /run.
ln -sf ../run/resolv.conf "$TARGET_DIR/etc/resolv.conf"

# Mount points the init scripts use.
mkdir -p "$TARGET_DIR/boot" "$TARGET_DIR/data"

# /var is a tmpfs (see /etc/fstab); the skeleton's /var symlinks would be
# hidden under it, so drop them to keep the tree honest.
find "$TARGET_DIR/var" -mindepth 1 -maxdepth 1 -type l -delete

# Record what was built, for kodama-status.txt and bug reports.
git_rev=$(git -C "$BR2_EXTERNAL_KODAMA_PATH" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "kodama-image $git_rev" > "$TARGET_DIR/etc/kodama-release"
