"""Video generation jobs: their settings, a lifecycle derived from the clock, and the store."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from gateway.simulator.errors import ApiError

# Allowed values; the first of each is the default.
MODELS = ("sora-2", "sora-2-pro")
SECONDS = ("4", "8", "12")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
QUEUED_FRACTION = 0.1  # share of job_seconds a job spends queued before it makes progress
EXPIRY_SECONDS = 3600
FAIL_MARKER = "[fail]"


@dataclass(frozen=True)
class Video:
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


def lifecycle(elapsed: float, job_seconds: float, fails: bool) -> tuple[str, int]:
    """Status and progress of a job `elapsed` seconds after it was created."""
    if elapsed >= job_seconds:
        return ("failed" if fails else "completed"), 100
    queued_for = job_seconds * QUEUED_FRACTION
    if elapsed < queued_for:
        return "queued", 0
    # Progress stops at 99: only completion reports 100.
    return "in_progress", int(99 * (elapsed - queued_for) / (job_seconds - queued_for))


def video_json(video: Video, job_seconds: float) -> dict[str, Any]:
    """The public video object as of now."""
    fails = FAIL_MARKER in video.prompt
    status, progress = lifecycle(time.monotonic() - video.started, job_seconds, fails)
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


def require_completed(video: Video, job_seconds: float) -> None:
    """Refuse to use a video whose assets do not exist (yet)."""
    status = video_json(video, job_seconds)["status"]
    if status != "completed":
        raise ApiError(
            400, f"Video {video.id!r} is {status}, not completed.", code="video_not_ready"
        )


class VideoStore:
    """The jobs of one simulator, shared by all its threads."""

    def __init__(self) -> None:
        """Start with no videos."""
        self._lock = threading.Lock()
        self._videos: dict[str, Video] = {}
        self._seq = itertools.count()

    def add(
        self, prompt: str, model: str, seconds: str, size: str, remixed_from: str | None = None
    ) -> Video:
        """Create and store a new job starting now."""
        with self._lock:
            video = Video(
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

    def get(self, video_id: str) -> Video:
        """A stored video, or a 404."""
        with self._lock:
            video = self._videos.get(video_id)
        if video is None:
            raise ApiError(404, f"Video with id {video_id!r} not found.", code="not_found")
        return video

    def delete(self, video_id: str) -> None:
        """Forget a video, or answer 404 if there is none by that id."""
        with self._lock:
            found = self._videos.pop(video_id, None) is not None
        if not found:
            raise ApiError(404, f"Video with id {video_id!r} not found.", code="not_found")

    def snapshot(self) -> list[Video]:
        """A snapshot of every stored video, in no particular order."""
        with self._lock:
            return list(self._videos.values())
