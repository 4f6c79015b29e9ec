#!/usr/bin/env bash
# Builds (and runs, for a while) every cargo-fuzz target in fuzz/.
# cargo-fuzz needs nightly features; the stable toolchain allows them with
# RUSTC_BOOTSTRAP=1.
#
#   scripts/fuzz.sh                 # each target for 30 s
#   scripts/fuzz.sh --seconds 300   # longer
#   scripts/fuzz.sh --build-only    # just prove every target compiles (cargo fuzz check)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
build_only=false
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --build-only) build_only=true; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
targets=$(cd fuzz && cargo fuzz list)
if $build_only; then
    (cd fuzz && cargo fuzz check --dev)
    echo "fuzz targets compile: $(echo "$targets" | wc -l)"
    exit 0
fi
for t in $targets; do
    echo "=== fuzzing $t for ${seconds}s"
    (cd fuzz && cargo fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048)
done
