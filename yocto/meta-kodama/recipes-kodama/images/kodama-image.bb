SUMMARY = "Kodama camera image for Raspberry Pi Zero 2 W (64-bit)"
LICENSE = "MIT"

inherit core-image

# Read-only root (squashfs): /var and /tmp on tmpfs, writable state on the
# data partition that S01kodama-storage creates on first boot.
IMAGE_FEATURES += "read-only-rootfs"
IMAGE_FSTYPES = "wic.bz2 wic.bmap"
WKS_FILE = "kodama-sdcard.wks"

IMAGE_INSTALL = "packagegroup-core-boot kodama-firmware kodama-firmware-image-files \
    linux-firmware-rpidistro-bcm43430 kernel-module-imx219 kernel-module-bcm2835-unicam \
    kernel-module-bcm2835-codec kernel-module-option kernel-module-qmi-wwan \
    kernel-module-cdc-ether kernel-module-rndis-host"

# BusyBox init with the Kodama inittab (respawned firmware and watchdog feeder).
VIRTUAL-RUNTIME_init_manager = "busybox"
VIRTUAL-RUNTIME_initscripts = ""

kodama_rootfs_fixup() {
    mv ${IMAGE_ROOTFS}${sysconfdir}/inittab.kodama ${IMAGE_ROOTFS}${sysconfdir}/inittab
    mv ${IMAGE_ROOTFS}${sysconfdir}/fstab.kodama ${IMAGE_ROOTFS}${sysconfdir}/fstab
    ln -sf ../run/resolv.conf ${IMAGE_ROOTFS}${sysconfdir}/resolv.conf
}
ROOTFS_POSTPROCESS_COMMAND += "kodama_rootfs_fixup;"

# meta-raspberrypi: camera overlay, codec memory, watchdog, UART console.
RPI_EXTRA_CONFIG = "\n\
camera_auto_detect=0\n\
dtoverlay=imx219\n\
gpu_mem=64\n\
dtparam=watchdog=on\n"
ENABLE_UART = "1"
CMDLINE_ROOTFS = "root=/dev/mmcblk0p2 rootfstype=squashfs ro rootwait kodama.boot=/dev/mmcblk0p1 kodama.data=/dev/mmcblk0p4"
