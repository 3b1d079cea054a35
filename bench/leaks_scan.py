"""The leak scanner on a noisy corpus: ``python -m bench.leaks_scan``.

Builds a corpus of ``--mib`` MiB (default 100) in a temporary directory: line-wrapped gateway
logs, JSON exports, source files, access logs with URLs and plain random text, sprinkled with
decoys (``drwb_`` + 33 random base62 whose checksum fails, real-shaped ``drwbadm_`` admin
tokens) and with ``--keys`` planted tester keys, issued for real in a temporary SQLite
database so the command's lookups work. A few more keys are planted across a line wrap: the
documented limit, reported apart and not counted against the scanner.

Then, page cache warm (one untimed run first), ``--runs`` times each (median reported):

  (a) the whole command, ``python -m gateway leaks scan --json CORPUS`` in a subprocess
      (interpreter start, imports, walk, scan, database lookups, JSON out): target < 2 s;
  (b) the scan as the command reports it (``scanned.seconds``: walk + scan, and its CPU
      time ``scanned.cpu_seconds``): target >= 500 MB/s;
  (c) the scanner core in this process (``keys.leaks.leaked_keys.scan_path``);
  (d) baselines: GNU ``grep -rcE`` with the same candidate regex (no checksum check), and
      ripgrep ``rg -c`` when installed.

Every planted key must be found at its exact file and byte offset with its key id, and
nothing else may be found (zero false positives). MB here is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import clean_env, command_line, install_watchdog, machine_facts, write_json

MIB = 1024 * 1024
MB = 1_000_000
SCAN_TARGET_MB_S = 500.0
COMMAND_TARGET_S = 2.0
WRAP_COLUMNS = 120
CANDIDATE_REGEX = "drwb_[0-9A-Za-z]{33}"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
WORDS = [
    "the",
    "video",
    "request",
    "prompt",
    "model",
    "sora",
    "size",
    "duration",
    "seconds",
    "tester",
    "cohort",
    "draw",
    "drawing",
    "bridge",
    "drwb",
    "drwbadm",
    "drw",
    "dr",
    "data",
    "render",
    "frame",
    "queue",
    "upstream",
    "latency",
    "ok",
    "error",
    "retry",
    "approve",
    "reject",
    "share",
    "download",
    "remix",
    "kite",
    "sea",
    "red",
    "blue",
    "camera",
    "pan",
    "zoom",
    "slow",
    "fast",
]


@dataclass(frozen=True)
class Planted:
    path: str
    offset: int
    secret: str
    split: bool = False


# -- the corpus ------------------------------------------------------------------------


class Noise:
    """Pools of realistic lines, sampled with a seeded generator."""

    def __init__(self, rng: random.Random, admin_tokens: list[str]) -> None:
        self.rng = rng
        self.admin_tokens = admin_tokens

    def hex(self, length: int) -> str:
        return self.rng.randbytes((length + 1) // 2).hex()[:length]

    def decoy(self) -> str:
        """Key-shaped, but its checksum fails (all but one in 56 billion do)."""
        return "drwb_" + "".join(self.rng.choices(BASE62, k=33))

    def words(self, count: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=count))

    def maybe_decoy(self) -> str:
        roll = self.rng.random()
        if roll < 0.03:
            return self.decoy()
        if roll < 0.04:
            return self.rng.choice(self.admin_tokens)
        return self.hex(24)

    def log_record(self) -> str:
        return (
            f"2026-11-27T12:{self.rng.randrange(60):02d}:{self.rng.randrange(60):02d}Z INFO "
            f"request_id=req_{self.hex(32)} method=POST path=/v1/videos status=200 "
            f"duration_ms={self.rng.random() * 900:.2f} key_hint=drwb_...{self.hex(4)} "
            f"note={self.maybe_decoy()} {self.words(self.rng.randrange(4, 30))}"
        )

    def json_line(self) -> str:
        return json.dumps(
            {
                "id": f"video_{self.hex(24)}",
                "prompt": self.words(self.rng.randrange(3, 20)),
                "seconds": self.rng.randrange(1, 20),
                "meta": {"trace": self.maybe_decoy(), "ok": True},
            }
        )

    def code_line(self) -> str:
        return self.rng.choice(
            [
                f'    client = Client(base_url="https://gw.test/v1", key="{self.maybe_decoy()}")',
                f"def {self.words(1)}_{self.hex(6)}(frame, size=1280):",
                f"        return render(frame, '{self.words(3)}')  # {self.words(6)}",
                f"API_HINT = 'drwb_...{self.hex(4)}'",
                "",
            ]
        )

    def url_line(self) -> str:
        return (
            f'10.0.{self.rng.randrange(256)}.{self.rng.randrange(256)} - - "GET '
            f"https://api.example.com/v1/videos/video_{self.hex(24)}?limit=20&after="
            f'{self.maybe_decoy()} HTTP/1.1" 200 {self.rng.randrange(100, 99999)}'
        )

    def text_line(self) -> str:
        return self.words(self.rng.randrange(5, 25)) + " " + "".join(self.rng.choices(BASE62, k=20))

    def pool(self, make: Any, size: int = 4000) -> list[str]:
        return [make() for _ in range(size)]


def wrapped(record: str) -> list[str]:
    return [record[i : i + WRAP_COLUMNS] for i in range(0, max(len(record), 1), WRAP_COLUMNS)]


def write_file(
    path: Path,
    noise: list[str],
    target_bytes: int,
    plants: list[tuple[list[str], int, int, str]],
    rng: random.Random,
) -> list[Planted]:
    """Noise lines up to ``target_bytes``, with planted lines inserted at random places.

    A plant is (lines, line index, column, secret): the secret sits in ``lines`` at that
    line and column.
    """
    average = max(1, sum(len(line) + 1 for line in noise[:200]) // 200)
    lines = rng.choices(noise, k=max(1, target_bytes // average))
    places = sorted(rng.sample(range(len(lines) + 1), len(plants)))
    out: list[str] = []
    planted: list[Planted] = []
    offset = 0
    previous = 0
    for place, (plant_lines, line_index, column, secret) in zip(places, plants, strict=True):
        chunk = lines[previous:place]
        out.extend(chunk)
        offset += sum(len(line) + 1 for line in chunk)
        before = sum(len(line) + 1 for line in plant_lines[:line_index])
        split = column + len(secret) > len(plant_lines[line_index])
        planted.append(Planted(str(path), offset + before + column, secret, split))
        out.extend(plant_lines)
        offset += sum(len(line) + 1 for line in plant_lines)
        previous = place
    out.extend(lines[previous:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(out) + "\n").encode("ascii"))
    return planted


def build_corpus(
    root: Path, total_bytes: int, keys: list[str], split_keys: list[str], seed: int
) -> list[Planted]:
    from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, KeyFormat

    rng = random.Random(seed)
    admin = KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX)
    noise = Noise(rng, [admin.generate() for _ in range(20)])
    pools = {
        "log": noise.pool(lambda: "\n".join(wrapped(noise.log_record()))),
        "json": noise.pool(noise.json_line),
        "code": noise.pool(noise.code_line),
        "url": noise.pool(noise.url_line),
        "text": noise.pool(noise.text_line),
    }

    def plant(kind: str, secret: str) -> tuple[list[str], int, int, str]:
        if kind == "log":
            head = f"2026-11-27T12:00:00Z WARN leaked key={secret} "
            return wrapped(head + noise.words(12)), 0, head.index(secret), secret
        if kind == "json":
            line = json.dumps({"id": f"video_{noise.hex(8)}", "config": {"api_key": secret}})
            return [line], 0, line.index(secret), secret
        if kind == "code":
            line = rng.choice([f'API_KEY = "{secret}"', f"key=os.getenv('K', '{secret}')"])
            return [line], 0, line.index(secret), secret
        if kind == "url":
            line = f'"GET https://api.example.com/v1/videos?key={secret}&limit=5 HTTP/1.1" 401'
            return [line], 0, line.index(secret), secret
        line = f"{noise.words(8)}{secret}{noise.words(3)}"  # glued to the words around it
        return [line], 0, line.index(secret), secret

    # (kind, relative path, share of the corpus); 200 source files make the walk count.
    layout: list[tuple[str, str, float]] = [("log", "logs/gateway.log", 0.40)]
    layout += [("json", f"exports/export-{i:03d}.json", 0.20 / 20) for i in range(20)]
    layout += [("code", f"src/pkg/module_{i:03d}.py", 0.10 / 200) for i in range(200)]
    layout += [("url", "logs/access.log", 0.05), ("text", "dumps/notes.txt", 0.25)]

    # The first keys go one to each kind of file, the rest where the bytes are.
    first_of_kind = [
        next(i for i, entry in enumerate(layout) if entry[0] == kind) for kind in pools
    ]
    weights = [share for _, _, share in layout]
    assignments: dict[int, list[tuple[list[str], int, int, str]]] = {}
    for index, secret in enumerate(keys):
        if index < len(first_of_kind):
            slot = first_of_kind[index]
        else:
            slot = rng.choices(range(len(layout)), weights=weights)[0]
        assignments.setdefault(slot, []).append(plant(layout[slot][0], secret))
    for secret in split_keys:
        record = f"2026-11-27T12:00:00Z INFO {'x' * (WRAP_COLUMNS - 40)} key={secret} end"
        lines = wrapped(record)
        assignments.setdefault(0, []).append((lines, 0, record.index(secret), secret))

    planted: list[Planted] = []
    for slot, (kind, relative, share) in enumerate(layout):
        planted += write_file(
            root / relative, pools[kind], int(total_bytes * share), assignments.get(slot, []), rng
        )
    return planted


def issue_keys(settings_env: dict[str, str], count: int) -> dict[str, str]:
    """Migrate the database, issue ``count`` keys to a few testers: {secret: key id}."""
    from gateway.settings import load_settings, root_secret_of
    from gateway.state import build_store
    from keys.access.vault import Vault
    from keys.migrate import upgrade

    settings = load_settings(environ=settings_env)
    store = build_store(settings, Vault(root_secret_of(settings)))
    try:
        upgrade(store.database.engine)
        issued: dict[str, str] = {}
        with store.transaction() as tx:
            testers = [
                tx.testers.add(f"Bench {i}", f"bench-{i}@example.com", "bench").id for i in range(5)
            ]
            for index in range(count):
                key = tx.keys.issue(testers[index % len(testers)], "bench")
                issued[key.secret] = key.key.id
        return issued
    finally:
        store.database.dispose()


# -- measuring -------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(corpus: Path, env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """(wall seconds, CPU seconds, JSON output) of one whole command."""
    argv = [sys.executable, "-m", "gateway", "leaks", "scan", "--json", "--no-progress"]
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run([*argv, str(corpus)], env=env, capture_output=True, timeout=300)
    elapsed, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 1:
        raise SystemExit(f"scan exited {done.returncode}, expected 1:\n{done.stderr.decode()}")
    return elapsed, cpu, json.loads(done.stdout)


def run_core(corpus: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the scanner core over the corpus, in this process."""
    from keys.access.keyformat import KeyFormat
    from keys.leaks.leaked_keys import scan_path

    cpu, started = time.process_time(), time.perf_counter()
    for _ in scan_path(corpus, KeyFormat("drwb")):
        pass
    return time.perf_counter() - started, time.process_time() - cpu


def run_tool(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, timeout=300, env=clean_env(LC_ALL="C"))
    return time.perf_counter() - started


def check(document: dict[str, Any], planted: list[Planted], issued: dict[str, str]) -> dict:
    """Every planted key found where it was put, with its key id; nothing else found."""
    expected = {(p.path, p.offset): p for p in planted if not p.split}
    split = {(p.path, p.offset) for p in planted if p.split}
    found = {(row["path"], row["offset"]): row for row in document["findings"]}
    missed = [where for where in expected if where not in found]
    false_positives = [where for where in found if where not in expected and where not in split]
    wrong_id = [
        where
        for where, row in found.items()
        if where in expected and row["key_id"] != issued[expected[where].secret]
    ]
    return {
        "planted": len(expected),
        "found": len(found) - len(split & set(found)),
        "missed": len(missed),
        "false_positives": len(false_positives),
        "wrong_key_id": len(wrong_id),
        "split_planted": len(split),
        "split_found": len(split & set(found)),
        "ok": not missed and not false_positives and not wrong_id,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="corpus size in MiB")
    parser.add_argument("--keys", type=int, default=200, help="planted keys")
    parser.add_argument("--split-keys", type=int, default=5, help="keys split by a line wrap")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    parser.add_argument("--keep", action="store_true", help="keep the corpus directory")
    options = parser.parse_args()
    install_watchdog(900)

    from keys.access.vault import new_root_secret

    workdir = Path(tempfile.mkdtemp(prefix="drawbridge-leaks-bench-"))
    try:
        env = {
            "DRAWBRIDGE_DATABASE_URL": f"sqlite:///{workdir / 'drawbridge.db'}",
            "DRAWBRIDGE_ROOT_SECRET": new_root_secret(),
        }
        issued = issue_keys(env, options.keys + options.split_keys)
        secrets = list(issued)
        corpus = workdir / "corpus"
        started = time.perf_counter()
        planted = build_corpus(
            corpus,
            options.mib * MIB,
            secrets[: options.keys],
            secrets[options.keys :],
            options.seed,
        )
        size = sum(path.stat().st_size for path in corpus.rglob("*") if path.is_file())
        files = sum(1 for path in corpus.rglob("*") if path.is_file())
        print(
            f"corpus: {size / MB:.1f} MB in {files} files, {options.keys} keys planted "
            f"(+{options.split_keys} across line wraps), built in "
            f"{time.perf_counter() - started:.1f} s"
        )
        results = measure(corpus, clean_env(**env), options.runs, planted, issued, size)
        report(results, size)
        if options.json_path:
            write_json(
                options.json_path,
                {
                    "bench": "leaks_scan",
                    "command": command_line(),
                    "machine": machine_facts(),
                    "corpus": {"bytes": size, "files": files, "keys": options.keys},
                    "results": results,
                },
            )
        if not results["check"]["ok"]:
            raise SystemExit("FAILED: the scan missed planted keys or found false ones")
    finally:
        if options.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def measure(
    corpus: Path,
    env: dict[str, str],
    runs: int,
    planted: list[Planted],
    issued: dict[str, str],
    size: int,
) -> dict[str, Any]:
    _, _, document = run_command(corpus, env)  # warm the page cache and the imports
    verdict = check(document, planted, issued)
    walls, cpus, scans, scan_cpus, cores, core_cpus = [], [], [], [], [], []
    for _ in range(runs):  # interleaved, so load on the machine hits all alike
        wall, cpu, document = run_command(corpus, env)
        walls.append(wall)
        cpus.append(cpu)
        scans.append(document["scanned"]["seconds"])
        scan_cpus.append(document["scanned"]["cpu_seconds"])
        core_wall, core_cpu = run_core(corpus)
        cores.append(core_wall)
        core_cpus.append(core_cpu)
    baselines: dict[str, float | None] = {}
    grep = shutil.which("grep")
    rg = shutil.which("rg")
    tools = {
        "grep -rcE": [grep, "-rcE", CANDIDATE_REGEX, str(corpus)] if grep else None,
        "rg -c": [rg, "-c", "--no-config", CANDIDATE_REGEX, str(corpus)] if rg else None,
    }
    for name, argv in tools.items():
        if argv is None:
            baselines[name] = None
            continue
        run_tool(argv)  # warm
        baselines[name] = statistics.median(run_tool(argv) for _ in range(runs))
    return {
        "check": verdict,
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "command_seconds": walls,
        "command_cpu_seconds": cpus,
        "scan_seconds": scans,
        "scan_cpu_seconds": scan_cpus,
        "core_seconds": cores,
        "core_cpu_seconds": core_cpus,
        "command_median_s": statistics.median(walls),
        "command_cpu_median_s": statistics.median(cpus),
        "scan_mb_s": size / MB / statistics.median(scans),
        "scan_cpu_mb_s": size / MB / statistics.median(scan_cpus),
        "core_mb_s": size / MB / statistics.median(cores),
        "core_cpu_mb_s": size / MB / statistics.median(core_cpus),
        "baselines_s": baselines,
    }


def report(results: dict[str, Any], size: int) -> None:
    verdict = results["check"]
    print(
        f"check: {verdict['found']}/{verdict['planted']} planted keys found at their offsets "
        f"with their key ids, {verdict['false_positives']} false positives, "
        f"{verdict['wrong_key_id']} wrong ids -> {'OK' if verdict['ok'] else 'FAILED'}"
    )
    print(
        f"       keys split by a line wrap: {verdict['split_found']}/{verdict['split_planted']}"
        " found (documented limit)"
    )
    command, scan = results["command_median_s"], results["scan_mb_s"]
    print(
        f"whole command (median of {len(results['command_seconds'])}): {command:.2f} s "
        f"(target < {COMMAND_TARGET_S:.0f} s: {'met' if command < COMMAND_TARGET_S else 'MISSED'})"
        f"   runs: {', '.join(f'{s:.2f}' for s in results['command_seconds'])}"
    )
    print(
        f"scan as the command reports it: {scan:.0f} MB/s wall "
        f"(target >= {SCAN_TARGET_MB_S:.0f}: {'met' if scan >= SCAN_TARGET_MB_S else 'MISSED'}), "
        f"{results['scan_cpu_mb_s']:.0f} MB/s per CPU second"
    )
    print(
        f"scanner core in process:        {results['core_mb_s']:.0f} MB/s wall, "
        f"{results['core_cpu_mb_s']:.0f} MB/s per CPU second"
    )
    print(
        f"whole command CPU time (user+sys, median): {results['command_cpu_median_s']:.2f} s; "
        f"load average during the runs: {results['loadavg_1min']} on {os.cpu_count()} CPUs "
        "(wall times above include waiting for a CPU)"
    )
    for name, seconds in results["baselines_s"].items():
        if seconds is None:
            print(f"{name}: not installed, no comparison")
            continue
        ratio = statistics.median(results["scan_seconds"]) / seconds
        print(
            f"{name} (candidates only, no checksum): {seconds:.2f} s = {size / MB / seconds:.0f} "
            f"MB/s; drawbridge scan takes {ratio:.2f}x its time"
        )


if __name__ == "__main__":
    main()
