#!/bin/sh
# Installs the Debian 12 packages the aarch64 cross build, the qemu smoke
# test and the emulated boot test need (cmake: the bundled libopus the
# `opus` crate builds for the target). Run as root. Idempotent.
set -eu

need=""
for p in rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu g++-aarch64-linux-gnu \
	libc6-dev-arm64-cross qemu-user-static qemu-system-arm squashfs-tools \
	cpio dosfstools mtools ffmpeg fdisk e2fsprogs cmake "$@"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		need="$need $p"
	fi
done
[ -z "$need" ] && exit 0

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	dpkg --add-architecture arm64
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# An install that fails because a downloaded archive vanished from the cache
# (another apt run cleaned it) succeeds when repeated.
i=0
# shellcheck disable=SC2086 # $need is a word list on purpose
until apt-get install -y -q --no-install-recommends $need; do
	i=$((i + 1))
	[ "$i" -ge 3 ] && exit 1
	apt-get --fix-broken install -y -q || true
	sleep 5
done
