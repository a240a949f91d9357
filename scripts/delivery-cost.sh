#!/usr/bin/env bash
# Measures two figures that do not depend on how busy the machine is, so a change can be
# compared with its base on a shared box:
#
#   1. instructions per delivery: one instance (embedded broker) runs under callgrind
#      while roomcast-load delivers a fixed number of messages to a fixed number of
#      subscribers; the same run without messages is subtracted (start-up, connects,
#      subscribes, timers), and the difference is divided by the deliveries;
#   2. KiB per idle connection: the idle-50k scenario scaled down to 2,000 connections
#      (the load tester's "memory per connection" of the started instance).
#
# Usage: bash scripts/delivery-cost.sh [BIN_DIR]   (default target/release; it must hold
# roomcast and roomcast-load: cargo build --release --workspace --bins)
# Needs valgrind. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(cd "${1:-target/release}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-cost.XXXXXX")"
trap 'rm -rf "$work"' EXIT

USERS=200
RATE=10
SECS=10

scenario() { # name rate
  cat >"$work/$1.toml" <<EOF
name = "cost-$1"
description = "fixed deliveries for an instruction count"
targets = ["$URL"]
users = $USERS
ramp_up_secs = 2
duration_secs = $SECS
encoding = "msgpack"

[rooms]
count = 1
per_user = 1

[publish]
rate_per_room = $2
publishers = 1
message_bytes = 100
EOF
}

# Instructions a server executed during one load run at `rate` messages per second.
instructions() { # rate
  local out="$work/callgrind.$1.out" log="$work/server.$1.log"
  env -u RUST_LOG -u DATABASE_URL \
    ROOMCAST_LISTEN=127.0.0.1:0 ROOMCAST_LOG__FORMAT=json ROOMCAST_LOG__LEVEL=info \
    ROOMCAST_DATABASE_URL="sqlite://$work/db.$1?mode=rwc" ROOMCAST_REDIS_URL= \
    ROOMCAST_DRAIN__WINDOW_MS=100 \
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/roomcast" >"$log" 2>"$work/valgrind.$1.log" &
  local pid=$!
  for _ in $(seq 600); do
    URL=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: v=json.loads(l)
    except Exception: continue
    if v.get("message")=="roomcast listening": print(v["addr"]); break' "$log" 2>/dev/null || true)
    [ -n "$URL" ] && break
    sleep 0.1
  done
  [ -n "$URL" ] || { echo "the server did not start; see $log" >&2; kill "$pid"; exit 2; }
  URL="ws://$URL/ws"
  scenario "r$1" "$1"
  "$bin/roomcast-load" run "$work/r$1.toml" --report-dir "$work/report.$1" --quiet >"$work/load.$1.log" 2>&1 \
    || { echo "load run failed; see $work/load.$1.log" >&2; cat "$work/load.$1.log" >&2; }
  kill -TERM "$pid"
  wait "$pid" || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

base=$(instructions 0)
loaded=$(instructions "$RATE")
deliveries=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["deliveries"]["received"])' "$work/report.$RATE/report.json")
echo "instructions: base run $base, loaded run $loaded, deliveries $deliveries"
python3 -c "print('instructions per delivery: %.0f' % (($loaded - $base) / $deliveries))"

"$bin/roomcast-load" run loadtest/scenarios/idle-50k.toml --users 2000 \
  --report-dir "$work/idle" --quiet >"$work/idle.log" 2>&1 || true
python3 - "$work/idle/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for server in report.get("servers", []):
    kib = server.get("kib_per_connection")
    if kib is not None:
        print("KiB per idle connection (2,000 connections): %.2f" % kib)
EOF
