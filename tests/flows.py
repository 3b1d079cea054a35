"""Helpers for the policy, quota, approval and sharing tests: a fake video backend on top of
``responses``, admin calls, and assertions on the quota ledger (the error shape is asserted
by ``tests.helpers.assert_error``)."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import responses
from sqlalchemy import select

from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.models import QuotaUsage, Video
from keys.store import Store
from tests.helpers import UPSTREAM_URL, bearer

VIDEOS = f"{UPSTREAM_URL}/videos"
API = "/admin/v1"
_LIST = re.compile(rf"^{re.escape(VIDEOS)}(\?.*)?$")
_ONE = re.compile(rf"^{re.escape(VIDEOS)}/(?P<id>[A-Za-z0-9_-]+)$")
_REMIX = re.compile(rf"^{re.escape(VIDEOS)}/(?P<id>[A-Za-z0-9_-]+)/remix$")
_CONTENT = re.compile(rf"^{re.escape(VIDEOS)}/(?P<id>[A-Za-z0-9_-]+)/content(\?.*)?$")
CONTENT = b"\x00\x00\x00\x18ftypmp42 fake video bytes" * 64


@dataclass
class FakeBackend:
    """The generation backend as ``responses`` callbacks: creates get fresh ids, each video
    keeps a status the test moves on, and every call is recorded."""

    mock: responses.RequestsMock
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)
    creates: list[dict[str, Any]] = field(default_factory=list)
    # What the next creates answer: an int status, or an exception to raise; then 200.
    failures: list[int | Exception] = field(default_factory=list)
    # How many of the next creates make the job and then lose the answer (a read timeout).
    lost_answers: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.mock.add_callback(responses.POST, VIDEOS, callback=self._create)
        self.mock.add_callback(responses.POST, _REMIX, callback=self._create)
        self.mock.add_callback(responses.GET, _CONTENT, callback=self._content)
        self.mock.add_callback(responses.GET, _ONE, callback=self._retrieve)
        self.mock.add_callback(responses.DELETE, _ONE, callback=self._delete)
        self.mock.add_callback(responses.GET, _LIST, callback=self._list)

    def _create(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
            if isinstance(failure, Exception):
                raise failure
            if failure is not None:
                return failure, {}, json.dumps({"error": {"message": "backend down"}})
            video_id = f"video_up{next(self._ids)}"
            remix = _REMIX.match(str(request.url))
            body = {
                "id": video_id,
                "object": "video",
                "status": "queued",
                "model": "sora-2",
                "progress": 0,
                "seconds": "4",
                "size": "720x1280",
                "remixed_from_video_id": remix.group("id") if remix else None,
            }
            if self.lost_answers:
                self.lost_answers -= 1
                # What was asked, as the real backend echoes it: how a reconciler finds it.
                asked = json.loads(request.body or b"{}")
                body.update({key: asked[key] for key in ("prompt", "model", "seconds", "size")})
                body["created_at"] = int(time.time())
                self.videos[video_id] = body
                raise requests.exceptions.ReadTimeout()
            self.videos[video_id] = body
            self.creates.append({"url": str(request.url), "body": request.body, "id": video_id})
            return 200, {}, json.dumps(body)

    def _list(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        data = list(reversed(self.videos.values()))
        page = {"object": "list", "data": data, "has_more": False}
        return 200, {}, json.dumps(page)

    def _retrieve(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        match = _ONE.match(str(request.url))
        assert match is not None
        video = self.videos.get(match.group("id"))
        if video is None:
            return 404, {}, json.dumps({"error": {"message": "no such video"}})
        return 200, {"openai-poll-after-ms": "100"}, json.dumps(video)

    def _delete(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        match = _ONE.match(str(request.url))
        assert match is not None
        video_id = match.group("id")
        if self.videos.pop(video_id, None) is None:
            return 404, {}, json.dumps({"error": {"message": "no such video"}})
        return 200, {}, json.dumps({"id": video_id, "object": "video.deleted", "deleted": True})

    def _content(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "video/mp4"}, CONTENT

    def finish(self, video_id: str, status: str = "completed") -> None:
        """Move an upstream video to its end."""
        video = self.videos[video_id]
        video["status"] = status
        video["progress"] = 100 if status == "completed" else video["progress"]
        if status == "failed":
            video["error"] = {"code": "generation_failed", "message": "the model gave up"}

    def finish_all(self, status: str = "completed") -> None:
        for video_id in list(self.videos):
            self.finish(video_id, status)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def admin_call(
    client: Any, token: IssuedToken, method: str, path: str, json_body: Any = None
) -> Any:
    kwargs = {"json": json_body} if json_body is not None else {}
    return client.open(API + path, method=method, headers=bearer(token.secret), **kwargs)


def create_video(client: Any, key: IssuedKey, prompt: str = "a kite", **fields: Any) -> Any:
    return client.post("/v1/videos", json={"prompt": prompt, **fields}, headers=bearer(key.secret))


def retrieve(client: Any, key: IssuedKey, video_id: str) -> Any:
    return client.get(f"/v1/videos/{video_id}", headers=bearer(key.secret))


def set_overrides(store: Store, tester_id: str, **overrides: Any) -> None:
    with store.transaction() as tx:
        tx.policies.set_overrides(tester_id, overrides, "test:setup")


def ledger(store: Store, tester_id: str) -> dict[str, int]:
    """``metric -> used`` over every period of the tester's quota rows."""
    with store.read() as tx:
        rows = tx.session.scalars(select(QuotaUsage).where(QuotaUsage.tester_id == tester_id))
        totals: dict[str, int] = {}
        for row in rows:
            totals[row.metric] = totals.get(row.metric, 0) + row.used
        return totals


def quota_state(store: Store, video_id: str) -> str:
    with store.read() as tx:
        video = tx.session.get(Video, video_id)
        assert video is not None
        return video.quota_state
