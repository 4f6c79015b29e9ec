#!/bin/sh
# flash.sh — writes a Kodama SD-card image and your kodama.toml to a card
# (or to an image file, to try it in the emulator or to copy later).
#
#   scripts/flash.sh --image sdcard.img --config kodama.toml --to /dev/sdX [--yes]
#   scripts/flash.sh --image sdcard.img --config kodama.toml --to card.img
#   scripts/flash.sh --config kodama.toml --to /dev/sdX     (update only the config)
#
# The image comes from Buildroot (scripts/build-image.sh: output/images/
# sdcard.img). kodama.toml goes onto the FAT boot partition (p1), where you
# can also edit it later from any computer. Needs: sfdisk (util-linux), mtools.
set -eu

usage() {
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

image="" config="" to="" yes=0
while [ $# -gt 0 ]; do
	case "$1" in
	--image) image=$2; shift 2 ;;
	--config) config=$2; shift 2 ;;
	--to) to=$2; shift 2 ;;
	--yes) yes=1; shift ;;
	-h | --help) usage ;;
	*) echo "flash.sh: unknown argument $1" >&2; usage ;;
	esac
done
[ -n "$to" ] || usage
[ -n "$image" ] || [ -n "$config" ] || usage
die() { echo "flash.sh: $*" >&2; exit 1; }

for tool in sfdisk mcopy; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install fdisk mtools)"
done

if [ -n "$config" ]; then
	[ -f "$config" ] || die "no such file: $config"
	[ "$(stat -c %s "$config")" -le 65536 ] || die "$config is larger than 64 KiB; is it the right file?"
	# The firmware rejects non-UTF-8 files; catch it here, not on the camera.
	iconv -f UTF-8 -t UTF-8 "$config" >/dev/null 2>&1 || die "$config is not UTF-8 text"
fi

if [ -b "$to" ]; then
	# Refuse a disk with anything mounted: that is how the wrong disk gets erased.
	if grep -q "^$to" /proc/mounts; then
		die "$to (or one of its partitions) is mounted; unmount it first"
	fi
	if [ -n "$image" ] && [ "$yes" != 1 ]; then
		size=$(lsblk -dno SIZE "$to" 2>/dev/null || echo "?")
		model=$(lsblk -dno MODEL "$to" 2>/dev/null || echo "")
		printf 'Erase %s (%s %s) and write %s? [y/N] ' "$to" "$size" "$model" "$image"
		read -r answer
		[ "$answer" = y ] || [ "$answer" = Y ] || die "not confirmed"
	fi
fi

if [ -n "$image" ]; then
	[ -f "$image" ] || die "no such image: $image"
	echo "flash.sh: writing $image to $to"
	if [ -b "$to" ]; then
		dd if="$image" of="$to" bs=4M conv=fsync status=progress
	else
		cp --sparse=always "$image" "$to"
	fi
	if [ -b "$to" ]; then
		# Let the kernel see the new partition table before mtools opens p1.
		blockdev --rereadpt "$to" 2>/dev/null || partprobe "$to" 2>/dev/null || true
	fi
fi

if [ -n "$config" ]; then
	# The FAT boot partition is the first one; address it by byte offset so
	# the same command works on a card and on an image file.
	start=$(sfdisk --dump "$to" | sed -n 's/.*start= *\([0-9]*\).*/\1/p' | head -n 1)
	[ -n "$start" ] || die "$to has no partition table; give --image"
	offset=$((start * 512))
	mcopy -o -i "$to@@$offset" "$config" ::kodama.toml
	# A status file from an earlier boot would describe the old config.
	mdel -i "$to@@$offset" ::kodama-status.txt 2>/dev/null || true
	echo "flash.sh: kodama.toml written to the boot partition of $to"
fi
sync
echo "flash.sh: done. After the first boot, kodama-node-id.txt on the card's boot"
echo "flash.sh: partition holds the id to allow: kodama-server allow add <id>"
