#!/bin/sh
# Builds a release, stripped aarch64 `kodama-camera` with Debian 12's
# rustc-web (see scripts/cross-env.sh) and prints its size and build time.
#
#   scripts/cross-build.sh [extra cargo args]
#   -> target/aarch64-cross/aarch64-unknown-linux-gnu/release/kodama-camera
#
# Machines with Docker can use `cross` instead, which brings its own
# toolchain image and needs none of the Debian packages:
#   cargo install cross
#   cross build --release --target aarch64-unknown-linux-gnu -p kodama-firmware
#
# The release profile (root Cargo.toml) already has fat LTO, one codegen
# unit, panic=abort and strip; iroh is built with only tls-ring+portmapper.
set -eu
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cross-env.sh
. scripts/cross-env.sh

target=aarch64-unknown-linux-gnu
start=$(date +%s)
cargo build --locked --release --target "$target" -p kodama-firmware --bin kodama-camera "$@"
end=$(date +%s)

bin="$CARGO_TARGET_DIR/$target/release/kodama-camera"
# The profile strips already; strip again with the target's binutils in case
# a caller overrode the profile (cheap, and the size we report is the real one).
aarch64-linux-gnu-strip "$bin"
size=$(stat -c %s "$bin")
echo "cross-build: $bin"
echo "cross-build: time $((end - start)) s, stripped size $size bytes ($((size / 1024)) KiB)"
