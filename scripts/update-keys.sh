#!/usr/bin/env bash
# update-keys.sh — make the owner's update CA and signing key for signed
# camera updates (RAUC bundles; docs/design/updates.md).
#
# Usage: scripts/update-keys.sh DIR [--name "Owner name"]
#
# Writes into DIR (created, 0700):
#   ca.key.pem       the CA's private key: keep it offline
#   ca.cert.pem      the CA certificate: the camera image's RAUC keyring
#   signing.key.pem  the key bundles are signed with (scripts/build-bundle.sh)
#   signing.cert.pem its certificate, issued by the CA (2 years)
# Refuses to overwrite existing keys.
set -euo pipefail

dir=${1:?usage: update-keys.sh DIR [--name NAME]}
shift
owner="Kodama owner"
while [ $# -gt 0 ]; do
    case "$1" in
        --name) owner=${2:?--name needs a value}; shift 2 ;;
        *) echo "update-keys: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
command -v openssl >/dev/null || { echo "update-keys: needs openssl (apt-get install openssl)" >&2; exit 1; }
if [ -e "$dir/ca.key.pem" ] || [ -e "$dir/signing.key.pem" ]; then
    echo "update-keys: $dir already holds keys; not overwriting them" >&2
    exit 1
fi
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key.pem" -out "$dir/ca.cert.pem" \
    -days 3650 -subj "/O=$owner/CN=Kodama update CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req "${ec[@]}" -keyout "$dir/signing.key.pem" -out "$dir/signing.csr.pem" \
    -subj "/O=$owner/CN=Kodama update signing" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' > "$dir/signing.ext"
openssl x509 -req -in "$dir/signing.csr.pem" -CA "$dir/ca.cert.pem" -CAkey "$dir/ca.key.pem" \
    -CAcreateserial -days 730 -extfile "$dir/signing.ext" -out "$dir/signing.cert.pem" 2>/dev/null
rm -f "$dir/signing.csr.pem" "$dir/signing.ext" "$dir/ca.cert.srl"
chmod 644 "$dir/ca.cert.pem" "$dir/signing.cert.pem"
echo "update keys in $dir: keyring ca.cert.pem (goes into the image), sign with signing.key.pem + signing.cert.pem; keep ca.key.pem offline"
