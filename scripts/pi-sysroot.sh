#!/usr/bin/env bash
# pi-sysroot.sh — build a sysroot holding Debian 13 (trixie)'s libcamera and
# kernel UAPI headers, so `cargo check/build --features pi` works on a machine
# whose own distribution is older (Debian 12 ships libcamera 0.0.3; the
# `libcamera` crate 0.7 needs >= 0.4).
#
# What it does, without touching the system's apt configuration:
#   1. writes a private sources list (trixie main, the same Debian archive the
#      system's own apt sources use) and runs `apt-get update` with private
#      state and cache directories (-oDir::Etc::SourceList, -oDir::State::Lists,
#      -oDir::Cache) under the cache directory;
#   2. resolves the packages: libcamera-dev, the libcamera runtime package it
#      depends on (its soname package, e.g. libcamera0.4), that package's whole
#      Depends closure (so the linker and the dynamic loader can resolve every
#      DT_NEEDED entry), and linux-libc-dev 6.12 (videodev2.h for v4l2r);
#   3. `apt-get download`s them and unpacks each with `dpkg-deb -x`;
#   4. rewrites the `prefix=` of the sysroot's pkg-config files to the
#      sysroot's absolute path (so only libcamera resolves into the sysroot and
#      every host library still resolves on the host);
#   5. prints the environment to export (see `env_lines`).
#
# The result is cached: a stamp file records the package list and versions;
# a second run with the same inputs does no network access at all and only
# prints the environment.
#
# Usage:
#   scripts/pi-sysroot.sh [--arch amd64|arm64] [--dir DIR] [--refresh] [--quiet]
#   eval "$(scripts/pi-sysroot.sh --quiet)"      # export the environment
#
# Environment:
#   KODAMA_DEBIAN_MIRROR  Debian archive URI (default: the one the system's apt
#                         sources use for the main archive)
#   KODAMA_DEBIAN_SUITE   suite to take libcamera from (default: trixie)
set -euo pipefail

ARCH=amd64
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/pi-sysroot"
SYSROOT=""
REFRESH=0
QUIET=0
SUITE="${KODAMA_DEBIAN_SUITE:-trixie}"
# Bump when the package selection or the unpack steps change: invalidates caches.
LAYOUT_VERSION=5

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH="$2"; shift 2 ;;
        --dir) SYSROOT="$2"; shift 2 ;;
        --refresh) REFRESH=1; shift ;;
        --quiet) QUIET=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "pi-sysroot: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

case "$ARCH" in
    amd64) TRIPLET=x86_64-linux-gnu; RUST_TARGET=x86_64-unknown-linux-gnu ;;
    arm64) TRIPLET=aarch64-linux-gnu; RUST_TARGET=aarch64-unknown-linux-gnu ;;
    *) echo "pi-sysroot: --arch must be amd64 or arm64, not '$ARCH'" >&2; exit 2 ;;
esac
SYSROOT="${SYSROOT:-$BASE_DIR/$ARCH}"
APT_DIR="$BASE_DIR/apt"
DEB_DIR="$BASE_DIR/debs/$ARCH"
STAMP="$SYSROOT/.kodama-sysroot"

log() { if [ "$QUIET" = 0 ]; then echo "pi-sysroot: $*" >&2; fi; }

# The Debian archive the system already uses (sources.list or deb822 .sources),
# so this script reaches exactly the mirror this machine is set up for.
system_mirror() {
    local uri=""
    if [ -d /etc/apt/sources.list.d ]; then
        uri="$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(grep -E '^deb ' /etc/apt/sources.list | sed -e 's/\[[^]]*\]//' \
            | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
    fi
    if [ -z "$uri" ]; then
        echo "pi-sysroot: cannot find a Debian archive in the system's apt sources; set KODAMA_DEBIAN_MIRROR" >&2
        exit 1
    fi
    echo "$uri"
}

env_lines() {
    local pc="$SYSROOT/usr/lib/$TRIPLET/pkgconfig"
    local inc="-I$SYSROOT/usr/include -I$SYSROOT/usr/include/$TRIPLET"
    local libdir="$SYSROOT/usr/lib/$TRIPLET"
    local tgt="${RUST_TARGET//-/_}"
    echo "export KODAMA_PI_SYSROOT='$SYSROOT'"
    # libcamera-sys and libcamera find libcamera through pkg-config; the .pc
    # files carry the sysroot's absolute prefix, so no PKG_CONFIG_SYSROOT_DIR
    # (which would also redirect host libraries) is needed.
    echo "export PKG_CONFIG_PATH='$pc'\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
    # v4l2r's build script generates its bindings from this videodev2.h (6.12).
    echo "export V4L2R_VIDEODEV2_H_PATH='$SYSROOT/usr/include/linux'"
    # <linux/*.h> and <asm/*.h> included by videodev2.h must come from the
    # same kernel version as videodev2.h itself.
    echo "export BINDGEN_EXTRA_CLANG_ARGS_$tgt='$inc'"
    # Where -lcamera -lcamera-base resolve, and where the linker finds the
    # libraries libcamera itself needs (DT_NEEDED) when checking a link.
    echo "export LIBRARY_PATH='$libdir'\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
    # For linking (cargo build/rustc): libcamera from trixie references glibc
    # 2.38 / GLIBCXX_3.4.32 symbols that an older host's libc/libstdc++ lack.
    # The firmware's own references to libcamera are still checked; the
    # library's own are left to the target's dynamic loader. Pass these to the
    # final crate only (`cargo rustc ... -- $KODAMA_PI_LINK_ARGS`), or put them
    # in CARGO_TARGET_<TRIPLE>_RUSTFLAGS in a target dir of their own:
    # changing RUSTFLAGS rebuilds every dependency.
    echo "export KODAMA_PI_LINK_ARGS='-C link-arg=-Wl,-rpath-link,$libdir -C link-arg=-Wl,--allow-shlib-undefined'"
    echo "export KODAMA_PI_RUST_TARGET='$RUST_TARGET'"
    if [ "$ARCH" = arm64 ]; then
        echo "export PKG_CONFIG_ALLOW_CROSS=1"
        # Only the target's .pc files: a host library must never be linked.
        echo "export PKG_CONFIG_LIBDIR='$pc'"
    fi
}

packages_wanted() {
    # One package a line: name:arch=version.
    local -a apt_opts=("$@")
    local dev_depends soname_pkg
    dev_depends="$(apt-cache "${apt_opts[@]}" show "libcamera-dev:$ARCH" | sed -n 's/^Depends: //p' | head -n1)"
    soname_pkg="$(echo "$dev_depends" | tr ',' '\n' | sed -e 's/^ *//' -e 's/ .*//' | grep -E '^libcamera[0-9]' | head -n1)"
    if [ -z "$soname_pkg" ]; then
        echo "pi-sysroot: libcamera-dev in $SUITE has no libcameraN.M dependency (Depends: $dev_depends)" >&2
        exit 1
    fi
    {
        echo "libcamera-dev:$ARCH"
        echo "linux-libc-dev"
        # A cross build also needs the target's ALSA and Opus (the `alsa`
        # and `opus` crates); a native check uses the host's.
        if [ "$ARCH" = arm64 ]; then
            for dev in libasound2-dev libopus-dev; do
                echo "$dev:$ARCH"
                apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
                    --no-conflicts --no-breaks --no-replaces --no-enhances \
                    "$dev:$ARCH" | grep -E '^[a-z0-9]'
            done
        fi
        # The runtime closure (Depends and Pre-Depends, recursively); virtual
        # packages are listed as <name> and dropped by the grep.
        apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
            --no-conflicts --no-breaks --no-replaces --no-enhances \
            "$soname_pkg:$ARCH" | grep -E '^[a-z0-9]'
    } | sed -e "s/:$ARCH\$//" | sort -u >"$APT_DIR/wanted.$ARCH"
    # Candidate versions, in one apt-cache call. Multi-Arch: foreign/all
    # packages (e.g. linux-libc-dev in trixie) have no :arm64 variant, so a
    # name without a candidate for the arch is retried without the qualifier.
    local -a names=()
    mapfile -t names <"$APT_DIR/wanted.$ARCH"
    apt-cache "${apt_opts[@]}" policy "${names[@]/%/:$ARCH}" "${names[@]}" 2>/dev/null | awk -v arch="$ARCH" '
        /^[^ ]/ { pkg = $1; sub(/:$/, "", pkg); next }
        /^ *Candidate:/ {
            if ($2 == "(none)") next
            name = pkg; sub(/:.*/, "", name)
            if (pkg ~ ":") { if (!(name in seen)) { seen[name] = 1; print name ":" arch "=" $2 } }
            else { plain[name] = $2 }
        }
        END { for (n in plain) if (!(n in seen)) print n "=" plain[n] }' | sort \
    | grep -v -E '^(debconf|perl-base|dpkg|install-info|gcc-[0-9]+-base|libc-bin|usr-is-merged|base-files)[:=]' || true
}

main() {
    if [ "$REFRESH" = 0 ] && [ -f "$STAMP" ] && grep -q "^layout=$LAYOUT_VERSION\$" "$STAMP"; then
        log "cached sysroot at $SYSROOT ($(grep -c '=' "$STAMP") entries); --refresh to rebuild"
        env_lines
        return 0
    fi
    for tool in apt-get apt-cache dpkg-deb; do
        command -v "$tool" >/dev/null || { echo "pi-sysroot: needs $tool (a Debian system)" >&2; exit 1; }
    done

    local mirror="${KODAMA_DEBIAN_MIRROR:-$(system_mirror)}"
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" \
        "$APT_DIR/etc/sources.list.d" "$APT_DIR/etc/preferences.d" "$DEB_DIR"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || { echo "pi-sysroot: $keyring missing (install debian-archive-keyring)" >&2; exit 1; }
    echo "deb [arch=amd64,arm64 signed-by=$keyring] $mirror $SUITE main" >"$APT_DIR/etc/sources.list"
    : >"$APT_DIR/etc/preferences"
    # A private apt: own sources, lists, cache and an empty dpkg status, so
    # neither the system's configuration nor its installed packages leak in.
    : >"$APT_DIR/status"
    local -a apt_opts=(
        -oDir::Etc::SourceList="$APT_DIR/etc/sources.list"
        -oDir::Etc::SourceParts="$APT_DIR/etc/sources.list.d"
        -oDir::Etc::Preferences="$APT_DIR/etc/preferences"
        -oDir::Etc::PreferencesParts="$APT_DIR/etc/preferences.d"
        -oDir::State::Lists="$APT_DIR/lists"
        -oDir::State::Status="$APT_DIR/status"
        -oDir::Cache="$APT_DIR/cache"
        -oAPT::Architecture=amd64
        -oAPT::Architectures::=amd64 -oAPT::Architectures::=arm64
        -oAcquire::Languages=none
        -oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -oAcquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -oAcquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
        -oAcquire::IndexTargets::deb::CNF::DefaultEnabled=false
        -oAcquire::Retries=3
        -oAPT::Sandbox::User=root
        -oDebug::NoLocking=1
    )
    # The package lists are refetched at most once a day (or with --refresh).
    if [ "$REFRESH" = 1 ] || [ -z "$(find "$APT_DIR/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
        log "apt-get update ($SUITE, $mirror)"
        apt-get "${apt_opts[@]}" -qq update >&2
    fi

    local wanted
    wanted="$(packages_wanted "${apt_opts[@]}")"
    if ! echo "$wanted" | grep -q '^linux-libc-dev'; then
        echo "pi-sysroot: linux-libc-dev not found in $SUITE" >&2
        exit 1
    fi
    log "$(echo "$wanted" | wc -l) packages: $(echo "$wanted" | sed 's/[:=].*//' | tr '\n' ' ')"

    # Download what is not cached yet (.deb file names carry name and version).
    local -a missing=()
    local spec name ver
    while read -r spec; do
        name="${spec%%[:=]*}"
        ver="${spec#*=}"
        ver="${ver//:/%3a}"
        if ! compgen -G "$DEB_DIR/${name}_${ver}_*.deb" >/dev/null; then
            missing+=("$spec")
        fi
    done <<<"$wanted"
    if [ "${#missing[@]}" -gt 0 ]; then
        log "downloading ${#missing[@]} packages"
        (cd "$DEB_DIR" && apt-get "${apt_opts[@]}" -qq download "${missing[@]}" >&2)
    fi

    # Unpack into a fresh directory, then swap it in: an interrupted run never
    # leaves a half-built sysroot behind a valid stamp.
    local tmp="$SYSROOT.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    while read -r spec; do
        name="${spec%%[:=]*}"
        ver="${spec#*=}"
        ver="${ver//:/%3a}"
        local deb
        deb="$(compgen -G "$DEB_DIR/${name}_${ver}_*.deb" | head -n1)"
        dpkg-deb -x "$deb" "$tmp"
    done <<<"$wanted"

    # pkg-config files: absolute prefix inside the sysroot.
    local pcdir="$tmp/usr/lib/$TRIPLET/pkgconfig"
    if [ ! -f "$pcdir/libcamera.pc" ]; then
        echo "pi-sysroot: libcamera.pc missing after unpacking ($pcdir)" >&2
        exit 1
    fi
    local final_pcdir="$SYSROOT/usr/lib/$TRIPLET/pkgconfig"
    for pcf in "$pcdir"/*.pc; do
        sed -i -e "s|^prefix=/usr\$|prefix=$SYSROOT/usr|" "$pcf"
    done
    # Absolute symlinks (usr-merge, /lib -> usr/lib) would point into the host.
    find "$tmp" -type l | while read -r link; do
        local target
        target="$(readlink "$link")"
        case "$target" in
            /*) ln -sfn "$(realpath -m -s --relative-to="$(dirname "$link")" "$tmp$target")" "$link" ;;
        esac
    done

    {
        echo "layout=$LAYOUT_VERSION"
        echo "suite=$SUITE"
        echo "arch=$ARCH"
        echo "$wanted" | sed 's/^/package=/'
    } >"$tmp/.kodama-sysroot"
    rm -rf "$SYSROOT"
    mv -T "$tmp" "$SYSROOT"
    log "sysroot ready: $SYSROOT (pkg-config: $final_pcdir)"
    env_lines
}

main
