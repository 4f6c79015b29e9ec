#!/usr/bin/env bash
# Installs what building and testing Kodama needs beyond Rust: nasm (OpenH264's
# assembly, ~3x faster encoding), ffmpeg (ffprobe validates our H.264/MP4),
# rauc and squashfs-tools (signed update bundles), iproute2 and nftables (the
# network-namespace test bed, kodama-testbed), and for the web app's tests
# node/npm and chromium; tmux, dpkg and systemd for the operations tests.
# Uses apt-get when run as root; otherwise says what is missing.
set -euo pipefail
need=()
command -v nasm >/dev/null || need+=(nasm)
command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v pkg-config >/dev/null || need+=(pkg-config)
# Opus (the camera's audio encoder, libopus through the `opus` crate) and
# ALSA headers (the `pi` build's microphone driver).
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
pkg-config --exists alsa 2>/dev/null || need+=(libasound2-dev)
# Signed updates: bundles are built and verified with host RAUC (scripts/update-check.sh).
command -v rauc >/dev/null || need+=(rauc)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v openssl >/dev/null || need+=(openssl)
# The web app's build check and browser tests: node/npm and Debian's chromium.
command -v npm >/dev/null || need+=(nodejs npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
# `kodama-server top` is tested in a real terminal; the Debian package is
# built with dpkg-deb and its systemd unit checked with systemd-analyze.
command -v tmux >/dev/null || need+=(tmux)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v systemd-analyze >/dev/null || need+=(systemd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]}…"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "note: please install ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
fi
