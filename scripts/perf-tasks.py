#!/usr/bin/env python3
"""Shares of a roomcast instance's CPU by the task each sample ran in.

Reads the text of `perf script` for a profile taken with call graphs, for example

    perf record -e cpu-clock --call-graph dwarf,8192 -F 2999 -p PID -- sleep 30
    perf script > samples.txt
    python3 scripts/perf-tasks.py samples.txt

and prints, for each kind of task, its share of the samples and the share of them
spent writing deliveries (`Wire::write_frame`, the rooms' `sendmsg`). A sample belongs
to the outermost frame of its stack that names one of the kinds below; samples in the
runtime's own parking and I/O driver come under "runtime: park and wake".

With --futex it reads a recording of the instance's `futex` calls instead,

    perf record -e syscalls:sys_enter_futex --call-graph dwarf,16384 -p PID -- sleep 15
    perf script > futex.txt
    python3 scripts/perf-tasks.py --futex futex.txt

and counts them by what made each call: the innermost frame of its stack that names one
of the causes in FUTEX_CAUSES (a runtime thread going to sleep, one waking the other and
why, a lock of roomcast's or of a library).
"""

import collections
import re
import sys

# (kind, pattern in a frame), tried from the outermost frame inward.
KINDS = [
    ("room actors (fan-out)", re.compile(r"<roomcast::room::actor::RoomActor>")),
    ("connection actors", re.compile(r"<roomcast::connection::actor::ConnectionActor>")),
    ("publish calls (batch::collect)", re.compile(r"broker::redis::batch::collect")),
    ("publishing lanes", re.compile(r"connection::publishing::run_lanes")),
    ("Pub/Sub subscriber", re.compile(r"broker::redis::subscriber::run")),
    ("dispatch to rooms", re.compile(r"roomcast::room::dispatch")),
    ("Redis connections (redis-rs)", re.compile(r"redis::aio::multiplexed_connection")),
    ("socket tasks (WebSocket)", re.compile(r"roomcast::server::websocket::upgrade")),
    ("socket tasks (SSE)", re.compile(r"roomcast::transport::sse")),
    ("HTTP", re.compile(r"roomcast::server::serve_http")),
    ("runtime: park and wake", re.compile(r"park_internal|time::Driver::park|io::driver::Driver::turn")),
]
DELIVERY = re.compile(r"outbound::wire::Wire::write_frame")

# (cause, pattern in a frame), tried from the innermost frame outward.
FUTEX_CAUSES = [
    ("glibc allocator lock", re.compile(r"__lll_lock_w|_int_free|_int_malloc|arena_get")),
    ("a connection's queue lock (outbound)", re.compile(r"roomcast::outbound::")),
    ("SQLite connection thread (sqlx)", re.compile(r"sqlx_")),
    ("runtime: thread goes to sleep", re.compile(r"park::Inner::park_condvar")),
    ("runtime: wakes the other thread, task scheduled while another waits", re.compile(r"schedule_task")),
    ("runtime: wakes the other thread, after a task left others queued", re.compile(r"worker::Context::run_task")),
    ("runtime: wakes the other thread, after waking with tasks ready", re.compile(r"worker::Context::park_internal")),
]


def frames(sample):
    """The symbols of one sample, innermost first."""
    symbols = []
    for line in sample.strip().split("\n")[1:]:
        line = re.sub(r"^\s*[0-9a-f]+ ", "", line.strip())
        symbols.append(line.rsplit(" (", 1)[0])
    return symbols


def first_match(symbols, table):
    """The name of the first (name, pattern) of `table` that a frame matches, trying the
    frames in the order given; "other" if none does."""
    for symbol in symbols:
        for name, pattern in table:
            if pattern.search(symbol):
                return name
    return "other"


def main(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    samples = [s for s in text.split("\n\n") if s.strip()]
    if not samples:
        sys.exit(f"no samples in {path}")
    kinds = collections.Counter()
    deliveries = collections.Counter()
    for sample in samples:
        symbols = frames(sample)
        kind = first_match(reversed(symbols), KINDS)
        kinds[kind] += 1
        if any(DELIVERY.search(s) for s in symbols):
            deliveries[kind] += 1
    total = len(samples)
    print(f"{total} samples")
    print(f"{'task':34} {'share':>7}  {'of it delivery writes':>22}")
    for kind, count in kinds.most_common():
        print(f"{kind:34} {100 * count / total:6.1f}%  {100 * deliveries[kind] / total:21.1f}%")


def futex_main(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    samples = [s for s in text.split("\n\n") if "sys_enter_futex" in s]
    if not samples:
        sys.exit(f"no futex calls in {path}")
    causes = collections.Counter(first_match(frames(s), FUTEX_CAUSES) for s in samples)
    print(f"{len(samples)} futex calls")
    for cause, count in causes.most_common():
        print(f"{count:7} {cause}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--futex":
        futex_main(sys.argv[2])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit("usage: perf-tasks.py [--futex] PERF_SCRIPT_OUTPUT")
