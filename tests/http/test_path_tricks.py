"""Request paths that try to mean something other than what they say.

Requests are built the way gunicorn hands them over: ``RAW_URI`` is the path as sent,
``PATH_INFO`` is percent-decoded (bytes read as latin-1, per PEP 3333). The Flask test
client would otherwise normalise some of these paths before the gateway sees them.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import pytest
import responses
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from keys.access.lifecycle import IssuedKey
from keys.store import Store
from tests.helpers import UPSTREAM_URL, bearer

OWNED = "video_owned1"
ALLOWED_UPSTREAM_URL = re.compile(
    r"^http://upstream\.test/v1/videos(/[A-Za-z0-9_-]+(/content|/remix)?)?(\?.*)?$"
)


@pytest.fixture
def handed_out() -> set[str]:
    """Ids of the videos the fake upstream created (all of them the one tester's)."""
    return {OWNED}


@pytest.fixture
def upstream(handed_out: set[str]) -> Iterator[responses.RequestsMock]:
    """An upstream that answers anything under its base URL, and records every call."""
    fresh_ids = itertools.count(1)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        # Creates and remixes get a new id each time; everything else describes OWNED.
        video_id = f"video_new{next(fresh_ids)}" if request.method == "POST" else OWNED
        handed_out.add(video_id)
        return 200, {}, json.dumps({"id": video_id, "object": "video", "status": "queued"})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        anything = re.compile(r"http://upstream\.test/.*")
        for method in (responses.GET, responses.POST, responses.DELETE):
            mock.add_callback(method, anything, callback=answer, content_type="application/json")
        yield mock


@pytest.fixture
def key(make_key: Callable[..., IssuedKey], store: Store) -> IssuedKey:
    issued = make_key()
    with store.transaction() as tx:
        tx.videos.record(OWNED, issued.key.tester_id, issued.key.id, {"status": "queued"})
    return issued


def raw_request(
    client: Any, method: str, raw_target: str, headers: dict[str, str], **kwargs: Any
) -> Any:
    """Send ``raw_target`` as the request line's target, the way gunicorn passes it on."""
    parts = urlsplit(raw_target) if "://" in raw_target else None
    raw_path, _, query = (parts.path if parts else raw_target).partition("?")
    if parts and parts.query:
        query = parts.query
    path_info = unquote_to_bytes(raw_path).decode("latin-1")
    return client.open(
        "/",
        method=method,
        headers=headers,
        environ_overrides={
            "RAW_URI": raw_target,
            "REQUEST_URI": raw_target,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
        },
        **kwargs,
    )


def assert_refused(response: Any) -> None:
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]


TRICKS = [
    "/v1/videos/../videos",
    "/v1/videos/..",
    "/v1/videos/" + OWNED + "/../" + OWNED,
    "/v1/videos/%2e%2e/" + OWNED,
    "/v1/videos/%2E%2E/" + OWNED,
    "/v1/videos/.%2e/" + OWNED,
    "/v1/videos/" + OWNED + "%2fcontent",
    "/v1/videos/" + OWNED + "%2Fcontent",
    "/v1/videos/" + OWNED + "%2f..%2f..%2fadmin",
    "/v1/videos/" + OWNED + "%5ccontent",
    "/v1/videos/" + OWNED + "%5Ccontent",
    "/v1/videos/" + OWNED + "\\content",
    "/v1\\videos\\" + OWNED,
    "/v1/videos\\..\\" + OWNED,
    "//upstream.test/v1/videos",
    "//evil.test/v1/videos/" + OWNED,
    "/v1//videos",
    "/v1//videos/" + OWNED,
    "/v1/videos//" + OWNED,
    "/v1/videos/./" + OWNED,
    "/v1/./videos/" + OWNED,
    "/v1/videos/" + OWNED + "/./content",
    "/v1/videos/" + OWNED + "%00",
    "/v1/videos/" + OWNED + "%00/content",
    "/v1/videos/" + OWNED + "%252fcontent",
    "/v1/videos/%252e%252e/" + OWNED,
    "/v1/videos/" + OWNED + "%0d%0aX-Injected:%201",
    "/v1/videos/" + OWNED + "%0a",
    "http://evil.test/v1/videos/" + OWNED,
    "http://upstream.test/v1/videos",
    "https://localhost/v1/videos/" + OWNED + "/content",
    "v1/videos/" + OWNED,
    "*",
]


@pytest.mark.parametrize("target", TRICKS)
def test_tricky_paths_are_refused_without_an_upstream_call(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock, target: str
) -> None:
    for method in ("GET", "DELETE", "POST"):
        response = raw_request(client, method, target, bearer(key.secret), json={"prompt": "x"})

        assert_refused(response)
    assert len(upstream.calls) == 0


@pytest.mark.parametrize(
    "target",
    ["/v1/videos/%2e%2e/x", "/v1//videos", "/v1/videos/./x", "//evil.test/v1/videos"],
)
def test_tricky_paths_are_refused_before_authentication(
    client: Any, upstream: responses.RequestsMock, target: str
) -> None:
    response = raw_request(client, "GET", target, {})

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_path"


def test_tricky_paths_are_refused_on_the_admin_api_too(
    client: Any, make_token: Callable[..., Any]
) -> None:
    token = make_token("admin")
    response = raw_request(client, "GET", "/admin/v1/keys/%2e%2e/tokens", bearer(token.secret))

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_path"


@pytest.mark.parametrize(
    "target, expected_url",
    [
        ("/v1/videos/" + OWNED, f"{UPSTREAM_URL}/videos/{OWNED}"),
        ("/v1/videos/" + OWNED + "/", f"{UPSTREAM_URL}/videos/{OWNED}"),
        ("/v1/videos/" + OWNED + "?x=1", f"{UPSTREAM_URL}/videos/{OWNED}"),
        ("/v1/videos/video%5Fowned1", f"{UPSTREAM_URL}/videos/{OWNED}"),
    ],
)
def test_plain_paths_still_work(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    target: str,
    expected_url: str,
) -> None:
    # The control group: the raw-request helper does reach the upstream for honest paths.
    response = raw_request(client, "GET", target, bearer(key.secret))

    assert response.status_code == 200, response.get_data(as_text=True)
    assert [call.request.url for call in upstream.calls] == [expected_url]


# -- property ----------------------------------------------------------------------------

_SEGMENT_PIECES = st.one_of(
    st.sampled_from(
        [
            OWNED,
            "content",
            "remix",
            "..",
            ".",
            "",
            "%2e",
            "%2f",
            "%5c",
            "%00",
            "%25",
            "%3f",
            "%23",
            "%20",
            "\\",
            "/",
            "//",
            "?",
            "?variant=thumbnail",
            "?variant=../x",
            "#",
            "@evil.test",
            ":80",
            ";x=1",
            "%c0%af",
            "%e2%80%ae",
            "videos",
            "v1",
            "admin",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
        max_size=12,
    ),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    suffix=st.tuples(
        st.sampled_from(["", OWNED, OWNED + "/content", OWNED + "/remix", OWNED + "?"]),
        st.lists(_SEGMENT_PIECES, max_size=5).map("".join),
    ).map("".join),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
)
def test_upstream_is_only_called_with_composed_urls(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    handed_out: set[str],
    suffix: str,
    method: str,
) -> None:
    upstream.calls.reset()
    target = "/v1/videos/" + suffix

    response = raw_request(client, method, target, bearer(key.secret), json={"prompt": "p"})

    assert response.status_code < 500 or response.status_code in (502, 504), (
        target,
        response.get_data(as_text=True),
    )
    assert response.headers["Content-Type"].startswith(("application/json", "video/"))
    event(f"{len(upstream.calls)} upstream calls, status {response.status_code}")
    for call in upstream.calls:
        match = ALLOWED_UPSTREAM_URL.fullmatch(call.request.url)
        assert match, (target, call.request.url)
        # Any id in the URL is one of the caller's videos, never a fragment of the path.
        assert match.group(1) is None or match.group(1).split("/")[1] in handed_out, (
            target,
            call.request.url,
        )
