#!/usr/bin/env bash
# Runs the publish-path scenario interleaved for two builds (before, after, before, …)
# and prints each run's figures and the medians, read from each run's report.json:
# publishes/s, CPU per publish of the instances and of Redis, publishes per Redis call,
# the Redis-alone line, latency, and the instances' socket system calls per publish
# (counted with `perf stat` on syscall tracepoints for 8 s in the middle of each run;
# per publish = count ÷ (the run's publishes/s × 8 s)).
#
# Each build is a directory holding `roomcast` and `roomcast-load` (release binaries,
# e.g. copied from target/release of two checkouts): each run uses that build's load
# tester too, so the Redis-alone line measures that build's publish function.
#
# Usage: bash scripts/publish-path-compare.sh BEFORE_DIR AFTER_DIR [RUNS] [OUT_DIR]
# Needs perf with tracepoint access. Takes about 50 s per run.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(realpath "$1")
after=$(realpath "$2")
runs="${3:-3}"
out="${4:-target/publish-path-compare}"
mkdir -p "$out"
out=$(realpath "$out")

measure() { # build-dir run-dir
  local build=$1 dir=$2
  mkdir -p "$dir"
  sed -e "s#^redis = true#redis = true\nbinary = \"$build/roomcast\"#" \
    loadtest/scenarios/publish-path.toml >"$dir/scenario.toml"
  uptime >"$dir/load"
  "$build/roomcast-load" run "$dir/scenario.toml" --report-dir "$dir/report" --quiet \
    >"$dir/loader.log" 2>&1 &
  local loader=$!
  sleep 14
  local pids
  pids=$(pgrep -f "^$build/roomcast( |$)" -d,)
  perf stat -x, -o "$dir/syscalls.csv" -p "$pids" \
    -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom' \
    -- sleep 8
  wait "$loader" || echo "run $dir: the load tester failed" >&2
}

for i in $(seq "$runs"); do
  measure "$before" "$out/before-$i"
  measure "$after" "$out/after-$i"
done

python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
runs = {}
for d in sorted(glob.glob(sys.argv[1] + "/*-*")):
    build = os.path.basename(d).split("-")[0]
    report = json.load(open(d + "/report/report.json"))
    cpu, alone = report["cpu_per_publish"], report["redis_limit"] or {}
    r = {
        "publishes/s": report["publishes"]["per_second"],
        "instances µs": cpu["instances_us"],
        "user µs": cpu["instances_user_us"],
        "system µs": cpu["instances_system_us"],
        "Redis µs": cpu["redis_us"],
        "per Redis call": report.get("publishes_per_redis_call") or 0.0,
        "alone publishes/s": alone.get("per_second", 0.0),
        "alone µs": alone.get("redis_cpu_us_per_call", 0.0),
        "p50 ms": report["latency_ms"]["p50"],
        "p99 ms": report["latency_ms"]["p99"],
    }
    for line in open(d + "/syscalls.csv"):
        cells = line.strip().split(",")
        if len(cells) > 2 and "sys_enter_" in cells[2] and cells[0].isdigit():
            r[cells[2].split("sys_enter_")[1] + "/publish"] = int(cells[0]) / (r["publishes/s"] * 8)
    runs.setdefault(build, []).append(r)
    a = report["accounting"]
    print(os.path.basename(d), ", ".join(f"{k} {a[k]}" for k in ("missing", "duplicated", "out_of_order", "foreign_epoch")))
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
for build, rs in runs.items():
    print("median", build)
    print("  " + ", ".join(f"{k} {statistics.median(r[k] for r in rs):.2f}" for k in rs[0]))
PY
