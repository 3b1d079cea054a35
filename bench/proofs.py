"""What proof of possession costs the gateway's worker: ``python -m bench.proofs``.

One run starts the simulator, the bare passthrough and the gateway (bench/harness.py, the
same gunicorn settings for the last two) on a fresh SQLite database (or ``--database-url``),
and gives the benchmark tester a second key with a proof key bound
(docs/proof-of-possession.md). Then, for each of

  (a) the bare passthrough, (b) the gateway with the unbound key,
  (c) the same gateway with the bound key, every request signed afresh,

it sends ``--requests`` ``GET /v1/videos/{id}`` one after another over one keep-alive
``http.client`` connection (after ``--warmup`` unmeasured ones) and reads the CPU time the
server's gunicorn worker spent from /proc before and after: worker CPU microseconds per
request. The client signs (an RFC 9421 signature per request, by ``gateway.client``'s
``ProofSigner``) in this process, in batches *before* each batch is sent, so none of the
signing is in the number: only the worker's verification of it (the signature, and the
nonce claimed in Redis or, without ``--redis-url``, in the database).

Rounds are interleaved (each rotates the order); the medians are compared with the
target: (c) - (b) at most 150 us of worker CPU per request.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

from bench.harness import (
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    HOST,
    Stack,
    Target,
    command_line,
    cpu_seconds,
    install_watchdog,
    machine_facts,
    percentile,
    write_json,
)
from gateway.client import ProofSigner, load_proof_key, new_proof_key

ADDED_TARGET_US = 150.0
ORDER = ("passthrough", "gateway", "gateway+proof")
# Signed just before they are sent, well inside the 60 s window and each with its own nonce.
SIGN_BATCH = 250
_SIGNATURE_HEADERS = ("signature", "signature-input")


def bound_key(stack: Stack, directory: Path) -> tuple[str, ProofSigner]:
    """A second key of the benchmark tester (so it reads the same video), with a proof key
    bound: its secret and a signer holding the private key."""
    from gateway.settings import load_settings, root_secret_of
    from gateway.state import build_store
    from keys.access.vault import Vault

    settings = load_settings(environ=stack.settings_env)
    store = build_store(settings, Vault(root_secret_of(settings)))
    key_file = directory / "proof-key.pem"
    try:
        with store.transaction() as tx:
            tester_id = tx.keys.verify(stack.tester_key).tester_id
            issued = tx.keys.issue(tester_id, "bench", metadata={"purpose": "benchmark"})
            tx.proof_keys.bind(issued.key.id, new_proof_key(key_file), "bench")
    finally:
        store.database.dispose()
    return issued.secret, ProofSigner(load_proof_key(key_file))


class Requests:
    """The header sets of a target's requests: the same each time, or signed afresh."""

    def __init__(self, target: Target, path: str, signer: ProofSigner | None = None) -> None:
        self.target, self.path, self.signer = target, path, signer

    def batch(self, count: int) -> list[dict[str, str]]:
        if self.signer is None:
            return [self.target.headers] * count
        url = f"{self.target.url}{self.path}"
        signed = []
        for _ in range(count):
            request = httpx2.Request("GET", url, headers=self.target.headers)
            self.signer(request)
            signed.append(
                {
                    **self.target.headers,
                    **{name: request.headers[name] for name in _SIGNATURE_HEADERS},
                }
            )
        return signed


def measure(requests: Requests, count: int, warmup: int) -> dict[str, Any]:
    """Sequential GETs on one keep-alive connection: the worker's CPU per request (read
    around the sends only) and the latency seen by the client."""
    target = requests.target
    worker = target.service.worker_pid()
    connection = http.client.HTTPConnection(HOST, target.service.port, timeout=30)
    timings: list[float] = []
    cpu = 0.0
    clock = time.perf_counter_ns
    try:
        for measured, total in ((False, warmup), (True, count)):
            left = total
            while left:
                batch = requests.batch(min(SIGN_BATCH, left))
                left -= len(batch)
                before = cpu_seconds(worker)
                for headers in batch:
                    started = clock()
                    connection.request("GET", requests.path, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    elapsed = clock() - started
                    if response.status != 200:
                        raise RuntimeError(
                            f"{target.name}: GET {requests.path} answered {response.status} "
                            f"{response.read()[:300]!r}\n{target.service.log_tail(5)}"
                        )
                    if measured:
                        timings.append(elapsed / 1e6)
                if measured:
                    cpu += cpu_seconds(worker) - before
    finally:
        connection.close()
    timings.sort()
    return {
        "requests": len(timings),
        "worker_cpu_us_per_request": cpu / len(timings) * 1e6,
        "p50_ms": percentile(timings, 0.50),
        "p90_ms": percentile(timings, 0.90),
    }


def summarise(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    def median(name: str, field: str) -> float:
        return statistics.median(r[name][field] for r in rounds)

    medians = {
        name: {
            "worker_cpu_us_per_request": median(name, "worker_cpu_us_per_request"),
            "p50_ms": median(name, "p50_ms"),
            "p90_ms": median(name, "p90_ms"),
        }
        for name in names
    }
    added_per_round = [
        r["gateway+proof"]["worker_cpu_us_per_request"] - r["gateway"]["worker_cpu_us_per_request"]
        for r in rounds
    ]
    bound = medians["gateway+proof"]["worker_cpu_us_per_request"]
    unbound = medians["gateway"]["worker_cpu_us_per_request"]
    passthrough = medians["passthrough"]["worker_cpu_us_per_request"]
    added = bound - unbound
    return {
        "medians": medians,
        "added_worker_cpu_us": {
            "value": added,
            "median_of_rounds": statistics.median(added_per_round),
            "per_round": added_per_round,
            "target": f"<= {ADDED_TARGET_US:.0f}",
            "pass": added <= ADDED_TARGET_US,
        },
        "proof_over_unbound_cpu": bound / unbound,
        "proof_over_passthrough_cpu": bound / passthrough,
        "unbound_over_passthrough_cpu": unbound / passthrough,
    }


def print_round(number: int, order: list[str], measured: dict[str, Any]) -> None:
    print(f"\nround {number} (order: {', '.join(order)})")
    for name in order:
        row = measured[name]
        print(
            f"  {name:<14} worker CPU {row['worker_cpu_us_per_request']:7.1f} us/req   "
            f"p50 {row['p50_ms']:6.3f}  p90 {row['p90_ms']:6.3f} ms",
            flush=True,
        )


def print_summary(summary: dict[str, Any], rounds: int, replays: str) -> None:
    print(f"\nMedians of {rounds} round(s), GET /v1/videos/{{id}}; nonces claimed in {replays}")
    header = f"{'target':<14} {'worker CPU us/req':>18} {'p50 ms':>8} {'p90 ms':>8}"
    print(header)
    print("-" * len(header))
    for name, row in summary["medians"].items():
        print(
            f"{name:<14} {row['worker_cpu_us_per_request']:18.1f} {row['p50_ms']:8.3f} "
            f"{row['p90_ms']:8.3f}"
        )
    added = summary["added_worker_cpu_us"]
    per_round = ", ".join(f"{value:+.1f}" for value in added["per_round"])
    print()
    print(
        f"proof verification adds {added['value']:+.1f} us of worker CPU per request "
        f"(target <= {ADDED_TARGET_US:.0f} us)  {'PASS' if added['pass'] else 'MISS'}"
        f"   rounds: {per_round}"
    )
    print(
        f"worker CPU ratios: proof / unbound = {summary['proof_over_unbound_cpu']:.3f}, "
        f"proof / passthrough = {summary['proof_over_passthrough_cpu']:.3f}, "
        f"unbound / passthrough = {summary['unbound_over_passthrough_cpu']:.3f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.proofs", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per target and round")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    parser.add_argument(
        "--redis-url", default=None, help="claim nonces (and count limits) in this Redis"
    )
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH")
    parser.add_argument("--max-seconds", type=int, default=None, help="watchdog")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    install_watchdog(args.max_seconds or int(120 + args.rounds * 3 * (5 + args.requests / 200)))
    facts = machine_facts()
    replays = "Redis" if args.redis_url else "the database"
    print("Drawbridge proof-of-possession benchmark: GET /v1/videos/{id}")
    print(f"command: {command_line()}")
    print(
        f"machine: nproc={facts['nproc']} ({facts['cpu_model']}), Python {facts['python']}, "
        f"loadavg {facts['loadavg']}"
    )
    gateway_env = {"DRAWBRIDGE_REDIS_URL": args.redis_url} if args.redis_url else {}
    with (
        tempfile.TemporaryDirectory(prefix="drawbridge-bench-proofs-") as directory,
        Stack(
            workers=args.workers,
            threads=args.threads,
            database_url=args.database_url,
            gateway_env=gateway_env,
        ) as stack,
    ):
        secret, signer = bound_key(stack, Path(directory))
        targets = {target.name: target for target in stack.targets()}
        gateway = targets["gateway"]
        bound = Target(
            "gateway+proof",
            gateway.service,
            {"Authorization": f"Bearer {secret}"},
            gateway.video_id,
        )
        plans = {
            "passthrough": Requests(
                targets["passthrough"], f"/v1/videos/{targets['passthrough'].video_id}"
            ),
            "gateway": Requests(gateway, f"/v1/videos/{gateway.video_id}"),
            "gateway+proof": Requests(bound, f"/v1/videos/{gateway.video_id}", signer),
        }
        setup = stack.describe()
        print(
            f"servers: gunicorn {setup['worker_class']}, {setup['workers']} worker(s) x "
            f"{setup['threads']} threads; database: {setup['database']}; nonces in {replays}; "
            f"proof key: {signer.algorithm_id}"
        )
        print(
            f"client: {args.requests} sequential GETs per target and round over one keep-alive "
            f"connection (after {args.warmup}); signed in batches of {SIGN_BATCH} before "
            "sending, outside the measured worker CPU"
        )
        names = list(ORDER)
        rounds: list[dict[str, Any]] = []
        for number in range(args.rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            measured = {name: measure(plans[name], args.requests, args.warmup) for name in order}
            rounds.append(measured)
            print_round(number + 1, order, measured)

    summary = summarise(rounds, names)
    print_summary(summary, args.rounds, replays)
    facts["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    print(f"\nloadavg at start {facts['loadavg']}, at end {facts['loadavg_end']}")
    if args.json_path:
        write_json(
            args.json_path,
            {
                "benchmark": "proofs",
                "command": command_line(),
                "machine": facts,
                "setup": {**setup, "replays": replays},
                "rounds": rounds,
                "summary": summary,
            },
        )
        print(f"results written to {args.json_path}")


if __name__ == "__main__":
    main()
