#!/bin/sh
# assemble-image.sh BOOT_DIR ROOTFS_IMG OUT_IMG [BOOT_MB]
#
# Writes a Kodama SD-card image without root or loop devices:
#   p1  FAT32 boot   (BOOT_DIR's files: config.txt, U-Boot, boot.scr, uboot.env + uboot-redund.env, kernel, dtbs, kodama.toml)
#   p2  rootfs A     (ROOTFS_IMG, read-only ext4 with the slot's kernel in /kernel)
#   p3  rootfs B     (same size, empty: the slot the next update writes)
#   --  free         (p4, the data partition, is made on first boot to fill the card)
# This is the layout genimage.cfg gives the Buildroot image; the emulator
# boot test uses this script so it boots the same layout.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 BOOT_DIR ROOTFS_IMG OUT_IMG [BOOT_MB]" >&2; exit 2; }
boot_dir=$1 rootfs=$2 out=$3 boot_mb=${4:-64}

mib=1048576
# Root slots get 25% headroom over the current root file system for updates.
root_bytes=$(stat -c %s "$rootfs")
root_mb=$(( (root_bytes * 5 / 4 + mib - 1) / mib + 1 ))
# 4 MiB before p1 keeps partitions aligned to SD erase blocks.
total_mb=$((4 + boot_mb + 2 * root_mb))

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rm -f "$out"
truncate -s "${total_mb}M" "$out"
sfdisk --quiet "$out" <<EOT
label: dos
start=4MiB, size=${boot_mb}MiB, type=c, bootable
size=${root_mb}MiB, type=83
size=${root_mb}MiB, type=83
EOT

# FAT32 boot partition, label KODAMABOOT (how flash.sh and users find it).
truncate -s "${boot_mb}M" "$tmp/boot.vfat"
mkfs.vfat -F 32 -n KODAMABOOT "$tmp/boot.vfat" >/dev/null
( cd "$boot_dir" && find . -mindepth 1 -type d | sed 's|^\./||' ) | while read -r d; do
	mmd -i "$tmp/boot.vfat" "::$d"
done
( cd "$boot_dir" && find . -type f | sed 's|^\./||' ) | while read -r f; do
	mcopy -i "$tmp/boot.vfat" "$boot_dir/$f" "::$f"
done

dd if="$tmp/boot.vfat" of="$out" bs=1M seek=4 conv=notrunc status=none
dd if="$rootfs" of="$out" bs=1M seek=$((4 + boot_mb)) conv=notrunc status=none
echo "assemble-image: $out (${total_mb} MiB: boot ${boot_mb}, root slots ${root_mb} each)"
