#!/bin/bash
# uboot-env-check.sh — runs the image's A/B boot script (buildroot-overlay/
# board/kodama/boot.cmd) under U-Boot in QEMU against a small card that
# holds only the boot partition's U-Boot files, and checks how it reads and
# writes its boot counters together with libubootenv's fw_setenv (what RAUC
# runs on the camera), including power cuts in the middle of a write:
#
#   1. a fresh card boots slot A and writes its counters to the second copy;
#   2. fw_setenv switches to slot B (as `rauc install` does): U-Boot boots B;
#   3. the copy U-Boot wrote last is torn (a power cut mid-write): U-Boot
#      boots B from the other copy instead of falling back to the defaults;
#   4. both copies torn: the defaults, slot A;
#   5. the flags counter wraps (255 -> 0): copy 2 is still the newer one,
#      for U-Boot and for fw_printenv alike;
#   6. no slot has tries left: U-Boot refills the counters and resets.
#
# Each boot ends when U-Boot has saved the counters and says which slot it
# boots; the card has no kernel, so nothing more runs. About 30 s in all.
# Usage: scripts/uboot-env-check.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
board=$repo/buildroot-overlay/board/kodama
work=$repo/target/uboot-env-check
"$repo/scripts/install-cross-deps.sh" u-boot-qemu u-boot-tools libubootenv-tool
uboot_bin=/usr/lib/u-boot/qemu_arm64/u-boot.bin
[ -f "$uboot_bin" ] || { echo "uboot-env-check: no $uboot_bin (apt-get install u-boot-qemu)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/bootpart" "$work/env"
cd "$work"
log() { echo "uboot-env-check: $*"; }
die() { echo "uboot-env-check: FAIL: $*" >&2; exit 1; }

# The card: the image's boot script and first environment (both copies, as
# scripts/boot-test.sh and post-image.sh make them), a placeholder root.
mkimage -A arm64 -T script -C none -d "$board/boot.cmd" bootpart/boot.scr >/dev/null
mkenvimage -r -s 0x4000 -o bootpart/uboot.env "$board/uboot-env.txt"
cp bootpart/uboot.env bootpart/uboot-redund.env
truncate -s 1M root.img
"$repo/scripts/assemble-image.sh" bootpart root.img card.img 40 >/dev/null

# fw_setenv/fw_printenv on copies taken off the card: the camera's
# /etc/fw_env.config with this directory for /boot.
sed -n 's|^/boot/\([^ ]*\)|'"$work"'/env/\1|p' "$repo/buildroot-overlay/board/kodama/rootfs-overlay/etc/fw_env.config" > fw_env.config
[ "$(wc -l < fw_env.config)" = 2 ] || die "fw_env.config does not name two copies"
take() { mcopy -o -n -i card.img@@4M ::uboot.env ::uboot-redund.env env/; }
put() { mcopy -o -n -i card.img@@4M env/uboot.env env/uboot-redund.env ::; }
printenv() { fw_printenv -c fw_env.config -n "$1"; }

# One boot: prints U-Boot's "kodama:" lines once it has chosen a slot (and
# saved the counters), or once it resets.
boot() {
	rm -f console.log
	qemu-system-aarch64 -M virt -cpu cortex-a53 -m 256 -nographic -no-reboot -bios "$uboot_bin" \
		-drive file=card.img,format=raw,if=none,id=sd -device virtio-blk-pci,drive=sd,romfile= \
		-nic none </dev/null >console.log 2>&1 &
	local pid=$! i=0
	while [ $i -lt 600 ]; do
		grep -aq "kodama: booting slot [AB] (" console.log && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	grep -a "^kodama:" console.log || { tail -n 20 console.log; die "U-Boot never ran the boot script"; }
}
expect() { # line-pattern what
	local out
	out=$(boot)
	grep -q -- "$1" <<<"$out" || { echo "$out"; tail -n 30 console.log; die "$2"; }
	log "ok: $2 ($(grep -m 1 'booting slot\|no slot' <<<"$out"))"
}
# Tears a copy as a power cut mid-write would: the write reached half of it.
tear() { dd if=/dev/urandom of="env/$1" bs=1 seek=8 count=64 conv=notrunc status=none; }

# 1. Fresh card.
expect "booting slot A (order A B, tries left A=2 B=3; environment copy 1 read, uboot-redund.env written)" \
	"a fresh card boots slot A and writes the second copy"
take
[ "$(printenv BOOT_A_LEFT)" = 2 ] || die "fw_printenv does not read U-Boot's write (A=$(printenv BOOT_A_LEFT))"

# 2. RAUC's switch to slot B, through libubootenv.
# libubootenv scripts are name=value lines.
printf 'BOOT_ORDER=B A\nBOOT_B_LEFT=2\n' > switch.txt
fw_setenv -c fw_env.config -s switch.txt
put
expect "booting slot B (order B A, tries left A=2 B=1" "fw_setenv's switch to slot B is what U-Boot boots"

# 3. U-Boot's last write torn: the other copy (fw_setenv's) still says B.
take
tear uboot-redund.env
put
expect "booting slot B (order B A, tries left A=2 B=1; environment copy 1 read" \
	"a torn copy: the other one is read, slot B still boots"
take
[ "$(printenv BOOT_ORDER)" = "B A" ] || die "fw_printenv after the repair: $(printenv BOOT_ORDER)"

# 4. Both torn: the defaults.
tear uboot.env
tear uboot-redund.env
put
out=$(boot)
if ! grep -q "no boot environment copy is valid" <<<"$out" ||
	! grep -q "booting slot A (order A B, tries left A=2 B=3" <<<"$out"; then
	echo "$out"
	die "both copies torn: not the defaults"
fi
log "ok: both copies torn: the defaults, slot A"

# 5. The flags byte wraps: copy 1 at 255 (slot A), copy 2 at 0 (slot B) is
# the newer one.
python3 - <<'PY'
import struct, zlib
def copy(path, flags, text):
    data = b"\0".join(l.encode() for l in text.splitlines()) + b"\0\0"
    data = data.ljust(0x4000 - 5, b"\0")
    open(path, "wb").write(struct.pack("<IB", zlib.crc32(data), flags) + data)
copy("env/uboot.env", 0xFF, "BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3")
copy("env/uboot-redund.env", 0x00, "BOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2")
PY
[ "$(printenv BOOT_ORDER)" = "B A" ] || die "fw_printenv does not take copy 2 after the wrap"
put
expect "booting slot B (order B A, tries left A=3 B=1; environment copy 2 read, uboot.env written)" \
	"after the flags wrap copy 2 is the newer one"

# 6. No tries left anywhere: refilled, then a reset.
printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=0\nBOOT_B_LEFT=0\n' > spent.txt
take
fw_setenv -c fw_env.config -s spent.txt
put
expect "no slot has tries left; resetting the counters" "no tries left: the counters are refilled"
take
[ "$(printenv BOOT_A_LEFT)/$(printenv BOOT_B_LEFT)" = 3/3 ] || die "counters not refilled: $(printenv BOOT_A_LEFT)/$(printenv BOOT_B_LEFT)"
log "PASS"
