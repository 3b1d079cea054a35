"""A small round-robin TCP load balancer for the benchmarks: ``python -m bench.balancer``.

    python -m bench.balancer --bind 127.0.0.1:8000 --backend 127.0.0.1:8001 --backend ...

Each accepted connection goes to the next backend in turn and is piped both ways until
either side closes (HTTP keep-alive connections stay on their backend, as behind a layer-4
load balancer). A backend that refuses the connection is skipped for that connection. No
health checks, no TLS: it stands in for the load balancer of a deployment on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools

CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Balancer:
    """Round robin over ``backends`` (host, port), one backend per client connection."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self._backends = backends
        self._turn = itertools.cycle(range(len(backends)))

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        for _ in range(len(self._backends)):
            host, port = self._backends[next(self._turn)]
            try:
                backend_r, backend_w = await asyncio.open_connection(host, port)
                break
            except OSError:
                continue
        else:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w))


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def _serve(bind: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    balancer = Balancer(backends)
    server = await asyncio.start_server(balancer.handle, *bind, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", required=True, help="host:port")
    parser.add_argument("--backend", action="append", required=True, help="host:port, repeated")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_address(args.bind), [_address(b) for b in args.backend]))


if __name__ == "__main__":
    main()
