#!/usr/bin/env bash
# check-pi.sh — compile the firmware's `pi` feature (libcamera + V4L2 M2M
# encoder) on a machine without a new enough libcamera, using the Debian 13
# sysroot from scripts/pi-sysroot.sh. Exits non-zero on any failure.
#
# Usage:
#   scripts/check-pi.sh            # cargo check, all targets (lib, bin, tests)
#   scripts/check-pi.sh --build    # also link the kodama-camera binary
#   scripts/check-pi.sh --clippy   # clippy -D warnings instead of check
#
# Idempotent: Debian packages are installed only when missing, the sysroot
# is cached under target/pi-sysroot, and cargo reuses the shared target dir
# (no RUSTFLAGS are set for checking, so no dependency is rebuilt because of
# this script; the link flags go to the final crate only).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

BUILD=0
MODE=check
while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD=1; shift ;;
        --clippy) MODE=clippy; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check-pi: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

# bindgen (v4l2r, libcamera-sys) needs libclang; libcamera-sys compiles its
# C++ shim with g++; the crates find libcamera with pkg-config.
need=()
for pkg in libclang-dev clang pkg-config g++ dpkg-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "check-pi: installing ${need[*]}" >&2
    if [ "$(id -u)" != 0 ]; then
        echo "check-pi: missing Debian packages ${need[*]} and not root" >&2
        exit 1
    fi
    # Another apt may hold the lock (CI steps, other jobs): wait for it.
    # A vanished temporary archive mid-install succeeds on a retry.
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}" >&2
    }
    if ! apt_install; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
        apt_install
    fi
fi

start=$(date +%s)
eval "$(scripts/pi-sysroot.sh --quiet)"
echo "check-pi: sysroot ready in $(( $(date +%s) - start )) s ($KODAMA_PI_SYSROOT)" >&2
pkg-config --modversion libcamera >/dev/null || { echo "check-pi: pkg-config cannot see libcamera in the sysroot" >&2; exit 1; }
echo "check-pi: libcamera $(pkg-config --modversion libcamera), videodev2.h from $(sed -n 's/^package=\(linux-libc-dev[^ ]*\)/\1/p' "$KODAMA_PI_SYSROOT/.kodama-sysroot")" >&2

start=$(date +%s)
if [ "$MODE" = clippy ]; then
    cargo clippy -p kodama-firmware --features pi --all-targets -- -D warnings
else
    cargo check -p kodama-firmware --features pi --all-targets
fi
echo "check-pi: cargo $MODE --features pi passed in $(( $(date +%s) - start )) s" >&2

if [ "$BUILD" = 1 ]; then
    start=$(date +%s)
    # shellcheck disable=SC2086 # KODAMA_PI_LINK_ARGS is a list of rustc flags.
    cargo rustc -p kodama-firmware --features pi --bin kodama-camera -- $KODAMA_PI_LINK_ARGS
    bin="${CARGO_TARGET_DIR:-target}/debug/kodama-camera"
    echo "check-pi: linked $bin in $(( $(date +%s) - start )) s; needs:" >&2
    objdump -p "$bin" | awk '/NEEDED/ {print "  " $2}' >&2
    objdump -p "$bin" | grep -q 'NEEDED.*libcamera' || { echo "check-pi: binary does not link libcamera" >&2; exit 1; }
fi
