#!/usr/bin/env bash
# Runs one load-test scenario interleaved for two set-ups (A, B, A, B, …) and prints
# each run's server CPU per delivery, the bare-send floor measured beside it, the
# difference, the latency, the instances' runtime threads and the accounting, then the
# medians of each set-up. Runs
# alternate so that both set-ups see the same drift of a shared machine.
#
# A set-up is a directory holding release `roomcast` and `roomcast-load` binaries,
# optionally followed by settings for the started instances:
#
#   bash scripts/scenario-compare.sh 5k-users-2-instances \
#     /tmp/main /tmp/main,ROOMCAST_RUNTIME__WORKER_THREADS=1 3
#
# Usage: bash scripts/scenario-compare.sh SCENARIO A B [RUNS] [OUT_DIR]
# SCENARIO is a shipped scenario's name or a file with a [spawn] section and no `env`
# of its own. Each run takes the scenario's time plus its floor measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=$1
[[ -f $scenario ]] || scenario=loadtest/scenarios/$scenario.toml
runs="${4:-3}"
out="${5:-target/scenario-compare}"
mkdir -p "$out"
out=$(realpath "$out")

measure() { # set-up run-dir
  local build=${1%%,*} settings= dir=$2
  build=$(realpath "$build")
  [[ $1 == *,* ]] && settings=${1#*,}
  local env="" pair
  IFS=, read -ra pairs <<<"$settings"
  for pair in "${pairs[@]}"; do
    env+="${env:+, }${pair%%=*} = \"${pair#*=}\""
  done
  mkdir -p "$dir"
  sed -e "s#^\[spawn\]#[spawn]\nbinary = \"$build/roomcast\"\nenv = { $env }#" \
    "$scenario" >"$dir/scenario.toml"
  echo "$1" >"$dir/setup"
  "$build/roomcast-load" run "$dir/scenario.toml" --report-dir "$dir/report" --quiet \
    >"$dir/loader.log" 2>&1 || echo "run $dir: the load tester failed (see loader.log)" >&2
}

for i in $(seq "$runs"); do
  measure "$2" "$out/A-$i"
  measure "$3" "$out/B-$i"
done

python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
runs = {}
for d in sorted(glob.glob(sys.argv[1] + "/[AB]-*")):
    side = os.path.basename(d).split("-")[0]
    report = json.load(open(d + "/report/report.json"))
    cpu = report["server_cpu_per_delivery"]
    floor = (report.get("send_floor") or {}).get("cpu_us_per_send", 0.0)
    r = {
        "µs per delivery": cpu["instances_us"],
        "floor µs": floor,
        "over the floor µs": cpu["instances_us"] - floor,
        "p50 ms": report["latency_ms"]["p50"],
        "p99 ms": report["latency_ms"]["p99"],
        "runtime threads per instance": min(
            s.get("runtime_threads") or 0 for s in report["servers"] if s["name"].startswith("instance")
        ),
    }
    runs.setdefault(side, (open(d + "/setup").read().strip(), []))[1].append(r)
    a = report["accounting"]
    faults = ", ".join(f"{k} {a[k]}" for k in ("missing", "duplicated", "out_of_order"))
    print(f"{os.path.basename(d)}: received {a['received']}, {faults}")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
for side, (setup, rs) in sorted(runs.items()):
    print(f"median {side} ({setup})")
    print("  " + ", ".join(f"{k} {statistics.median(r[k] for r in rs):.2f}" for k in rs[0]))
PY
