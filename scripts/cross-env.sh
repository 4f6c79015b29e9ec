#!/bin/sh
# Environment for cross-compiling the workspace to aarch64 with Debian 12's
# rustc-web toolchain (rustup cannot add targets on our build machines).
# Source it:  . scripts/cross-env.sh
#
# Debian's /usr/bin/cargo must win over rustup's ~/.cargo/bin shims, and
# RUSTC must point at Debian's rustc: only that compiler has the aarch64
# standard library installed (libstd-rust-web-dev:arm64).

PATH=/usr/bin:/bin:$PATH
export PATH
export RUSTC=/usr/bin/rustc
export CARGO=/usr/bin/cargo
# rustup's RUSTUP_TOOLCHAIN would make a shim pick its own compiler.
unset RUSTUP_TOOLCHAIN
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# ring's C/assembly parts are built by the cc crate.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# openh264 (the software H.264 encoder of the simulated camera) is C++.
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
# A separate target dir: the native debug builds of the other developers hold
# the lock on target/, and the two toolchains' artefacts must not mix.
: "${CARGO_TARGET_DIR:=$(pwd)/target/aarch64-cross}"
export CARGO_TARGET_DIR
