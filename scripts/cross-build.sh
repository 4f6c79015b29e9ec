#!/bin/sh
# Builds a release, stripped aarch64 `kodama-camera` with Debian 12's
# rustc-web (see scripts/cross-env.sh) and prints its size and build time.
#
#   scripts/cross-build.sh [extra cargo args]
#   -> target/aarch64-cross/aarch64-unknown-linux-gnu/release/kodama-camera
#
# Features: KODAMA_FIRMWARE_FEATURES (default "synthetic"). This build feeds
# the emulated boot (ci/image-check.sh, scripts/boot-test.sh), and QEMU has no
# camera, so it carries the test-pattern source. The SD-card image is built
# by Buildroot/Yocto with `pi` only (no test equipment); for the size of the
# shipping firmware: KODAMA_FIRMWARE_FEATURES=pi scripts/cross-build.sh
# (libcamera and ALSA from Debian 13's arm64 packages, target dir
# target/aarch64-cross-pi).
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
features=${KODAMA_FIRMWARE_FEATURES-synthetic}
case ",$features," in
*,pi,*)
	# The Pi drivers link the target's libcamera and ALSA: Debian 13's,
	# from an arm64 sysroot (scripts/pi-sysroot.sh). Its link arguments
	# are RUSTFLAGS, which rebuild every dependency: a target dir of its own.
	eval "$(CARGO_TARGET_DIR="$(pwd)/target" scripts/pi-sysroot.sh --arch arm64 --quiet)"
	CARGO_TARGET_DIR="$CARGO_TARGET_DIR-pi"
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$KODAMA_PI_LINK_ARGS"
	export CARGO_TARGET_DIR CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS
	;;
esac
start=$(date +%s)
cargo build --locked --release --target "$target" -p kodama-firmware --bin kodama-camera \
	--features "$features" "$@"
end=$(date +%s)

bin="$CARGO_TARGET_DIR/$target/release/kodama-camera"
# The profile strips already; strip again with the target's binutils in case
# a caller overrode the profile (cheap, and the size we report is the real one).
aarch64-linux-gnu-strip "$bin"
size=$(stat -c %s "$bin")
echo "cross-build: $bin"
echo "cross-build: features [$features], time $((end - start)) s, stripped size $size bytes ($((size / 1024)) KiB)"
