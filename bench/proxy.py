"""What the gateway's checks cost on ``GET /v1/videos/{id}``: ``python -m bench.proxy``.

One run starts the simulator, a bare passthrough proxy and the gateway (same gunicorn
settings for the last two; see bench/harness.py) and measures, for each of

  (a) the simulator direct, (b) the bare passthrough, (c) the gateway,

* sequential latency: ``--requests`` GETs one after another over one keep-alive
  ``http.client`` connection (after ``--warmup`` unmeasured ones); p50/p90/p99 in ms;
* throughput: ``wrk -t2 -c16 -d10s`` (Requests/sec), or a threaded Python client when wrk is
  missing (the report says so); plus the CPU time the server's gunicorn worker spent per
  request, read from /proc, which is far less noisy than the rates on a shared machine.

The whole set is repeated ``--rounds`` times, interleaved (each round rotates the order), and
the medians are compared against the targets: gateway p50 minus passthrough p50 at most
1 ms, and gateway/passthrough throughput at least 0.9 (issue 22; on PostgreSQL and Redis
with several instances, bench.drill holds the fleet to 0.8).

``--servers gunicorn,granian`` also serves a second passthrough and a second gateway (same
database, same key, same video) under granian's WSGI interface with the same workers x
threads (bench/serve.py), measured in the same interleaved rounds as ``passthrough@granian``
and ``gateway@granian``; the report adds, per server, gateway/passthrough and the worker CPU
the gateway adds, and granian/gunicorn for both apps. ``--servers granian`` measures granian
alone under the plain names.

``--compare-code PATH`` also serves the gateway of another checkout (``git worktree add
--detach /tmp/base main``) on the same database, measured in the same rounds as
``gateway-base``: the report adds both gateways' ratio and worker CPU over the passthrough,
and this checkout's over the other's, so a change is measured against its base in one run
rather than in two runs an hour apart on a shared machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    CODE_VARIABLE,
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    HOST,
    SERVERS,
    Stack,
    Target,
    command_line,
    cpu_seconds,
    install_watchdog,
    machine_facts,
    percentile,
    served_name,
    setting_pairs,
    write_json,
)
from bench.load import parse_wrk

LATENCY_TARGET_MS = 1.0
THROUGHPUT_TARGET = 0.9  # on SQLite (issue 22); bench.drill's fleet target is 0.8
ORDER = ("simulator", "passthrough", "gateway")
BASELINE = "gateway-base"  # --compare-code's gateway


# -- sequential latency ----------------------------------------------------------------


def sequential_latency(target: Target, path: str, requests: int, warmup: int) -> dict[str, Any]:
    """Latency of back-to-back GETs on one keep-alive connection, in milliseconds."""
    connection = http.client.HTTPConnection(HOST, target.service.port, timeout=30)
    timings: list[float] = []
    reconnects = 0
    clock = time.perf_counter_ns
    try:
        for index in range(warmup + requests):
            started = clock()
            connection.request("GET", path, headers=target.headers)
            response = connection.getresponse()
            response.read()
            elapsed = clock() - started
            if response.status != 200:
                raise RuntimeError(
                    f"{target.name}: GET {path} answered {response.status} "
                    f"{response.read()[:500]!r}\n{target.service.log_tail(5)}"
                )
            if response.will_close:
                reconnects += 1
            if index >= warmup:
                timings.append(elapsed / 1e6)
    finally:
        connection.close()
    timings.sort()
    return {
        "requests": len(timings),
        "p50_ms": percentile(timings, 0.50),
        "p90_ms": percentile(timings, 0.90),
        "p99_ms": percentile(timings, 0.99),
        "mean_ms": statistics.fmean(timings),
        "min_ms": timings[0],
        "max_ms": timings[-1],
        "reconnects": reconnects,
    }


# -- throughput ------------------------------------------------------------------------


def wrk_command(
    target: Target, path: str, duration: int, connections: int, threads: int
) -> list[str]:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in target.headers.items():
        command += ["-H", f"{name}: {value}"]
    return [*command, target.url + path]


def run_wrk(
    target: Target, path: str, duration: int, connections: int, threads: int
) -> dict[str, Any]:
    command = wrk_command(target, path, duration, connections, threads)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def run_python_load(target: Target, path: str, duration: int, connections: int) -> dict[str, Any]:
    """The fallback when wrk is missing: one thread and one keep-alive connection per slot."""
    deadline = time.monotonic() + duration
    counts = [[0, 0] for _ in range(connections)]  # [ok, not ok] per thread

    def worker(slot: list[int]) -> None:
        connection = http.client.HTTPConnection(HOST, target.service.port, timeout=30)
        try:
            while time.monotonic() < deadline:
                connection.request("GET", path, headers=target.headers)
                response = connection.getresponse()
                response.read()
                slot[0 if response.status == 200 else 1] += 1
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 60)
    elapsed = time.monotonic() - started
    total = sum(ok + bad for ok, bad in counts)
    return {
        "rps": total / elapsed,
        "requests": total,
        "non_2xx": sum(bad for _, bad in counts),
        "socket_errors": 0,
        "latency_under_load": {},
    }


def throughput(
    target: Target,
    simulator_worker: int,
    path: str,
    args: argparse.Namespace,
    use_wrk: bool,
) -> dict[str, Any]:
    """Requests/sec, plus the server worker's (and the simulator's) CPU per request."""
    worker = target.service.worker_pid()
    # The master too: granian's main process could do per-request work gunicorn's does not.
    master = target.service.process.pid
    cpu_before = cpu_seconds(worker), cpu_seconds(simulator_worker), cpu_seconds(master)
    if use_wrk:
        result = run_wrk(target, path, args.duration, args.connections, args.wrk_threads)
    else:
        result = run_python_load(target, path, args.duration, args.connections)
    cpu_after = cpu_seconds(worker), cpu_seconds(simulator_worker), cpu_seconds(master)
    served = result["requests"] or result["rps"] * args.duration
    result["worker_cpu_us_per_request"] = (cpu_after[0] - cpu_before[0]) / served * 1e6
    result["simulator_cpu_us_per_request"] = (cpu_after[1] - cpu_before[1]) / served * 1e6
    result["master_cpu_us_per_request"] = (cpu_after[2] - cpu_before[2]) / served * 1e6
    return result


# -- reporting -------------------------------------------------------------------------


def _median(rounds: list[dict[str, Any]], name: str, *keys: str) -> float:
    values = []
    for measured in rounds:
        value: Any = measured[name]
        for key in keys:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def _ratio(
    rounds: list[dict[str, Any]], medians: dict[str, Any], top: str, bottom: str, key: str
) -> dict[str, Any]:
    """``top``/``bottom`` of one median (``rps`` or worker CPU), and the same per round."""
    section = "latency" if key.endswith("_ms") else "throughput"
    return {
        "value": medians[top][key] / medians[bottom][key],
        "per_round": [r[top][section][key] / r[bottom][section][key] for r in rounds],
    }


def compare_servers(
    rounds: list[dict[str, Any]], medians: dict[str, Any], servers: list[str]
) -> dict[str, Any]:
    """Per server: the gateway against its own passthrough; per further server: each app
    against the same app on the first server (e.g. granian/gunicorn)."""
    first = servers[0]
    per_server: dict[str, Any] = {}
    for index, server in enumerate(servers):
        passthrough = served_name("passthrough", server, first=index == 0)
        gateway = served_name("gateway", server, first=index == 0)
        if passthrough not in medians or gateway not in medians:
            continue
        cpu = "worker_cpu_us_per_request"
        entry: dict[str, Any] = {
            "gateway_over_passthrough_rps": _ratio(rounds, medians, gateway, passthrough, "rps"),
            "gateway_minus_passthrough_p50_ms": medians[gateway]["p50_ms"]
            - medians[passthrough]["p50_ms"],
            "gateway_cpu_added_us": {
                "value": medians[gateway][cpu] - medians[passthrough][cpu],
                "per_round": [
                    r[gateway]["throughput"][cpu] - r[passthrough]["throughput"][cpu]
                    for r in rounds
                ],
            },
        }
        if index:
            entry[f"over_{first}"] = {
                app: {
                    key: _ratio(rounds, medians, served_name(app, server, False), app, key)
                    for key in ("rps", cpu, "p50_ms", "p99_ms")
                }
                for app in ("gateway", "passthrough")
            }
        per_server[server] = entry
    return per_server


def summarise(
    rounds: list[dict[str, Any]], names: list[str], servers: list[str] | None = None
) -> dict[str, Any]:
    medians = {
        name: {
            "p50_ms": _median(rounds, name, "latency", "p50_ms"),
            "p90_ms": _median(rounds, name, "latency", "p90_ms"),
            "p99_ms": _median(rounds, name, "latency", "p99_ms"),
            "rps": _median(rounds, name, "throughput", "rps"),
            "worker_cpu_us_per_request": _median(
                rounds, name, "throughput", "worker_cpu_us_per_request"
            ),
        }
        for name in names
    }
    summary: dict[str, Any] = {
        "medians": medians,
        "errors": {
            name: sum(
                r[name]["throughput"]["non_2xx"] + r[name]["throughput"]["socket_errors"]
                for r in rounds
            )
            for name in names
        },
    }
    if "passthrough" in medians:
        gateway, passthrough = medians["gateway"], medians["passthrough"]
        delta = gateway["p50_ms"] - passthrough["p50_ms"]
        ratio = gateway["rps"] / passthrough["rps"]
        summary["gateway_minus_passthrough_p50_ms"] = {
            "value": delta,
            "target": f"<= {LATENCY_TARGET_MS}",
            "pass": delta <= LATENCY_TARGET_MS,
            "per_round": [
                r["gateway"]["latency"]["p50_ms"] - r["passthrough"]["latency"]["p50_ms"]
                for r in rounds
            ],
        }
        summary["gateway_over_passthrough_rps"] = {
            "value": ratio,
            "target": f">= {THROUGHPUT_TARGET}",
            "pass": ratio >= THROUGHPUT_TARGET,
            "per_round": [
                r["gateway"]["throughput"]["rps"] / r["passthrough"]["throughput"]["rps"]
                for r in rounds
            ],
        }
    if servers and len(servers) > 1:
        summary["servers"] = compare_servers(rounds, medians, servers)
    if BASELINE in medians and "passthrough" in medians:
        summary["baseline"] = compare_baseline(rounds, medians)
    return summary


def compare_baseline(rounds: list[dict[str, Any]], medians: dict[str, Any]) -> dict[str, Any]:
    """--compare-code: each gateway against the passthrough, and this one against the
    other checkout's, per round and as medians."""
    cpu = "worker_cpu_us_per_request"

    def added(name: str) -> dict[str, Any]:
        return {
            "value": medians[name][cpu] - medians["passthrough"][cpu],
            "per_round": [
                r[name]["throughput"][cpu] - r["passthrough"]["throughput"][cpu] for r in rounds
            ],
        }

    return {
        name: {
            "over_passthrough_rps": _ratio(rounds, medians, name, "passthrough", "rps"),
            "cpu_added_us": added(name),
        }
        for name in ("gateway", BASELINE)
    } | {
        "gateway_over_baseline_rps": _ratio(rounds, medians, "gateway", BASELINE, "rps"),
        "gateway_minus_baseline_cpu_us": {
            "value": medians["gateway"][cpu] - medians[BASELINE][cpu],
            "per_round": [
                r["gateway"]["throughput"][cpu] - r[BASELINE]["throughput"][cpu] for r in rounds
            ],
        },
    }


def print_round(number: int, order: list[str], measured: dict[str, Any]) -> None:
    print(f"\nround {number} (order: {', '.join(order)})")
    for name in order:
        lat, thr = measured[name]["latency"], measured[name]["throughput"]
        problems = ""
        if thr["non_2xx"] or thr["socket_errors"] or lat["reconnects"]:
            problems = (
                f"  [non-2xx {thr['non_2xx']}, socket errors {thr['socket_errors']}, "
                f"reconnects {lat['reconnects']}]"
            )
        print(
            f"  {name:<22} p50 {lat['p50_ms']:6.3f}  p90 {lat['p90_ms']:6.3f}  "
            f"p99 {lat['p99_ms']:6.3f} ms   {thr['rps']:8.1f} req/s   "
            f"worker CPU {thr['worker_cpu_us_per_request']:6.0f} us/req{problems}",
            flush=True,
        )


def print_summary(summary: dict[str, Any], rounds: int) -> None:
    medians = summary["medians"]
    print(f"\nMedians of {rounds} round(s), GET /v1/videos/{{id}}")
    header = (
        f"{'target':<22} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'req/s':>9} "
        f"{'worker CPU us/req':>18}"
    )
    print(header)
    print("-" * len(header))
    for name, row in medians.items():
        print(
            f"{name:<22} {row['p50_ms']:8.3f} {row['p90_ms']:8.3f} {row['p99_ms']:8.3f} "
            f"{row['rps']:9.1f} {row['worker_cpu_us_per_request']:18.0f}"
        )
    failed = {name: count for name, count in summary["errors"].items() if count}
    if failed:
        print(
            f"WARNING: non-2xx answers or socket errors under load {failed}: "
            "those rates are not comparable"
        )
    if "gateway_minus_passthrough_p50_ms" in summary:
        delta = summary["gateway_minus_passthrough_p50_ms"]
        ratio = summary["gateway_over_passthrough_rps"]
        per_delta = ", ".join(f"{v:+.3f}" for v in delta["per_round"])
        per_ratio = ", ".join(f"{v:.3f}" for v in ratio["per_round"])
        print()
        print(
            f"gateway p50 - passthrough p50 = {delta['value']:+.3f} ms  "
            f"(target <= {LATENCY_TARGET_MS:.1f} ms)  {'PASS' if delta['pass'] else 'MISS'}"
            f"   rounds: {per_delta}"
        )
        print(
            f"gateway / passthrough req/s   = {ratio['value']:.3f}     "
            f"(target >= {THROUGHPUT_TARGET:.1f})     {'PASS' if ratio['pass'] else 'MISS'}"
            f"   rounds: {per_ratio}"
        )
    if "servers" in summary:
        print_servers(summary["servers"])
    if "baseline" in summary:
        print_baseline(summary["baseline"])


def _rounds(ratio: dict[str, Any], form: str = ".3f") -> str:
    return ", ".join(format(value, form) for value in ratio["per_round"])


def print_servers(per_server: dict[str, Any]) -> None:
    """The server comparison: each server's gateway/passthrough, then granian/gunicorn."""
    first = next(iter(per_server))
    print("\nper server (medians; rounds in brackets)")
    for server, entry in per_server.items():
        ratio, added = entry["gateway_over_passthrough_rps"], entry["gateway_cpu_added_us"]
        print(
            f"  {server:<9} gateway / passthrough req/s {ratio['value']:.3f} [{_rounds(ratio)}]"
            f"   gateway CPU added {added['value']:+5.0f} us [{_rounds(added, '+.0f')}]"
            f"   p50 added {entry['gateway_minus_passthrough_p50_ms']:+.3f} ms"
        )
    for server, entry in per_server.items():
        if server == first:
            continue
        for app, ratios in entry[f"over_{first}"].items():
            rps, cpu = ratios["rps"], ratios["worker_cpu_us_per_request"]
            print(
                f"  {app:<11} {server}/{first}: req/s {rps['value']:.3f} [{_rounds(rps)}]"
                f"   worker CPU/req {cpu['value']:.3f} [{_rounds(cpu)}]"
                f"   p50 {ratios['p50_ms']['value']:.3f}   p99 {ratios['p99_ms']['value']:.3f}"
            )


def print_baseline(baseline: dict[str, Any]) -> None:
    """--compare-code: this checkout's gateway and the other one's, each over the passthrough."""
    print("\nthis checkout against --compare-code (medians; rounds in brackets)")
    for name in ("gateway", BASELINE):
        ratio, added = baseline[name]["over_passthrough_rps"], baseline[name]["cpu_added_us"]
        print(
            f"  {name:<13} / passthrough req/s {ratio['value']:.3f} [{_rounds(ratio)}]"
            f"   worker CPU added {added['value']:+5.0f} us [{_rounds(added, '+.0f')}]"
        )
    ratio, delta = baseline["gateway_over_baseline_rps"], baseline["gateway_minus_baseline_cpu_us"]
    print(
        f"  gateway / {BASELINE} req/s {ratio['value']:.3f} [{_rounds(ratio)}]"
        f"   worker CPU {delta['value']:+5.0f} us [{_rounds(delta, '+.0f')}]"
    )


# -- main ------------------------------------------------------------------------------


def _checkout(option: str, path: str) -> str:
    code = Path(path).resolve()
    if not (code / "bench" / "serve.py").is_file():
        raise SystemExit(f"{option}: {code} is not a Drawbridge checkout")
    return str(code)


def gateway_process_env(args: argparse.Namespace) -> dict[str, str]:
    """The first gateway's extra process environment: a patch, another checkout's code."""
    env = {"BENCH_PATCH": args.gateway_patch} if args.gateway_patch else {}
    if args.gateway_code:
        env[CODE_VARIABLE] = _checkout("--gateway-code", args.gateway_code)
    return env


def extra_gateways(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The gateways measured beside the first: a patched one, another checkout's."""
    extras: dict[str, dict[str, str]] = {}
    if args.compare_patch:
        extras[f"gateway+{args.compare_patch}"] = {"BENCH_PATCH": args.compare_patch}
    if args.compare_code:
        extras[BASELINE] = {CODE_VARIABLE: _checkout("--compare-code", args.compare_code)}
    return extras


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="sequential, per target")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--duration", type=int, default=10, help="wrk -d, seconds")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load client")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument(
        "--servers",
        default="gunicorn",
        metavar="NAMES",
        help=f"WSGI servers of the gateway and the passthrough, comma-separated, from "
        f"{', '.join(SERVERS)}; the first keeps the plain names (default gunicorn)",
    )
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="DRAWBRIDGE_NAME=VALUE",
        help="extra gateway setting (repeatable), e.g. DRAWBRIDGE_LOG_LEVEL=WARNING",
    )
    parser.add_argument(
        "--gateway-patch",
        default="",
        metavar="NAMES",
        help="EXPERIMENT: apply bench/serve.py patches to the gateway (e.g. limiter-timer)",
    )
    parser.add_argument(
        "--compare-patch",
        default="",
        metavar="NAMES",
        help="EXPERIMENT: also measure a second gateway with these patches (an A/B in one run)",
    )
    parser.add_argument(
        "--compare-code",
        default=None,
        metavar="PATH",
        help="also measure the gateway of another checkout (e.g. a worktree of main) as "
        f"{BASELINE!r}, on the same database (an A/B of two builds in one run)",
    )
    parser.add_argument(
        "--gateway-code",
        default=None,
        metavar="PATH",
        help="serve the gateway itself from another checkout (with --compare-code, to "
        "swap the two builds' places in the rounds)",
    )
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH")
    parser.add_argument("--max-seconds", type=int, default=None, help="watchdog")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if not servers or set(servers) - set(SERVERS) or len(set(servers)) != len(servers):
        raise SystemExit(f"--servers takes distinct names from {', '.join(SERVERS)}")
    measured_targets = (
        3 + 2 * (len(servers) - 1) + bool(args.compare_patch) + bool(args.compare_code)
    )
    per_round = measured_targets * (args.duration + 15 + args.requests * 0.01)
    install_watchdog(args.max_seconds or int(120 + args.rounds * per_round))
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    facts = machine_facts()
    print("Drawbridge proxy benchmark: GET /v1/videos/{id}")
    print(f"command: {command_line()}")
    print(
        f"machine: nproc={facts['nproc']} ({facts['cpu_model']}), Python {facts['python']} "
        f"({facts['implementation']}), {facts['platform']}, loadavg {facts['loadavg']}"
    )
    if args.gateway_patch:
        print(f"EXPERIMENT: gateway patched with {args.gateway_patch} (bench/serve.py)")
    if args.compare_patch:
        print(f"EXPERIMENT: a second gateway patched with {args.compare_patch} is measured too")
    if args.gateway_code:
        print(f"the gateway is served from {args.gateway_code}")
    if args.compare_code:
        print(f"A/B: the gateway of {args.compare_code} is measured too, as {BASELINE!r}")
    if args.gateway_env:
        print(f"gateway settings added: {', '.join(args.gateway_env)}")
    if not use_wrk:
        reason = "--no-wrk" if args.no_wrk else "wrk not found"
        print(f"NOTE: throughput measured with the threaded Python client ({reason}), not wrk")

    with Stack(
        workers=args.workers,
        threads=args.threads,
        database_url=args.database_url,
        gateway_env=setting_pairs(args.gateway_env),
        gateway_process_env=gateway_process_env(args),
        extra_gateways=extra_gateways(args),
        servers=tuple(servers),
    ) as stack:
        setup = stack.describe()
        targets = {target.name: target for target in stack.targets()}
        names = [name for name in ORDER if name in targets]
        names += [name for name in targets if name not in ORDER]
        simulator_worker = stack.simulator.worker_pid()
        served = " and ".join(
            "gunicorn gthread"
            if server == "gunicorn"
            else "granian WSGI (threads = blocking threads, 1 runtime thread)"
            for server in servers
        )
        print(
            f"servers: gateway and passthrough under {served}, "
            f"{setup['workers']} worker(s) x {setup['threads']} threads; simulator 1 worker x "
            f"16 threads; gateway database: {setup['database']}"
        )
        tool = (
            f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s --latency "
            "--timeout 10s [-H 'Authorization: Bearer ...'] URL"
            if use_wrk
            else f"{args.connections} Python threads for {args.duration}s"
        )
        print(
            f"client: {args.requests} sequential GETs over one keep-alive http.client "
            f"connection (after {args.warmup} warm-up); throughput: {tool}"
        )
        rounds: list[dict[str, Any]] = []
        for number in range(args.rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            measured: dict[str, Any] = {}
            for name in order:
                target = targets[name]
                path = f"/v1/videos/{target.video_id}"
                latency = sequential_latency(target, path, args.requests, args.warmup)
                time.sleep(0.5)
                load = throughput(target, simulator_worker, path, args, use_wrk)
                time.sleep(0.5)
                measured[name] = {"latency": latency, "throughput": load}
            rounds.append(measured)
            print_round(number + 1, order, measured)

    summary = summarise(rounds, names, servers)
    print_summary(summary, args.rounds)
    facts["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    print(f"\nloadavg at start {facts['loadavg']}, at end {facts['loadavg_end']}")
    if args.json_path:
        write_json(
            args.json_path,
            {
                "benchmark": "proxy",
                "command": command_line(),
                "machine": facts,
                "setup": {**setup, "gateway_patch": args.gateway_patch or None},
                "client": {
                    "sequential_requests": args.requests,
                    "warmup": args.warmup,
                    "load_tool": "wrk" if use_wrk else "python-threads",
                    "duration_s": args.duration,
                    "connections": args.connections,
                    "wrk_threads": args.wrk_threads,
                },
                "rounds": rounds,
                "summary": summary,
            },
        )
        print(f"results written to {args.json_path}")


if __name__ == "__main__":
    main()
