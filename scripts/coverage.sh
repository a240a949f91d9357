#!/usr/bin/env bash
# Measures line coverage of the Rust test suite (unit, integration — including the
# roomcast processes the integration tests start — and the load tester's tests) with
# cargo-llvm-cov, and writes:
#   target/coverage/summary.txt    per file, as cargo llvm-cov prints it
#   target/coverage/modules.txt    per module folder of src/ (what docs/coverage.md quotes)
#   target/coverage/html/          the browsable report (with --html)
#
# Usage: bash scripts/coverage.sh [--html]
# Needs llvm-cov/llvm-profdata of rustc's LLVM major version: rustup's llvm-tools
# component when it can be installed, else Debian's llvm-N package (installed here when
# missing). An instrumented build of its own (target/llvm-cov-target): expect ~10 minutes
# on 2 cores. Not part of the test command: it measures, it does not assert.
set -euo pipefail
cd "$(dirname "$0")/.."

html=""
[ "${1:-}" = "--html" ] && html=1

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  if [ ! -x "/usr/lib/llvm-$llvm_major/bin/llvm-cov" ]; then
    sudo_cmd=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "llvm-$llvm_major" >/dev/null
  fi
  export LLVM_COV="/usr/lib/llvm-$llvm_major/bin/llvm-cov"
  export LLVM_PROFDATA="/usr/lib/llvm-$llvm_major/bin/llvm-profdata"
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
  cargo install cargo-llvm-cov --locked
fi

mkdir -p target/coverage
# Run every test even when one fails (a timing-sensitive test can fail under
# instrumentation): the figures then miss only that test's share, and it is listed.
cargo llvm-cov clean --workspace
cargo llvm-cov --workspace --locked --no-report --ignore-run-fail 2>&1 \
  | tee target/coverage/test-output.txt | grep -E '^test result|FAILED|failures:' || true
cargo llvm-cov report --summary-only > target/coverage/summary.txt
if [ -n "$html" ]; then
  cargo llvm-cov report --html --output-dir target/coverage
fi

# Lines per module folder (src/broker, src/room, …; files directly in src/ by name).
python3 - <<'EOF' | tee target/coverage/modules.txt
import collections, re
rows = collections.OrderedDict()
total = [0, 0]
for line in open("target/coverage/summary.txt"):
    parts = line.split()
    if len(parts) < 10 or not parts[0].endswith(".rs"):
        continue
    path = parts[0]
    # Columns: regions, missed, cover, functions, missed, executed, lines, missed, cover, …
    lines, missed = int(parts[7]), int(parts[8])
    # Paths are relative to src/ (the server) or name loadtest/ (the load tester).
    path = re.sub(r"^.*?/?src/", "", path) if "loadtest" not in path else path
    if "loadtest" in path:
        key = "loadtest"
    elif "/" in path:
        key = path.split("/")[0] + "/"
    else:
        key = path
    counts = rows.setdefault(key, [0, 0])
    counts[0] += lines
    counts[1] += missed
    total[0] += lines
    total[1] += missed
print(f"{'module':32} {'lines':>7} {'covered':>8}")
for key, (lines, missed) in sorted(rows.items()):
    print(f"{key:32} {lines:7} {100 * (lines - missed) / max(lines, 1):7.1f}%")
print(f"{'total':32} {total[0]:7} {100 * (total[0] - total[1]) / max(total[0], 1):7.1f}%")
EOF
