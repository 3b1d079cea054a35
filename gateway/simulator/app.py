"""The simulator's Flask app: the /v1 Videos routes, the /_sim control plane, and their wiring."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from gateway.simulator.content import (
    VARIANT_TYPES,
    content_etag,
    preview_image,
    video_chunks,
    video_length,
)
from gateway.simulator.errors import ApiError, error_response, http_error_response
from gateway.simulator.faults import FaultInjector, Faults, parse_faults
from gateway.simulator.jobs import (
    MODELS,
    SECONDS,
    SIZES,
    Video,
    VideoStore,
    require_completed,
    video_json,
)
from gateway.simulator.options import SimulatorOptions
from gateway.simulator.params import choice, limit_arg, request_fields, required_prompt
from gateway.simulator.request_log import RequestLog
from gateway.simulator.responses import json_response, padded_json


def create_simulator_app(options: SimulatorOptions | None = None) -> Flask:
    """Build a Flask app serving the simulated Videos API and its /_sim control plane."""
    return _Simulator(options or SimulatorOptions()).build_app()


def app_from_env() -> Flask:
    """Build the app from the process environment (the gunicorn entry point)."""
    return create_simulator_app(SimulatorOptions.from_env(os.environ))


def _is_api_path(path: str) -> bool:
    """Whether `path` is part of the simulated API (as opposed to the control plane)."""
    return path == "/v1" or path.startswith("/v1/")


class _Simulator:
    """The simulator's state and its views; one instance per app, shared by all threads."""

    def __init__(self, options: SimulatorOptions) -> None:
        """Start with no videos, no recorded requests and no faults."""
        self.options = options
        self.videos = VideoStore()
        self.requests = RequestLog(options.api_key)
        self.faults = FaultInjector()

    def build_app(self) -> Flask:
        """Create the Flask app and wire the routes, hooks and error handlers."""
        # The package's name, as when the simulator was one module: it names the app's logger.
        app = Flask("gateway.simulator")
        app.before_request(self.intercept)
        app.register_error_handler(ApiError, error_response)
        app.register_error_handler(HTTPException, http_error_response)
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
        self.requests.record(request)
        # Faults come before auth: they stand for the network and proxies in front of the API.
        faults = self.faults.current()
        if faults.applies_to(request.path):
            response = self.faults.inject(faults)
            if response is not None:
                return response
        self._authenticate()
        return None

    def _authenticate(self) -> None:
        """Require the configured bearer key, if any."""
        api_key = self.options.api_key
        if api_key is None:
            return
        header = request.headers.get("Authorization")
        if header is None:
            raise ApiError(401, "You didn't provide an API key.", code="invalid_api_key")
        if not hmac.compare_digest(header.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    # --- /v1 views --------------------------------------------------------------------------

    def create_video(self) -> Response:
        """POST /v1/videos: queue a generation job."""
        fields = request_fields()
        video = self.videos.add(
            prompt=required_prompt(fields),
            model=choice(fields, "model", MODELS),
            seconds=choice(fields, "seconds", SECONDS),
            size=choice(fields, "size", SIZES),
        )
        return json_response(video_json(video, self.options.job_seconds))

    def list_videos(self) -> Response:
        """GET /v1/videos: one cursor page, newest first unless order=asc."""
        limit = limit_arg()
        order = request.args.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise ApiError(
                400, "order must be 'asc' or 'desc'.", param="order", code="invalid_value"
            )
        videos = self.videos.snapshot()
        videos.sort(key=lambda video: (int(video.created_at), video.seq), reverse=order == "desc")
        start = self._page_start(videos, request.args.get("after"))
        page = videos[start : start + limit]
        data = [video_json(video, self.options.job_seconds) for video in page]
        return json_response(
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": start + limit < len(videos),
            }
        )

    @staticmethod
    def _page_start(videos: list[Video], after: str | None) -> int:
        """Index of the first video after the `after` cursor."""
        if not after:
            return 0
        for index, video in enumerate(videos):
            if video.id == after:
                return index + 1
        raise ApiError(
            400, f"No video with id {after!r} to page after.", param="after", code="invalid_value"
        )

    def retrieve_video(self, video_id: str) -> Response:
        """GET /v1/videos/{id}: the job's current state, with a polling hint."""
        payload = video_json(self.videos.get(video_id), self.options.job_seconds)
        # Oversize pads a real video (unknown ids still 404) so only its size is wrong.
        faults = self.faults.current()
        if faults.oversize_bytes is not None and faults.applies_to(request.path):
            length, chunks = padded_json(payload, faults.oversize_bytes)
            response = Response(chunks, mimetype="application/json")
            response.headers["Content-Length"] = str(length)
        else:
            response = json_response(payload)
        response.headers["openai-poll-after-ms"] = str(self.options.poll_after_ms)
        return response

    def delete_video(self, video_id: str) -> Response:
        """DELETE /v1/videos/{id}: forget the job and its assets."""
        self.videos.delete(video_id)
        return json_response({"id": video_id, "object": "video.deleted", "deleted": True})

    def download_content(self, video_id: str) -> Response:
        """GET /v1/videos/{id}/content: stream the rendered asset without buffering it. It
        carries a strong ETag, and a matching If-None-Match is answered 304 with no body,
        as a real HTTP server does (RFC 9110 13.1.2)."""
        variant = choice(request.args, "variant", tuple(VARIANT_TYPES))
        video = self.videos.get(video_id)
        require_completed(video, self.options.job_seconds)
        seconds = int(video.seconds) if video.seconds.isdigit() else 4
        etag = content_etag(video.id, video.size, seconds, self.options.content_bytes, variant)
        if request.if_none_match.contains_weak(etag):
            not_modified = Response(status=304)
            not_modified.set_etag(etag)
            return not_modified
        if variant == "video":
            length = video_length(video.size, seconds, self.options.content_bytes)
            body: Iterator[bytes] = video_chunks(
                video.id, video.size, seconds, self.options.content_bytes
            )
        else:
            image = preview_image(video.size, variant)
            length, body = len(image), iter((image,))
        response = Response(body, mimetype=VARIANT_TYPES[variant])
        response.headers["Content-Length"] = str(length)
        response.set_etag(etag)
        return response

    def remix_video(self, video_id: str) -> Response:
        """POST /v1/videos/{id}/remix: a new job reusing a completed video's settings."""
        source = self.videos.get(video_id)
        prompt = required_prompt(request_fields())
        require_completed(source, self.options.job_seconds)
        video = self.videos.add(
            prompt=prompt,
            model=source.model,
            seconds=source.seconds,
            size=source.size,
            remixed_from=source.id,
        )
        return json_response(video_json(video, self.options.job_seconds))

    # --- /_sim control plane ----------------------------------------------------------------

    def healthz(self) -> Response:
        """GET /_sim/healthz: liveness for fixtures waiting on startup."""
        return json_response({"status": "ok"})

    def recorded_requests(self) -> Response:
        """GET /_sim/requests: the last REQUEST_LOG_SIZE /v1 requests, oldest first."""
        return json_response(self.requests.entries())

    def clear_requests(self) -> Response:
        """DELETE /_sim/requests: forget the recorded requests."""
        self.requests.clear()
        return Response(status=204)

    def show_faults(self) -> Response:
        """GET /_sim/faults: the faults in force."""
        return json_response(asdict(self.faults.current()))

    def set_faults(self) -> Response:
        """POST /_sim/faults: replace the faults (fields left out are off)."""
        faults = parse_faults(request.get_json(silent=True))
        self.faults.replace(faults)
        return json_response(asdict(faults))

    def clear_faults(self) -> Response:
        """DELETE /_sim/faults: back to a healthy upstream."""
        self.faults.replace(Faults())
        return Response(status=204)
