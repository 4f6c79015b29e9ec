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
# The counters live in two copies on the FAT partition, uboot.env and
# uboot-redund.env, in libubootenv's redundant format: CRC32, a flags byte,
# then the variables. RAUC's fw_setenv (/etc/fw_env.config names both) and
# this script each read the newest copy whose CRC holds (flags one higher,
# modulo 256) and write the *other* copy with flags + 1, so a power cut in
# the middle of any write leaves the previous state intact in the copy not
# being written. The script reads and writes the files itself, so the same
# logic runs whatever the board's compiled-in environment store is (the
# Pi's FAT, QEMU's flash); the board's U-Boot must be built without
# CONFIG_SYS_REDUNDAND_ENVIRONMENT (neither rpi_arm64 nor qemu_arm64 sets
# it), which would change what `env import/export -c` expect.
#
# Runs from distro_bootcmd, which sets devtype/devnum/distro_bootpart to the
# bootable FAT partition it found this script on.
#
# Build: mkimage -A arm64 -T script -C none -d boot.cmd boot.scr

setenv kodama_env_size 0x4000
# The same variables behind a plain 4-byte CRC header (no flags byte), the
# layout `env import/export -c` use: one byte shorter.
setenv kodama_env_plain 0x3fff
setenv kodama_env_data 0x3ffb
setexpr kodama_env1 ${kernel_addr_r} + 0
setexpr kodama_env2 ${kernel_addr_r} + 0x10000
setexpr kodama_plain ${kernel_addr_r} + 0x20000
# kodama_unwrap: the copy at kodama_at, in the plain layout at kodama_plain.
setenv kodama_unwrap 'cp.b ${kodama_at} ${kodama_plain} 4; setexpr kodama_from ${kodama_at} + 5; setexpr kodama_to ${kodama_plain} + 4; cp.b ${kodama_from} ${kodama_to} ${kodama_env_data}'
# kodama_check: loads kodama_file to kodama_at; kodama_ok=1 if its CRC holds
# (importing no variable checks the CRC and changes nothing).
setenv kodama_check 'setenv kodama_ok 0; if load ${devtype} ${devnum}:${distro_bootpart} ${kodama_at} ${kodama_file}; then run kodama_unwrap; if env import -c ${kodama_plain} ${kodama_env_plain} kodama_nothing; then setenv kodama_ok 1; fi; fi'
# kodama_save: the counters into the copy not read this boot, flags + 1.
setenv kodama_save 'env export -c -s ${kodama_env_plain} ${kodama_plain} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; setexpr kodama_flags ${kodama_flags} + 1; if test ${kodama_flags} = 100; then setenv kodama_flags 0; fi; cp.b ${kodama_plain} ${kodama_env1} 4; setexpr kodama_to ${kodama_env1} + 4; mw.b ${kodama_to} ${kodama_flags}; setexpr kodama_from ${kodama_plain} + 4; setexpr kodama_to ${kodama_env1} + 5; cp.b ${kodama_from} ${kodama_to} ${kodama_env_data}; fatwrite ${devtype} ${devnum}:${distro_bootpart} ${kodama_env1} ${kodama_write} ${kodama_env_size}'

setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
setenv kodama_file uboot.env
setenv kodama_at ${kodama_env1}
run kodama_check
setenv kodama_ok1 ${kodama_ok}
setexpr kodama_from ${kodama_env1} + 4
setexpr.b kodama_flags1 *${kodama_from}
setenv kodama_file uboot-redund.env
setenv kodama_at ${kodama_env2}
run kodama_check
setenv kodama_ok2 ${kodama_ok}
setexpr kodama_from ${kodama_env2} + 4
setexpr.b kodama_flags2 *${kodama_from}
# Both valid: copy 2 is the newer one when its flags are copy 1's plus one.
# (setexpr prints hex: 100 is 256, which wraps to 0.)
setexpr kodama_next ${kodama_flags1} + 1
if test ${kodama_next} = 100; then
	setenv kodama_next 0
fi
setenv kodama_use
if test ${kodama_ok1} = 1 && test ${kodama_ok2} = 1; then
	if test "${kodama_next}" = "${kodama_flags2}"; then
		setenv kodama_use 2
	else
		setenv kodama_use 1
	fi
elif test ${kodama_ok1} = 1; then
	setenv kodama_use 1
elif test ${kodama_ok2} = 1; then
	setenv kodama_use 2
fi
if test "${kodama_use}" = 1; then
	setenv kodama_at ${kodama_env1}
	setenv kodama_flags ${kodama_flags1}
	setenv kodama_write uboot-redund.env
elif test "${kodama_use}" = 2; then
	setenv kodama_at ${kodama_env2}
	setenv kodama_flags ${kodama_flags2}
	setenv kodama_write uboot.env
else
	echo "kodama: no boot environment copy is valid; starting from the defaults"
	setenv kodama_flags 0
	setenv kodama_write uboot.env
fi
if test -n "${kodama_use}"; then
	run kodama_unwrap
	env import -c ${kodama_plain} ${kodama_env_plain} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
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
	run kodama_save
	reset
fi

run kodama_save
echo "kodama: booting slot ${kodama_slot} (order ${BOOT_ORDER}, tries left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT}; environment copy ${kodama_use} read, ${kodama_write} written)"

# Board arguments (console, extra kernel options) come from kodama-boot.env
# on the FAT partition: `kodama_bootargs=...` lines (`env import -t`).
setenv kodama_bootargs
if load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} kodama-boot.env; then
	env import -t ${kernel_addr_r} ${filesize} kodama_bootargs
fi
setenv bootargs "root=${kodama_root} ro rootwait rauc.slot=${kodama_slot} ${kodama_bootargs}"

# The kernel files live in the booted slot's root (/kernel, ext4), so an
# update brings its kernel with its root and a rollback takes both back.
# A card whose slot has none (made before) boots the FAT partition's.
# The emulator's Debian kernel needs an initramfs for its virtio and ext4
# modules; the Pi kernel has them built in and boots without one.
if test "${kodama_slot}" = "A"; then
	setenv kodama_part 2
else
	setenv kodama_part 3
fi
setenv kodama_initrd
if load ${devtype} ${devnum}:${kodama_part} ${kernel_addr_r} /kernel/Image; then
	echo "kodama: kernel from slot ${kodama_slot}"
	if load ${devtype} ${devnum}:${kodama_part} ${ramdisk_addr_r} /kernel/initramfs.cpio.gz; then
		setenv kodama_initrd ${ramdisk_addr_r}:${filesize}
	fi
else
	echo "kodama: slot ${kodama_slot} has no /kernel/Image; booting the kernel on the boot partition"
	load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} Image
	if load ${devtype} ${devnum}:${distro_bootpart} ${ramdisk_addr_r} initramfs.cpio.gz; then
		setenv kodama_initrd ${ramdisk_addr_r}:${filesize}
	fi
fi
if test -n "${kodama_initrd}"; then
	booti ${kernel_addr_r} ${kodama_initrd} ${fdtcontroladdr}
else
	booti ${kernel_addr_r} - ${fdtcontroladdr}
fi
echo "kodama: booting slot ${kodama_slot} failed"
