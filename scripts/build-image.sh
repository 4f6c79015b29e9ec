#!/bin/sh
# build-image.sh — builds the real Kodama SD-card image with Buildroot.
#
#   scripts/build-image.sh [BUILDROOT_DIR] [OUTPUT_DIR]
#     BUILDROOT_DIR  a Buildroot checkout (default: ../buildroot next to this
#                    repository; cloned there if missing)
#     OUTPUT_DIR     build directory (default: ../kodama-br-output)
#   -> OUTPUT_DIR/images/sdcard.img; write it with
#      scripts/flash.sh --image OUTPUT_DIR/images/sdcard.img --config kodama.toml --to /dev/sdX
#
# Needs internet (Buildroot downloads the toolchain, the Raspberry Pi kernel
# and firmware, Rust, and the firmware's crates from Cargo.lock), ~15 GB of
# disk, and 1-3 hours on a 4-core machine the first time. Host packages
# (Debian/Ubuntu): build-essential git rsync bc cpio unzip file wget python3
# libssl-dev (see Buildroot's manual, "System requirements").
#
# Buildroot stays outside this repository: our tree is an external tree
# (buildroot-overlay/, BR2_EXTERNAL) that it builds against.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
br=${1:-$repo/../buildroot}
out=${2:-$repo/../kodama-br-output}
# The Buildroot revision this tree is checked against (check-package,
# savedefconfig): its Rust (1.97) meets the workspace's rust-version (1.91);
# Buildroot releases before 2026 ship an older Rust and cannot build it.
BR_REV=${BR_REV:-e991fa071605a78c17adba2ed26e07c3b8c95583}

if [ ! -d "$br" ]; then
	git clone https://gitlab.com/buildroot.org/buildroot.git "$br"
	git -C "$br" checkout -q "$BR_REV"
fi

make -C "$br" O="$out" BR2_EXTERNAL="$repo/buildroot-overlay" kodama_pizero2w_defconfig
make -C "$out" -j"$(nproc)"
echo "build-image.sh: $out/images/sdcard.img"
