#!/usr/bin/env bash
# The web app's checks: the committed bundle (server/web/dist/app.js) matches
# its TypeScript sources, the sources type-check, and the browser tests run
# in headless Debian chromium (playwright-core) against a real server with a
# simulated camera. Needs node/npm and chromium (scripts/install-deps.sh
# installs them as root). Under CI=true a missing tool fails.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v npm >/dev/null || missing+=(npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
        echo "FAILED: the web app tests need ${missing[*]} (apt-get install nodejs npm chromium)" >&2
        exit 1
    fi
    echo "SKIPPED: the web app tests need ${missing[*]} (sudo apt-get install nodejs npm chromium)"
    exit 0
fi

cd server/web
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent check
cd ../..
cargo build --quiet -p kodama-server -p kodama-sim --bins
# The camera with the synthetic source (test equipment). Its own build: beside
# another -p, --features kodama-firmware/synthetic would not reach the camera.
cargo build --quiet -p kodama-firmware --bins --features synthetic
cd server/web
npm test
