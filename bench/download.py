"""A large content download through the gateway vs the simulator: ``python -m bench.download``.

The simulator serves a real MP4 of ``--bytes`` (default 30 MiB, a 10-second 1080p file's
size) per video (``DRAWBRIDGE_SIM_CONTENT_BYTES``). The client fetches
``GET /v1/videos/{id}/content`` with ``requests`` (``stream=True``, ``iter_content(1 MiB)``,
chunks discarded) from

  (a) the simulator direct, (b) the bare passthrough (for reference), (c) the gateway, which
  appends a signed C2PA manifest to every download (docs/provenance.md), on a repeat
  delivery of its video (warm: delivered during a warm-up, so a hit of the host's content
  cache: the simulator answers the conditional GET with 304 and the cached file streams),
  (c'') the same warm delivery with the content cache off (``provenance_cache_bytes = 0``:
  the backend's bytes again, hashed as they pass, signed with the worker's remembered
  binding), (c') the gateway on a fresh video each round (cold: the first delivery of those
  bytes, c2pa hashes them; the cache keeps them), and (d) the same gateway with
  ``provenance_sign = false``, which streams the backend's bytes as they come,

and reports the throughput of each (MiB/s, first byte requested to last byte read), the time
to the first byte, the gateway/simulator ratio (warm and cold apart) (target
>= 0.7) and the signing cost per file (the signed gateway's time minus the unsigned
one's). While each download runs, a thread samples the
serving gunicorn worker's VmRSS (``/proc/<worker>/status``) every 50 ms: before, after and
peak are reported, and the gateway's growth (peak - before) must stay under 64 MiB. The
worker's CPU time per GiB is reported too, and the CPU all processes of the path spent
(client + simulator + proxy worker), since on a small machine they compete for the cores.
``--rounds`` repeats the set, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

import requests

from bench.harness import (
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    MIB,
    Stack,
    Target,
    command_line,
    cpu_seconds,
    install_watchdog,
    labelled_counts,
    machine_facts,
    rss_bytes,
    write_json,
)

GIB = 1024 * MIB
THROUGHPUT_TARGET = 0.7
RSS_GROWTH_TARGET_MIB = 64
SAMPLE_SECONDS = 0.05
CLIENT_CHUNK = MIB
ORDER = (
    "simulator",
    "passthrough",
    "gateway",
    "gateway-nocache",
    "gateway-cold",
    "gateway-unsigned",
)
UNSIGNED = "gateway-unsigned"
# The warm delivery without the host's content cache (what "gateway" measured before it).
NOCACHE = "gateway-nocache"
# A video's first signed delivery in a worker: c2pa hashes a copy of the bytes after the last
# one (docs/provenance.md); a fresh video each round. "gateway" is a repeat (warm) delivery.
COLD = "gateway-cold"
WARM_UPS = 6


class RssSampler(threading.Thread):
    """VmRSS of one process every ``SAMPLE_SECONDS`` until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append(rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def download(target: Target, expected: int, simulator_worker: int) -> dict[str, Any]:
    path = f"/v1/videos/{target.video_id}/content"
    worker = target.service.worker_pid()
    before = rss_bytes(worker)
    cpu_before = cpu_seconds(worker), cpu_seconds(simulator_worker)
    client_cpu_before = time.process_time()
    sampler = RssSampler(worker)
    sampler.start()
    received = 0
    first_byte = 0.0
    try:
        with requests.Session() as session:
            session.trust_env = False
            started = time.perf_counter()
            with session.get(
                target.url + path, headers=target.headers, stream=True, timeout=(5, 60)
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{target.name}: {response.status_code} {response.text[:500]}\n"
                        f"{target.service.log_tail(5)}"
                    )
                for chunk in response.iter_content(CLIENT_CHUNK):
                    if not received:
                        first_byte = time.perf_counter() - started
                    received += len(chunk)
            elapsed = time.perf_counter() - started
    finally:
        sampler.stop()
    client_cpu = time.process_time() - client_cpu_before
    after = rss_bytes(worker)
    cpu_after = cpu_seconds(worker), cpu_seconds(simulator_worker)
    # A signed download is the backend's file plus its manifest (a few KiB).
    signed = target.name in ("gateway", COLD, NOCACHE) or target.name.startswith("gateway+")
    if received != expected and not (signed and expected < received < expected + MIB):
        raise RuntimeError(f"{target.name}: received {received} bytes, expected {expected}")
    peak = max([before, after, *sampler.samples])
    gib = received / GIB
    return {
        "bytes": received,
        "seconds": elapsed,
        "first_byte_s": first_byte,
        "mib_per_s": received / MIB / elapsed,
        "worker_pid": worker,
        "rss_before_mib": before / MIB,
        "rss_after_mib": after / MIB,
        "rss_peak_mib": peak / MIB,
        "rss_growth_mib": (peak - before) / MIB,
        "rss_samples": len(sampler.samples),
        "worker_cpu_s_per_gib": (cpu_after[0] - cpu_before[0]) / gib,
        "simulator_cpu_s_per_gib": (cpu_after[1] - cpu_before[1]) / gib,
        "client_cpu_s_per_gib": client_cpu / gib,
    }


def cache_outcomes(url: str) -> dict[str, int]:
    """The gateway's deliveries by content cache outcome (hit, miss, refused)."""
    with requests.Session() as session:
        session.trust_env = False
        text = session.get(url + "/metrics", timeout=10).text
    return labelled_counts(text, "drawbridge_provenance_cache_total")


def summarise(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    def column(name: str, key: str) -> list[float]:
        return [measured[name][key] for measured in rounds]

    medians = {
        name: {
            "mib_per_s": statistics.median(column(name, "mib_per_s")),
            "seconds": statistics.median(column(name, "seconds")),
            "first_byte_s": statistics.median(column(name, "first_byte_s")),
            "rss_before_mib": column(name, "rss_before_mib")[0],
            "rss_after_mib": column(name, "rss_after_mib")[-1],
            "rss_peak_mib": max(column(name, "rss_peak_mib")),
            "rss_growth_mib_max": max(column(name, "rss_growth_mib")),
            "worker_cpu_s_per_gib": statistics.median(column(name, "worker_cpu_s_per_gib")),
            "all_cpu_s_per_gib": statistics.median(
                [
                    m[name]["client_cpu_s_per_gib"]
                    + m[name]["simulator_cpu_s_per_gib"]
                    + (m[name]["worker_cpu_s_per_gib"] if name != "simulator" else 0.0)
                    for m in rounds
                ]
            ),
        }
        for name in names
    }
    ratio = medians["gateway"]["mib_per_s"] / medians["simulator"]["mib_per_s"]
    growth = medians["gateway"]["rss_growth_mib_max"]
    signing = (
        {
            "seconds_per_file": statistics.median(
                [r["gateway"]["seconds"] - r[UNSIGNED]["seconds"] for r in rounds]
            ),
            "first_byte_delay_s": statistics.median(
                [r["gateway"]["first_byte_s"] - r[UNSIGNED]["first_byte_s"] for r in rounds]
            ),
            "worker_cpu_s_per_gib": medians["gateway"]["worker_cpu_s_per_gib"]
            - medians[UNSIGNED]["worker_cpu_s_per_gib"],
            "signed_over_unsigned_throughput": medians["gateway"]["mib_per_s"]
            / medians[UNSIGNED]["mib_per_s"],
        }
        if UNSIGNED in medians
        else None
    )
    cold = (
        {
            "gateway_over_simulator_throughput": medians[COLD]["mib_per_s"]
            / medians["simulator"]["mib_per_s"],
            "per_round": [r[COLD]["mib_per_s"] / r["simulator"]["mib_per_s"] for r in rounds],
            "seconds_per_file": statistics.median(
                [r[COLD]["seconds"] - r[UNSIGNED]["seconds"] for r in rounds]
            ),
            "first_byte_delay_s": statistics.median(
                [r[COLD]["first_byte_s"] - r[UNSIGNED]["first_byte_s"] for r in rounds]
            ),
            "rss_growth_mib_max": medians[COLD]["rss_growth_mib_max"],
        }
        if COLD in medians and UNSIGNED in medians
        else None
    )
    nocache = (
        {
            "gateway_over_simulator_throughput": medians[NOCACHE]["mib_per_s"]
            / medians["simulator"]["mib_per_s"],
            "per_round": [r[NOCACHE]["mib_per_s"] / r["simulator"]["mib_per_s"] for r in rounds],
        }
        if NOCACHE in medians
        else None
    )
    return {
        "medians": medians,
        "signing_cost": signing,
        "cold": cold,
        "nocache": nocache,
        "gateway_over_simulator_throughput": {
            "value": ratio,
            "target": f">= {THROUGHPUT_TARGET}",
            "pass": ratio >= THROUGHPUT_TARGET,
            "per_round": [r["gateway"]["mib_per_s"] / r["simulator"]["mib_per_s"] for r in rounds],
        },
        "gateway_rss_growth_mib": {
            "value": growth,
            "target": f"< {RSS_GROWTH_TARGET_MIB}",
            "pass": growth < RSS_GROWTH_TARGET_MIB,
            "per_round": column("gateway", "rss_growth_mib"),
        },
    }


def print_round(number: int, order: list[str], measured: dict[str, Any]) -> None:
    print(f"\nround {number} (order: {', '.join(order)})")
    for name in order:
        m = measured[name]
        print(
            f"  {name:<22} {m['mib_per_s']:8.1f} MiB/s  {m['seconds']:6.2f} s (first byte "
            f"{m['first_byte_s'] * 1000:.0f} ms)   worker RSS "
            f"{m['rss_before_mib']:.1f} -> {m['rss_after_mib']:.1f} MiB (peak "
            f"{m['rss_peak_mib']:.1f}, {m['rss_samples']} samples)   worker CPU "
            f"{m['worker_cpu_s_per_gib']:.2f} s/GiB (simulator {m['simulator_cpu_s_per_gib']:.2f}"
            f", client {m['client_cpu_s_per_gib']:.2f})",
            flush=True,
        )


def print_summary(summary: dict[str, Any], rounds: int, size: int) -> None:
    print(f"\nMedians of {rounds} round(s), GET /v1/videos/{{id}}/content, {size / MIB:.0f} MiB")
    header = (
        f"{'target':<22} {'MiB/s':>8} {'seconds':>8} {'1st byte':>9} {'RSS before':>11} "
        f"{'RSS after':>10} "
        f"{'RSS peak':>9} {'max growth':>11} {'worker CPU s/GiB':>17} {'all CPU s/GiB':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, row in summary["medians"].items():
        print(
            f"{name:<22} {row['mib_per_s']:8.1f} {row['seconds']:8.2f} "
            f"{row['first_byte_s'] * 1000:7.0f}ms "
            f"{row['rss_before_mib']:10.1f}M {row['rss_after_mib']:9.1f}M "
            f"{row['rss_peak_mib']:8.1f}M {row['rss_growth_mib_max']:10.1f}M "
            f"{row['worker_cpu_s_per_gib']:17.2f} {row['all_cpu_s_per_gib']:14.2f}"
        )
    ratio = summary["gateway_over_simulator_throughput"]
    growth = summary["gateway_rss_growth_mib"]
    print(
        "(worker CPU: the serving gunicorn worker; all CPU: client + simulator + proxy worker, "
        f"which share {os.cpu_count()} cores)"
    )
    print()
    print(
        f"gateway / simulator throughput = {ratio['value']:.3f}     (target >= "
        f"{THROUGHPUT_TARGET})    {'PASS' if ratio['pass'] else 'MISS'}   rounds: "
        + ", ".join(f"{v:.3f}" for v in ratio["per_round"])
    )
    print(
        f"gateway worker RSS growth      = {growth['value']:.1f} MiB  (target < "
        f"{RSS_GROWTH_TARGET_MIB} MiB)  {'PASS' if growth['pass'] else 'MISS'}   rounds: "
        + ", ".join(f"{v:.1f}" for v in growth["per_round"])
    )
    signing = summary["signing_cost"]
    if signing is not None:
        print(
            f"signing cost per file          = {signing['seconds_per_file'] * 1000:.0f} ms "
            f"(first byte {signing['first_byte_delay_s'] * 1000:.0f} ms later; worker CPU "
            f"{signing['worker_cpu_s_per_gib']:.2f} s/GiB more); signed / unsigned "
            f"throughput = {signing['signed_over_unsigned_throughput']:.3f}   (warm: a repeat "
            "delivery of the video)"
        )
    nocache = summary.get("nocache")
    if nocache is not None:
        print(
            f"warm, cache off (nocache)      = {nocache['gateway_over_simulator_throughput']:.3f}"
            f" of the simulator (rounds: {', '.join(f'{v:.3f}' for v in nocache['per_round'])})"
        )
    cold = summary.get("cold")
    if cold is not None:
        print(
            f"cold (a video's first delivery) = {cold['gateway_over_simulator_throughput']:.3f}"
            f" of the simulator (rounds: {', '.join(f'{v:.3f}' for v in cold['per_round'])}); "
            f"cost per file {cold['seconds_per_file'] * 1000:.0f} ms, first byte "
            f"{cold['first_byte_delay_s'] * 1000:.0f} ms later, RSS growth "
            f"{cold['rss_growth_mib_max']:.1f} MiB"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.download", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--bytes", type=int, default=30 * MIB, help="content size (default 30 MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-passthrough", action="store_true", help="skip the reference")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    parser.add_argument(
        "--compare-patch",
        default="",
        metavar="NAMES",
        help="EXPERIMENT: also measure a second gateway with these bench/serve.py patches",
    )
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH")
    parser.add_argument("--max-seconds", type=int, default=None, help="watchdog")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Generous: even at 20 MiB/s every download of every round fits.
    per_round = 4 * (10 + args.bytes / (20 * MIB))
    install_watchdog(args.max_seconds or int(120 + args.rounds * per_round))
    facts = machine_facts()
    print("Drawbridge download benchmark: GET /v1/videos/{id}/content")
    print(f"command: {command_line()}")
    print(
        f"machine: nproc={facts['nproc']} ({facts['cpu_model']}), Python {facts['python']} "
        f"({facts['implementation']}), {facts['platform']}, loadavg {facts['loadavg']}"
    )
    if args.compare_patch:
        print(f"EXPERIMENT: a second gateway patched with {args.compare_patch} is measured too")
    with Stack(
        workers=args.workers,
        threads=args.threads,
        database_url=args.database_url,
        content_bytes=args.bytes,
        with_passthrough=not args.no_passthrough,
        extra_gateways={
            NOCACHE: {"DRAWBRIDGE_PROVENANCE_CACHE_BYTES": "0"},
            UNSIGNED: {"DRAWBRIDGE_PROVENANCE_SIGN": "false"},
            **(
                {f"gateway+{args.compare_patch}": {"BENCH_PATCH": args.compare_patch}}
                if args.compare_patch
                else {}
            ),
        },
    ) as stack:
        setup = stack.describe()
        print(
            f"servers: gateway and passthrough under gunicorn gthread, {args.workers} worker(s) "
            f"x {args.threads} threads; simulator 1 worker x 16 threads; content "
            f"{args.bytes} bytes; client: requests iter_content({CLIENT_CHUNK}) discarded; "
            f"RSS sampled every {SAMPLE_SECONDS * 1000:.0f} ms"
        )
        targets = {target.name: target for target in stack.targets()}
        gateway = targets["gateway"]
        targets[COLD] = Target(COLD, gateway.service, gateway.headers, gateway.video_id)
        # "gateway" measures repeat deliveries: every worker has delivered its video before
        # (a cache hit, with the original's hash state in the worker's memory); so has
        # "gateway-nocache" (the binding in memory, no cache).
        for warm in [gateway] + [targets[NOCACHE]] * (NOCACHE in targets):
            for _ in range(WARM_UPS * args.workers):
                download(warm, args.bytes, stack.simulator.worker_pid())
        names = [name for name in ORDER if name in targets]
        names += [name for name in targets if name not in ORDER]
        simulator_worker = stack.simulator.worker_pid()
        rounds: list[dict[str, Any]] = []
        for number in range(args.rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            measured = {}
            # A fresh video (other bytes) for the cold delivery of this round.
            targets[COLD].video_id = stack._create_video()
            for name in order:
                measured[name] = download(targets[name], args.bytes, simulator_worker)
                time.sleep(0.5)
            rounds.append(measured)
            print_round(number + 1, order, measured)
        cache = cache_outcomes(gateway.url)
        print(f"\ngateway content cache outcomes (warm-ups included): {cache}")

    summary = summarise(rounds, names)
    summary["gateway_cache_outcomes"] = cache
    print_summary(summary, args.rounds, args.bytes)
    facts["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    print(f"\nloadavg at start {facts['loadavg']}, at end {facts['loadavg_end']}")
    if args.json_path:
        write_json(
            args.json_path,
            {
                "benchmark": "download",
                "command": command_line(),
                "machine": facts,
                "setup": setup,
                "bytes": args.bytes,
                "rounds": rounds,
                "summary": summary,
            },
        )
        print(f"results written to {args.json_path}")


if __name__ == "__main__":
    main()
