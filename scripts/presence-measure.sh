#!/usr/bin/env bash
# Presence figures quoted in docs/cluster.md ("Presence", "Measured"):
#  1. Redis memory per presence entry (MEMORY USAGE of a room's four keys / entries),
#  2. presence_stats (and presence) latency for a room of $ENTRIES entries, over HTTP,
#     and the script's own time in Redis (INFO commandstats),
#  3. server and Redis CPU of a reconnect storm of $CLIENTS clients (kill -9 of the
#     instance they were on; all reconnect to the other) with presence on and off.
# Needs a release build: cargo build --release --bin roomcast --example presence_storm
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/roomcast
STORM=target/release/examples/presence_storm
ENTRIES=${ENTRIES:-10000}
CLIENTS=${CLIENTS:-1000}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis did not start" >&2; exit 1
}

# start_instance NODE_ID ROOMS -> sets INSTANCE_PID and INSTANCE_ADDR
start_instance() {
  local port; port=$(free_port)
  ROOMCAST_LISTEN=127.0.0.1:$port ROOMCAST_NODE_ID=$1 ROOMCAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
  ROOMCAST_DATABASE_URL="sqlite://$WORK/$1.db?mode=rwc" ROOMCAST_LOG__LEVEL=warn \
  ROOMCAST_PRESENCE__ROOMS="$2" ROOMCAST_PRESENCE__HEARTBEAT_MS=1000 ROOMCAST_PRESENCE__TTL_MS=3000 \
  ROOMCAST_RATE_LIMITS__USER_READS_PER_SECOND=1000000 ROOMCAST_RATE_LIMITS__USER_READ_BURST=1000000 \
  ROOMCAST_CONNECTION__MAX_CONNECTIONS_PER_USER=100000 "$BIN" >"$WORK/$1.log" 2>&1 &
  INSTANCE_PID=$!; PIDS+=("$INSTANCE_PID")
  INSTANCE_ADDR=127.0.0.1:$port
  for _ in $(seq 200); do curl -fs "http://$INSTANCE_ADDR/readyz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "roomcast $1 did not become ready" >&2; cat "$WORK/$1.log" >&2; exit 1
}

# load_entries ROOM N WITH_INFO: N entries written through presence.lua (batches of 200)
load_entries() {
  python3 - "$1" "$2" "$3" <<'PY' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import json, sys, uuid
sys.path.insert(0, "scripts")
from resp import resp
room, n, with_info = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
script = open("src/broker/redis/presence.lua", "rb").read()
keys = [f"rc:{{{room}}}:{s}".encode() for s in ("pr", "prx", "pru", "prv")]
batch = []
for i in range(n):
    entry = {"user": f"user-{i:05d}", "conn": str(uuid.uuid4()), "node": "3f9a1c2e", "joined": 1796189407861 + i}
    if with_info:
        entry["info"] = {"name": f"User {i:05d}"}
    batch += [entry["conn"], entry["user"], json.dumps(entry, separators=(",", ":"))]
    if len(batch) == 600 or i == n - 1:
        sys.stdout.buffer.write(resp([b"EVAL", script, b"4", *keys, b"add", b"3600000", *batch]))
        batch = []
PY
}

room_bytes() {
  local total=0
  for suffix in pr prx pru prv; do
    bytes=$(redis-cli -p "$REDIS_PORT" MEMORY USAGE "rc:{$1}:$suffix" SAMPLES 0)
    total=$((total + ${bytes:-0}))
  done
  echo "$total"
}

percentiles() { sort -n | awk '{a[NR]=$1} END {printf "p50 %.2f ms, p99 %.2f ms (n=%d)\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000, NR}'; }

echo "== 1. Redis memory per entry ($ENTRIES entries per room)"
start_redis
load_entries "bench:plain" "$ENTRIES" 0
load_entries "bench:info" "$ENTRIES" 1
for room in bench:plain bench:info; do
  bytes=$(room_bytes "$room")
  echo "$room: $bytes bytes for $(redis-cli -p "$REDIS_PORT" HLEN "rc:{$room}:pr") entries = $((bytes / ENTRIES)) bytes per entry"
done

echo "== 2. presence_stats latency, room of $ENTRIES entries, one instance, HTTP"
start_instance bench-a "bench:*"
redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
for _ in $(seq 500); do curl -s -o /dev/null -w '%{time_total}\n' "http://$INSTANCE_ADDR/api/v1/rooms/bench:plain/presence/stats"; done | percentiles | sed 's/^/presence_stats: /'
echo "  in Redis: $(redis-cli -p "$REDIS_PORT" INFO commandstats | grep -E '^cmdstat_evalsha' | tr -d '\r')"
curl -s "http://$INSTANCE_ADDR/api/v1/rooms/bench:plain/presence/stats"; echo
redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
for _ in $(seq 50); do curl -s -o /dev/null -w '%{time_total}\n' "http://$INSTANCE_ADDR/api/v1/rooms/bench:plain/presence"; done | percentiles | sed 's/^/presence (whole set): /'
echo "  in Redis: $(redis-cli -p "$REDIS_PORT" INFO commandstats | grep -E '^cmdstat_evalsha' | tr -d '\r')"
kill -9 "$INSTANCE_PID"; kill -9 "$REDIS_PID"; wait 2>/dev/null || true

storm() { # storm on|off
  start_redis
  local rooms="" flag=""
  if [ "$1" = on ]; then rooms="issue:*"; flag="--presence"; fi
  start_instance storm-a "$rooms"; local a_pid=$INSTANCE_PID a_addr=$INSTANCE_ADDR
  start_instance storm-b "$rooms"; local b_pid=$INSTANCE_PID b_addr=$INSTANCE_ADDR
  "$STORM" "ws://$a_addr/ws" "ws://$b_addr/ws" "$CLIENTS" issue:storm $flag >"$WORK/storm.out" 2>&1 &
  local storm_pid=$!; PIDS+=("$storm_pid")
  for _ in $(seq 1200); do grep -q ready "$WORK/storm.out" && break; sleep 0.05; done
  grep -q ready "$WORK/storm.out" || { cat "$WORK/storm.out" >&2; exit 1; }
  sleep 2 # the join storm on A is over; measure the reconnect only
  local b0 r0 t0; b0=$(cpu_ticks "$b_pid"); r0=$(cpu_ticks "$REDIS_PID"); t0=$(date +%s.%N)
  kill -9 "$a_pid"
  wait "$storm_pid"
  local b1 r1 t1; b1=$(cpu_ticks "$b_pid"); r1=$(cpu_ticks "$REDIS_PID"); t1=$(date +%s.%N)
  echo "presence $1: $(grep settled "$WORK/storm.out")"
  awk -v b="$((b1 - b0))" -v r="$((r1 - r0))" -v t="$(echo "$t1 - $t0" | bc)" -v hz="$TCK" -v n="$CLIENTS" \
    'BEGIN {printf "  until settled: %.2f s wall; instance B CPU %.2f s (%.2f ms per client), Redis CPU %.2f s\n", t, b/hz, b/hz*1000/n, r/hz}'
  kill -9 "$b_pid" "$REDIS_PID" 2>/dev/null || true; wait 2>/dev/null || true
}

echo "== 3. reconnect storm of $CLIENTS clients (kill -9 of A, all to B)"
storm off
storm on
