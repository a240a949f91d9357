#!/usr/bin/env bash
# Tests of the browser SDK (clients/js) and the web console (clients/console) on a fresh
# Debian machine: installs what is missing (Debian's chromium, redis-server, the npm
# packages of each package-lock.json), builds and type-checks both (strict), checks that
# the console's committed build output (clients/console/dist, embedded in the server) is
# what its sources give, runs their unit tests, then their end-to-end tests in headless
# Chromium against real roomcast and redis-server processes.
#
# Needs the server binary: target/debug/roomcast (built by `cargo test`), or ROOMCAST_BIN.
# Usage: bash scripts/test-js.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*"; }

sudo_cmd=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo_cmd apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

# The browser tests use Debian's Chromium through Playwright's executablePath; a browser
# download (npx playwright install) is neither needed nor reachable.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  log "installing chromium"
  apt_install chromium
fi
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server"
  apt_install redis-server
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing node and npm"
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Node 20 or newer is needed (found $(node --version))" >&2
  exit 1
fi

export ROOMCAST_BIN="${ROOMCAST_BIN:-$root/target/debug/roomcast}"
if [ ! -x "$ROOMCAST_BIN" ]; then
  log "building the roomcast binary"
  cargo build --quiet --bin roomcast
fi

cd clients/js
log "npm ci (clients/js)"
npm ci --no-audit --no-fund --loglevel=error

log "build and strict type check"
npx tsc -p tsconfig.json
# The published declarations, as an application uses them (strict, DOM WebSocket).
npx tsc -p test/types/tsconfig.json
bash scripts/size.sh

log "unit tests"
timeout --kill-after=10 120 node --test test/unit/

log "end-to-end tests in headless Chromium ($CHROMIUM_PATH, roomcast at $ROOMCAST_BIN)"
# One test file at a time: the machine has 2 cores and every file starts its own servers.
timeout --kill-after=15 300 node --test --test-concurrency=1 test/e2e/

cd "$root/clients/console"
log "npm ci (clients/console)"
npm ci --no-audit --no-fund --loglevel=error

log "console: strict type check, and dist/ against a fresh build"
npx tsc -p tsconfig.json
node scripts/build.mjs --check

log "console: unit tests"
timeout --kill-after=10 120 node --test test/unit/

log "console: end-to-end tests in headless Chromium (screenshots in clients/console/test/artifacts)"
timeout --kill-after=15 400 node --test --test-concurrency=1 test/e2e/
