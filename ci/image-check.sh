#!/bin/bash
# ci/image-check.sh — checks the flashable camera image on a plain Debian 12
# x86_64 machine (run as root; installs what it needs with apt-get):
#
#   1. shellcheck of the image's scripts (rootfs overlay, board, scripts/)
#   2. aarch64 cross build of kodama-camera (camera profile, stripped), size printed
#   3. qemu-user smoke test: --version, and a first boot without kodama.toml
#      writes the status and node id files
#   4. emulated boot (qemu-system-aarch64) to the self test
#   5. emulated boot that streams N seconds of decodable video to a
#      kodama-server on this host (loopback only); then, on a fresh card of
#      the same root image, the lifecycle's cheap steps: pairing by code, a
#      foreign-signed bundle refused by RAUC with the other slot untouched,
#      revocation; then, on a never-paired card, a reused and an expired
#      code refused and pairing by a QR code the synthetic source films
#      (scripts/boot-test.sh --update-quick; every boot goes through U-Boot). The signed A/B update with power cuts and the
#      rollback (scripts/boot-test.sh --update-only) take minutes more of
#      emulated CPU and are run by hand (docs/design/updates.md, Measured).
#   6. flash.sh writes an image file and a kodama.toml into its boot partition
#   7. the A/B boot script's two environment copies under U-Boot in QEMU,
#      written between boots by fw_setenv, torn by power cuts
#      (scripts/uboot-env-check.sh)
#   8. the Yocto crate list matches Cargo.lock (reported, not fatal)
#
# Buildroot's check-package and savedefconfig need a Buildroot checkout and
# are run by hand (see scripts/build-image.sh); CI has no Buildroot.
#
# Usage: ci/image-check.sh [--seconds N]   (default 10)
# Ends with "image-check: N passed, N failed"; exit status 0 only if none failed.
set -uo pipefail

seconds=10
[ "${1:-}" = --seconds ] && seconds=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
passed=0
failed=0
started=$(date +%s)

step() { # name command...
	local name=$1 t0 rc
	shift
	echo "=== image-check: $name"
	t0=$(date +%s)
	"$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1))
		echo "=== image-check: $name: ok ($(($(date +%s) - t0)) s)"
	else
		failed=$((failed + 1))
		echo "=== image-check: $name: FAILED (exit $rc, $(($(date +%s) - t0)) s)"
	fi
	return $rc
}

# CI builds with thin LTO and 16 codegen units in its own target dir: the
# image behaves the same, and the build fits CI's time on 2 cores (fat LTO's
# single-threaded link alone takes minutes). IMAGE_CHECK_FULL_LTO=1 builds
# the shipping `camera` profile (root Cargo.toml) instead, e.g. to measure its size.
if [ "${IMAGE_CHECK_FULL_LTO:-0}" = 1 ]; then
	cross_env=(CARGO_TARGET_DIR="$repo/target/aarch64-cross")
else
	cross_env=(CARGO_TARGET_DIR="$repo/target/aarch64-cross-ci"
		CARGO_PROFILE_CAMERA_LTO=thin CARGO_PROFILE_CAMERA_CODEGEN_UNITS=16)
fi
bin=${cross_env[0]#CARGO_TARGET_DIR=}/aarch64-unknown-linux-gnu/camera/kodama-camera

check_scripts() {
	command -v shellcheck >/dev/null || apt-get install -y -q shellcheck >/dev/null
	local ov=buildroot-overlay/board/kodama
	shellcheck -x -s sh "$ov"/rootfs-overlay/etc/init.d/* "$ov"/rootfs-overlay/usr/libexec/kodama/* \
		"$ov"/rootfs-overlay/usr/share/udhcpc/default.script "$ov"/post-build.sh &&
		shellcheck -x "$ov"/post-image.sh scripts/cross-build.sh scripts/cross-env.sh \
			scripts/install-cross-deps.sh scripts/assemble-image.sh scripts/boot-test.sh \
			scripts/flash.sh scripts/build-image.sh scripts/uboot-env-check.sh yocto/update-crates.sh ci/image-check.sh
}

qemu_user_smoke() {
	local out tmp rc
	out=$(qemu-aarch64-static -L / "$bin" --version) || return 1
	echo "$out"
	case "$out" in "kodama-camera "*) ;; *) echo "unexpected --version output" >&2; return 1 ;; esac
	tmp=$(mktemp -d)
	mkdir -p "$tmp/boot" "$tmp/data"
	# No kodama.toml: the firmware must fail cleanly and say so on the card.
	KODAMA_BOOT_DIR=$tmp/boot KODAMA_DATA_DIR=$tmp/data NO_COLOR=1 RUST_BACKTRACE=0 \
		timeout 60 qemu-aarch64-static -L / "$bin" run --config "$tmp/boot/kodama.toml" \
		> "$tmp/log" 2>&1
	rc=$?
	grep -q "Kodama camera: ERROR" "$tmp/boot/kodama-status.txt" &&
		grep -q "kodama.toml not found" "$tmp/boot/kodama-status.txt" &&
		[ "$(stat -c %s "$tmp/data/kodama/camera.key")" = 32 ] &&
		[ "$(tr -d '\n' < "$tmp/boot/kodama-node-id.txt" | wc -c)" -eq 64 ] &&
		[ $rc -ne 0 ] && [ $rc -ne 124 ]
	rc=$?
	[ $rc -eq 0 ] || cat "$tmp/log"
	rm -rf "$tmp"
	return $rc
}

flash_image_file() {
	local img=target/boot-test/sdcard.img tmp rc
	[ -f "$img" ] || { echo "no $img (the boot test makes it)" >&2; return 1; }
	tmp=$(mktemp -d)
	printf '[camera]\nname = "flash-test"\n' > "$tmp/kodama.toml"
	scripts/flash.sh --image "$img" --config "$tmp/kodama.toml" --to "$tmp/card.img" &&
		mtype -i "$tmp/card.img@@4M" ::kodama.toml | grep -q 'name = "flash-test"' &&
		sfdisk --dump "$tmp/card.img" | grep -q 'type=c, bootable'
	rc=$?
	rm -rf "$tmp"
	return $rc
}

step "install packages" scripts/install-cross-deps.sh kmod shellcheck u-boot-qemu u-boot-tools rauc
step "shellcheck" check_scripts
if step "cross build (aarch64)" env "${cross_env[@]}" scripts/cross-build.sh; then
	step "qemu-user smoke test" qemu_user_smoke
	step "emulated boot (self test)" env KODAMA_CAMERA_BIN="$bin" scripts/boot-test.sh --boot-only
	step "emulated boot streams ${seconds} s to kodama-server, then pairing, foreign bundle refused, revocation, refused codes, pairing by QR" \
		env KODAMA_CAMERA_BIN="$bin" scripts/boot-test.sh --seconds "$seconds" --update-quick
	step "flash.sh to an image file" flash_image_file
fi
step "U-Boot A/B environment, two copies, torn writes" scripts/uboot-env-check.sh
yocto/update-crates.sh --check || echo "image-check: warning: run yocto/update-crates.sh"

echo "image-check: total $(($(date +%s) - started)) s"
echo "image-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
