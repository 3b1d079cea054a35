"""A bare passthrough proxy: the floor the gateway is measured against.

It does what the gateway's proxy path must do and nothing else: no key check, no ownership
check, no logging. One pooled ``requests.Session`` (``trust_env=False``) forwards

* ``GET /v1/videos/<id>`` and ``POST /v1/videos``: the upstream's body is returned as it came;
* ``GET /v1/videos/<id>/content``: streamed, undecoded, in 256 KiB chunks;

with a fixed ``Authorization`` header. Serve it with the same gunicorn settings as the gateway::

    python -m bench.serve passthrough --bind 127.0.0.1:8081 --workers 1 --threads 8

or ``gunicorn 'bench.passthrough:app_from_env()'`` with ``BENCH_UPSTREAM_URL`` (e.g.
``http://127.0.0.1:8090/v1``) and ``BENCH_UPSTREAM_API_KEY`` set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

STREAM_CHUNK_BYTES = 256 * 1024
TIMEOUT = (3.05, 30.0)
# Response headers worth passing back, as the gateway does.
_JSON_HEADERS = ("Content-Type", "openai-poll-after-ms")
_CONTENT_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "ETag", "Last-Modified")


def _pick(headers: requests.structures.CaseInsensitiveDict[str], names: tuple[str, ...]) -> dict:
    return {name: headers[name] for name in names if name in headers}


def create_passthrough_app(upstream_url: str, api_key: str, *, pool_size: int = 32) -> Flask:
    """A Flask app forwarding the two video GETs to ``upstream_url`` (ending in ``/v1``)."""
    base = upstream_url.rstrip("/")
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    headers = {"Authorization": f"Bearer {api_key}"}

    app = Flask("bench.passthrough")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    @app.get("/v1/videos/<video_id>")
    def retrieve_video(video_id: str) -> Response:
        upstream = session.get(
            f"{base}/videos/{video_id}", headers=headers, timeout=TIMEOUT, allow_redirects=False
        )
        return Response(
            upstream.content,
            status=upstream.status_code,
            headers=_pick(upstream.headers, _JSON_HEADERS),
        )

    @app.post("/v1/videos")
    def create_video() -> Response:
        upstream = session.post(
            f"{base}/videos",
            data=request.get_data(),
            headers={**headers, "Content-Type": request.headers.get("Content-Type", "")},
            timeout=TIMEOUT,
            allow_redirects=False,
        )
        return Response(
            upstream.content,
            status=upstream.status_code,
            headers=_pick(upstream.headers, _JSON_HEADERS),
        )

    @app.get("/v1/videos/<video_id>/content")
    def download_content(video_id: str) -> Response:
        upstream = session.get(
            f"{base}/videos/{video_id}/content",
            params=request.args,
            headers=headers,
            timeout=TIMEOUT,
            allow_redirects=False,
            stream=True,
        )

        def chunks() -> Iterator[bytes]:
            try:
                yield from upstream.raw.stream(STREAM_CHUNK_BYTES, decode_content=False)
            finally:
                upstream.close()

        return Response(
            chunks(),
            status=upstream.status_code,
            headers=_pick(upstream.headers, _CONTENT_HEADERS),
            direct_passthrough=True,
        )

    return app


def app_from_env() -> Flask:
    """The gunicorn entry point: ``BENCH_UPSTREAM_URL`` and ``BENCH_UPSTREAM_API_KEY``."""
    return create_passthrough_app(
        os.environ["BENCH_UPSTREAM_URL"], os.environ["BENCH_UPSTREAM_API_KEY"]
    )
