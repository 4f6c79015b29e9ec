# Kodama boot script (U-Boot): A/B root slots with boot counting, the
# layout RAUC's `uboot` backend drives (docs/design/updates.md).
#
#   BOOT_ORDER   slots to try, first is primary ("A B" or "B A")
#   BOOT_A_LEFT  tries left for slot A; BOOT_B_LEFT likewise
#
# Each boot takes one try from the first slot in BOOT_ORDER that has any
# left, saves the counters, then boots it with rauc.slot=<name>. The camera
# firmware runs `rauc status mark-good` once the slot is healthy, which
# refills its counter; a slot that never gets there runs out of tries and
# the next slot in BOOT_ORDER boots instead — the fallback needs nothing
# from the failed system.
#
# The counters live in uboot.env on the FAT partition (CRC-checked binary
# environment, the format of `env export -c` and of libubootenv's
# fw_setenv, which RAUC runs through /etc/fw_env.config). The script loads
# and saves that file itself, so the same logic runs whatever the board's
# compiled-in environment store is: the Pi's (FAT) and QEMU's (flash).
#
# Runs from distro_bootcmd, which sets devtype/devnum/distro_bootpart to the
# bootable FAT partition it found this script on.
#
# Build: mkimage -A arm64 -T script -C none -d boot.cmd boot.scr

setenv kodama_env_size 0x4000
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} uboot.env; then
	env import -c ${kernel_addr_r} ${kodama_env_size} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

# Root partitions: p2 is slot A, p3 slot B (scripts/assemble-image.sh,
# genimage.cfg). The Pi's SD card is mmcblk0; QEMU's disk is virtio vda.
if test "${devtype}" = "virtio"; then
	setenv kodama_disk /dev/vda
else
	setenv kodama_disk /dev/mmcblk0p
fi

setenv kodama_slot
for slot in ${BOOT_ORDER}; do
	if test -n "${kodama_slot}"; then
		true
	elif test "${slot}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
		setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
		setenv kodama_slot A
		setenv kodama_root ${kodama_disk}2
	elif test "${slot}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
		setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
		setenv kodama_slot B
		setenv kodama_root ${kodama_disk}3
	fi
done

if test -z "${kodama_slot}"; then
	# Every slot used up its tries (e.g. the power failed during each of
	# them): start over rather than leave the camera dead.
	echo "kodama: no slot has tries left; resetting the counters"
	setenv BOOT_A_LEFT 3
	setenv BOOT_B_LEFT 3
	env export -c -s ${kodama_env_size} ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
	fatwrite ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} uboot.env ${kodama_env_size}
	reset
fi

echo "kodama: booting slot ${kodama_slot} (order ${BOOT_ORDER}, tries left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT})"
env export -c -s ${kodama_env_size} ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fatwrite ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} uboot.env ${kodama_env_size}

# Board arguments (console, extra kernel options) come from kodama-boot.env
# on the FAT partition: `kodama_bootargs=...` lines (`env import -t`).
setenv kodama_bootargs
if load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} kodama-boot.env; then
	env import -t ${kernel_addr_r} ${filesize} kodama_bootargs
fi
setenv bootargs "root=${kodama_root} ro rootwait rauc.slot=${kodama_slot} ${kodama_bootargs}"

# The emulator's Debian kernel needs an initramfs for its virtio and
# squashfs modules; the Pi kernel has them built in and boots without one.
load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} Image
if load ${devtype} ${devnum}:${distro_bootpart} ${ramdisk_addr_r} initramfs.cpio.gz; then
	booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
else
	booti ${kernel_addr_r} - ${fdtcontroladdr}
fi
echo "kodama: booting slot ${kodama_slot} failed"
