#!/bin/sh
# Builds the stripped aarch64 `kodama-camera` the image ships (the `camera`
# profile: release, optimised for size) with Debian 12's rustc-web (see
# scripts/cross-env.sh) and prints its size and build time.
#
#   scripts/cross-build.sh [extra cargo args]
#   -> target/aarch64-cross/aarch64-unknown-linux-gnu/camera/kodama-camera
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
#   cross build --profile camera --target aarch64-unknown-linux-gnu -p kodama-firmware
#
# The camera profile (root Cargo.toml) has fat LTO, one codegen unit,
# panic=abort, strip and opt-level "s"; the firmware's iroh has tls-ring only
# (no port mapper). Unwind tables are left out where rustc may
# (`-C force-unwind-tables=no`, as in the Buildroot package and the Yocto
# recipe): with panic=abort nothing unwinds, and a panic still prints its
# message and location (docs/bench.md, "Firmware size").
set -eu
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cross-env.sh
. scripts/cross-env.sh

target=aarch64-unknown-linux-gnu
features=${KODAMA_FIRMWARE_FEATURES-synthetic}
rustflags="-C force-unwind-tables=no"
case ",$features," in
*,pi,*)
	# The Pi drivers link the target's libcamera and ALSA: Debian 13's,
	# from an arm64 sysroot (scripts/pi-sysroot.sh). Its link arguments
	# are RUSTFLAGS, which rebuild every dependency: a target dir of its own.
	eval "$(CARGO_TARGET_DIR="$(pwd)/target" scripts/pi-sysroot.sh --arch arm64 --quiet)"
	CARGO_TARGET_DIR="$CARGO_TARGET_DIR-pi"
	rustflags="$rustflags $KODAMA_PI_LINK_ARGS"
	export CARGO_TARGET_DIR
	;;
esac
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS=$rustflags
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS
start=$(date +%s)
cargo build --locked --profile camera --target "$target" -p kodama-firmware --bin kodama-camera \
	--features "$features" "$@"
end=$(date +%s)

bin="$CARGO_TARGET_DIR/$target/camera/kodama-camera"
# The profile strips already; strip again with the target's binutils in case
# a caller overrode the profile (cheap, and the size we report is the real one).
aarch64-linux-gnu-strip "$bin"
size=$(stat -c %s "$bin")
echo "cross-build: $bin"
echo "cross-build: features [$features], time $((end - start)) s, stripped size $size bytes ($((size / 1024)) KiB)"
