#!/bin/bash
# boot-test.sh — boots the Kodama camera image in an emulated aarch64 machine
# and checks that it streams video to a kodama-server on this host.
#
# What it builds (in target/boot-test/, from Debian's arm64 packages and the
# cross-built firmware — the real card is built by Buildroot, see
# scripts/build-image.sh):
#   * rootfs.img: BusyBox, the same rootfs overlay as the Buildroot image
#     (buildroot-overlay/board/kodama/rootfs-overlay: inittab, init scripts,
#     supervision, watchdog feeder), aarch64 e2fsprogs/util-linux for the
#     first-boot data partition, and the cross-built kodama-camera;
#   * sdcard.img: the card layout (FAT boot, rootfs A, rootfs B, data made on
#     first boot) written by scripts/assemble-image.sh, with kodama.toml on
#     the FAT partition;
#   * the slot's kernel files in /kernel of that root (ext4, which U-Boot
#     reads): Debian's arm64 kernel and
#     initramfs.cpio.gz: BusyBox plus the virtio/ext4 modules (Debian's
#     kernel has them as modules; the Pi kernel has them built in, so the
#     real card needs no initramfs). It loads them and switch_roots.
# Then it boots qemu-system-aarch64 (virt, cortex-a53, 512 MiB, user-mode
# networking: the guest reaches this host as 10.0.2.2, which slirp maps to
# 127.0.0.1 — nothing leaves the machine).
#
# Usage: scripts/boot-test.sh [--seconds N] [--boot-only] [--update|--update-only|--update-quick] [--keep]
#   --seconds N   seconds of video the server must receive (default 10)
#   --boot-only   boot, run `kodama-camera --version` in the guest, stop
#   --update      then the fleet lifecycle on a fresh card of the same root
#                 image (see update_test below): pairing by code, signed A/B
#                 updates through U-Boot and RAUC, power cuts, rollback,
#                 revocation
#   --update-only the lifecycle test without the streaming test before it
#   --update-quick the streaming test, then the lifecycle's cheap steps only
#                 (1, 2, 5 and 6 below: pairing by code, a foreign-signed
#                 bundle refused with the other slot untouched, revocation,
#                 a reused and an expired code refused, pairing by QR code);
#                 what CI runs, as the whole lifecycle takes minutes of
#                 emulated CPU
#   --keep        keep qemu's console log and the received video
# Environment: KODAMA_CAMERA_BIN (skip the cross build), KODAMA_SERVER_BIN and
# KODAMA_SIM_BIN (skip the native builds), BOOT_TEST_TIMEOUT (seconds,
# default 300).
set -euo pipefail

seconds=10
boot_only=0
update=0
update_scope=full
keep=0
while [ $# -gt 0 ]; do
	case "$1" in
	--seconds) seconds=$2; shift 2 ;;
	--boot-only) boot_only=1; shift ;;
	--update) update=1; shift ;;
	--update-only) update=2; shift ;;
	--update-quick) update=1; update_scope=quick; shift ;;
	--keep) keep=1; shift ;;
	*) echo "usage: $0 [--seconds N] [--boot-only] [--update|--update-only|--update-quick] [--keep]" >&2; exit 2 ;;
	esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$repo/target/boot-test
overlay=$repo/buildroot-overlay/board/kodama/rootfs-overlay
timeout_s=${BOOT_TEST_TIMEOUT:-300}
mkdir -p "$work"
cd "$work"
rm -f qemu.pid

log() { echo "boot-test: $*"; }
die() { echo "boot-test: FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------- inputs
"$repo/scripts/install-cross-deps.sh" kmod u-boot-qemu u-boot-tools

if [ -z "${KODAMA_CAMERA_BIN:-}" ]; then
	"$repo/scripts/cross-build.sh"
	KODAMA_CAMERA_BIN=$repo/target/aarch64-cross/aarch64-unknown-linux-gnu/camera/kodama-camera
fi
[ -x "$KODAMA_CAMERA_BIN" ] || die "no camera binary at $KODAMA_CAMERA_BIN"

# Debian arm64 packages: the kernel, a static BusyBox, and the tools the
# first-boot storage script uses (sfdisk, partx, blkid, mkfs/fsck.ext4).
debs="busybox-static e2fsprogs libext2fs2 libcom-err2 libss2 libblkid1 libuuid1
	util-linux fdisk libfdisk1 libsmartcols1 libmount1 libselinux1 libpcre2-8-0
	libudev1 libcap-ng0 libtinfo6 libreadline8 libc6 libgcc-s1 libstdc++6 libsystemd0 liblzma5 libzstd1 liblz4-1
	libgcrypt20 libgpg-error0 libaudit1 libcap2 libcrypt1
	rauc libubootenv-tool libubootenv0.1 dbus-daemon libdbus-1-3 libexpat1 libapparmor1
	libcurl3-gnutls libglib2.0-0 libjson-glib-1.0-0 libssl3 libffi8 libgnutls30 libnettle8
	libhogweed6 libgmp10 libidn2-0 libunistring2 libp11-kit0 libtasn1-6 libbrotli1
	libnghttp2-14 libpsl5 librtmp1 libssh2-1 libgssapi-krb5-2 libkrb5-3 libk5crypto3
	libkrb5support0 libkeyutils1 libldap-2.5-0 libsasl2-2 zlib1g"
# A new package list means a new download.
debs_stamp=debs/.done-$(echo "$debs" | md5sum | cut -c1-12)
mkdir -p debs stage
if [ ! -f "$debs_stamp" ]; then
	download() {
		local kernel_pkg pkgs d
		kernel_pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-arm64-unsigned$' |
			awk '{print $1}' | sort -V | tail -n 1)
		[ -n "$kernel_pkg" ] || return 1
		pkgs="$kernel_pkg:arm64"
		for d in $debs; do pkgs="$pkgs $d:arm64"; done
		rm -f debs/*.deb
		# shellcheck disable=SC2086 # a word list
		(cd debs && apt-get download $pkgs >/dev/null 2>&1)
	}
	# Stale package lists name versions the mirror no longer has: refresh once.
	download || { apt-get update -q >/dev/null && download; } ||
		die "apt-get download of the arm64 kernel and tools failed"
	rm -rf stage && mkdir stage
	for f in debs/*.deb; do dpkg-deb -x "$f" stage; done
	touch "$debs_stamp"
fi
kver=$(ls stage/lib/modules)
kernel=stage/boot/vmlinuz-$kver
[ -f "$kernel" ] || die "no kernel in stage/"
[ -f "stage/lib/modules/$kver/modules.dep" ] || depmod -b "$PWD/stage" "$kver"

# --------------------------------------------------------- helpers
# Copies an aarch64 ELF and, recursively, the shared libraries it needs
# (DT_NEEDED) from the staged Debian packages into $root.
find_lib() {
	for d in stage/lib/aarch64-linux-gnu stage/usr/lib/aarch64-linux-gnu; do
		[ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
	done
	return 1
}
install_elf() { # root src dest
	local root=$1 src=$2 dest=$3 lib path
	mkdir -p "$root$(dirname "$dest")"
	cp -L "$src" "$root$dest"
	for lib in $(aarch64-linux-gnu-readelf -d "$src" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
		[ -e "$root/lib/$lib" ] && continue
		path=$(find_lib "$lib") || die "library $lib (for $src) not staged: add its package to \$debs"
		install_elf "$root" "$path" "/lib/$lib"
	done
}
busybox_links() { # root
	local a
	for a in $(qemu-aarch64-static stage/bin/busybox --list); do
		case "$a" in busybox | linuxrc) continue ;; esac
		# Real tools from util-linux/e2fsprogs win over BusyBox applets.
		[ -e "$1/bin/$a" ] || [ -e "$1/sbin/$a" ] || ln -s busybox "$1/bin/$a"
	done
}

# ----------------------------------------------------------- rootfs
log "building rootfs"
rm -rf rootfs
mkdir -p rootfs/{bin,sbin,lib,usr/bin,usr/sbin,proc,sys,dev,run,tmp,var,boot,data,etc}
ln -s lib rootfs/lib64
ln -s ../bin rootfs/usr/bin/bin 2>/dev/null || true
rm -f rootfs/usr/bin/bin
# Debian's multiarch dynamic loader path.
install_elf rootfs "stage/lib/ld-linux-aarch64.so.1" /lib/ld-linux-aarch64.so.1
for t in sbin/sfdisk usr/bin/partx sbin/blkid sbin/mkfs.ext4 sbin/fsck.ext4 sbin/resize2fs; do
	src=stage/$t
	[ -e "$src" ] || src=stage/usr/$t
	[ -e "$src" ] || src=$(find stage -name "${t##*/}" -type f | head -n 1)
	[ -n "$src" ] || die "no ${t##*/} staged"
	install_elf rootfs "$(readlink -f "$src")" "/sbin/${t##*/}"
done
cp stage/bin/busybox rootfs/bin/busybox
busybox_links rootfs
ln -s ../bin/busybox rootfs/sbin/init
cp -a "$overlay/." rootfs/
install_elf rootfs "$KODAMA_CAMERA_BIN" /usr/bin/kodama-camera
# RAUC and what it runs: its D-Bus system bus, U-Boot's fw_printenv/fw_setenv.
install_elf rootfs stage/usr/bin/rauc /usr/bin/rauc
install_elf rootfs stage/usr/bin/dbus-daemon /usr/bin/dbus-daemon
install_elf rootfs stage/usr/bin/fw_printenv /usr/bin/fw_printenv
install_elf rootfs stage/usr/bin/fw_setenv /usr/bin/fw_setenv
# The emulator's disk is virtio: the same slots are /dev/vda2 and /dev/vda3.
sed -i 's|/dev/mmcblk0p|/dev/vda|' rootfs/etc/rauc/system.conf
# The owner's update keys for the test (scripts/update-keys.sh): the image
# carries the CA certificate as RAUC's keyring.
[ -f keys/owner/ca.cert.pem ] || "$repo/scripts/update-keys.sh" keys/owner --name "Boot test owner" >/dev/null
cp keys/owner/ca.cert.pem rootfs/etc/rauc/keyring.pem
echo "1.0.0-boottest" > rootfs/etc/kodama-version
# What Buildroot's skeleton provides on the real image.
printf 'root:x:0:0:root:/root:/bin/sh\n' > rootfs/etc/passwd
printf 'root:x:0:\n' > rootfs/etc/group
mkdir -p rootfs/root

# -------------------------------------------------------- initramfs
log "building initramfs"
rm -rf initramfs
mkdir -p initramfs/{bin,dev,proc,sys,newroot,lib/modules}
cp stage/bin/busybox initramfs/bin/busybox
for a in sh mount umount insmod switch_root mkdir sleep cat echo; do ln -s busybox "initramfs/bin/$a"; done
# Modules in dependency order (modules.dep lists a module's dependencies).
want="virtio_pci virtio_blk virtio_net virtio-rng squashfs fat vfat nls_cp437 nls_iso8859-1 nls_ascii
	nls_utf8 crc32c_generic ext4 i6300esb virtio_console loop dm-mod dm-verity"
: > initramfs/modules.order
add_mod() {
	local rel dep
	rel=$(grep -E "^[^:]*/$1\.ko:" "stage/lib/modules/$kver/modules.dep" | cut -d: -f1) ||
		die "module $1 not in kernel $kver"
	grep -qx "$(basename "$rel")" initramfs/modules.order && return 0
	# One line per module; its dependencies are the words after the colon.
	# shellcheck disable=SC2013
	for dep in $(grep -E "^$rel:" "stage/lib/modules/$kver/modules.dep" | cut -d: -f2); do
		add_mod "$(basename "$dep" .ko)"
	done
	cp "stage/lib/modules/$kver/$rel" initramfs/lib/modules/
	basename "$rel" >> initramfs/modules.order
}
for m in $want; do add_mod "$m"; done
cat > initramfs/init <<'INIT'
#!/bin/sh
# Emulator-only: load the modules Debian's kernel has as modules, then hand
# over to the real root (the Pi kernel mounts root= itself).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
root=/dev/vda2
for w in $(cat /proc/cmdline); do case "$w" in root=*) root=${w#root=} ;; esac; done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "initramfs: kernel files of root $(cat /etc/kodama-kernel-files)"
mount -t ext4 -o ro "$root" /newroot || { echo "initramfs: cannot mount $root"; exec sh; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
INIT
chmod +x initramfs/init
mkdir -p initramfs/etc
# The kernel files (kernel and initramfs) live in each root slot's /kernel:
# an update replaces them with the root. The initramfs says which root's
# files booted.
slot_kernel() { # root-dir version
	mkdir -p "$1/kernel"
	cp "$kernel" "$1/kernel/Image"
	echo "$2" > initramfs/etc/kodama-kernel-files
	(cd initramfs && find . | cpio -o -H newc --quiet | gzip -1) > "$1/kernel/initramfs.cpio.gz"
}
# A root slot's image: ext4 without a journal, mounted read-only (U-Boot
# reads the kernel from it; it cannot read squashfs).
root_image() { # dir out
	local kib
	kib=$(du -sk "$1" | cut -f1)
	rm -f "$2"
	mke2fs -q -t ext4 -O ^has_journal -L kodama-root -d "$1" "$2" "$((kib * 5 / 4 + 4096))k" >/dev/null
}
slot_kernel rootfs 1.0.0-boottest
root_image rootfs rootfs.img

# ------------------------------------------------------------ card
# U-Boot (Debian's u-boot-qemu, the qemu_arm64 board) is QEMU's firmware: it
# finds boot.scr on the bootable FAT partition and runs the same A/B
# boot-counting script as the Pi's U-Boot (buildroot-overlay/board/kodama/
# boot.cmd), which picks the root slot and passes rauc.slot= to the kernel.
uboot_bin=/usr/lib/u-boot/qemu_arm64/u-boot.bin
[ -f "$uboot_bin" ] || die "no $uboot_bin (apt-get install u-boot-qemu)"
command -v mkimage >/dev/null || die "no mkimage (apt-get install u-boot-tools)"
mkimage -A arm64 -T script -C none -d "$repo/buildroot-overlay/board/kodama/boot.cmd" boot.scr >/dev/null
# The boot counters' first state, in the binary format U-Boot's `env import
# -c` and fw_setenv (/etc/fw_env.config) read, twice (boot.cmd and fw_setenv
# alternate between the copies); the Buildroot image is made from the same
# file.
mkenvimage -r -s 0x4000 -o uboot.env "$repo/buildroot-overlay/board/kodama/uboot-env.txt"
cp uboot.env uboot-redund.env

make_card() { # kodama.toml
	rm -rf bootpart
	mkdir -p bootpart
	cp "$1" bootpart/kodama.toml
	# The real card's config.txt, for the layout; QEMU has no Pi firmware to
	# read it. boot() writes the emulator's kodama-boot.env.
	cp "$repo/buildroot-overlay/board/kodama/config.txt" bootpart/
	cp boot.scr uboot.env uboot-redund.env bootpart/
	# No kernel on the FAT partition: U-Boot loads the booted slot's.
	"$repo/scripts/assemble-image.sh" bootpart rootfs.img sdcard.img 80 >/dev/null
	# Room for the data partition that the first boot creates.
	truncate -s +256M sdcard.img
}

qemu_pid=
server_pid=
sim_pid=
cleanup() {
	touch "$work/stop-guest"
	if [ -n "${guest_loop_pid:-}" ]; then kill "$guest_loop_pid" 2>/dev/null || true; fi
	if [ -f "$work/qemu.pid" ]; then kill "$(cat "$work/qemu.pid")" 2>/dev/null || true; fi
	if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
	if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
	if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; fi
	wait 2>/dev/null || true
}
trap cleanup EXIT

# Extra devices for the next boot (the stream test's serial ports).
qemu_extra=()
boot() { # extra kernel args
	# The update test's guest loop keeps one console log across its boots.
	[ "${console_append:-0}" = 1 ] || rm -f console.log
	# The board's kernel arguments, read by boot.scr (root= and rauc.slot=
	# come from the slot it picks).
	printf 'kodama_bootargs=console=ttyAMA0 panic=5 kodama.boot=/dev/vda1 kodama.data=/dev/vda4 %s\n' "$1" > kodama-boot.env
	mcopy -o -i sdcard.img@@4M kodama-boot.env ::kodama-boot.env
	boot_start=$(date +%s.%N)
	# -no-reboot: a guest reboot ends QEMU; the caller boots again.
	qemu-system-aarch64 -M virt -cpu cortex-a53 -m 512 -smp 2 -nographic -no-reboot \
		-bios "$uboot_bin" \
		-drive file=sdcard.img,format=raw,if=none,id=sd -device virtio-blk-pci,drive=sd,romfile= \
		-netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
		-device virtio-rng-pci,romfile= -device i6300esb "${qemu_extra[@]}" \
		</dev/null >>console.log 2>&1 &
	qemu_pid=$!
}

wait_console() { # pattern timeout
	local end=$(($(date +%s) + $2))
	while [ "$(date +%s)" -lt "$end" ]; do
		grep -q -- "$1" console.log 2>/dev/null && return 0
		kill -0 "$qemu_pid" 2>/dev/null || return 1
		sleep 1
	done
	return 1
}

# -------------------------------------------------------- boot-only
if [ "$boot_only" = 1 ]; then
	printf '# boot-test --boot-only\n' > kodama.toml
	make_card kodama.toml
	log "booting (boot-only)"
	boot "kodama.selftest=1"
	wait_console "kodama-selftest: done" "$timeout_s" || { tail -n 40 console.log; die "guest did not finish its self test"; }
	grep "kodama-selftest:" console.log
	grep -q "kodama-selftest: version ok" console.log || die "kodama-camera --version failed in the guest"
	grep -q "kodama-selftest: data ok" console.log || die "data partition not created/mounted"
	grep -q "kodama-selftest: network ok" console.log || die "no network (DHCP) in the guest"
	grep -q "kodama-selftest: readonly-root ok" console.log || die "root file system is writable"
	if ! grep -aq "kodama: kernel from slot A" console.log ||
		! grep -aq "initramfs: kernel files of root 1.0.0-boottest" console.log; then
		die "the kernel did not come from root slot A"
	fi
	log "PASS (boot-only, $(awk -v a="$boot_start" -v b="$(date +%s.%N)" "BEGIN{printf \"%.1f\", b-a}") s)"
	exit 0
fi

# -------------------------------------------------------- streaming
# 1. Starts kodama-server on this host in offline mode, listening on
#    127.0.0.1 (the guest reaches it as 10.0.2.2 through qemu's slirp).
# 2. Writes a kodama.toml naming that server onto the card's boot partition
#    and boots the card.
# 3. Reads the camera's node id from kodama-node-id.txt on the card's boot
#    partition — the file the firmware writes on first boot for the owner —
#    and allows it on the server (`kodama-server allow add`).
# 4. Records `seconds` of video with `kodama-server view` and checks with
#    ffprobe/ffmpeg that it decodes and is long enough.
# 5. Checks the camera's telemetry at the server: the modem's signal and the
#    GNSS position come from the firmware's production serial drivers, which
#    open the guest's /dev/hvc0 and /dev/hvc1 — QEMU virtual consoles backed
#    by kodama-sim's SIM7600 and NMEA ptys on this host (test equipment stays
#    outside the guest; the image has no simulator).
# Prints boot-to-camera-online and boot-to-first-frame times.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Plain HTTP GET on 127.0.0.1 with bash's /dev/tcp (no curl in the image
# build's dependencies); prints the body.
http_get() { # port path token
	local reply
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n' "$2" "$3" >&3
	reply=$(cat <&3)
	exec 3<&-
	printf '%s' "${reply#*$'\r\n\r\n'}"
}

# The camera's telemetry at the server carries the modem's signal and a GNSS
# fix near kodama-sim's track: the guest's serial drivers talked to the host's
# simulators.
hardware_telemetry() { # camera_id api_port sim_lat
	local token body="" end=$(($(date +%s) + 60)) from
	token=$(cat "$work/server-data/api-token")
	from=$(date -u -d '-10 min' +%Y-%m-%dT%H:%M:%SZ)
	while [ "$(date +%s)" -lt "$end" ]; do
		body=$(http_get "$2" "/api/v1/cameras/$1/telemetry?start=$from&end=$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)" "$token" || true)
		if grep -q '"signal_dbm":-[0-9]' <<<"$body" && grep -q "\"lat\":${3%%.*}\." <<<"$body"; then
			log "telemetry: modem $(grep -o '"signal_dbm":-[0-9]*' <<<"$body" | tail -n 1), GNSS $(grep -o '"lat":[0-9.-]*,"lon":[0-9.-]*' <<<"$body" | tail -n 1) (production serial drivers, host simulators)"
			# The firmware's own footprint on aarch64 while it streams
			# (emulated CPU: the CPU share is TCG's, not a Pi's).
			local process
			process=$(grep -o '"process":{[^}]*}' <<<"$body" | tail -n 1)
			[ -n "$process" ] || die "no process figures in the camera's telemetry"
			log "camera process while streaming (aarch64): $process"
			return 0
		fi
		sleep 2
	done
	tail -n 20 console.log
	die "no modem signal and GNSS fix in the camera's telemetry (last: ${body:0:400})"
}

# kodama-server and kodama-sim for this host, unless given: both in one
# build, as scripts/web-test.sh builds them (the same feature set, so CI
# reuses its artifacts instead of rebuilding).
native_bins() {
	if [ -z "${KODAMA_SERVER_BIN:-}" ] || [ -z "${KODAMA_SIM_BIN:-}" ]; then
		log "building kodama-server and kodama-sim (native)"
		(cd "$repo" && cargo build --locked -q -p kodama-server -p kodama-sim --bins)
		KODAMA_SERVER_BIN=${KODAMA_SERVER_BIN:-$repo/target/debug/kodama-server}
		KODAMA_SIM_BIN=${KODAMA_SIM_BIN:-$repo/target/debug/kodama-sim}
	fi
	[ -x "$KODAMA_SERVER_BIN" ] || die "no server binary at $KODAMA_SERVER_BIN"
	[ -x "$KODAMA_SIM_BIN" ] || die "no kodama-sim binary at $KODAMA_SIM_BIN"
}

stream_test() {
	local fps=10 width=320 height=240
	native_bins
	local server_bin=$KODAMA_SERVER_BIN sim_bin=$KODAMA_SIM_BIN
	# The modem and GNSS receiver: ptys on this host, handed to QEMU as the
	# guest's first two virtual consoles (hvc0: AT port, hvc1: NMEA port).
	local sim_lat=48.8584 sim_lon=2.2945
	rm -f modem.at gnss.nmea
	"$sim_bin" --at "$work/modem.at" --nmea "$work/gnss.nmea" --scenario healthy \
		--lat "$sim_lat" --lon "$sim_lon" > sim.log 2>&1 &
	sim_pid=$!
	local i=0
	while { [ ! -e modem.at ] || [ ! -e gnss.nmea ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	if [ ! -e modem.at ] || [ ! -e gnss.nmea ]; then cat sim.log; die "kodama-sim made no ptys"; fi
	qemu_extra=(-device "virtio-serial-pci,romfile="
		-chardev "serial,id=modem,path=$(readlink -f modem.at)" -device "virtconsole,chardev=modem,name=kodama.modem"
		-chardev "serial,id=gnss,path=$(readlink -f gnss.nmea)" -device "virtconsole,chardev=gnss,name=kodama.gnss")

	local sdata=$work/server-data port
	rm -rf "$sdata"
	mkdir -p "$sdata"
	# A port unlikely to collide with other tests on this machine.
	port=$((40000 + $$ % 20000))
	local srv=("$server_bin" --data-dir "$sdata" --listen "127.0.0.1:$port" --offline)
	local server_id
	server_id=$("${srv[@]}" id 2>/dev/null | tail -n 1)
	[ ${#server_id} -ge 52 ] || die "kodama-server id printed '$server_id'"
	local api_port=$((port + 1))
	RUST_LOG=info NO_COLOR=1 "${srv[@]}" --api-listen "127.0.0.1:$api_port" run > server.log 2>&1 &
	server_pid=$!
	log "server $server_id on 127.0.0.1:$port"

	cat > kodama.toml <<-EOF
		# Written by scripts/boot-test.sh.
		[camera]
		name = "boot-test"

		[server]
		node_id = "$server_id"
		addrs = ["10.0.2.2:$port"]

		[network]
		offline = true
		reconnect_initial_ms = 200
		reconnect_max_ms = 1000

		[video]
		# QEMU has no camera: the emulated-boot build carries the test pattern.
		source = "synthetic"
		width = $width
		height = $height
		fps = $fps

		# The SIM7600 and its GNSS, served by kodama-sim on this host through
		# QEMU's virtual consoles (on the Pi: /dev/ttyUSB2 and /dev/ttyUSB1).
		[modem]
		enabled = true
		port = "/dev/hvc0"
		apn = "internet"

		[gnss]
		port = "/dev/hvc1"
	EOF
	make_card kodama.toml
	log "booting"
	boot "kodama.console=1"

	# The node id file appears on the FAT partition (offset 4 MiB) once the
	# firmware has created its key.
	local camera_id="" end=$(($(date +%s) + timeout_s))
	while [ -z "$camera_id" ] && [ "$(date +%s)" -lt "$end" ]; do
		kill -0 "$qemu_pid" 2>/dev/null || { tail -n 40 console.log; die "qemu exited"; }
		camera_id=$(mtype -i sdcard.img@@4M ::kodama-node-id.txt 2>/dev/null | tr -d '\r\n ' || true)
		[ ${#camera_id} -ge 52 ] || { camera_id=""; sleep 1; }
	done
	[ -n "$camera_id" ] || { tail -n 40 console.log; die "no kodama-node-id.txt on the boot partition"; }
	log "camera node id $camera_id (from kodama-node-id.txt, $(since "$boot_start") s after boot)"
	"${srv[@]}" allow add "$camera_id" --label boot-test > /dev/null

	while ! grep -q "camera online" server.log; do
		[ "$(date +%s)" -lt "$end" ] || { tail -n 40 console.log; tail -n 20 server.log; die "camera never came online"; }
		kill -0 "$qemu_pid" 2>/dev/null || { tail -n 40 console.log; die "qemu exited"; }
		sleep 0.2
	done
	local online
	online=$(since "$boot_start")
	log "camera online at the server $online s after boot"

	# Record exactly `seconds` of video (frames at the configured rate).
	local frames=$((seconds * fps)) first=""
	rm -f received.h264
	NO_COLOR=1 timeout "$timeout_s" "${srv[@]}" view --camera boot-test --output received.h264 \
		--frames "$frames" --stats-every 5 > view.log 2>&1 &
	local view_pid=$!
	while kill -0 "$view_pid" 2>/dev/null; do
		if [ -z "$first" ] && [ -s received.h264 ]; then
			first=$(since "$boot_start")
			log "first frame at the viewer $first s after boot"
		fi
		sleep 0.1
	done
	wait "$view_pid" || { tail -n 20 view.log; die "kodama-server view failed"; }
	[ -n "$first" ] || first=$(since "$boot_start")

	# Decodable: ffmpeg decodes every frame without an error, and there are
	# as many as asked for.
	local decode_errors n_frames size
	decode_errors=$(ffmpeg -v error -f h264 -i received.h264 -f null - 2>&1 | head -n 5)
	[ -z "$decode_errors" ] || die "received video does not decode: $decode_errors"
	n_frames=$(ffprobe -v error -f h264 -count_frames -select_streams v:0 \
		-show_entries stream=nb_read_frames -of csv=p=0 received.h264 | tr -d ',\r\n ')
	size=$(ffprobe -v error -f h264 -select_streams v:0 -show_entries stream=width,height \
		-of csv=s=x:p=0 received.h264 | tr -d ',\r\n ')
	[ "${n_frames:-0}" -ge "$frames" ] || die "received $n_frames frames, wanted $frames"
	[ "$size" = "${width}x${height}" ] || die "received ${size} video, configured ${width}x${height}"

	log "received $n_frames frames ${size} = $((n_frames / fps)) s of decodable video"
	hardware_telemetry "$camera_id" "$api_port" "$sim_lat"
	log "boot-to-camera-online ${online} s, boot-to-first-frame ${first} s"
	echo "boot-to-first-frame: ${first} s"
	[ "$keep" = 1 ] || rm -f received.h264
	log "PASS"
}

# --------------------------------------------------------- updates
# The fleet lifecycle on one card, through U-Boot and RAUC, in as few boots
# as possible (each numbered step below is checked):
#  1. Pairing by code: `kodama-server camera add` makes a one-time code; the
#     card's kodama.toml carries only the pairing string. Power-on to first
#     frame is measured.
#  2. A bundle signed by another key is refused by RAUC on the camera, and
#     the other root slot is byte for byte what it was.
#  3. The owner's bundle (version 2) over iroh; QEMU is killed while `rauc
#     install` writes the other slot: the camera boots its old slot, the
#     server offers the bundle again, it installs; QEMU is killed again right
#     after U-Boot switched to the new slot; the next boot of that slot
#     reaches the server and commits. `camera status` shows version 2 on B.
#  4. A version 3 that cannot reach the server (its image drops the route to
#     it): installed, on trial, reboots after its trial timeout until U-Boot's
#     counter runs out, and the camera is back on version 2 by itself,
#     reporting the rollback.
#  5. Revocation: `kodama-server camera remove` closes the streaming camera's
#     connection within a second.
#  6. On a second, never-paired card (pairing_step): step 1's code, already
#     redeemed, is refused; an expired code is refused — on both sides, the
#     camera staying up unpaired and scanning for a QR code; then the pairing
#     QR code, filmed by the synthetic source, pairs it. Power-on to first
#     frame is measured.
# QEMU runs with -no-reboot, so each guest reboot ends it; a loop boots the
# card again, as a power supply would.
# The lifecycle cards' kodama.toml: camera NAME, the [server] line(s)
# (e.g. pair = "..."; empty: none, the camera onboards by QR code) and extra
# [video] lines (e.g. synthetic_scene).
lifecycle_toml() { # name server-lines video-lines
	cat <<-EOF2
		# Written by scripts/boot-test.sh --update.
		[camera]
		name = "$1"

		[server]
		$2

		[network]
		offline = true
		reconnect_initial_ms = 200
		reconnect_max_ms = 1000

		[video]
		source = "synthetic"
		width = 320
		height = 240
		fps = 10
		$3

		[system]
		reboot_command = ["reboot"]

		[update]
		# Short for the test; the defaults are 60 s and 600 s.
		commit_after_s = 5
		trial_timeout_s = 20
	EOF2
}

guest_loop_pid=
update_test() {
	# Bound for each step that moves a bundle through the emulated CPU
	# (QUIC, BLAKE3, dm-verity under TCG): generous, a loaded host is slow.
	local slow_s=$((timeout_s * 3))
	native_bins
	local server_bin=$KODAMA_SERVER_BIN
	command -v rauc >/dev/null || die "no rauc on this host (apt-get install rauc)"

	# Bundles: the card's root with another version file (2), the same
	# with its route to the server dropped at boot (3), and version 2
	# signed by someone else's key.
	log "building bundles"
	local t_lifecycle
	t_lifecycle=$(now)
	[ -f keys/foreign/ca.cert.pem ] || "$repo/scripts/update-keys.sh" keys/foreign --name "Someone else" >/dev/null
	rm -rf rootfs-v2 rootfs-v3 v2.raucb v3.raucb
	if [ "$update_scope" = full ]; then
	cp -a rootfs rootfs-v2
	echo "2.0.0-boottest" > rootfs-v2/etc/kodama-version
	# Version 2 carries its own kernel files: the console shows which
	# root's booted after the switch.
	slot_kernel rootfs-v2 2.0.0-boottest
	cp -a rootfs-v2 rootfs-v3
	echo "3.0.0-unreachable" > rootfs-v3/etc/kodama-version
	cat > rootfs-v3/etc/init.d/S11unreachable <<-'S11'
		#!/bin/sh
		# Test bundle only: this version cannot reach the server.
		[ "$1" = start ] && ip route add blackhole 10.0.2.2/32
		exit 0
	S11
	chmod +x rootfs-v3/etc/init.d/S11unreachable
	local v
	for v in 2 3; do
		root_image "rootfs-v$v" "rootfs-v$v.img"
	done
	fi
	# The foreign bundle is refused on its signature whatever it carries: a
	# small one keeps the emulated transfer short.
	rm -rf rootfs-foreign
	mkdir -p rootfs-foreign/etc
	echo "2.0.0-foreign" > rootfs-foreign/etc/kodama-version
	head -c 65536 /dev/urandom > rootfs-foreign/etc/filler
	root_image rootfs-foreign rootfs-foreign.img
	local keys root version name
	while read -r keys root version name; do
		[ -e "$root" ] || continue
		"$repo/scripts/build-bundle.sh" --keys "keys/$keys" --rootfs "$root.img" --version "$version" \
			"$name.raucb" > "$name.bundle.log" 2>&1 || { tail -n 5 "$name.bundle.log"; die "build-bundle.sh failed for $name.raucb"; }
	done <<-LIST
		owner rootfs-v2 2.0.0-boottest v2
		owner rootfs-v3 3.0.0-unreachable v3
		foreign rootfs-foreign 2.0.0-foreign foreign
	LIST
	[ ! -e v2.raucb ] ||
		log "bundle size $(stat -c %s v2.raucb) bytes (root file system with its kernel $(stat -c %s rootfs-v2.img) bytes)"

	local sdata=$work/server-data port api_port
	rm -rf "$sdata"
	mkdir -p "$sdata"
	port=$((40000 + $$ % 20000))
	api_port=$((port + 1))
	srv=("$server_bin" --data-dir "$sdata" --listen "127.0.0.1:$port" --offline)
	RUST_LOG=info NO_COLOR=1 "${srv[@]}" --api-listen "127.0.0.1:$api_port" run > server.log 2>&1 &
	server_pid=$!
	srv+=(--api-listen "127.0.0.1:$api_port")

	# 1. Pairing by code. The guest reaches this host as 10.0.2.2.
	local pairing i=0
	while [ ! -s "$sdata/ticket" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	pairing=$("${srv[@]}" camera add boot-test --addr "10.0.2.2:$port" --no-qr | grep -o 'kodama:pair?[^ ]*' | head -n 1)
	[ -n "$pairing" ] || die "camera add printed no pairing string"
	lifecycle_toml boot-test "pair = \"$pairing\"" "" > kodama.toml
	make_card kodama.toml
	rm -f console.log stop-guest qemu.pid
	console_append=1
	(
		trap 'kill "$(cat qemu.pid 2>/dev/null)" 2>/dev/null; exit 0' TERM
		n=0
		while [ ! -e stop-guest ] && [ $n -lt 20 ]; do
			n=$((n + 1))
			boot "kodama.console=1"
			echo "$qemu_pid" > qemu.pid
			# Killed (a power cut) or rebooted: either way it boots again.
			wait "$qemu_pid" || true
			echo "boot-test: guest power-off $n" >> console.log
		done
	) &
	guest_loop_pid=$!
	local t0
	t0=$(now)
	until grep -q "camera online" server.log; do
		[ "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print (b-a > 240)}')" = 0 ] || { tail -n 30 console.log; tail -n 20 server.log; die "the camera never paired and came online"; }
		sleep 0.2
	done
	NO_COLOR=1 timeout 60 "${srv[@]}" view --camera boot-test --output first.h264 --frames 1 > view.log 2>&1 ||
		{ tail -n 5 view.log; die "no first frame after pairing"; }
	local pair_first
	pair_first=$(since "$t0")
	log "paired by code: power-on to first frame ${pair_first} s"

	# 2. A foreign-signed bundle: refused, slot B untouched.
	local b_start b_size b_sum
	read -r b_start b_size < <(sfdisk -d sdcard.img | sed -n 's/.*img3 : start= *\([0-9]*\), size= *\([0-9]*\).*/\1 \2/p')
	[ -n "$b_size" ] || die "cannot find slot B (p3) on the card"
	slot_b_sum() { dd if=sdcard.img bs=512 skip="$b_start" count="$b_size" status=none | sha256sum | cut -c1-16; }
	b_sum=$(slot_b_sum)
	local out
	if out=$("${srv[@]}" camera update boot-test foreign.raucb --timeout "${slow_s}s" 2>&1); then
		die "a foreign-signed bundle was installed: $out"
	fi
	grep -q "update:  failed\|the update failed" <<<"$out" || { echo "$out"; die "the foreign bundle did not fail"; }
	# RAUC's reason, as the firmware logged it from `rauc install`.
	grep -aq "signature verification failed" console.log || { tail -n 20 console.log; die "foreign bundle refused without a signature reason"; }
	[ "$(slot_b_sum)" = "$b_sum" ] || die "slot B changed although the bundle was refused"
	log "foreign-signed bundle refused, slot B untouched: $(grep -m 1 "failed" <<<"$out")"

	local t_commit t_rollback t_install3 t_switch t_recover t_after_switch
	[ "$update_scope" = full ] && update_steps
	revocation_step
	touch stop-guest
	kill "$guest_loop_pid" 2>/dev/null || true
	wait "$guest_loop_pid" 2>/dev/null || true
	guest_loop_pid=
	local qr_first t_pairing
	pairing_step
	if [ "$update_scope" = full ]; then
		log "pairing power-on-to-first-frame ${pair_first} s (code), ${qr_first} s (QR); bundle $(stat -c %s v2.raucb) bytes; update-to-commit ${t_commit} s (with 2 power cuts); rollback ${t_rollback} s"
		log "phase times: update install ${t_install3} s; install + reboot into the new slot ${t_switch} s; rollback after a bad update ${t_rollback} s; power-cut recovery ${t_recover} s (mid-install), ${t_after_switch} s (after the switch, to commit)"
	else
		log "pairing power-on-to-first-frame ${pair_first} s (code), ${qr_first} s (QR); the update, power-cut and rollback steps were not run (--update-only runs them)"
	fi
	log "lifecycle ($update_scope) took $(since "$t_lifecycle") s"
	log "PASS (update, $update_scope)"
}

# Steps 3 and 4 (update_test's locals are visible here: bash scopes
# dynamically).
update_steps() {
	# 3. Version 2, with power cuts mid-install and right after the switch.
	local installs receivings boots_b t_update t_cut
	# grep -c exits 1 when it counts 0 (set -e).
	installs=$(grep -ac 'phase="installing"\|phase=installing' console.log || true)
	t_update=$(now)
	"${srv[@]}" camera update boot-test v2.raucb --no-wait
	wait_count() { # pattern count timeout
		local end=$(($(date +%s) + $3))
		while [ "$(grep -ac -- "$1" console.log)" -lt "$2" ]; do
			[ "$(date +%s)" -lt "$end" ] || return 1
			sleep 0.2
		done
	}
	wait_count 'phase="installing"\|phase=installing' $((installs + 1)) "$slow_s" ||
		{ tail -n 30 console.log; die "the camera never started installing"; }
	log "version 2 delivered, verified, installing $(since "$t_update") s after \`camera update\`"
	sleep 1
	log "power cut during rauc install"
	kill -9 "$(cat qemu.pid)"
	t_cut=$(now)
	receivings=$(grep -ac 'phase="receiving"' console.log || true)
	wait_count 'phase="installing"\|phase=installing' $((installs + 2)) "$slow_s" ||
		{ tail -n 30 console.log; tail -n 20 server.log; die "no second install after the power cut"; }
	t_recover=$(since "$t_cut")
	local again="without a second transfer"
	[ "$(grep -ac 'phase="receiving"' console.log || true)" = "$receivings" ] || again="after a second transfer"
	log "power-cut recovery: the old slot booted, reconnected and installs again ($again) ${t_recover} s after the cut"
	t_cut=$(now)
	boots_b=$(grep -ac "kodama: booting slot B" console.log || true)
	wait_count "kodama: booting slot B" $((boots_b + 1)) "$slow_s" ||
		{ tail -n 30 console.log; die "U-Boot never switched to slot B"; }
	t_switch=$(since "$t_cut")
	log "install and reboot into slot B: U-Boot booted it ${t_switch} s after \`rauc install\` began"
	log "power cut right after the switch to slot B"
	kill -9 "$(cat qemu.pid)"
	t_cut=$(now)
	local status
	t0=$(date +%s)
	until status=$("${srv[@]}" camera status boot-test 2>&1) && grep -q "update:  committed" <<<"$status"; do
		[ $(($(date +%s) - t0)) -lt "$slow_s" ] || { echo "$status"; tail -n 30 console.log; die "version 2 never committed"; }
		sleep 1
	done
	t_commit=$(since "$t_update")
	t_after_switch=$(since "$t_cut")
	log "power cut right after the switch: slot B booted again, reconnected, streamed and committed ${t_after_switch} s after the cut"
	grep -q "^running: .*version 2.0.0-boottest on slot B" <<<"$status" || { echo "$status"; die "not running version 2 on slot B"; }
	# The update brought its kernel files with it.
	grep -aq "initramfs: kernel files of root 2.0.0-boottest" console.log ||
		{ tail -n 30 console.log; die "slot B did not boot version 2's own kernel files"; }
	log "slot B booted version 2's own kernel and initramfs (from the slot, not the FAT partition)"
	log "version 2 committed on slot B, $t_commit s after \`camera update\` (two power cuts included)"

	# 4. Version 3 cannot reach the server: rolls back by itself.
	local t_install t_v3
	t_v3=$(now)
	"${srv[@]}" camera update boot-test v3.raucb --no-wait
	t0=$(date +%s)
	until status=$("${srv[@]}" camera status boot-test 2>&1) && grep -q "update:  rebooting\|update:  installed" <<<"$status"; do
		[ $(($(date +%s) - t0)) -lt "$slow_s" ] || { echo "$status"; die "version 3 never installed"; }
		sleep 0.5
	done
	t_install=$(now)
	t_install3=$(since "$t_v3")
	log "version 3 transferred, verified and installed ${t_install3} s after \`camera update\`"
	until status=$("${srv[@]}" camera status boot-test 2>&1) && grep -q "update:  rolled-back" <<<"$status"; do
		[ $(($(date +%s) - t0)) -lt $((2 * slow_s)) ] || { echo "$status"; tail -n 30 console.log; die "version 3 never rolled back"; }
		sleep 1
	done
	t_rollback=$(since "$t_install")
	grep -q "^running: .*version 2.0.0-boottest on slot B" <<<"$status" || { echo "$status"; die "not back on version 2 on slot B"; }
	log "version 3 (no route to the server) rolled back to version 2 on slot B by itself, ${t_rollback} s after it installed"
}

# Step 5.
revocation_step() {
	# 5. Revocation drops the streaming camera within a second.
	NO_COLOR=1 timeout 60 "${srv[@]}" view --camera boot-test --output /dev/null --frames 100000 > view.log 2>&1 &
	local view_pid=$! removed t_drop
	sleep 3
	"${srv[@]}" camera remove boot-test > /dev/null
	removed=$(now)
	until grep -q "was removed from the allowlist; connection closed" server.log; do
		[ "$(awk -v a="$removed" -v b="$(now)" 'BEGIN{print (b-a > 5)}')" = 0 ] || die "the revoked camera's connection stayed open"
		sleep 0.02
	done
	t_drop=$(since "$removed")
	kill "$view_pid" 2>/dev/null || true
	[ "$(awk -v d="$t_drop" 'BEGIN{print (d <= 1.0)}')" = 1 ] || die "revocation took $t_drop s (more than 1 s)"
	log "revoked: connection closed ${t_drop} s after \`camera remove\`"
}

# Step 6, on a second card that never paired. Three boots, kodama.toml
# rewritten on the FAT partition while QEMU is off (as an owner would with
# the card in a laptop):
#  a. server.pair = step 1's code (redeemed): refused as used; the camera
#     says why on its console and in kodama-status.txt, stays up unpaired
#     and scans for a QR code; the server logs the attempt.
#  b. server.pair = a code made with `--expires 1s`: refused as expired.
#  c. no server.pair; video.synthetic_scene = the PGM that `camera add
#     --qr-image` wrote, copied onto the card: the synthetic source films the
#     QR code, the camera pairs and streams. Power-on to first frame.
pairing_step() {
	local t_step expired t0
	t_step=$(now)
	expired=$("${srv[@]}" camera add boot-late --addr "10.0.2.2:$port" --expires 1s --no-qr |
		grep -o 'kodama:pair?[^ ]*' | head -n 1)
	[ -n "$expired" ] || die "camera add --expires 1s printed no pairing string"
	"${srv[@]}" camera add boot-qr --addr "10.0.2.2:$port" --no-qr --qr-image scene.pgm > /dev/null
	[ "$(head -c 2 scene.pgm)" = P5 ] || die "camera add --qr-image wrote no PGM picture"
	console_append=0
	qemu_extra=()
	lifecycle_toml boot-qr "pair = \"$pairing\"" "" > kodama.toml
	make_card kodama.toml

	# A refused boot: the camera's reason on the console, its status file,
	# the server's log line; then the power goes off once the camera shows
	# `then` (its status file is written by then).
	refused_boot() { # label reason then
		local t_on t_refused
		boot "kodama.console=1"
		t_on=$(now)
		wait_console "refused the pairing code in kodama.toml" 180 ||
			{ tail -n 30 console.log; die "$1: the camera did not report a refused code"; }
		t_refused=$(since "$t_on")
		grep -a "refused the pairing code in kodama.toml" console.log | grep -q -- "$2" ||
			{ grep -a "refused" console.log; die "$1: the camera's reason is not \"$2\""; }
		grep -q "pairing attempt refused: .*$2" server.log ||
			{ tail -n 10 server.log; die "$1: the server did not log the refused attempt"; }
		wait_console "$3" 60 || { tail -n 20 console.log; die "$1: the camera did not go on to $3"; }
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
		mtype -i sdcard.img@@4M ::kodama-status.txt | grep -q "NOT PAIRED" ||
			die "$1: kodama-status.txt does not say the camera is not paired"
		log "$1: refused on both sides $t_refused s after power-on ($(grep -a -o "refused pairing ([A-Za-z]*)" console.log | head -n 1)); the camera stays up, unpaired (kodama-status.txt: NOT PAIRED; console: $3)"
	}
	# Up, unpaired, and scanning for a QR code after the REFUSED blinks.
	refused_boot "reused code" "used already" "state=Scanning"
	lifecycle_toml boot-qr "pair = \"$expired\"" "" > kodama.toml
	mcopy -o -i sdcard.img@@4M kodama.toml ::kodama.toml
	refused_boot "expired code" "expired" "state=Refused"

	lifecycle_toml boot-qr "" 'synthetic_scene = "/boot/scene.pgm"' > kodama.toml
	mcopy -o -i sdcard.img@@4M kodama.toml ::kodama.toml
	mcopy -o -i sdcard.img@@4M scene.pgm ::scene.pgm
	boot "kodama.console=1"
	t0=$(now)
	until grep -q "camera online.*name=boot-qr" server.log; do
		[ "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print (b-a > 240)}')" = 0 ] ||
			{ tail -n 30 console.log; tail -n 20 server.log; die "the camera never paired by QR code and came online"; }
		kill -0 "$qemu_pid" 2>/dev/null || { tail -n 30 console.log; die "qemu exited"; }
		sleep 0.2
	done
	NO_COLOR=1 timeout 60 "${srv[@]}" view --camera boot-qr --output first.h264 --frames 1 > view.log 2>&1 ||
		{ tail -n 5 view.log; die "no first frame after pairing by QR code"; }
	qr_first=$(since "$t0")
	grep -aq "read a pairing QR code" console.log || die "the camera came online without reading the QR code"
	kill "$qemu_pid" 2>/dev/null || true
	wait "$qemu_pid" 2>/dev/null || true
	log "paired by QR code (the synthetic source filming camera add --qr-image's picture): power-on to first frame ${qr_first} s"
	t_pairing=$(since "$t_step")
	log "reused code, expired code and QR pairing (one card, three boots) took ${t_pairing} s"
}

[ "$update" = 2 ] || stream_test
if [ "$update" != 0 ]; then
	# Same root image and binaries; its own server. The streaming test's
	# guest goes first: the next card is written over its disk image.
	kill "$qemu_pid" 2>/dev/null || true
	wait "$qemu_pid" 2>/dev/null || true
	qemu_pid=
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
	update_test
fi
