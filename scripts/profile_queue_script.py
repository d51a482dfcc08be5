#!/usr/bin/env python3
"""Where the queue script's time goes, without building anything.

Replays `tenantry bench queue`'s call pattern (100 tenants of weights 1/4/16 by default, 8 workers that
each enqueue 100 jobs, then lease 100, completions in batches of up to 512) straight against
src/queue/redis_queue/queue.lua on a Redis server, and prints per job: the script's time in
Redis for each operation and the commands the script ran (INFO commandstats). It resets the
server's command statistics and uses keys under "profile:{bench}", which it deletes at the end.

    pip install redis
    scripts/profile_queue_script.py [--backlog N] [--jobs N] [--port 6379] [--script PATH]
                                    [--tenants N]

It speaks the script's current call format (enqueue rows of 8 fields, the lease reply led by
the expiry), so `--script` compares variants of the current protocol, not older versions.

Instruction counts per job, which do not move with the machine's load the way times do:
start `valgrind --tool=callgrind redis-server --port 6390 --save ''` and run this with
`--port 6390 --pause-after-preload`; zero the counters (`callgrind_control -z`) when it says
the preload is done, press enter, and after SHUTDOWN read `evalGenericCommand`'s inclusive
count (`callgrind_annotate --inclusive=yes`): the script's own instructions, without the
INFO calls and the clean-up at the end.
"""

import argparse
import sys
import time

import redis

BATCH, WORKERS = 100, 8
PREFIX = "profile:{bench}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", default="src/queue/redis_queue/queue.lua")
    parser.add_argument("--backlog", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--pause-after-preload", action="store_true")
    args = parser.parse_args()

    r = redis.Redis(host="127.0.0.1", port=args.port)
    with open(args.script) as f:
        script = r.register_script(f.read())

    def call(*argv):
        return script(keys=[PREFIX], args=list(argv))

    def now() -> int:
        return int(time.time() * 1000)

    def spec(tenant: str, n: int, band: int) -> list:
        # id, tenant, group, band, cost, idempotency key, run at, record (max attempts,
        # payload, kind)
        return [f"j{n}", tenant, f"run-{n % 7}", band, 1.0, "", 0, "3\nnull\nnoop"]

    tenants = [f"bench-{n:04d}" for n in range(args.tenants)]
    for n, tenant in enumerate(tenants):
        call("set_policy", tenant, [1.0, 4.0, 16.0][n % 3], 2, 10_000, 1_000_000.0, 100_000)
    preloaded = 0
    while preloaded < args.backlog:
        chunk = min(args.backlog - preloaded, 10_000)
        argv = ["enqueue", now(), chunk]
        for n in range(preloaded, preloaded + chunk):
            argv += spec(tenants[n % len(tenants)], 1_000_000_000 + n, 2)
        call(*argv)
        preloaded += chunk
    if args.pause_after_preload:
        input("preload done: zero the profiler's counters, then press enter ")

    r.config_resetstat()
    script_usec = {"enqueue": 0, "lease": 0, "complete": 0}

    def evalsha_usec() -> int:
        return r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)

    def timed(name: str, *argv):
        before = evalsha_usec()
        reply = call(*argv)
        script_usec[name] += evalsha_usec() - before
        return reply

    seq, done = 0, 0
    while done < args.jobs:
        for _ in range(WORKERS):
            argv = ["enqueue", now(), BATCH]
            for k in range(BATCH):
                seq += 1
                argv += spec(tenants[(seq + k) % len(tenants)], seq, 1)
            timed("enqueue", *argv)
        pending = []
        for _ in range(WORKERS):
            flat = timed("lease", "lease", now(), BATCH, 30_000, 100_000)
            # the lease expiry, then (reference, token, attempt, record) per lease
            for i in range(1, len(flat), 4):
                pending += [flat[i], flat[i + 1], 1.0]
            done += len(flat) // 4
        for i in range(0, len(pending), 512 * 3):
            chunk = pending[i : i + 512 * 3]
            statuses = timed("complete", "complete_many", now(), len(chunk) // 3, *chunk)
            if any(status != b"ok" for status in statuses):
                print(f"a completion was refused: {statuses[:5]}", file=sys.stderr)
                return 1

    stats = r.info("commandstats")
    nested = {
        name[len("cmdstat_"):]: value
        for name, value in stats.items()
        if not name.startswith(("cmdstat_eval", "cmdstat_info", "cmdstat_config"))
    }
    calls = sum(value["calls"] for value in nested.values())
    total = sum(script_usec.values())
    print(f"{done} jobs: {total / done:.1f} us of script per job "
          + "(" + ", ".join(f"{op} {usec / done:.1f}" for op, usec in script_usec.items()) + ")")
    print(f"{calls / done:.2f} Redis calls per job: " + ", ".join(
        f"{name} {value['calls'] / done:.2f}"
        for name, value in sorted(nested.items(), key=lambda item: -item[1]["calls"])[:12]))

    cursor = 0
    while True:
        cursor, keys = r.scan(cursor, match=f"{PREFIX}:*", count=10_000)
        if keys:
            r.unlink(*keys)
        if cursor == 0:
            return 0


if __name__ == "__main__":
    sys.exit(main())
