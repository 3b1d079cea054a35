"""An in-memory, OpenAI-compatible Videos API backend for the demo, the tests and the benchmarks.

It speaks the surface that the official SDK's ``client.videos.*`` uses (create, retrieve, list,
delete, download_content, remix) and adds a control plane under ``/_sim`` to inspect the
requests it received and to inject upstream faults. Serve it with::

    gunicorn 'gateway.simulator:app_from_env()' -w 1 --threads 8

State lives in this process only, so run a single worker (with as many threads as you like).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import itertools
import json
import os
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

__all__ = ["SimulatorOptions", "app_from_env", "create_simulator_app"]

# Allowed values; the first of each is the default.
MODELS = ("sora-2", "sora-2-pro")
SECONDS = ("4", "8", "12")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
VARIANT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
PREVIEW_BYTES = 16 * 1024  # thumbnails and spritesheets are small whatever the video size
BLOCK_BYTES = 64 * 1024  # content is one seeded block repeated, so 1 GiB costs 64 KiB of memory
QUEUED_FRACTION = 0.1  # share of job_seconds a job spends queued before it makes progress
EXPIRY_SECONDS = 3600
FAIL_MARKER = "[fail]"
REQUEST_LOG_SIZE = 200
HANG_SECONDS = 300.0
DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulator behaves; every field has a demo-friendly default."""

    api_key: str | None = None
    job_seconds: float = 2.0
    content_bytes: int = 1_048_576
    poll_after_ms: int = 200

    def __post_init__(self) -> None:
        """Reject values that would make the job clock or the content length meaningless."""
        for name in ("job_seconds", "content_bytes", "poll_after_ms"):
            if not getattr(self, name) >= 0:  # written this way to reject NaN too
                raise ValueError(f"{name} must be a non-negative number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SimulatorOptions:
        """Read DRAWBRIDGE_SIM_* variables; unset or empty ones keep their defaults."""
        defaults = cls()
        return cls(
            api_key=environ.get("DRAWBRIDGE_SIM_API_KEY") or None,
            job_seconds=_env_number(
                environ, "DRAWBRIDGE_SIM_JOB_SECONDS", float, defaults.job_seconds
            ),
            content_bytes=_env_number(
                environ, "DRAWBRIDGE_SIM_CONTENT_BYTES", int, defaults.content_bytes
            ),
            poll_after_ms=_env_number(
                environ, "DRAWBRIDGE_SIM_POLL_AFTER_MS", int, defaults.poll_after_ms
            ),
        )


def _env_number(
    environ: Mapping[str, str], name: str, parse: Callable[[str], _Number], default: _Number
) -> _Number:
    """Parse one numeric variable, naming it in the error so a bad deploy is easy to fix."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be a number, got {raw!r}") from error


def create_simulator_app(options: SimulatorOptions | None = None) -> Flask:
    """Build a Flask app serving the simulated Videos API and its /_sim control plane."""
    return _Simulator(options or SimulatorOptions()).build_app()


def app_from_env() -> Flask:
    """Build the app from the process environment (the gunicorn entry point)."""
    return create_simulator_app(SimulatorOptions.from_env(os.environ))


class _ApiError(Exception):
    """An error answered in the OpenAI shape: {"error": {message, type, param, code}}."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class _Video:
    """A generation job; immutable because its status is derived from the clock, not stored."""

    id: str
    seq: int  # insertion order, the tie-break when created_at (whole seconds) is equal
    prompt: str
    model: str
    seconds: str
    size: str
    created_at: float  # wall clock, for the timestamps clients see
    started: float  # monotonic clock, for elapsed time immune to clock jumps
    remixed_from_video_id: str | None = None


def _lifecycle(elapsed: float, job_seconds: float, fails: bool) -> tuple[str, int]:
    """Status and progress of a job `elapsed` seconds after it was created."""
    if elapsed >= job_seconds:
        return ("failed" if fails else "completed"), 100
    queued_for = job_seconds * QUEUED_FRACTION
    if elapsed < queued_for:
        return "queued", 0
    # Progress stops at 99: only completion reports 100.
    return "in_progress", int(99 * (elapsed - queued_for) / (job_seconds - queued_for))


def _video_json(video: _Video, job_seconds: float) -> dict[str, Any]:
    """The public video object as of now."""
    fails = FAIL_MARKER in video.prompt
    status, progress = _lifecycle(time.monotonic() - video.started, job_seconds, fails)
    finished_at = int(video.created_at + job_seconds) if progress == 100 else None
    expires_at = None
    if status == "completed" and finished_at is not None:
        expires_at = finished_at + EXPIRY_SECONDS
    error = None
    if status == "failed":
        error = {"code": "generation_failed", "message": "The simulated generation failed."}
    return {
        "id": video.id,
        "object": "video",
        "created_at": int(video.created_at),
        "completed_at": finished_at,
        "expires_at": expires_at,
        "error": error,
        "model": video.model,
        "progress": progress,
        "prompt": video.prompt,
        "remixed_from_video_id": video.remixed_from_video_id,
        "seconds": video.seconds,
        "size": video.size,
        "status": status,
    }


@dataclass(frozen=True)
class _Faults:
    """Faults injected into /v1 requests whose path starts with `path_prefix`."""

    latency_ms: int = 0
    status: int | None = None
    status_count: int | None = None  # None: every request gets `status` until cleared
    hang: bool = False
    reset: bool = False
    redirect: str | None = None
    oversize_bytes: int | None = None
    lie: bool = False
    path_prefix: str = "/v1"

    def applies_to(self, path: str) -> bool:
        """Whether a request for `path` is subject to these faults."""
        return path.startswith(self.path_prefix)


def _int_within(low: int, high: int) -> Callable[[object], bool]:
    """A check accepting integers (not booleans) in low..high."""
    return lambda value: type(value) is int and low <= value <= high


def _is_bool(value: object) -> bool:
    """A check accepting JSON booleans."""
    return isinstance(value, bool)


def _is_path(value: object) -> bool:
    """A check accepting absolute URL paths."""
    return isinstance(value, str) and value.startswith("/")


def _is_text(value: object) -> bool:
    """A check accepting non-empty strings."""
    return isinstance(value, str) and bool(value)


_FAULT_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "latency_ms": (_int_within(0, 600_000), "an integer from 0 to 600000"),
    "status": (_int_within(100, 599), "an HTTP status code"),
    "status_count": (_int_within(1, 1_000_000), "a positive integer"),
    "hang": (_is_bool, "a boolean"),
    "reset": (_is_bool, "a boolean"),
    "redirect": (_is_text, "a non-empty URL"),
    "oversize_bytes": (_int_within(0, 1 << 40), "a non-negative integer"),
    "lie": (_is_bool, "a boolean"),
    "path_prefix": (_is_path, "a path starting with '/'"),
}


def _parse_faults(raw: object) -> _Faults:
    """Validate a POST /_sim/faults body."""
    if not isinstance(raw, dict):
        raise _ApiError(400, "Faults must be a JSON object.", code="invalid_type")
    for name, value in raw.items():
        if name not in _FAULT_CHECKS:
            raise _ApiError(400, f"Unknown fault: {name!r}.", param=name, code="unknown_parameter")
        check, expected = _FAULT_CHECKS[name]
        if not check(value):
            raise _ApiError(400, f"{name} must be {expected}.", param=name, code="invalid_value")
    if "status_count" in raw and "status" not in raw:
        raise _ApiError(
            400, "status_count needs status.", param="status_count", code="invalid_value"
        )
    return _Faults(**raw)


def _repeat(block: bytes, size: int) -> Iterator[bytes]:
    """Yield `block` over and over, cut so exactly `size` bytes come out."""
    full, rest = divmod(size, len(block))
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def _content_block(video_id: str, variant: str) -> bytes:
    """The deterministic 64 KiB block a video's content is made of."""
    return hashlib.shake_256(f"{video_id}/{variant}".encode()).digest(BLOCK_BYTES)


def _padded_json(payload: Mapping[str, Any], size: int) -> tuple[int, Iterator[bytes]]:
    """Stream `payload` as JSON grown to `size` bytes by a trailing "padding" string."""
    # Serialising with an empty padding and cutting its closing '"}' leaves the open string.
    head = json.dumps({**payload, "padding": ""}, separators=(",", ":"))[:-2].encode()
    tail = b'"}'
    pad = max(0, size - len(head) - len(tail))

    def chunks() -> Iterator[bytes]:
        yield head
        yield from _repeat(b"x" * BLOCK_BYTES, pad)
        yield tail

    return len(head) + pad + len(tail), chunks()


def _json_response(payload: object, status: int = 200) -> Response:
    """A JSON response keeping key order (clients and humans read the object top-down)."""
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _error_type(status: int) -> str:
    """The OpenAI error `type` that goes with an HTTP status."""
    if status == 429:
        return "rate_limit_exceeded"
    return "server_error" if status >= 500 else "invalid_request_error"


def _error_response(error: _ApiError) -> Response:
    """Render an API error in the OpenAI shape."""
    body = {
        "error": {
            "message": error.message,
            "type": _error_type(error.status),
            "param": error.param,
            "code": error.code,
        }
    }
    return _json_response(body, error.status)


def _http_error_response(error: HTTPException) -> Response:
    """Render werkzeug's errors (unknown route, wrong method, bad JSON...) in the OpenAI shape."""
    status = error.code or 500
    if status == 404:
        message, code = f"Invalid URL ({request.method} {request.path})", "unknown_url"
    elif status == 405:
        message, code = (
            f"Method {request.method} not allowed on {request.path}",
            "method_not_allowed",
        )
    else:
        message, code = error.description or error.name, None
    response = _error_response(_ApiError(status, message, code=code))
    for name, value in error.get_headers():
        if name.lower() != "content-type":  # keeps Allow on a 405
            response.headers[name] = value
    return response


def _redact_authorization(value: str, api_key: str | None) -> str:
    """Say whether the caller sent the master key without ever echoing a credential."""
    if api_key is not None and hmac.compare_digest(value, f"Bearer {api_key}"):
        return "master"
    return "other:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def _drop_connection() -> Response:
    """Cut the client's TCP connection so it gets no response at all.

    Both werkzeug's dev server (`werkzeug.socket`) and gunicorn (`gunicorn.socket`) expose the
    client socket in the WSGI environ. We shut it down rather than close it: the descriptor
    stays owned by the server, so it can't be reused by another thread's connection while the
    server still holds the number. SO_LINGER 0 turns the server's final close() into an RST.
    The server then fails to write the returned response with EPIPE, which both treat as a
    client that went away: nothing is sent and nothing is logged as an error.
    """
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        # No socket (Flask's test client): surface the same failure as an exception.
        raise ConnectionResetError(errno.ECONNRESET, "simulated connection reset")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the client is already gone, which is the outcome we wanted
    # Never delivered: the server's failed write of it is what ends the request quietly.
    # 444 is nginx's "closed without response", so access logs say what happened.
    return Response(status=444)


def _request_fields() -> dict[str, Any]:
    """The request body as a dict, whether it was JSON, multipart or urlencoded."""
    if request.is_json:
        body = request.get_json()  # a malformed body raises BadRequest, rendered as a 400
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.", code="invalid_type")
        return body
    # The SDK always sends multipart (even without a file); files such as input_reference are
    # accepted and ignored, since a fake generation has no use for them.
    return {**request.form.to_dict(), **request.files.to_dict()}


def _text_field(fields: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    """A string field; integers are accepted too because JSON callers send `seconds: 4`."""
    value = fields.get(name)
    if value is None:
        return default
    if type(value) is int:
        return str(value)
    if not isinstance(value, str):
        raise _ApiError(
            400, f"Invalid type for {name!r}: expected a string.", param=name, code="invalid_type"
        )
    return value


def _choice(fields: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    """A field that must be one of `allowed`; the first one is the default."""
    value = _text_field(fields, name, allowed[0])
    if value not in allowed:
        supported = ", ".join(repr(option) for option in allowed)
        raise _ApiError(
            400,
            f"Invalid value: {value!r}. Supported values are: {supported}.",
            param=name,
            code="invalid_value",
        )
    return value


def _prompt(fields: Mapping[str, Any]) -> str:
    """The required, non-blank prompt."""
    prompt = _text_field(fields, "prompt")
    if prompt is None or not prompt.strip():
        raise _ApiError(
            400,
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    return prompt


def _limit_arg() -> int:
    """The `limit` query parameter of a list call."""
    raw = request.args.get("limit") or str(DEFAULT_PAGE_LIMIT)
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE_LIMIT:
        raise _ApiError(
            400,
            f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}.",
            param="limit",
            code="invalid_value",
        )
    return int(raw)


def _is_api_path(path: str) -> bool:
    """Whether `path` is part of the simulated API (as opposed to the control plane)."""
    return path == "/v1" or path.startswith("/v1/")


class _Simulator:
    """The simulator's state and its views; one instance per app, shared by all threads."""

    def __init__(self, options: SimulatorOptions) -> None:
        """Start with no videos, no recorded requests and no faults."""
        self.options = options
        self._lock = threading.Lock()
        self._videos: dict[str, _Video] = {}
        self._seq = itertools.count()
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._faults = _Faults()
        # Set (and replaced) whenever faults change, so hung requests give up their thread.
        self._release = threading.Event()

    def build_app(self) -> Flask:
        """Create the Flask app and wire the routes, hooks and error handlers."""
        app = Flask(__name__)
        app.before_request(self.intercept)
        app.register_error_handler(_ApiError, _error_response)
        app.register_error_handler(HTTPException, _http_error_response)
        routes: list[tuple[str, Callable[..., Response], str]] = [
            ("/v1/videos", self.create_video, "POST"),
            ("/v1/videos", self.list_videos, "GET"),
            ("/v1/videos/<video_id>", self.retrieve_video, "GET"),
            ("/v1/videos/<video_id>", self.delete_video, "DELETE"),
            ("/v1/videos/<video_id>/content", self.download_content, "GET"),
            ("/v1/videos/<video_id>/remix", self.remix_video, "POST"),
            ("/_sim/healthz", self.healthz, "GET"),
            ("/_sim/requests", self.recorded_requests, "GET"),
            ("/_sim/requests", self.clear_requests, "DELETE"),
            ("/_sim/faults", self.show_faults, "GET"),
            ("/_sim/faults", self.set_faults, "POST"),
            ("/_sim/faults", self.clear_faults, "DELETE"),
        ]
        for rule, view, method in routes:
            app.add_url_rule(rule, endpoint=f"{method} {rule}", view_func=view, methods=[method])
        return app

    # --- request pipeline -------------------------------------------------------------------

    def intercept(self) -> Response | None:
        """Record, fault-inject and authenticate every /v1 request before it is routed."""
        if not _is_api_path(request.path):
            return None
        self._record()
        # Faults come before auth: they stand for the network and proxies in front of the API.
        faults = self._current_faults()
        if faults.applies_to(request.path):
            response = self._inject(faults)
            if response is not None:
                return response
        self._authenticate()
        return None

    def _record(self) -> None:
        """Remember the request, with its Authorization header redacted."""
        headers = dict(request.headers.items())
        if "Authorization" in headers:
            headers["Authorization"] = _redact_authorization(
                headers["Authorization"], self.options.api_key
            )
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.args.to_dict(),
            "headers": headers,
        }
        with self._lock:
            self._requests.append(entry)

    def _inject(self, faults: _Faults) -> Response | None:
        """Apply the request-level faults; None lets the request through."""
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.hang:
            self._hang()
        if faults.reset:
            return _drop_connection()
        if faults.redirect:
            return Response(status=302, headers={"Location": faults.redirect})
        if faults.lie:
            return Response("<html>oops</html>", status=200, mimetype="text/html")
        status = self._take_status(request.path)
        if status is not None:
            raise _ApiError(
                status, f"Simulated upstream failure ({status}).", code="simulated_fault"
            )
        return None

    def _hang(self) -> None:
        """Hold the request for HANG_SECONDS, or until the faults change."""
        with self._lock:
            # Re-checked under the lock: faults cleared since our snapshot mean no hang at all.
            if not self._faults.hang:
                return
            release = self._release
        release.wait(HANG_SECONDS)

    def _take_status(self, path: str) -> int | None:
        """The injected status for this request, counting it against status_count."""
        with self._lock:
            faults = self._faults
            if faults.status is None or not faults.applies_to(path):
                return None
            if faults.status_count is not None:
                left = faults.status_count - 1
                self._faults = replace(
                    faults, status=faults.status if left else None, status_count=left or None
                )
            return faults.status

    def _authenticate(self) -> None:
        """Require the configured bearer key, if any."""
        api_key = self.options.api_key
        if api_key is None:
            return
        header = request.headers.get("Authorization")
        if header is None:
            raise _ApiError(401, "You didn't provide an API key.", code="invalid_api_key")
        if not hmac.compare_digest(header.encode(), f"Bearer {api_key}".encode()):
            raise _ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _current_faults(self) -> _Faults:
        """A consistent snapshot of the faults."""
        with self._lock:
            return self._faults

    def _replace_faults(self, faults: _Faults) -> None:
        """Install new faults and wake any request hung by the old ones."""
        with self._lock:
            self._faults = faults
            released, self._release = self._release, threading.Event()
        released.set()

    # --- video store ------------------------------------------------------------------------

    def _add_video(
        self, prompt: str, model: str, seconds: str, size: str, remixed_from: str | None = None
    ) -> _Video:
        """Create and store a new job starting now."""
        with self._lock:
            video = _Video(
                id=f"video_{secrets.token_hex(12)}",
                seq=next(self._seq),
                prompt=prompt,
                model=model,
                seconds=seconds,
                size=size,
                created_at=time.time(),
                started=time.monotonic(),
                remixed_from_video_id=remixed_from,
            )
            self._videos[video.id] = video
        return video

    def _get_video(self, video_id: str) -> _Video:
        """A stored video, or a 404."""
        with self._lock:
            video = self._videos.get(video_id)
        if video is None:
            raise _ApiError(404, f"Video with id {video_id!r} not found.", code="not_found")
        return video

    def _require_completed(self, video: _Video) -> None:
        """Refuse to use a video whose assets do not exist (yet)."""
        status = _video_json(video, self.options.job_seconds)["status"]
        if status != "completed":
            raise _ApiError(
                400, f"Video {video.id!r} is {status}, not completed.", code="video_not_ready"
            )

    # --- /v1 views --------------------------------------------------------------------------

    def create_video(self) -> Response:
        """POST /v1/videos: queue a generation job."""
        fields = _request_fields()
        video = self._add_video(
            prompt=_prompt(fields),
            model=_choice(fields, "model", MODELS),
            seconds=_choice(fields, "seconds", SECONDS),
            size=_choice(fields, "size", SIZES),
        )
        return _json_response(_video_json(video, self.options.job_seconds))

    def list_videos(self) -> Response:
        """GET /v1/videos: one cursor page, newest first unless order=asc."""
        limit = _limit_arg()
        order = request.args.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise _ApiError(
                400, "order must be 'asc' or 'desc'.", param="order", code="invalid_value"
            )
        with self._lock:
            videos = list(self._videos.values())
        videos.sort(key=lambda video: (int(video.created_at), video.seq), reverse=order == "desc")
        start = self._page_start(videos, request.args.get("after"))
        page = videos[start : start + limit]
        data = [_video_json(video, self.options.job_seconds) for video in page]
        return _json_response(
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": start + limit < len(videos),
            }
        )

    @staticmethod
    def _page_start(videos: list[_Video], after: str | None) -> int:
        """Index of the first video after the `after` cursor."""
        if not after:
            return 0
        for index, video in enumerate(videos):
            if video.id == after:
                return index + 1
        raise _ApiError(
            400, f"No video with id {after!r} to page after.", param="after", code="invalid_value"
        )

    def retrieve_video(self, video_id: str) -> Response:
        """GET /v1/videos/{id}: the job's current state, with a polling hint."""
        payload = _video_json(self._get_video(video_id), self.options.job_seconds)
        # Oversize pads a real video (unknown ids still 404) so only its size is wrong.
        faults = self._current_faults()
        if faults.oversize_bytes is not None and faults.applies_to(request.path):
            length, chunks = _padded_json(payload, faults.oversize_bytes)
            response = Response(chunks, mimetype="application/json")
            response.headers["Content-Length"] = str(length)
        else:
            response = _json_response(payload)
        response.headers["openai-poll-after-ms"] = str(self.options.poll_after_ms)
        return response

    def delete_video(self, video_id: str) -> Response:
        """DELETE /v1/videos/{id}: forget the job and its assets."""
        with self._lock:
            found = self._videos.pop(video_id, None) is not None
        if not found:
            raise _ApiError(404, f"Video with id {video_id!r} not found.", code="not_found")
        return _json_response({"id": video_id, "object": "video.deleted", "deleted": True})

    def download_content(self, video_id: str) -> Response:
        """GET /v1/videos/{id}/content: stream the rendered asset without buffering it."""
        variant = _choice(request.args, "variant", tuple(VARIANT_TYPES))
        video = self._get_video(video_id)
        self._require_completed(video)
        size = self.options.content_bytes if variant == "video" else PREVIEW_BYTES
        chunks = _repeat(_content_block(video.id, variant), size)
        response = Response(chunks, mimetype=VARIANT_TYPES[variant])
        response.headers["Content-Length"] = str(size)
        return response

    def remix_video(self, video_id: str) -> Response:
        """POST /v1/videos/{id}/remix: a new job reusing a completed video's settings."""
        source = self._get_video(video_id)
        prompt = _prompt(_request_fields())
        self._require_completed(source)
        video = self._add_video(
            prompt=prompt,
            model=source.model,
            seconds=source.seconds,
            size=source.size,
            remixed_from=source.id,
        )
        return _json_response(_video_json(video, self.options.job_seconds))

    # --- /_sim control plane ----------------------------------------------------------------

    def healthz(self) -> Response:
        """GET /_sim/healthz: liveness for fixtures waiting on startup."""
        return _json_response({"status": "ok"})

    def recorded_requests(self) -> Response:
        """GET /_sim/requests: the last REQUEST_LOG_SIZE /v1 requests, oldest first."""
        with self._lock:
            entries = list(self._requests)
        return _json_response(entries)

    def clear_requests(self) -> Response:
        """DELETE /_sim/requests: forget the recorded requests."""
        with self._lock:
            self._requests.clear()
        return Response(status=204)

    def show_faults(self) -> Response:
        """GET /_sim/faults: the faults in force."""
        return _json_response(asdict(self._current_faults()))

    def set_faults(self) -> Response:
        """POST /_sim/faults: replace the faults (fields left out are off)."""
        faults = _parse_faults(request.get_json(silent=True))
        self._replace_faults(faults)
        return _json_response(asdict(faults))

    def clear_faults(self) -> Response:
        """DELETE /_sim/faults: back to a healthy upstream."""
        self._replace_faults(_Faults())
        return Response(status=204)
