"""The proxy engine: talks to the generation backend with the master credential.

Every upstream request is built from scratch. Nothing of the tester's request reaches the
backend except a validated body, its content type and a request id: not the tester's key,
not OpenAI-Organization or OpenAI-Project, not hop-by-hop or forwarding headers. Paths are
composed here from validated ids, never copied from the incoming URL. Redirects are not
followed, and every call has connect and read timeouts plus a total deadline; a content
download has a deadline of its own, after which its connections are cut.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError

from gateway.settings import Secret
from gateway.upstream.credential import UpstreamAuthWatch
from keys.errors import NotFound

if TYPE_CHECKING:
    from gateway.context import RequestContext

log = logging.getLogger("drawbridge.upstream")

USER_AGENT = "drawbridge-gateway/0.1"
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
CONTENT_VARIANTS = frozenset({"video", "thumbnail", "spritesheet"})
# 1 MiB chunks: a third less CPU per GiB than 256 KiB, and memory stays flat (measured).
STREAM_CHUNK_BYTES = 1024 * 1024
_JSON_CHUNK_BYTES = 64 * 1024
# How long the backend asks a client to wait before polling a video again (the openai SDK
# reads it); passed on, and slowed where a key's rate limit needs it.
POLL_AFTER_HEADER = "openai-poll-after-ms"
# Headers of a content download worth passing back to the tester.
_CONTENT_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "ETag", "Last-Modified")

# method, status (or "timeout" / "error"), seconds until the response headers (None: none came)
UpstreamObserver = Callable[[str, int | str, float | None], None]


@dataclass(frozen=True)
class UpstreamJSON:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


class UpstreamError(Exception):
    """The backend failed, lied, timed out or refused the request.

    ``status`` is what the tester is told: 502 or 504 for the backend's own failures, or the
    backend's 4xx passed on (with its ``code``, ``param`` and ``error_type``, clipped).
    gateway/http/errors.py turns it into the error shape.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        backend_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        # The backend's own status, when it answered (``status`` may map it).
        self.backend_status = backend_status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type


class UpstreamUnanswered(UpstreamError):
    """The backend's answer never arrived (a timeout, a broken connection): whether it acted
    on the request is unknown."""


def video_path(video_id: str, suffix: str = "") -> str:
    """``videos/<id>[/suffix]`` for a validated id. Raises NotFound otherwise."""
    if not VIDEO_ID.fullmatch(video_id):
        raise NotFound(f"No video found with id '{video_id[:64]}'.")
    return f"videos/{video_id}{suffix}"


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        credential: Secret,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 30.0,
        deadline: float = 60.0,
        download_deadline: float = 300.0,
        max_json_bytes: int = 4 * 1024 * 1024,
        pool_size: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._credential = credential
        self._timeout = (connect_timeout, read_timeout)
        self._deadline = deadline
        self._download_deadline = download_deadline
        self._max_json_bytes = max_json_bytes
        self._session = requests.Session()
        # No netrc, no proxy variables, no REQUESTS_CA_BUNDLE surprises from the environment.
        self._session.trust_env = False
        # Nothing the backend sets in a cookie may carry from one tester's call to another's.
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._adapter = adapter
        normalised = requests.PreparedRequest()
        normalised.prepare(method="GET", url=self.base_url)
        self._base_prepared_url = str(normalised.url)
        self.auth = UpstreamAuthWatch()
        # Set by gateway.observability.metrics: told of every call's outcome and latency.
        self.observe: UpstreamObserver | None = None

    def _headers(self, request_id: str, content_type: str | None, accept: str) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._credential.reveal()}",
            "User-Agent": USER_AGENT,
            "Accept": accept,
            "X-Request-Id": request_id,
        }
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _prepare(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        accept: str,
        request_id: str,
    ) -> requests.PreparedRequest:
        """The upstream request, built from scratch: nothing of any session's state (cookies,
        auth, default headers) can ride along."""
        headers = self._headers(request_id, content_type, accept)
        prepared = requests.PreparedRequest()
        if body is None and not params:
            # The common case (polls, deletes): the base URL was normalised once at start
            # and paths are composed from validated ids, so there is nothing to encode.
            prepared.method = method
            prepared.url = self._base_prepared_url + path
            prepared.headers = CaseInsensitiveDict(headers)
            prepared.body = None
            return prepared
        prepared.prepare(
            method=method, url=self.base_url + path, params=params, data=body, headers=headers
        )
        return prepared

    def _send(
        self,
        method: str,
        path: str,
        *,
        request_id: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        if_none_match: str | None = None,
    ) -> requests.Response:
        observe = self.observe
        started = time.perf_counter()
        try:
            prepared = self._prepare(method, path, params, body, content_type, accept, request_id)
            if if_none_match is not None:
                prepared.headers["If-None-Match"] = if_none_match
            # Sent by the session's transport adapter (its connection pool) rather than by
            # Session.send: no cookie persistence, hooks or redirect handling, none of which
            # an upstream call may use, and their cost is a tenth of a request's.
            response = self._send_once_more_if_dropped(prepared)
        except requests.ConnectTimeout:
            if observe is not None:
                observe(method, "timeout", None)
            # Nothing was sent: the backend cannot have acted on it.
            raise UpstreamError(
                504, "The generation backend did not answer in time.", "upstream_timeout"
            ) from None
        except requests.Timeout:
            if observe is not None:
                observe(method, "timeout", None)
            raise UpstreamUnanswered(
                504, "The generation backend did not answer in time.", "upstream_timeout"
            ) from None
        except requests.RequestException as exc:
            if observe is not None:
                observe(method, "error", None)
            unreached = UpstreamError if _never_sent(exc) else UpstreamUnanswered
            raise unreached(
                502, "The generation backend could not be reached.", "upstream_error"
            ) from None
        if observe is not None:
            observe(method, response.status_code, time.perf_counter() - started)
        if 300 <= response.status_code < 400 and not (
            response.status_code == 304 and if_none_match is not None
        ):
            response.close()
            raise UpstreamError(
                502, "The generation backend answered with a redirect.", "upstream_error"
            )
        if response.status_code in (401, 403):
            response.close()
            # The backend refused the gateway's own credential: not the tester's business,
            # the operator's (logged, counted, shown in /readyz).
            self.auth.refused(response.status_code)
            raise UpstreamError(
                502, "The generation backend refused the gateway.", "upstream_error"
            )
        self.auth.accepted()
        return response

    def _send_once_more_if_dropped(self, prepared: requests.PreparedRequest) -> requests.Response:
        """Send; a GET or HEAD whose connection dropped before any answer is sent once more.

        The pool reuses kept-alive connections, and a backend closes idle ones (its keep-alive
        timeout): one it closes just as a request goes out fails that request with no answer.
        A client may repeat an idempotent request then (RFC 9110, 9.2.2), on a new connection;
        a POST never is, since the backend may have acted on it. A timeout is not a dropped
        connection and is not repeated either."""
        send = self._adapter.send
        try:
            return send(prepared, stream=True, timeout=self._timeout)
        except requests.ConnectionError as exc:
            if prepared.method not in _SENT_AGAIN_IF_DROPPED or not _dropped(exc):
                raise
        log.info(
            "the backend dropped a connection before answering; %s sent again", prepared.method
        )
        return send(prepared, stream=True, timeout=self._timeout)

    def call_json(
        self,
        method: str,
        path: str,
        *,
        request_id: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> UpstreamJSON:
        """A JSON call. Raises UpstreamError: the backend's 4xx with its own fields; 5xx,
        lies, oversize answers and deadlines as 502/504."""
        started = time.monotonic()
        response = self._send(
            method,
            path,
            request_id=request_id,
            params=params,
            body=body,
            content_type=content_type,
        )
        with response:
            raw = self._read_bounded(response, started)
        if response.status_code >= 500:
            raise UpstreamError(
                502,
                f"The generation backend failed ({response.status_code}).",
                "upstream_error",
            )
        payload = _parse_object(raw)
        if response.status_code >= 400:
            raise _upstream_client_error(response.status_code, payload)
        poll_after = response.headers.get(POLL_AFTER_HEADER)
        headers = {POLL_AFTER_HEADER: poll_after} if poll_after is not None else {}
        return UpstreamJSON(response.status_code, payload, headers)

    def _read_bounded(self, response: requests.Response, started: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if (
            declared
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self._max_json_bytes
        ):
            raise UpstreamError(
                502, "The generation backend's answer is too large.", "upstream_error"
            )
        chunks, size = [], 0
        try:
            # Read from the raw stream (decoded, as iter_content would) without the layers
            # of generators around it: this runs for every proxied JSON answer.
            while chunk := response.raw.read(_JSON_CHUNK_BYTES, decode_content=True):
                size += len(chunk)
                if size > self._max_json_bytes:
                    raise UpstreamError(
                        502, "The generation backend's answer is too large.", "upstream_error"
                    )
                if time.monotonic() - started > self._deadline:
                    raise UpstreamUnanswered(
                        504, "The generation backend did not answer in time.", "upstream_timeout"
                    )
                chunks.append(chunk)
        except (ReadTimeoutError, requests.Timeout):
            raise UpstreamUnanswered(
                504, "The generation backend did not answer in time.", "upstream_timeout"
            ) from None
        except (HTTPError, requests.RequestException):
            raise UpstreamUnanswered(
                502, "The generation backend broke off its answer.", "upstream_error"
            ) from None
        return b"".join(chunks)

    def open_stream(
        self,
        path: str,
        *,
        request_id: str,
        params: Mapping[str, str],
        on_deadline: Callable[[], None] | None = None,
        if_none_match: str | None = None,
    ) -> tuple[int, dict[str, str], Iterator[bytes]]:
        """Open a content download: status, headers to pass on, and the body's chunks.

        The body is streamed undecoded (``Content-Encoding`` and ``Content-Length`` stay
        true) and never held whole in memory. ``download_deadline`` seconds after the call
        began, the backend's connection is shut and ``on_deadline`` called (the edge passes
        one that shuts the client's), whatever the download is waiting for. With
        ``if_none_match`` (an ETag) the request is conditional: a ``304`` comes back as
        that status, its headers and no chunks.
        """
        started = time.monotonic()
        response = self._send(
            "GET",
            path,
            request_id=request_id,
            params=params,
            accept="application/binary",
            if_none_match=if_none_match,
        )
        if response.status_code == 304:
            response.close()
            headers = {
                name: response.headers[name] for name in ("ETag",) if name in response.headers
            }
            return 304, headers, iter(())
        if response.status_code >= 400:
            with response:
                raw = self._read_bounded(response, time.monotonic())
            if response.status_code >= 500:
                raise UpstreamError(
                    502,
                    f"The generation backend failed ({response.status_code}).",
                    "upstream_error",
                )
            raise _upstream_client_error(response.status_code, _parse_object(raw))
        headers = {
            name: response.headers[name] for name in _CONTENT_HEADERS if name in response.headers
        }
        left = self._download_deadline - (time.monotonic() - started)
        return response.status_code, headers, _chunks(response, left, on_deadline)

    def credential_for_redaction(self) -> str:
        """The credential's text, for the log redaction filter only."""
        return self._credential.reveal()

    def close(self) -> None:
        self._session.close()


def timed_call(
    upstream: UpstreamClient, context: RequestContext, method: str, path: str, **options: Any
) -> UpstreamJSON:
    """A JSON call for the request in hand, its time kept for the request's usage event."""
    started = time.perf_counter()
    try:
        return upstream.call_json(method, path, request_id=context.request_id, **options)
    finally:
        context.upstream_ms = round((time.perf_counter() - started) * 1000, 2)


class DownloadCut(ConnectionResetError):
    """A download ended by its deadline. A connection reset, because that is what it is to
    the client, and what gunicorn closes quietly (the watchdog has logged it already)."""


class _Watchdog:
    """Cuts a download when its deadline passes: a timer thread shuts the backend's socket
    (a blocked read then ends at once) and calls ``on_deadline``. A read timeout alone
    cannot do it: a backend trickling a byte at a time never lets a read time out, and a
    client that stops reading blocks the write, not the read."""

    def __init__(
        self, seconds: float, response: requests.Response, on_deadline: Callable[[], None] | None
    ) -> None:
        self.fired = False
        self._response = response
        self._on_deadline = on_deadline
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        # A pending timer must never keep a stopping worker alive.
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        log.warning("content download cut: it was still running at its deadline")
        # ValueError/RuntimeError: the download finished and its connection went back to the
        # pool meanwhile; there is nothing left to cut.
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            self._response.raw.shutdown()
        if self._on_deadline is not None:
            with contextlib.suppress(OSError):
                self._on_deadline()

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def finish(self) -> None:
        """Wait until a cut that has begun is whole: the read it ended can return before
        the timer thread has cut the client's side too."""
        self._timer.join(timeout=1.0)


_SENT_AGAIN_IF_DROPPED = frozenset({"GET", "HEAD"})
_DROPPED = (
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
)


def _dropped(exc: requests.ConnectionError) -> bool:
    """Whether the connection was dropped under the request (reset, closed) before any
    answer: not a timeout, not a connection refused."""
    if isinstance(exc, requests.Timeout) or not exc.args:
        return False
    error = exc.args[0]
    error = getattr(error, "reason", None) or error  # MaxRetryError wraps it
    if not isinstance(error, ProtocolError) or len(error.args) < 2:
        return False
    return isinstance(error.args[1], _DROPPED)


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed before a byte of it left: no connection, no TLS session."""
    if isinstance(exc, requests.exceptions.SSLError):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _chunks(
    response: requests.Response, seconds: float, on_deadline: Callable[[], None] | None
) -> Iterator[bytes]:
    watchdog = _Watchdog(seconds, response, on_deadline)
    watchdog.start()
    try:
        yield from response.raw.stream(STREAM_CHUNK_BYTES, decode_content=False)
    except (HTTPError, requests.RequestException, OSError):
        if watchdog.fired:
            watchdog.finish()
            raise DownloadCut(errno.ECONNRESET, "content download cut at its deadline") from None
        raise
    finally:
        watchdog.cancel()
        response.close()


def _parse_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict):
        raise UpstreamError(
            502, "The generation backend sent an unreadable answer.", "upstream_error"
        )
    return payload


def _upstream_client_error(status: int, payload: dict[str, Any]) -> UpstreamError:
    """Pass a backend's 4xx on in our shape, keeping only the documented fields."""
    error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    assert isinstance(error, dict)

    def text(name: str, default: str | None) -> str | None:
        value = error.get(name)
        return value[:500] if isinstance(value, str) else default

    return UpstreamError(
        status if status in (400, 404, 409, 413, 415, 422, 429) else 400,
        text("message", "The generation backend refused the request.") or "",
        text("code", "upstream_rejected") or "upstream_rejected",
        param=text("param", None),
        error_type=text("type", None),
        backend_status=status,
    )
