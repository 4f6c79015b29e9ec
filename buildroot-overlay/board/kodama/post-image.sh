#!/bin/bash
# Buildroot post-image: writes sdcard.img with genimage from
# genimage.cfg.in, listing the boot files the rpi-firmware and linux
# packages put in $BINARIES_DIR.
set -euo pipefail

BOARD_DIR=$(dirname "$0")
GENIMAGE_CFG=$BINARIES_DIR/genimage.cfg
GENIMAGE_TMP=$BUILD_DIR/genimage.tmp

files=()
for f in "$BINARIES_DIR"/*.dtb "$BINARIES_DIR"/rpi-firmware/*; do
	files+=("${f#"$BINARIES_DIR"/}")
done
# config.txt's kernel= is U-Boot; the Linux kernel is in each root slot
# (/kernel/Image, put there by post-build.sh), where boot.scr loads it.
# uboot.env and uboot-redund.env are the two copies of the A/B boot
# counters (host-uboot-tools makes uboot-env.bin, redundant format, from
# board/kodama/uboot-env.txt; boot.cmd and fw_setenv alternate between them).
cp "$BINARIES_DIR/uboot-env.bin" "$BINARIES_DIR/uboot.env"
cp "$BINARIES_DIR/uboot-env.bin" "$BINARIES_DIR/uboot-redund.env"
cp "$BOARD_DIR/kodama-boot.env" "$BINARIES_DIR/kodama-boot.env"
files+=(u-boot.bin boot.scr uboot.env uboot-redund.env kodama-boot.env)

boot_files=$(printf '\\t\\t\\t"%s",\\n' "${files[@]}")
sed "s|#BOOT_FILES#|$boot_files|" "$BOARD_DIR/genimage.cfg.in" > "$GENIMAGE_CFG"

rootpath_tmp=$(mktemp -d)
trap 'rm -rf "$rootpath_tmp"' EXIT
rm -rf "$GENIMAGE_TMP"
genimage \
	--rootpath "$rootpath_tmp" \
	--tmppath "$GENIMAGE_TMP" \
	--inputpath "$BINARIES_DIR" \
	--outputpath "$BINARIES_DIR" \
	--config "$GENIMAGE_CFG"

echo "Kodama image: $BINARIES_DIR/sdcard.img (write it with scripts/flash.sh)"
