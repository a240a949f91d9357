#!/usr/bin/env bash
# Builds roomcast and roomcast-load in release mode and runs one scenario against a
# local topology the scenario starts itself (Redis on a free port, N instances):
#
#   loadtest/run.sh failover-kill            # a shipped scenario, by name
#   loadtest/run.sh my-scenario.toml --users 2000
#
# Extra arguments go to `roomcast-load run` (see `--help`). Reports land in
# target/roomcast-load/NAME/ (report.json, report.html, the servers' logs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: loadtest/run.sh SCENARIO [roomcast-load run options]" >&2
  ls loadtest/scenarios >&2
  exit 2
fi
scenario=$1
shift
[[ -f $scenario ]] || scenario=loadtest/scenarios/$scenario.toml
if ! command -v redis-server >/dev/null 2>&1 && ! grep -q '^redis = false' "$scenario"; then
  echo "this scenario starts redis-server; install it (apt-get install redis-server)" >&2
  exit 2
fi
cargo build --release --locked --bins -p roomcast -p roomcast-load
exec target/release/roomcast-load run "$scenario" "$@"
