#!/usr/bin/env bash
# build-bundle.sh — a signed RAUC update bundle of the camera's root
# filesystem (docs/design/updates.md), with host `rauc` (Debian: rauc).
#
# Usage: scripts/build-bundle.sh --keys DIR --rootfs ROOTFS.img --version V OUT.raucb
#   --keys DIR   made by scripts/update-keys.sh (signing.key.pem, signing.cert.pem, ca.cert.pem)
#   --rootfs     the root filesystem image for a slot (the image's ext4, kernel in /kernel)
#   --version    the firmware version the bundle carries
# The bundle is checked against the CA keyring after signing.
set -euo pipefail

keys="" rootfs="" version="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys=${2:?}; shift 2 ;;
        --rootfs) rootfs=${2:?}; shift 2 ;;
        --version) version=${2:?}; shift 2 ;;
        -*) echo "build-bundle: unknown option '$1'" >&2; exit 2 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$keys" ] && [ -n "$rootfs" ] && [ -n "$version" ] && [ -n "$out" ] || {
    echo "usage: build-bundle.sh --keys DIR --rootfs ROOTFS.img --version V OUT.raucb" >&2
    exit 2
}
command -v rauc >/dev/null || { echo "build-bundle: needs rauc (apt-get install rauc squashfs-tools)" >&2; exit 1; }
[ -f "$rootfs" ] || { echo "build-bundle: no root filesystem image $rootfs" >&2; exit 1; }
for f in signing.key.pem signing.cert.pem ca.cert.pem; do
    [ -f "$keys/$f" ] || { echo "build-bundle: $keys/$f missing (scripts/update-keys.sh makes it)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/content"
cp "$rootfs" "$work/content/rootfs.img"
cat > "$work/content/manifest.raucm" <<MANIFEST
[update]
compatible=kodama-pizero2w
version=$version

[bundle]
format=verity

[image.rootfs]
filename=rootfs.img
MANIFEST
rm -f "$out"
rauc bundle --cert="$keys/signing.cert.pem" --key="$keys/signing.key.pem" \
    --keyring="$keys/ca.cert.pem" "$work/content" "$out" >/dev/null
rauc info --keyring="$keys/ca.cert.pem" "$out" >/dev/null
echo "signed bundle $out (version $version, $(stat -c %s "$out") bytes)"
