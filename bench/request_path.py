"""Which project modules one ``GET /v1/videos/{id}`` runs: ``python -m bench.request_path``.

A reader's map of the hot path, not a timing. Against a real simulator process and a fresh
database (bench/harness.py), it builds the gateway in this process, sends a few warm-up
requests through its WSGI interface, then records every Python function call of one more
request (``sys.setprofile``, this thread only) and prints the ``gateway``/``keys`` modules
whose code ran, in the order each was first entered, with the number of calls into each.

Modules that only run in other threads (the usage flusher, the access-log writer) are not
on the request's path and are not listed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from types import FrameType
from typing import Any

from bench.harness import Stack
from bench.profile import wsgi_get

PROJECT_PACKAGES = ("gateway", "keys")


def modules_on_path(app: Any, path: str, headers: dict[str, str]) -> Counter[str]:
    """The project modules whose functions one request calls, with their call counts."""
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.split(".", 1)[0] in PROJECT_PACKAGES:
                calls[module] += 1

    sys.setprofile(profile)
    try:
        _elapsed, status = wsgi_get(app, path, headers)
    finally:
        sys.setprofile(None)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}")
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.request_path", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)

    from gateway.app import create_app
    from gateway.settings import load_settings

    with contextlib.ExitStack() as cleanup:
        stack = cleanup.enter_context(Stack(with_passthrough=False))
        # The access log goes to a file, as in production, not between the lines printed here.
        log_file = cleanup.enter_context((stack.directory / "in-process-gateway.log").open("w"))
        cleanup.enter_context(contextlib.redirect_stderr(log_file))
        app = create_app(load_settings(environ=stack.settings_env))
        path = f"/v1/videos/{stack.video_id}"
        headers = {"Authorization": f"Bearer {stack.tester_key}"}
        for _ in range(args.warmup):
            wsgi_get(app, path, headers)
        calls = modules_on_path(app, path, headers)
    packages = Counter(module.split(".", 1)[0] for module in calls)
    print(
        f"GET /v1/videos/{{id}}: {len(calls)} project modules run in the request's thread "
        f"({', '.join(f'{name} {count}' for name, count in sorted(packages.items()))})"
    )
    print(f"{'module':<40} {'calls':>6}")
    for module, count in calls.items():
        print(f"{module:<40} {count:>6}")


if __name__ == "__main__":
    main()
