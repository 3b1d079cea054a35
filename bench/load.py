"""Drive load at one URL for a while: wrk when installed (``make bench-tools`` installs it),
else a threaded Python client that says so in every result (``tool``).

``run_load`` sends ``GET path`` from ``connections`` keep-alive connections for ``duration``
seconds. Each request carries the next of ``header_sets`` (one set: the same headers every
time; many: e.g. a different made-up key per request), so wrk gets a small Lua script that
cycles through them and counts the answers by status; its ``--latency`` report gives the
percentiles under load.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WRK = "wrk"
PYTHON_CLIENT = "python-threads"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}

# Headers cycled per request and answers counted per status; printed by done() as one line
# per status, which parse_wrk reads back. Each wrk thread has its own Lua state: setup()
# keeps the threads so that done() can read their counters.
_LUA = """
local sets = %(sets)s
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  counts = {}
  index = (id * 7919) %% #sets
end
function request()
  index = index %% #sets + 1
  return wrk.format("GET", %(path)s, sets[index])
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
%(delay)sfunction done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      io.write(string.format("STATUS %%d %%d\\n", status, count))
    end
  end
end
"""


def wrk_available() -> bool:
    return shutil.which(WRK) is not None


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string literal


def lua_script(
    path: str, header_sets: Sequence[dict[str, str]], *, delay_ms: int | None = None
) -> str:
    """The wrk script that cycles through ``header_sets`` and counts statuses; with
    ``delay_ms``, each connection waits that long after an answer before its next request
    (wrk's ``delay()``), which paces the load instead of sending as fast as answers come."""
    sets = ",\n".join(
        "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in s.items()) + "}"
        for s in header_sets
    )
    delay = f"function delay()\n  return {delay_ms}\nend\n" if delay_ms is not None else ""
    return _LUA % {"sets": "{" + sets + "}", "path": _lua_string(path), "delay": delay}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """The numbers of a ``wrk --latency`` report (and the script's STATUS lines)."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    latency = {
        f"p{pct}_ms": _ms(value)
        for pct, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.MULTILINE)
    }
    statuses: Counter[int] = Counter()
    for status, count in re.findall(r"^STATUS (\d+) (\d+)$", output, re.MULTILINE):
        statuses[int(status)] += int(count)
    return {
        "tool": WRK,
        "rps": float(rate.group(1)),
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "statuses": dict(sorted(statuses.items())),
        "latency_under_load": latency,
    }


def run_wrk(
    url: str,
    path: str,
    header_sets: Sequence[dict[str, str]],
    *,
    duration: float,
    connections: int,
    threads: int,
    delay_ms: int | None = None,
) -> dict[str, Any]:
    """``wrk -t -c -d --latency -s script URL``; the script sends the headers (and, with
    ``delay_ms``, paces each connection: ``lua_script``)."""
    with tempfile.TemporaryDirectory(prefix="drawbridge-wrk-") as directory:
        script = Path(directory) / "load.lua"
        script.write_text(lua_script(path, header_sets, delay_ms=delay_ms))
        command = [
            WRK,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(round(duration), 1)}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url + path,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def run_python_load(
    host: str,
    port: int,
    path: str,
    header_sets: Sequence[dict[str, str]],
    *,
    duration: float,
    connections: int,
    delay_ms: int | None = None,
) -> dict[str, Any]:
    """The fallback: one thread and one keep-alive ``http.client`` connection per slot
    (``delay_ms``: as ``run_wrk``'s)."""
    deadline = time.monotonic() + duration
    counters: list[Counter[int]] = [Counter() for _ in range(connections)]
    timings: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def worker(slot: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        index = slot * 7919
        try:
            while time.monotonic() < deadline:
                index += 1
                started = time.perf_counter()
                try:
                    connection.request("GET", path, headers=header_sets[index % len(header_sets)])
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    errors[slot] += 1
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=30)
                    continue
                timings[slot].append((time.perf_counter() - started) * 1000)
                counters[slot][response.status] += 1
                if delay_ms:
                    time.sleep(delay_ms / 1000)
        finally:
            connection.close()

    started = time.monotonic()
    workers = [
        threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(connections)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(duration + 60)
    elapsed = time.monotonic() - started
    statuses: Counter[int] = sum(counters, Counter())
    total = sum(statuses.values())
    ordered = sorted(t for slot in timings for t in slot)

    def pct(fraction: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.5) - 1))]

    return {
        "tool": PYTHON_CLIENT,
        "rps": total / elapsed,
        "requests": total,
        "non_2xx": sum(n for status, n in statuses.items() if not 200 <= status < 400),
        "socket_errors": sum(errors),
        "statuses": dict(sorted(statuses.items())),
        "latency_under_load": {"p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99)},
    }


def run_load(
    host: str,
    port: int,
    path: str,
    header_sets: Sequence[dict[str, str]],
    *,
    duration: float,
    connections: int,
    wrk_threads: int = 2,
    use_wrk: bool | None = None,
    delay_ms: int | None = None,
) -> dict[str, Any]:
    """Load ``http://host:port/path`` with wrk, or the Python client when wrk is missing or
    ``use_wrk`` is False; the result's ``tool`` says which. ``delay_ms`` paces each
    connection (``lua_script``)."""
    if not header_sets:
        header_sets = [{}]
    if use_wrk is None:
        use_wrk = wrk_available()
    if use_wrk:
        return run_wrk(
            f"http://{host}:{port}",
            path,
            header_sets,
            duration=duration,
            connections=connections,
            threads=wrk_threads,
            delay_ms=delay_ms,
        )
    return run_python_load(
        host,
        port,
        path,
        header_sets,
        duration=duration,
        connections=connections,
        delay_ms=delay_ms,
    )


def describe_tool(use_wrk: bool, connections: int, duration: float, wrk_threads: int) -> str:
    """One line for a report: which client drove the load."""
    if use_wrk:
        return (
            f"wrk -t{min(wrk_threads, connections)} -c{connections} -d{duration:.0f}s --latency "
            "-s <script cycling the headers>"
        )
    return (
        f"NOTE: {connections} Python client threads for {duration:.0f}s "
        "(wrk not installed: `make bench-tools`)"
    )
