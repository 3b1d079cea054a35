"""One tester's trouble must not become everybody's: ``python -m bench.isolation``.

One run starts the simulator and the gateway (gunicorn, ``--workers`` x ``--threads``, the
production defaults 2 x 8, ``max_inflight_per_key`` 4), and measures a good tester's latency
(sequential ``GET /v1/me`` and ``GET /v1/videos/{id}`` on one kept-alive connection):

* alone (the baseline), then
* while a bad tester's upstream hangs (the simulator's ``hang`` fault on that tester's video
  only) and ``--hung`` of its threads keep downloading that video, and ``--slow`` slow
  connections are open: half send their request headers a line per second (slowloris), half
  send a ``POST /v1/videos`` body with the bad tester's key a byte per second.

It does so for each ``--front``: ``direct`` (clients talk to gunicorn) and ``nginx`` (clients
talk to nginx running config/nginx.conf, which talks to gunicorn). The report gives p50/p99
of both phases and the ratio p99 under attack / p99 alone; a request that fails counts with
the time it took (at most ``--timeout``). Traffic goes to 127.0.0.1 only; the slow clients
connect from 127.0.0.2 (another loopback address, so a per-address limit sees them as one
client other than the good tester). A run takes about a minute per front.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.harness import (
    HOST,
    Stack,
    command_line,
    install_watchdog,
    machine_facts,
    nginx_binary,
    percentile,
    prepare_database,
    start_front_proxy,
    write_json,
)

SLOW_SOURCE = "127.0.0.2"
SLOW_BODY_BYTES = 100_000
BAD_TESTER_TIMEOUT = 60.0  # longer than the gateway's upstream read timeout (30 s)


# -- the good tester -------------------------------------------------------------------


def good_tester(
    base: str, secret: str, video_id: str, seconds: float, timeout: float
) -> dict[str, Any]:
    """Sequential requests for ``seconds``: latencies (ms), failures, statuses."""
    paths = ("/v1/me", f"/v1/videos/{video_id}")
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {secret}"}
    session = requests.Session()
    session.trust_env = False
    end = time.monotonic() + seconds
    index = 0
    try:
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                answer = session.get(base + paths[index % 2], headers=headers, timeout=timeout)
                statuses[str(answer.status_code)] += 1
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1
                session.close()
                session = requests.Session()
                session.trust_env = False
            latencies.append((time.perf_counter() - started) * 1000)
            index += 1
    finally:
        session.close()
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else None,
        "statuses": dict(statuses),
    }


# -- the bad tester: a hung upstream and slow connections ------------------------------


@dataclass
class Trouble:
    """Everything the bad tester does at once, until ``stop``."""

    port: int
    secret: str
    video_id: str
    hung: int
    slow: int
    timeout: float
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def start(self) -> None:
        for _ in range(self.hung):
            self._threads.append(threading.Thread(target=self._download, daemon=True))
        for index in range(self.slow):
            kind = self._slow_headers if index % 2 == 0 else self._slow_body
            self._threads.append(threading.Thread(target=kind, daemon=True))
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _download(self) -> None:
        """Download the hung video over and over; a 429 is retried after its Retry-After."""
        url = f"http://{HOST}:{self.port}/v1/videos/{self.video_id}/content"
        headers = {"Authorization": f"Bearer {self.secret}"}
        with requests.Session() as session:
            session.trust_env = False
            while not self.stop.is_set():
                try:
                    # Like the SDK (600 s), the bad tester waits for the gateway's answer:
                    # a client giving up first would leave its hung call behind and pile
                    # more onto the backend (the simulator's threads are few too).
                    answer = session.get(url, headers=headers, timeout=BAD_TESTER_TIMEOUT)
                    self.count(f"download {answer.status_code}")
                    if answer.status_code == 429:
                        self.stop.wait(float(answer.headers.get("Retry-After", "1")))
                except requests.RequestException as exc:
                    self.count(f"download {type(exc).__name__}")

    def _slow_headers(self) -> None:
        head = b"GET /v1/me HTTP/1.1\r\nHost: drawbridge\r\n"
        self._trickle(head, b"X-Slow: 1\r\n", "slow headers")

    def _slow_body(self) -> None:
        head = (
            "POST /v1/videos HTTP/1.1\r\nHost: drawbridge\r\n"
            f"Authorization: Bearer {self.secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n"
        ).encode()
        self._trickle(head, b" ", "slow body")

    def _trickle(self, head: bytes, drip: bytes, kind: str) -> None:
        """Open a connection, send ``head``, then ``drip`` once a second; when the server
        answers or closes the connection, count it and open another."""
        while not self.stop.is_set():
            try:
                with socket.create_connection(
                    (HOST, self.port), timeout=5, source_address=(SLOW_SOURCE, 0)
                ) as sock:
                    sock.sendall(head)
                    self.count(f"{kind} opened")
                    while not self.stop.wait(1.0):
                        readable, _, _ = select.select([sock], [], [], 0)
                        if readable:
                            answer = sock.recv(64)
                            status = answer[9:12].decode(errors="replace") if answer else "closed"
                            self.count(f"{kind} ended by server: {status or 'closed'}")
                            break
                        sock.sendall(drip)
            except OSError as exc:
                self.count(f"{kind} {type(exc).__name__}")
                self.stop.wait(0.2)


# -- one front -------------------------------------------------------------------------


def _create_video(base: str, secret: str) -> str:
    headers = {"Authorization": f"Bearer {secret}"}
    with requests.Session() as session:
        session.trust_env = False
        created = session.post(
            f"{base}/v1/videos",
            json={"prompt": "the bad tester's clip"},
            headers=headers,
            timeout=30,
        )
        created.raise_for_status()
        video_id: str = created.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = session.get(f"{base}/v1/videos/{video_id}", headers=headers, timeout=30)
            answer.raise_for_status()
            if answer.json()["status"] == "completed":
                return video_id
            time.sleep(0.1)
    raise RuntimeError(f"video {video_id} did not complete")


def _upstream_ids(simulator: str, master: str) -> set[str]:
    answer = requests.get(
        f"{simulator}/v1/videos?limit=100",
        headers={"Authorization": f"Bearer {master}"},
        timeout=30,
    )
    answer.raise_for_status()
    return {video["id"] for video in answer.json()["data"]}


def _set_faults(simulator: str, faults: dict[str, Any] | None) -> None:
    url = f"{simulator}/_sim/faults"
    answer = (
        requests.post(url, json=faults, timeout=30) if faults else requests.delete(url, timeout=30)
    )
    answer.raise_for_status()


def measure_front(front: str, args: argparse.Namespace) -> dict[str, Any]:
    gateway_env = {"DRAWBRIDGE_MAX_INFLIGHT_PER_KEY": str(args.cap)}
    if front == "nginx":
        gateway_env["DRAWBRIDGE_TRUSTED_PROXIES"] = "1"
    with Stack(
        workers=args.workers, threads=args.threads, with_passthrough=False, gateway_env=gateway_env
    ) as stack:
        proxy = start_front_proxy(stack.gateway.port) if front == "nginx" else None
        try:
            service = proxy or stack.gateway
            base = service.url
            _, bad_secret = prepare_database(stack.settings_env)
            known = _upstream_ids(stack.simulator.url, stack.master_key)
            bad_video = _create_video(base, bad_secret)
            (bad_upstream,) = _upstream_ids(stack.simulator.url, stack.master_key) - known

            alone = good_tester(base, stack.tester_key, stack.video_id, args.seconds, args.timeout)
            _set_faults(
                stack.simulator.url, {"hang": True, "path_prefix": f"/v1/videos/{bad_upstream}"}
            )
            trouble = Trouble(
                service.port, bad_secret, bad_video, args.hung, args.slow, args.timeout
            )
            trouble.start()
            try:
                time.sleep(args.settle)
                attacked = good_tester(
                    base, stack.tester_key, stack.video_id, args.seconds, args.timeout
                )
            finally:
                trouble.stop.set()
                _set_faults(stack.simulator.url, None)  # hung requests give up their threads
                trouble.finish()
        finally:
            if proxy is not None:
                proxy.stop()
    ratio = attacked["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else None
    return {
        "front": front,
        "alone": alone,
        "attacked": attacked,
        "p99_ratio": round(ratio, 2) if ratio else None,
        "bad_tester": dict(sorted(trouble.outcomes.items())),
    }


def _print(result: dict[str, Any]) -> None:
    alone, attacked = result["alone"], result["attacked"]
    print(
        f"{result['front']:>6}: alone p50 {alone['p50_ms']:8.1f} ms  p99 {alone['p99_ms']:8.1f} ms"
        f"  ({alone['requests']} requests {alone['statuses']})"
    )
    print(
        f"{'':>6}  under attack p50 {attacked['p50_ms']:8.1f} ms  p99 {attacked['p99_ms']:8.1f} ms"
        f"  ({attacked['requests']} requests {attacked['statuses']})"
    )
    print(f"{'':>6}  p99 ratio {result['p99_ratio']}   bad tester: {result['bad_tester']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.isolation", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--front", choices=("direct", "nginx", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--cap", type=int, default=4, help="max_inflight_per_key")
    parser.add_argument("--hung", type=int, default=12, help="bad tester's download threads")
    parser.add_argument("--slow", type=int, default=100, help="slow connections")
    parser.add_argument("--seconds", type=float, default=12.0, help="per measured phase")
    parser.add_argument("--settle", type=float, default=3.0, help="attack start to measuring")
    parser.add_argument("--timeout", type=float, default=10.0, help="good tester's timeout")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    fronts = ["direct", "nginx"] if args.front == "both" else [args.front]
    if "nginx" in fronts and nginx_binary() is None:
        raise SystemExit("nginx is not installed: apt-get install nginx-light, or --front direct")
    install_watchdog(int(args.rounds * len(fronts) * (2 * args.seconds + args.settle + 90)))
    results = []
    for round_number in range(1, args.rounds + 1):
        for front in fronts:
            result = measure_front(front, args)
            result["round"] = round_number
            results.append(result)
            _print(result)
    print()
    for front in fronts:
        mine = [r for r in results if r["front"] == front]
        print(
            f"{front:>6} medians of {len(mine)}: "
            f"alone p99 {statistics.median(r['alone']['p99_ms'] for r in mine):.1f} ms, "
            f"under attack p50 {statistics.median(r['attacked']['p50_ms'] for r in mine):.1f} ms "
            f"p99 {statistics.median(r['attacked']['p99_ms'] for r in mine):.1f} ms, "
            f"ratio {statistics.median(r['p99_ratio'] or 0 for r in mine):.2f}"
        )
    if args.json:
        write_json(
            args.json, {"command": command_line(), "machine": machine_facts(), "results": results}
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
