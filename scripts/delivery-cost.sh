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
# With --redis it measures the work around each publication instead, where a small
# fan-out at a low rate makes it weigh (as in `5k-users-2-instances`): the instance uses
# a redis-server of its own on a free port, and 400 subscribers in 20 rooms (20 each)
# get one message a second per room for 40 s from a publisher on the same instance, so
# the count covers the whole publish path (the client's frame, the call to Redis, the
# ack), the Pub/Sub read and the fan-out. It prints instructions per publication and
# per delivery, and skips the idle figure.
#
# Usage: bash scripts/delivery-cost.sh [--redis] [BIN_DIR]   (default target/release;
# it must hold roomcast and roomcast-load: cargo build --release --workspace --bins)
# Needs valgrind (and redis-server with --redis). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
REDIS=
if [ "${1:-}" = "--redis" ]; then REDIS=1; shift; fi
bin="$(cd "${1:-target/release}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-cost.XXXXXX")"
redis_pid=
# KEEP=1 keeps the callgrind outputs for callgrind_annotate (the folder is printed).
trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi' EXIT

if [ -n "$REDIS" ]; then
  USERS=400 ROOMS=20 RATE=1 SECS=40
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" &
  redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  REDIS_URL="redis://127.0.0.1:$port"
else
  USERS=200 ROOMS=1 RATE=10 SECS=10
  REDIS_URL=
fi

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
count = $ROOMS
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
    ROOMCAST_DATABASE_URL="sqlite://$work/db.$1?mode=rwc" ROOMCAST_REDIS_URL="$REDIS_URL" \
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
publications=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["publishes"]["acked"])' "$work/report.$RATE/report.json")
echo "instructions: base run $base, loaded run $loaded, publications $publications, deliveries $deliveries"
python3 -c "print('instructions per delivery: %.0f' % (($loaded - $base) / $deliveries))"
if [ -n "$REDIS" ]; then
  python3 -c "print('instructions per publication (%d subscribers each): %.0f' % ($deliveries / max($publications, 1), ($loaded - $base) / max($publications, 1)))"
  exit 0
fi

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
