#!/usr/bin/env bash
# Instructions Redis executes per publish, for the publish function of this checkout and,
# given a git revision, for the publish script of that revision: a figure that does not
# depend on how busy the machine is.
#
# redis-server runs under callgrind; the calls (100 rooms in turn, a 150-byte body, one
# idempotency key each, the broker's default history settings) are sent pipelined with
# `redis-cli --pipe`; a run that only loads the code is subtracted, and the difference is
# divided by the calls. Everything Redis does for a call counts: reading and parsing it,
# the Lua code and its commands, the reply.
#
# With BATCH=N in the environment, the publishes of this checkout are sent N to a call
# of `publish_many`, as the broker sends publishes that wait together (the base revision
# is called one publish at a time); the figure stays per publish.
#
# Usage: [BATCH=N] bash scripts/publish-cost.sh [CALLS] [BASE_REVISION]   (default 8000 calls)
# Needs valgrind, redis-server 7, redis-cli, python3. Takes a minute or two.
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-8000}"
base="${2:-}"
work="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-publish-cost.XXXXXX")"
trap 'rm -rf "$work"' EXIT

lib="$work/library.lua"
{ printf '#!lua name=cost\nlocal LIBRARY = %s\n' "'cost'"; cat src/broker/redis/publish.lua; } >"$lib"
if [ -n "$base" ]; then
  git show "$base:src/broker/redis/publish.lua" >"$work/base.lua"
  # A base that is already a function library is loaded and called as one.
  if grep -q register_function "$work/base.lua"; then
    { printf '#!lua name=base\nlocal LIBRARY = %s\n' "'base'"; cat "$work/base.lua"; } >"$work/base-library.lua"
  fi
fi

# The RESP stream of `calls` publishes (FCALL cost, or EVALSHA of the base script).
commands() { # kind calls
  python3 - "$1" "$2" "$work" <<'PY'
import hashlib, os, sys
sys.path.insert(0, "scripts")
from resp import resp
kind, calls, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
batch = int(os.environ.get("BATCH", "1")) if kind != "base" else 1
head = []
if kind == "base" and os.path.exists(work + "/base-library.lua"):
    head = [b"FCALL", b"base"]
elif kind == "base":
    code = open(work + "/base.lua", "rb").read()
    head = [b"EVALSHA", hashlib.sha1(code).hexdigest()]
else:
    head = [b"FCALL", b"cost"]
body = b"x" * 150
# The code's own layout of keys and arguments: earlier builds kept a room's idempotency
# keys in a hash and a sorted set (and took the bound on keys per room as a last
# argument), and took their settings as five arguments; this one keeps each key as a
# string of its own, reads the earlier hash, and takes the settings as one text.
code = open(work + ("/base.lua" if kind == "base" else "/library.lua"), "rb").read()
legacy = b"'ZADD'" in code
publications = []
for i in range(calls):
    room = f"cost-{i % 100}"
    key = f"client:anonymous:key-{i}"
    if legacy:
        keys = [f"rc:{{{room}}}:{k}" for k in ("meta", "log", "idem", "idemx")]
    else:
        keys = [f"rc:{{{room}}}:meta", f"rc:{{{room}}}:log", f"rc:{{{room}}}:idem:{key}",
                f"rc:{{{room}}}:idem"]
    if b"settings_of" in code:  # the settings in one argument
        args = [f"rc:{{{room}}}:ch", "e%d" % i, body, "PUBLISH 1000 300000 86400000 300000", key]
    else:
        args = [f"rc:{{{room}}}:ch", "PUBLISH", "e%d" % i, body, 1000, 300000, 86400000,
                300000, key, *([1000] if legacy else [])]
    publications.append((keys, args))
with open(f"{work}/{kind}.{calls}.resp", "wb") as f:
    for start in range(0, calls, batch):
        group = publications[start:start + batch]
        if batch == 1:
            keys, args = group[0]
            f.write(resp([*head, len(keys), *keys, *args]))
        else:
            keys = [k for p in group for k in p[0]]
            args = [a for p in group for a in p[1]]
            f.write(resp([b"FCALL", b"cost_many", len(keys), *keys, *args]))
PY
}

# Instructions of one redis-server run that loads the code and takes `calls` calls.
instructions() { # kind calls
  local out="$work/callgrind.$1.$2" sock="$work/redis.sock"
  commands "$1" "$2"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no \
    >"$work/redis.$1.$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do redis-cli -s "$sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "$1" = base ] && [ -f "$work/base-library.lua" ]; then
    redis-cli -s "$sock" -x FUNCTION LOAD <"$work/base-library.lua" >/dev/null
  elif [ "$1" = base ]; then
    redis-cli -s "$sock" -x SCRIPT LOAD <"$work/base.lua" >/dev/null
  else
    redis-cli -s "$sock" -x FUNCTION LOAD <"$lib" >/dev/null
  fi
  redis-cli -s "$sock" --pipe <"$work/$1.$2.resp" >"$work/pipe.$1.$2.log"
  grep -q "errors: 0" "$work/pipe.$1.$2.log" || { cat "$work/pipe.$1.$2.log" >&2; exit 1; }
  # A call of several answers a failed publication inside its reply, not as an error:
  # every publication must have reached its stream.
  local added
  added=$(redis-cli -s "$sock" info commandstats | sed -n 's/^cmdstat_xadd:calls=\([0-9]*\),.*/\1/p')
  [ "${added:-0}" -ge "$2" ] || { echo "only ${added:-0} of $2 publications were added" >&2; exit 1; }
  redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
  wait "$pid" || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

per_call() { # kind
  local idle loaded
  idle=$(instructions "$1" 1)
  loaded=$(instructions "$1" "$calls")
  python3 -c "print('%s: %.0f instructions per publish (%d calls)' % ('$1', ($loaded - $idle) / ($calls - 1), $calls))"
}

[ -z "$base" ] || per_call base
per_call function
