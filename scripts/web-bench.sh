#!/usr/bin/env bash
# The web app's figures (headless chromium): time to first frame, browser
# capture-to-display latency p50/p99, server CPU per browser viewer.
#   scripts/web-bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --profile bench -p kodama-server -p kodama-sim --bins
cargo build --quiet --profile bench -p kodama-firmware --bins --features synthetic
cd server/web
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
KODAMA_PROFILE=release node scripts/bench.mjs "$@"
