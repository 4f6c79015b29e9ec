#!/usr/bin/env bash
# Runs a Kodama server with simulated cameras on this machine, offline
# (loopback only: no relays, no address lookup, no port mapping).
#
#   scripts/demo.sh                 # 3 cameras, until Ctrl-C
#   scripts/demo.sh --cameras 5 --duration 60
#   sudo scripts/demo.sh --testbed  # one camera with Wi-Fi and cellular in a
#                                   # network test bed; its Wi-Fi is cut every
#                                   # minute (link down / silent black hole);
#                                   # its adaptive bitrate follows the link
set -euo pipefail
cd "$(dirname "$0")/.."

cameras=3
duration=0
port=7070
testbed=false
while [ $# -gt 0 ]; do
    case "$1" in
        --cameras) cameras="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --testbed) testbed=true; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

scripts/install-deps.sh

if $testbed; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "--testbed builds network namespaces: run as root (sudo scripts/demo.sh --testbed)" >&2
        exit 1
    fi
    echo "building (first time: a few minutes)…"
    cargo build --quiet -p kodama-server -p kodama-testbed --bins
    cargo build --quiet -p kodama-firmware --bins --features synthetic
    mkdir -p demo-data-testbed
    echo "camera 'bedcam' streams over Wi-Fi (wifi0) with cellular (cell0) as warm standby;"
    echo "watch it fail over and come back, and its tier follow the link (4 Mbit/s on Wi-Fi, less on"
    echo "cellular). Recordings: demo-data-testbed/recordings. Ctrl-C stops."
    args=(demo --data-dir "$PWD/demo-data-testbed")
    [ "$duration" != 0 ] && args+=(--duration "$duration")
    exec target/debug/kodama-testbed "${args[@]}"
fi

echo "building (first time: a few minutes)…"
# The demo's cameras stream the test pattern (the `synthetic` feature: test
# equipment, never in the SD-card image's firmware); kodama-sim plays each
# camera's SIM7600 and GPS on pseudo-terminals, outside the camera process.
cargo build --quiet -p kodama-server -p kodama-sim --bins
cargo build --quiet -p kodama-firmware --bins --features synthetic
bin=target/debug
data=demo-data
mkdir -p "$data/cameras"
server=("$bin/kodama-server" --data-dir "$data" --listen "127.0.0.1:$port" --offline)

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# `id` first: it creates the server's key, which `run` then reads (two
# processes creating it at once would race).
server_id=$("${server[@]}" id)
"${server[@]}" run >"$data/server.out" 2>"$data/server.log" &
pids+=($!)

for i in $(seq 1 "$cameras"); do
    key="$data/cameras/cam-$i.key"
    conf="$data/cameras/cam-$i.toml"
    # Each simulated camera has a simulated SIM7600 (a pty speaking its AT
    # dialect) and a simulated GPS driving a circle near its own spot, served
    # by kodama-sim on ptys the camera opens like /dev/ttyUSB2 and /dev/ttyUSB1.
    at="$data/cameras/cam-$i.at"
    nmea="$data/cameras/cam-$i.nmea"
    "$bin/kodama-sim" --at "$at" --nmea "$nmea" --scenario healthy \
        --lat "$(awk "BEGIN { printf \"%.4f\", 35.6586 + $i * 0.01 }")" --lon 139.7454 \
        >"$data/cameras/cam-$i.sim.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do [ -e "$at" ] && [ -e "$nmea" ] && break; sleep 0.1; done
    [ -e "$at" ] && [ -e "$nmea" ] || { echo "kodama-sim did not start; see $data/cameras/cam-$i.sim.log" >&2; exit 1; }
    cat >"$conf" <<TOML
[camera]
name = "cam-$i"
key_path = "$key"

[server]
node_id = "$server_id"
addrs = ["127.0.0.1:$port"]

[network]
offline = true

[video]
source = "synthetic"
width = 640
height = 480
fps = 30
bitrate_kbps = 1000
# Test equipment: a moving block for 4 s of every 30, so the events page and
# the timeline have motion to show.
synthetic_motion = { every_s = 30, for_s = 4 }

[modem]
enabled = true
port = "$at"
apn = "internet"

[gnss]
port = "$nmea"
TOML
    id=$("$bin/kodama-camera" id --config "$conf")
    "${server[@]}" allow add "$id" --camera --label "cam-$i" >/dev/null
    "$bin/kodama-camera" --config "$conf" >"$data/cameras/cam-$i.log" 2>&1 &
    pids+=($!)
done

sleep 2
cat "$data/server.out"
web_url=$(sed -n 's/^  web app: //p' "$data/server.out")
if [ -s "$data/web-setup-link" ]; then
    web_line="Open the web app and create its admin account (one-time link): $(cat "$data/web-setup-link")"
else
    web_line="Open the web app and log in: $web_url"
fi
cat <<MSG

$web_line
MSG
cat <<MSG

Demo running: $cameras simulated cameras stream H.264 to the server over iroh (offline, loopback).
  server log:   $data/server.log
  camera logs:  $data/cameras/cam-N.log (modem/GPS simulators: cam-N.sim.log)
Watch a camera in another terminal:
  $bin/kodama-server --data-dir $data --listen 127.0.0.1:$port --offline view --camera cam-1
Play it (needs ffmpeg):
  $bin/kodama-server --data-dir $data --listen 127.0.0.1:$port --offline view --camera cam-1 --output - | ffplay -
Stop with Ctrl-C.
MSG

if [ "$duration" -gt 0 ]; then
    sleep "$duration"
else
    wait "${pids[0]}"
fi
