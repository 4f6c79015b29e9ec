#!/usr/bin/env bash
# Checks that a recorded segment (or export) plays in a browser's <video>:
# headless Chromium loads it from a local file, seeks near the end and
# reports readyState, duration and picture size. Needs Debian's chromium
# (apt-get install chromium). Talks to nothing but the local file.
#
#   scripts/browser-check.sh demo-data/recordings/<camera>/<day>/<time>.mp4
set -euo pipefail
mp4=$(realpath "${1:?usage: $0 FILE.mp4}")
command -v chromium >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$mp4" "$work/clip.mp4"
cat >"$work/check.html" <<'HTML'
<!doctype html><html><body>
<video id="v" src="clip.mp4" muted preload="auto"></video><pre id="out">no metadata</pre>
<script>
const v = document.getElementById('v'), out = document.getElementById('out');
const report = (what) => out.textContent = what + ' readyState=' + v.readyState +
  ' duration=' + v.duration.toFixed(2) + ' size=' + v.videoWidth + 'x' + v.videoHeight +
  ' time=' + v.currentTime.toFixed(2) + ' error=' + (v.error ? v.error.code : 'none');
v.addEventListener('loadedmetadata', () => { report('metadata'); v.currentTime = Math.max(0, v.duration - 0.5); });
v.addEventListener('seeked', () => report('seeked'));
v.addEventListener('error', () => report('error'));
</script></body></html>
HTML
result=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --allow-file-access-from-files --virtual-time-budget=8000 \
    --dump-dom "file://$work/check.html" 2>/dev/null | sed -n 's/.*<pre id="out">\([^<]*\).*/\1/p')
echo "$result"
case "$result" in
    seeked*"readyState=4"*"error=none"*) echo "plays in Chromium" ;;
    *) echo "does not play in Chromium" >&2; exit 1 ;;
esac
