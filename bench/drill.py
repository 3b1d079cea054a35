"""The scale-out drill: two gateway instances on PostgreSQL + Redis behind a load balancer.

    python -m bench.drill                       # about 2 minutes
    python -m bench.drill --json out.json
    python -m bench.drill --patch no-reuse      # the same, hot reads NOT reused (the old way)

The stack: the simulator; 2 gateway instances (separate gunicorn masters, 4 workers x 4
threads each) on one scratch PostgreSQL database (created for the run, dropped after) with
Redis for rate limits and counters; the same number of bare passthrough instances; and in
front of each fleet a round-robin TCP load balancer (``bench/balancer.py``, one process).
Everything on 127.0.0.1, bounded in time (a watchdog ends the run).

Four checks, in this order:

1. Throughput: ``GET /v1/videos/{id}`` through each fleet's balancer, gateway against bare
   passthrough, ``--rounds`` interleaved rounds of ``--duration`` seconds with a load client
   in two processes (``--connections`` keep-alive connections in all). Reported: req/s, the
   ratio gateway/passthrough (median over rounds), and the CPU all serving workers spent per
   request (steadier than the rates on a shared machine).
2. Revocation and lockdown across both instances (``bench/revocation.py``'s trials): client
   threads hammer each instance directly with one key; the key is revoked (or the program
   locked down) through one instance's admin API. Reported: requests admitted that were
   sent after the call returned, on either instance (must be 0).
3. Quota race: ``--quota-requests`` concurrent ``POST /v1/videos`` split evenly over the
   two instances, for a tester whose cohort allows ``--quota`` generations a day: exactly
   that many are admitted, and the ledger (videos, quota counters) says the same.
4. Rate limit: ``--rate-requests`` requests alternating between the instances for a key
   whose cohort allows ``--rate`` a minute: exactly that many are admitted (Redis holds one
   window for both instances).

The exit status is 1 when a check fails (throughput has a figure, not a verdict).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

import requests

from bench.harness import (
    HOST,
    Service,
    clean_env,
    command_line,
    cpu_seconds,
    free_port,
    install_watchdog,
    machine_facts,
    start_passthrough,
    start_service,
    write_json,
)
from bench.revocation import (
    DEFAULT_POSTGRES,
    PropagationStack,
    Trial,
    http_session,
    lockdown_trial,
    revoke_trial,
)

DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
HTTP_TIMEOUT = 30.0
QUOTA_COHORT = "drill-quota"
RATE_COHORT = "drill-rate"


# -- the stack beyond bench.revocation's -------------------------------------------------


def start_balancer(name: str, backends: list[Service], ready_path: str, log_dir: Any) -> Service:
    """``bench.balancer`` in front of ``backends``, ready when ``ready_path`` answers 200."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.balancer", "--bind", f"{HOST}:{port}"]
    for backend in backends:
        argv += ["--backend", f"{HOST}:{backend.port}"]
    return start_service(name, argv, clean_env(), port, ready_path, log_dir)


def set_policy(stack: PropagationStack, cohort: str, **policy: Any) -> None:
    """Give ``cohort`` a policy (as ``drawbridge policies apply`` would)."""
    from gateway.settings import load_settings, root_secret_of
    from gateway.state import build_store
    from keys.access.vault import Vault
    from keys.limits.policies import Policy

    settings = load_settings(environ=stack.settings_env)
    store = build_store(settings, Vault(root_secret_of(settings)))
    try:
        with store.transaction() as tx:
            tx.policies.set_policy(cohort, Policy(**policy), "bench.drill")
    finally:
        store.database.dispose()


def upstream_video_id(stack: PropagationStack) -> str:
    """The simulator's id of the stack's one video (the passthrough's client knows that one)."""
    answer = requests.get(
        stack.simulator.url + "/v1/videos",
        headers={"Authorization": f"Bearer {stack.settings_env['DRAWBRIDGE_UPSTREAM_API_KEY']}"},
        timeout=HTTP_TIMEOUT,
    )
    answer.raise_for_status()
    videos = answer.json()["data"]
    if len(videos) != 1:
        raise RuntimeError(f"expected one video upstream, found {len(videos)}")
    found: str = videos[0]["id"]
    return found


def sql(stack: PropagationStack, statement: str, **params: Any) -> list[Any]:
    from sqlalchemy import create_engine, text

    from keys.db import normalise_url

    engine = create_engine(normalise_url(stack.settings_env["DRAWBRIDGE_DATABASE_URL"]))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(statement), params))
    finally:
        engine.dispose()


# -- 1. throughput -----------------------------------------------------------------------


def _load_slice(
    port: int, path: str, headers: dict[str, str], seconds: float, connections: int
) -> list[int]:
    """In a child process: keep-alive GETs on ``connections`` threads; [ok, not ok]."""
    import http.client

    deadline = time.monotonic() + seconds
    counts = [[0, 0] for _ in range(connections)]

    def run(slot: list[int]) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT)
        try:
            while time.monotonic() < deadline:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
                slot[0 if response.status == 200 else 1] += 1
        except OSError:
            slot[1] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(slot,), daemon=True) for slot in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + HTTP_TIMEOUT)
    return [sum(ok for ok, _ in counts), sum(bad for _, bad in counts)]


def _workers_cpu(instances: list[Service]) -> float:
    return sum(cpu_seconds(pid) for service in instances for pid in service.worker_pids())


def measure(
    pool: Any,
    balancer: Service,
    instances: list[Service],
    path: str,
    headers: dict[str, str],
    seconds: float,
    connections: int,
) -> dict[str, Any]:
    """req/s through ``balancer`` and the CPU its instances' workers spent per request."""
    processes = 2
    per_process = max(1, connections // processes)
    cpu_before = _workers_cpu(instances)
    started = time.monotonic()
    results = pool.starmap(
        _load_slice, [(balancer.port, path, headers, seconds, per_process)] * processes
    )
    elapsed = time.monotonic() - started
    cpu = _workers_cpu(instances) - cpu_before
    ok, bad = sum(r[0] for r in results), sum(r[1] for r in results)
    return {
        "rps": ok / elapsed,
        "ok": ok,
        "not_ok": bad,
        "workers_cpu_us_per_request": cpu / max(ok + bad, 1) * 1e6,
    }


def throughput(
    stack: PropagationStack, passthroughs: list[Service], args: argparse.Namespace
) -> dict[str, Any]:
    gateway_lb = start_balancer("lb-gateway", stack.gateways, "/readyz", stack.directory)
    passthrough_lb = start_balancer("lb-passthrough", passthroughs, "/healthz", stack.directory)
    try:
        key = stack.new_key()
        targets = {
            "passthrough": (
                passthrough_lb,
                passthroughs,
                f"/v1/videos/{upstream_video_id(stack)}",
                {},
            ),
            "gateway": (
                gateway_lb,
                stack.gateways,
                f"/v1/videos/{stack.video_id}",
                {"Authorization": f"Bearer {key['secret']}"},
            ),
        }
        rounds: list[dict[str, Any]] = []
        context = multiprocessing.get_context("spawn")
        with context.Pool(2) as pool:
            # Warm every worker of both fleets (connections, caches) before measuring.
            for balancer, instances, path, headers in targets.values():
                measure(pool, balancer, instances, path, headers, 2.0, args.connections)
            for number in range(args.rounds):
                order = list(targets) if number % 2 == 0 else list(reversed(targets))
                measured = {}
                for name in order:
                    measured[name] = measure(pool, *targets[name], args.duration, args.connections)
                    m = measured[name]
                    print(
                        f"  round {number + 1} {name:<12} {m['rps']:8.1f} req/s  "
                        f"workers CPU {m['workers_cpu_us_per_request']:7.0f} us/req  "
                        f"not ok {m['not_ok']}",
                        flush=True,
                    )
                rounds.append(measured)
    finally:
        gateway_lb.stop()
        passthrough_lb.stop()
    ratios = [r["gateway"]["rps"] / r["passthrough"]["rps"] for r in rounds]
    cpu_ratios = [
        r["passthrough"]["workers_cpu_us_per_request"] / r["gateway"]["workers_cpu_us_per_request"]
        for r in rounds
    ]
    return {
        "rounds": rounds,
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "cpu_ratio_per_round": cpu_ratios,
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "rps_median": {
            name: statistics.median(r[name]["rps"] for r in rounds)
            for name in ("passthrough", "gateway")
        },
        "workers_cpu_us_per_request_median": {
            name: statistics.median(r[name]["workers_cpu_us_per_request"] for r in rounds)
            for name in ("passthrough", "gateway")
        },
        "not_ok": {
            name: sum(r[name]["not_ok"] for r in rounds) for name in ("passthrough", "gateway")
        },
    }


# -- 2. revocation and lockdown ----------------------------------------------------------


def revocation(stack: PropagationStack, args: argparse.Namespace) -> dict[str, Any]:
    trials: list[Trial] = []
    for number in range(args.trials):
        instance = number % len(stack.gateways)
        for run in (revoke_trial, lockdown_trial):
            trial = run(stack, instance, args.clients, args.warmup, args.after)
            trials.append(trial)
            served = [f"#{o.instance} {o.admitted} ok/{o.refused} refused" for o in trial.instances]
            print(
                f"  {trial.kind:<8} via #{instance}: call {trial.action_seconds * 1000:6.1f} ms, "
                f"admitted after return {trial.admitted_after_return}  ({', '.join(served)})",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for kind in ("revoke", "lockdown"):
        mine = [t for t in trials if t.kind == kind]
        outcomes = [o for t in mine for o in t.instances]
        summary[kind] = {
            "trials": len(mine),
            "requests": sum(o.requests for o in outcomes),
            "admitted_after_return": sum(t.admitted_after_return for t in mine),
            "instance_trials_without_admit_before": sum(1 for o in outcomes if not o.admitted),
            "instance_trials_without_refusal": sum(1 for o in outcomes if not o.refused),
            "call_ms_median": statistics.median(t.action_seconds * 1000 for t in mine),
            "other_outcomes": dict(sum((Counter(o.other) for o in outcomes), Counter())),
        }
    return summary


# -- 3. quota race -----------------------------------------------------------------------


def _concurrently(calls: list[Any]) -> list[Any]:
    """Run the calls on one thread each, released together; their results in order."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        barrier.wait(timeout=HTTP_TIMEOUT)
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HTTP_TIMEOUT * 2)
    return results


def _outcome(answer: requests.Response) -> str:
    if answer.status_code == 200:
        return "admitted"
    try:
        return f"{answer.status_code} {answer.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return f"{answer.status_code}"


def quota_race(stack: PropagationStack, args: argparse.Namespace) -> dict[str, Any]:
    set_policy(
        stack,
        QUOTA_COHORT,
        generations_per_day=args.quota,
        video_seconds_per_day=10**6,
        video_seconds_per_month=10**6,
        concurrent_jobs=10**6,
        requests_per_minute=10**6,
        requests_per_day=10**6,
        anomaly_rate_factor=0,
    )
    tester = stack.new_tester(QUOTA_COHORT)
    key = stack.new_key(tester)
    headers = {"Authorization": f"Bearer {key['secret']}"}
    body = {"prompt": "a quota race", "model": "sora-2", "seconds": "4"}

    def create(url: str) -> Any:
        def call() -> str:
            with http_session() as session:
                return _outcome(
                    session.post(
                        url + "/v1/videos", headers=headers, json=body, timeout=HTTP_TIMEOUT
                    )
                )

        return call

    urls = stack.urls
    outcomes = _concurrently([create(urls[i % len(urls)]) for i in range(args.quota_requests)])
    per_instance = [Counter(outcomes[i :: len(urls)]) for i in range(len(urls))]
    counted = Counter(outcomes)
    videos = sql(stack, "SELECT count(*) FROM videos WHERE tester_id = :t", t=tester)[0][0]
    used = dict(sql(stack, "SELECT metric, used FROM quota_usage WHERE tester_id = :t", t=tester))
    admitted = counted.get("admitted", 0)
    exact = (
        admitted == args.quota
        and counted.get("429 quota_exceeded", 0) == args.quota_requests - args.quota
        and videos == args.quota
        and used.get("generations_per_day") == args.quota
    )
    return {
        "quota": args.quota,
        "requests": args.quota_requests,
        "outcomes": dict(counted),
        "per_instance": [dict(c) for c in per_instance],
        "ledger_videos": videos,
        "quota_usage": used,
        "exact": exact,
    }


# -- 4. rate limit -----------------------------------------------------------------------


def _burst(
    urls: list[str], path: str, headers: dict[str, str], args: argparse.Namespace
) -> list[tuple[int, str]]:
    """``--rate-requests`` GETs on 8 threads, request i to instance i mod n: (instance, outcome)."""
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def send(indexes: range) -> None:
        with http_session() as session:
            for index in indexes:
                instance = index % len(urls)
                answer = session.get(urls[instance] + path, headers=headers, timeout=HTTP_TIMEOUT)
                with lock:
                    outcomes.append((instance, _outcome(answer)))

    threads = [
        threading.Thread(target=send, args=(range(t, args.rate_requests, 8),), daemon=True)
        for t in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HTTP_TIMEOUT * 4)
    return outcomes


def rate_limit(stack: PropagationStack, args: argparse.Namespace) -> dict[str, Any]:
    set_policy(
        stack,
        RATE_COHORT,
        requests_per_minute=args.rate,
        requests_per_day=10**6,
        anomaly_rate_factor=0,
    )
    urls = stack.urls
    outcomes: list[tuple[int, str]] = []
    for _attempt in range(2):
        tester = stack.new_tester(RATE_COHORT)
        key = stack.new_key(tester)
        started = time.time()
        outcomes = _burst(urls, "/v1/me", {"Authorization": f"Bearer {key['secret']}"}, args)
        # The window is a minute from the key's first request; a burst this short fits it
        # unless the run was starved. Then try once more with a fresh key.
        if time.time() - started < 50:
            break
    counted = Counter(outcome for _, outcome in outcomes)
    per_instance = [
        dict(Counter(o for i, o in outcomes if i == instance)) for instance in range(len(urls))
    ]
    exact = (
        counted.get("admitted", 0) == args.rate
        and counted.get("429 rate_limit_exceeded", 0) == args.rate_requests - args.rate
    )
    return {
        "per_minute": args.rate,
        "requests": args.rate_requests,
        "outcomes": dict(counted),
        "per_instance": per_instance,
        "exact": exact,
    }


# -- the run -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (its own db number)")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--trials", type=int, default=3, help="revoke and lockdown trials each")
    parser.add_argument("--clients", type=int, default=3, help="hammer threads per instance")
    parser.add_argument("--warmup", type=float, default=0.6)
    parser.add_argument("--after", type=float, default=0.6)
    parser.add_argument("--quota", type=int, default=7, help="generations a day in the race")
    parser.add_argument("--quota-requests", type=int, default=24)
    parser.add_argument("--rate", type=int, default=40, help="requests a minute")
    parser.add_argument("--rate-requests", type=int, default=100)
    parser.add_argument("--patch", default="", help="bench/serve.py experiments for the gateways")
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--watchdog", type=int, default=420, help="seconds for the whole run")
    args = parser.parse_args()
    install_watchdog(args.watchdog)
    import redis

    redis.Redis.from_url(args.redis).flushdb()

    print(
        f"bench.drill: {args.instances} gateway instances x {args.workers} workers x "
        f"{args.threads} threads on PostgreSQL + Redis, behind bench.balancer"
        + (f"; gateway experiments: {args.patch}" if args.patch else ""),
        flush=True,
    )
    stack = PropagationStack(
        args.postgres,
        args.redis,
        args.instances,
        args.workers,
        args.threads,
        # 127.0.0.1 collects one auth failure per refused request in the trials.
        extra_env={
            "DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE": "1000000000",
            **({"BENCH_PATCH": args.patch} if args.patch else {}),
        },
    )
    results: dict[str, Any] = {}
    began = time.monotonic()
    with stack:
        passthroughs = [
            start_passthrough(
                stack.directory,
                upstream_url=stack.settings_env["DRAWBRIDGE_UPSTREAM_URL"],
                api_key=stack.settings_env["DRAWBRIDGE_UPSTREAM_API_KEY"],
                workers=args.workers,
                threads=args.threads,
            )
            for _ in range(args.instances)
        ]
        try:
            print(f"stack up in {time.monotonic() - began:.0f} s", flush=True)
            print("1. throughput, GET /v1/videos/{id} through the balancer", flush=True)
            results["throughput"] = throughput(stack, passthroughs, args)
        finally:
            for passthrough in passthroughs:
                passthrough.stop()
        print("2. revocation and lockdown across both instances", flush=True)
        results["revocation"] = revocation(stack, args)
        print("3. quota race", flush=True)
        results["quota"] = quota_race(stack, args)
        print("4. rate limit", flush=True)
        results["rate_limit"] = rate_limit(stack, args)
    results["seconds"] = round(time.monotonic() - began, 1)
    report(results)
    if args.json_path:
        write_json(
            args.json_path,
            {
                "command": command_line(),
                "settings": vars(args),
                "machine": machine_facts(),
                **results,
            },
        )
    if not passed(results):
        raise SystemExit(1)


def passed(results: dict[str, Any]) -> bool:
    revoked = results["revocation"]
    return (
        revoked["revoke"]["admitted_after_return"] == 0
        and revoked["lockdown"]["admitted_after_return"] == 0
        and results["quota"]["exact"]
        and results["rate_limit"]["exact"]
    )


def report(results: dict[str, Any]) -> None:
    speed = results["throughput"]
    rps, cpu = speed["rps_median"], speed["workers_cpu_us_per_request_median"]
    rounds = ", ".join(f"{r:.3f}" for r in speed["ratio_per_round"])
    print("\nbench.drill summary")
    print(
        f"  throughput, req/s (median): passthrough {rps['passthrough']:.1f}, "
        f"gateway {rps['gateway']:.1f}; not ok: {speed['not_ok']}"
    )
    print(f"  gateway / passthrough req/s       = {speed['ratio_median']:.3f}   rounds: {rounds}")
    print(
        f"  workers CPU us/req (median)       = passthrough {cpu['passthrough']:.0f}, "
        f"gateway {cpu['gateway']:.0f}  (ratio {speed['cpu_ratio_median']:.3f})"
    )
    for kind, summary in results["revocation"].items():
        print(
            f"  {kind:<8} {summary['trials']} trials, {summary['requests']} requests: admitted "
            f"after the call returned = {summary['admitted_after_return']}; call median "
            f"{summary['call_ms_median']:.0f} ms; other outcomes {summary['other_outcomes']}"
        )
    quota = results["quota"]
    print(
        f"  quota race: {quota['requests']} concurrent creates, quota {quota['quota']}: "
        f"{quota['outcomes']}; ledger videos {quota['ledger_videos']}, quota_usage "
        f"{quota['quota_usage']} -> {'EXACT' if quota['exact'] else 'NOT EXACT'}"
    )
    print(f"    per instance: {quota['per_instance']}")
    rate = results["rate_limit"]
    print(
        f"  rate limit: {rate['requests']} requests, {rate['per_minute']}/minute: "
        f"{rate['outcomes']} -> {'EXACT' if rate['exact'] else 'NOT EXACT'}"
    )
    print(f"    per instance: {rate['per_instance']}")
    print(f"  run took {results['seconds']} s")
    print("RESULT: " + ("all checks hold" if passed(results) else "A CHECK FAILED"))


if __name__ == "__main__":
    main()
