SUMMARY = "Kodama camera firmware (kodama-camera) and the camera image's boot scripts"
DESCRIPTION = "Captures video, encodes H.264 and streams it end-to-end \
encrypted to a Kodama server over iroh (QUIC). The -image-files package \
carries the same init scripts, supervision and first-boot storage logic as \
the Buildroot image (buildroot-overlay/board/kodama/rootfs-overlay)."
HOMEPAGE = "https://github.com/kodama-cam/kodama"
LICENSE = "MIT | Apache-2.0"
# The workspace's `license = "MIT OR Apache-2.0"` line.
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=10;endline=10;md5=86b31c7756a1a7962f28b62856ed4f05"

# Upstream source; for a local checkout use externalsrc (see yocto/README.md).
SRC_URI = "git://github.com/kodama-cam/kodama.git;protocol=https;branch=main"
SRCREV = "${AUTOREV}"
PV = "0.1.0+git"
S = "${WORKDIR}/git"

inherit cargo pkgconfig

# Audio: libopus through the `opus` crate (pkg-config).
DEPENDS += "libopus"

# Crates from the committed Cargo.lock, fetched and vendored offline by the
# cargo fetcher. Regenerate with yocto/update-crates.sh after Cargo.lock changes.
require kodama-firmware-crates.inc

CARGO_SRC_DIR = "firmware"
CARGO_BUILD_FLAGS += "--bin kodama-camera"

# The workspace's `camera` profile (root Cargo.toml: release optimised for
# size, fat LTO, panic=abort), the build scripts/cross-build.sh measures
# (docs/bench.md, "Firmware size"), without unwind tables (nothing unwinds
# with panic=abort). cargo.bbclass installs from target/<triple>/BUILD_DIR.
BUILD_MODE = "--profile camera"
BUILD_DIR = "camera"
RUSTFLAGS += "-C force-unwind-tables=no"

# The Pi camera and GPIO drivers (libcamera, V4L2 H.264 encoder, rppal);
# bindgen needs libclang for libcamera's and V4L2's bindings.
PACKAGECONFIG ??= "pi"
PACKAGECONFIG[pi] = ",,libcamera alsa-lib clang-native"
CARGO_FEATURES = "${@bb.utils.contains('PACKAGECONFIG', 'pi', 'pi', '', d)}"
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET}"

OVERLAY = "${S}/buildroot-overlay/board/kodama/rootfs-overlay"

do_install:append() {
    # Init scripts, supervision (inittab respawn), first-boot storage,
    # network and time from kodama.toml: identical to the Buildroot image.
    install -d ${D}${sysconfdir}/init.d ${D}${libexecdir}/kodama ${D}${datadir}/udhcpc
    for f in S01kodama-storage S10kodama-network S20kodama-time S99kodama-selftest; do
        install -m 0755 ${OVERLAY}/etc/init.d/$f ${D}${sysconfdir}/init.d/$f
    done
    install -m 0644 ${OVERLAY}/etc/kodama.conf ${D}${sysconfdir}/kodama.conf
    install -m 0644 ${OVERLAY}/etc/inittab ${D}${sysconfdir}/inittab.kodama
    install -m 0644 ${OVERLAY}/etc/fstab ${D}${sysconfdir}/fstab.kodama
    for f in run-camera run-watchdog toml-get; do
        install -m 0755 ${OVERLAY}/usr/libexec/kodama/$f ${D}${libexecdir}/kodama/$f
    done
    install -m 0755 ${OVERLAY}/usr/share/udhcpc/default.script ${D}${datadir}/udhcpc/default.script
    install -d ${D}${sysconfdir}/udev/rules.d
    install -m 0644 ${S}/hw/udev/99-kodama-sim7600.rules ${D}${sysconfdir}/udev/rules.d/
    install -d ${D}/boot ${D}/data
}

PACKAGES =+ "${PN}-image-files"
FILES:${PN}-image-files = "${sysconfdir} ${libexecdir}/kodama ${datadir}/udhcpc /boot /data"
RDEPENDS:${PN}-image-files = "busybox e2fsprogs-mke2fs e2fsprogs-e2fsck e2fsprogs-resize2fs \
    util-linux-sfdisk util-linux-partx util-linux-blkid dosfstools wpa-supplicant chrony \
    iproute2-ip"
RDEPENDS:${PN} += "${PN}-image-files"
