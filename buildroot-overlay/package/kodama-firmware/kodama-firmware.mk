################################################################################
#
# kodama-firmware
#
################################################################################

# The firmware is built from the Kodama checkout this external tree lives in
# (buildroot-overlay/ is at its top), with the committed Cargo.lock.
KODAMA_FIRMWARE_VERSION = 0.1.0
KODAMA_FIRMWARE_SITE = $(BR2_EXTERNAL_KODAMA_PATH)/..
KODAMA_FIRMWARE_SITE_METHOD = local
KODAMA_FIRMWARE_LICENSE = MIT or Apache-2.0
KODAMA_FIRMWARE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /demo-data --exclude /fuzz

# Only the camera binary, from the workspace's firmware member (cargo
# install needs a package manifest, not the workspace's virtual one).
KODAMA_FIRMWARE_CARGO_BUILD_OPTS = --bin kodama-camera
KODAMA_FIRMWARE_CARGO_INSTALL_OPTS = --bin kodama-camera
KODAMA_FIRMWARE_SUBDIR = firmware

# The workspace's `camera` profile (root Cargo.toml: release with fat LTO,
# one codegen unit, panic=abort, strip, opt-level "s"), the build
# scripts/cross-build.sh measures (docs/bench.md, "Firmware size"); no unwind
# tables (nothing unwinds with panic=abort). The infrastructure's build step
# passes --release, which cargo refuses next to --profile: the build step
# below is the infrastructure's with the camera profile instead.
KODAMA_FIRMWARE_CARGO_INSTALL_OPTS += --profile camera
KODAMA_FIRMWARE_CARGO_ENV = \
	CARGO_TARGET_$(call UPPERCASE,$(RUSTC_TARGET_NAME))_RUSTFLAGS="-C force-unwind-tables=no"

define KODAMA_FIRMWARE_BUILD_CMDS
	cd $(KODAMA_FIRMWARE_SRCDIR) && \
	$(TARGET_MAKE_ENV) \
		$(TARGET_CONFIGURE_OPTS) \
		$(PKG_CARGO_ENV) \
		$(KODAMA_FIRMWARE_CARGO_ENV) \
		cargo build \
			--offline \
			--profile camera \
			--manifest-path Cargo.toml \
			--locked \
			$(KODAMA_FIRMWARE_CARGO_BUILD_OPTS)
endef

# Audio: libopus (the `opus` crate finds it with pkg-config in staging).
KODAMA_FIRMWARE_DEPENDENCIES += opus host-pkgconf
KODAMA_FIRMWARE_CARGO_ENV += PKG_CONFIG_ALLOW_CROSS=1

# The `pi` feature links libcamera and alsa-lib (the microphone) (found with pkg-config in staging) and
# generates libcamera's and V4L2's bindings with bindgen (needs libclang).
ifeq ($(BR2_PACKAGE_KODAMA_FIRMWARE_PI),y)
KODAMA_FIRMWARE_DEPENDENCIES += libcamera alsa-lib host-clang host-pkgconf
KODAMA_FIRMWARE_CARGO_BUILD_OPTS += --features pi
KODAMA_FIRMWARE_CARGO_INSTALL_OPTS += --features pi
KODAMA_FIRMWARE_CARGO_ENV += \
	PKG_CONFIG_ALLOW_CROSS=1 \
	LIBCLANG_PATH=$(HOST_DIR)/lib \
	BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$(STAGING_DIR)"
endif

# A local source is rsynced, not downloaded, so the cargo download
# post-process never vendors its crates. Vendor them the same way it does
# (into VENDOR/, with .cargo/config.toml pointing there), from Cargo.lock.
define KODAMA_FIRMWARE_VENDOR_CRATES
	cd $(@D) && \
		mkdir -p .cargo $(BR_CARGO_HOME) && \
		$(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		cargo vendor --locked --manifest-path Cargo.toml VENDOR \
		> .cargo/config.toml
endef
# Configure, not post-rsync: host-rustc (cargo) is built by then.
KODAMA_FIRMWARE_PRE_CONFIGURE_HOOKS += KODAMA_FIRMWARE_VENDOR_CRATES

# The supervised service (inittab respawn), init scripts and udev rules
# live in the board's rootfs overlay; the modem's udev rules come from hw/.
define KODAMA_FIRMWARE_INSTALL_UDEV_RULES
	$(INSTALL) -D -m 0644 $(BR2_EXTERNAL_KODAMA_PATH)/../hw/udev/99-kodama-sim7600.rules \
		$(TARGET_DIR)/etc/udev/rules.d/99-kodama-sim7600.rules
endef
KODAMA_FIRMWARE_POST_INSTALL_TARGET_HOOKS += KODAMA_FIRMWARE_INSTALL_UDEV_RULES

$(eval $(cargo-package))
