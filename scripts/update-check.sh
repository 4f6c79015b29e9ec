#!/usr/bin/env bash
# update-check.sh — signed updates are refused unless signed by the owner:
# makes the owner's keys and a foreign key set, builds a bundle with each
# (scripts/build-bundle.sh), and checks with host `rauc` against the owner's
# keyring (the image's) that the owner's bundle verifies and that a
# foreign-signed bundle and a tampered bundle are refused — before anything
# is written (`rauc info` only reads and verifies).
#
# Needs rauc, squashfs-tools and openssl (Debian: apt-get install rauc
# squashfs-tools). Without them it fails under CI=true, and otherwise says
# SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in rauc mksquashfs openssl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
        echo "update-check: FAILED: missing ${missing[*]} (scripts/install-deps.sh installs them)" >&2
        exit 1
    fi
    echo "SKIPPED: update-check needs ${missing[*]} (apt-get install rauc squashfs-tools)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/update-keys.sh "$work/owner" --name "Test owner" >/dev/null
scripts/update-keys.sh "$work/foreign" --name "Someone else" >/dev/null
# Refuses to overwrite.
if scripts/update-keys.sh "$work/owner" >/dev/null 2>&1; then
    echo "update-check: FAILED: update-keys.sh overwrote existing keys" >&2
    exit 1
fi

mkdir -p "$work/root/usr/bin"
echo "kodama test root 2.0.0" > "$work/root/usr/bin/kodama-version"
# Incompressible filler: RAUC wants a bundle larger than one 4 KiB block.
head -c 65536 /dev/urandom > "$work/root/usr/bin/filler"
mksquashfs "$work/root" "$work/rootfs.img" -noappend -quiet >/dev/null

start=$(date +%s%N)
scripts/build-bundle.sh --keys "$work/owner" --rootfs "$work/rootfs.img" --version 2.0.0 "$work/owner.raucb" >/dev/null
built_ms=$(( ($(date +%s%N) - start) / 1000000 ))
scripts/build-bundle.sh --keys "$work/foreign" --rootfs "$work/rootfs.img" --version 2.0.0 "$work/foreign.raucb" >/dev/null

keyring="$work/owner/ca.cert.pem"
fail() { echo "update-check: FAILED: $*" >&2; exit 1; }

info=$(rauc info --keyring="$keyring" --output-format=shell "$work/owner.raucb" 2>&1) \
    || fail "the owner's bundle does not verify: $info"
grep -q "RAUC_MF_VERSION='2.0.0'" <<<"$info" || fail "version missing from the bundle: $info"
grep -q "RAUC_MF_COMPATIBLE='kodama-pizero2w'" <<<"$info" || fail "compatible missing: $info"

if out=$(rauc extract --keyring="$keyring" "$work/foreign.raucb" "$work/foreign-out" 2>&1); then
    fail "a bundle signed by a foreign key was accepted"
fi
[ ! -e "$work/foreign-out/rootfs.img" ] || fail "a foreign bundle's payload was written out"
grep -q "signature verification failed" <<<"$out" || fail "foreign bundle refused without a signature reason: $out"

# The payload is covered by the signed dm-verity root hash: reading it
# (`rauc extract`, as an install does) checks every block.
rauc extract --keyring="$keyring" "$work/owner.raucb" "$work/extracted" >/dev/null 2>&1 \
    || fail "the owner's bundle payload does not extract"
cmp -s "$work/extracted/rootfs.img" "$work/rootfs.img" || fail "extracted root filesystem differs"
cp "$work/owner.raucb" "$work/tampered.raucb"
# Flip one byte inside the payload (the squashfs), well before the signature.
printf '\xff' | dd of="$work/tampered.raucb" bs=1 seek=100 conv=notrunc status=none
if out=$(rauc extract --keyring="$keyring" "$work/tampered.raucb" "$work/tampered" 2>&1); then
    fail "a tampered bundle was accepted"
fi
grep -q "corrupted\|Verification" <<<"$out" || fail "tampered bundle refused without saying why: $out"
[ ! -e "$work/tampered/rootfs.img" ] || fail "a tampered bundle's payload was written out"

size=$(stat -c %s "$work/owner.raucb")
echo "update-check: owner-signed bundle verifies (${size} bytes, built in ${built_ms} ms); foreign-signed and tampered bundles refused"
