#!/usr/bin/env bash
# Runs Kodama's tests. Installs what they need first (apt-get, when root).
#
#   scripts/test.sh          # everything: workspace tests, the `pi` feature
#                            # build check, and (as root) the camera image:
#                            # aarch64 cross build + emulated boot that streams
#   scripts/test.sh --quick  # only the workspace tests
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
[ "${1:-}" = --quick ] && quick=true

scripts/install-deps.sh
echo "=== workspace tests"
cargo test --workspace

$quick && exit 0

echo "=== Debian package: built from the tested binary, installed with dpkg -i, unit verified"
bash scripts/deb-check.sh target/debug/kodama-server

echo "=== pi feature: libcamera + V4L2 encoder build check"
bash scripts/check-pi.sh

echo "=== web app: bundle matches sources, type check, browser tests (headless chromium)"
bash scripts/web-test.sh

echo "=== fuzz targets build (each decoder of outside input has one)"
bash scripts/fuzz.sh --build-only

echo "=== signed updates: owner-signed bundle verifies, foreign-signed and tampered refused"
bash scripts/update-check.sh

if [ "$(id -u)" -eq 0 ]; then
    echo "=== camera image: cross build, emulated boot, streaming"
    bash ci/image-check.sh
else
    echo "SKIPPED: the camera image check needs root (apt-get, loop devices); run: sudo ci/image-check.sh"
fi
