"""What policy, quota and the ledger cost on ``POST /v1/videos``: ``python -m bench.create``.

Every create through the gateway is checked against the cohort's policy, reserves its quota
together with its billable usage event (one write transaction), is forwarded, and is recorded
in the ledger (a second write transaction). The bare passthrough only forwards. Both run with
the same gunicorn settings against the same simulator, in one run; the quotas are on but set
out of reach, so every create is admitted and the whole path is measured.

Prints sequential latency (p50/p90/p99 over one keep-alive connection) and throughput (wrk
with a small Lua script for the POST), and the ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import BENCH_COHORT, HOST, UNLIMITED_REQUESTS, Stack, command_line

BODY = json.dumps({"prompt": "a benchmark clip", "model": "sora-2", "seconds": "4"})
QUOTAS_OUT_OF_REACH = {
    "generations_per_day": 10**9,
    "video_seconds_per_day": 10**9,
    "video_seconds_per_month": 10**9,
    "concurrent_jobs": 10**9,
}


def raise_quotas(stack: Stack) -> None:
    from gateway.settings import load_settings, root_secret_of
    from gateway.state import build_store
    from keys.access.vault import Vault
    from keys.limits.policies import Policy

    settings = load_settings(environ=stack.settings_env)
    store = build_store(settings, Vault(root_secret_of(settings)))
    try:
        with store.transaction() as tx:
            policy = Policy(**UNLIMITED_REQUESTS, **QUOTAS_OUT_OF_REACH)
            tx.policies.set_policy(BENCH_COHORT, policy, "bench")
    finally:
        store.database.dispose()


def sequential(port: int, headers: dict[str, str], requests: int, warmup: int) -> dict[str, float]:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    timings = []
    try:
        for index in range(warmup + requests):
            started = time.perf_counter()
            connection.request("POST", "/v1/videos", body=BODY, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST answered {response.status}: {body[:300]!r}")
            if index >= warmup:
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
    timings.sort()
    return {
        "p50": statistics.median(timings),
        "p90": timings[int(len(timings) * 0.9)],
        "p99": timings[int(len(timings) * 0.99)],
    }


def throughput(port: int, headers: dict[str, str], duration: int) -> float:
    script = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(BODY)}",
            *(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()),
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        done = subprocess.run(
            [
                "wrk",
                "-t2",
                "-c16",
                f"-d{duration}s",
                "-s",
                file.name,
                f"http://{HOST}:{port}/v1/videos",
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        )
    finally:
        Path(file.name).unlink()
    if "Non-2xx" in done.stdout:
        raise RuntimeError(f"some creates were refused:\n{done.stdout}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("Requests/sec"))
    return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.create", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"passthrough": {}, "gateway": {}}
    with Stack(database_url=args.database_url) as stack:
        raise_quotas(stack)
        assert stack.passthrough is not None
        targets = {
            "passthrough": (stack.passthrough.port, {"Content-Type": "application/json"}),
            "gateway": (
                stack.gateway.port,
                {"Content-Type": "application/json", "Authorization": f"Bearer {stack.tester_key}"},
            ),
        }
        for _ in range(args.rounds):
            for name, (port, headers) in targets.items():
                latency = sequential(port, headers, args.requests, warmup=50)
                rps = throughput(port, headers, args.duration)
                for metric, value in {**latency, "rps": rps}.items():
                    results[name].setdefault(metric, []).append(value)
    print(f"command: {command_line()}")
    print(f"Medians of {args.rounds} round(s), POST /v1/videos (JSON), quotas on")
    print(f"{'target':<14}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>10}")
    medians = {
        name: {metric: statistics.median(values) for metric, values in metrics.items()}
        for name, metrics in results.items()
    }
    for name, m in medians.items():
        print(f"{name:<14}{m['p50']:>9.3f}{m['p90']:>9.3f}{m['p99']:>9.3f}{m['rps']:>10.1f}")
    gap = medians["gateway"]["p50"] - medians["passthrough"]["p50"]
    ratio = medians["gateway"]["rps"] / medians["passthrough"]["rps"]
    print(f"gateway p50 - passthrough p50 = {gap:+.3f} ms")
    print(f"gateway / passthrough req/s   = {ratio:.3f}")


if __name__ == "__main__":
    main()
