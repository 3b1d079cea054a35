"""What anomaly detection costs per request, in process and with Redis.

    python -m bench.anomalies [--requests 20000] [--redis redis://127.0.0.1:6379/12]

Measures ``AnomalyDetector.observe`` (what the gateway runs for every verified request) with
``MemoryCounters`` and with ``RedisCounters``, and, as baselines measured in the same run, an
empty Python call and one Redis ``PING`` round trip: with Redis, detection should cost about
one round trip. Keys and addresses vary like real traffic (many keys, a few addresses each);
the rate rule's baseline read (once per key and minute) is included.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable

import redis

from bench.harness import command_line
from keys.access.lifecycle import Principal
from keys.leaks.anomalies import AnomalyDetector
from keys.limits.counters import Counters, MemoryCounters, RedisCounters
from keys.limits.policies import Policy

DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


def principals(count: int) -> list[Principal]:
    policy = Policy()
    return [
        Principal(
            f"key_bench{secrets.token_hex(6)}",
            "tst_bench",
            "default",
            "drwb_...0000",
            None,
            policy,
            {},
        )
        for _ in range(count)
    ]


def medians(calls: int, *measured: Callable[[int], object]) -> list[float]:
    """Median seconds per call of each ``call(i)``, the calls interleaved so that load from
    elsewhere on the machine hits all of them alike (after 200 warm-up rounds)."""
    for i in range(200):
        for call in measured:
            call(i)
    timings: list[list[float]] = [[] for _ in measured]
    clock = time.perf_counter
    for i in range(calls):
        for call, spent in zip(measured, timings, strict=True):
            started = clock()
            call(i)
            spent.append(clock() - started)
    return [statistics.median(spent) for spent in timings]


def observer(counters: Counters) -> Callable[[int], object]:
    detector = AnomalyDetector(counters)
    keys = principals(200)
    now = time.time()

    def observe(i: int) -> object:
        return detector.observe(keys[i % len(keys)], f"10.0.{i % 5}.1", now + i * 0.001)

    return observe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    args = parser.parse_args()
    calls = max(args.requests, 1000)

    empty, memory = medians(calls, lambda i: i, observer(MemoryCounters()))
    print(f"command: {command_line()}")
    print(f"in process: {memory * 1e6:8.2f} µs per request   (empty call {empty * 1e6:.2f} µs)")

    client = redis.Redis.from_url(args.redis)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"redis: unavailable at {args.redis} ({type(exc).__name__}); skipped")
        return
    shared = RedisCounters.from_url(args.redis)
    try:
        ping, with_redis = medians(min(calls, 5_000), lambda i: client.ping(), observer(shared))
    finally:
        for name in client.scan_iter(match="drawbridge:anomaly:{key_bench*", count=1000):
            client.delete(name)
        shared.close()
        client.close()
    print(
        f"redis:      {with_redis * 1e6:8.2f} µs per request   (PING round trip "
        f"{ping * 1e6:.2f} µs; ratio {with_redis / ping:.2f})"
    )
    print("(medians; calls interleaved with their baseline)")


if __name__ == "__main__":
    main()
