"""The proxy engine: what reaches the backend, and what comes back from it.

The upstream is faked with ``responses``; every test checks what the backend *received*
(headers, body, URL) as well as what the tester got.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from keys.access.lifecycle import IssuedKey
from keys.limits.policies import Policy
from tests.helpers import UPSTREAM_CREDENTIAL, UPSTREAM_URL, assert_error, bearer, forwarded_fields

MAX_JSON = 2048
MAX_REQUEST = 8192
VIDEOS = f"{UPSTREAM_URL}/videos"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"upstream_max_json_bytes": MAX_JSON, "max_request_bytes": MAX_REQUEST}


@pytest.fixture
def key(make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key()


def video(video_id: str = "video_abc123", status: str = "completed") -> dict[str, Any]:
    return {"id": video_id, "object": "video", "status": status, "model": "sora-2"}


def create(client: Any, key: IssuedKey, **headers: str) -> Any:
    return client.post(
        "/v1/videos",
        json={"model": "sora-2", "prompt": "a cat on a skateboard"},
        headers={**bearer(key.secret), **headers},
    )


def own_video(client: Any, key: IssuedKey, upstream: responses.RequestsMock, video_id: str) -> None:
    upstream.add(responses.POST, VIDEOS, json=video(video_id))
    assert create(client, key).status_code == 200


# -- the forwarded request -------------------------------------------------------------


SMUGGLED_HEADERS = {
    "OpenAI-Organization": "org-tester",
    "OpenAI-Project": "proj-tester",
    "Cookie": "session=tester-cookie",
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Host": "evil.test",
    "Forwarded": "for=203.0.113.9",
    "X-Real-IP": "203.0.113.9",
    "Connection": "close, X-Custom",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Trailer": "X-Trailer",
    "Upgrade": "h2c",
    "Proxy-Authorization": "Basic dGVzdGVyOnNlY3JldA==",
    "Proxy-Connection": "tester-proxy-connection",
    "X-Custom": "tester-value",
    "X-Request-Id": "req_chosen_by_tester",
    "OpenAI-Beta": "assistants=v2",
    "Idempotency-Key": "tester-idem",
}


def test_upstream_gets_master_credential_and_never_the_tester_key(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())

    response = create(client, key)

    assert response.status_code == 200
    sent = upstream.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
    everything_sent = json.dumps(dict(sent.headers)) + (sent.body or b"").decode()
    assert key.secret not in everything_sent
    assert UPSTREAM_CREDENTIAL not in response.get_data(as_text=True)
    assert UPSTREAM_CREDENTIAL not in json.dumps(dict(response.headers))


def test_client_headers_are_not_forwarded(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())

    response = create(client, key, **SMUGGLED_HEADERS)

    assert response.status_code == 200
    sent = {name.lower(): value for name, value in upstream.calls[0].request.headers.items()}
    for name, value in SMUGGLED_HEADERS.items():
        assert value not in sent.values(), f"the value of {name} was forwarded"
        # requests sets its own Connection and X-Request-Id is the gateway's: both exist.
        if name not in ("Connection", "X-Request-Id"):
            assert name.lower() not in sent, f"{name} was forwarded"
    assert sent["x-request-id"] != SMUGGLED_HEADERS["X-Request-Id"]


def test_a_fresh_request_id_is_forwarded_and_returned(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())

    first = create(client, key)
    upstream.add(responses.POST, VIDEOS, json=video("video_second"))
    second = create(client, key)

    forwarded = [call.request.headers["X-Request-Id"] for call in upstream.calls]
    assert forwarded == [first.headers["X-Request-Id"], second.headers["X-Request-Id"]]
    assert forwarded[0] != forwarded[1]
    assert all(value.startswith("req_") for value in forwarded)


def test_only_the_validated_body_and_content_type_are_forwarded(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())
    body = b'{"model": "sora-2", "prompt": "waves", "seconds": "4"}'

    response = client.post(
        "/v1/videos",
        data=body,
        headers={**bearer(key.secret), "Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 200
    sent = upstream.calls[0].request
    assert sent.url == VIDEOS
    assert forwarded_fields(sent) == (
        {"model": "sora-2", "prompt": "waves", "seconds": "4", "size": "720x1280"},
        {},
    )
    assert sent.headers["Content-Type"] == "application/json"
    assert {name.lower() for name in sent.headers} <= {
        "authorization",
        "user-agent",
        "accept",
        "accept-encoding",
        "x-request-id",
        "content-type",
        "content-length",
        "connection",
    }
    assert sent.headers.get("Connection", "keep-alive") == "keep-alive"
    assert sent.headers["User-Agent"].startswith("drawbridge-gateway/")


# -- what the upstream answers ---------------------------------------------------------


def test_redirects_are_not_followed(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(
        responses.POST, VIDEOS, status=307, headers={"Location": "http://evil.test/collect"}
    )
    upstream.add(responses.POST, "http://evil.test/collect", json=video())
    upstream.add(responses.GET, "http://evil.test/collect", json=video())

    response = create(client, key)

    assert_error(response, 502, "upstream_error")
    assert [call.request.url for call in upstream.calls] == [VIDEOS]


def test_every_redirect_status_is_an_upstream_error(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for status in (301, 302, 303, 308):
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, status=status, headers={"Location": VIDEOS + "/x"})

        assert create(client, key).status_code == 502, status
        assert len(upstream.calls) == 1


def test_upstream_timeouts_are_504(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for failure in (requests.exceptions.ReadTimeout(), requests.exceptions.ConnectTimeout()):
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, body=failure)

        error = assert_error(create(client, key), 504, "upstream_timeout")
        assert error["type"] == "server_error"


def test_upstream_timeout_on_retrieve_is_504(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_slow")
    upstream.add(responses.GET, f"{VIDEOS}/video_slow", body=requests.exceptions.ReadTimeout())

    response = client.get("/v1/videos/video_slow", headers=bearer(key.secret))

    assert_error(response, 504, "upstream_timeout")


def test_connection_errors_are_502(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for failure in (
        requests.exceptions.ConnectionError(
            MaxRetryError(None, VIDEOS, NewConnectionError(None, "refused"))  # type: ignore[arg-type]
        ),
        requests.exceptions.ChunkedEncodingError("cut"),
        requests.exceptions.SSLError("bad cert"),
    ):
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, body=failure)

        response = create(client, key)

        assert response.status_code == 502, failure
        assert_error(response, 502, "upstream_error")


def test_upstream_5xx_is_502(client: Any, key: IssuedKey, upstream: responses.RequestsMock) -> None:
    for status in (500, 502, 503, 504):
        upstream.reset()
        upstream.add(
            responses.POST,
            VIDEOS,
            status=status,
            json={"error": {"message": f"internal detail {UPSTREAM_CREDENTIAL}", "code": "boom"}},
        )

        response = create(client, key)

        assert response.status_code == 502, status
        error = assert_error(response, 502, "upstream_error")
        assert "internal detail" not in error["message"]
        assert UPSTREAM_CREDENTIAL not in response.get_data(as_text=True)


def test_upstream_refusing_the_master_credential_is_502_not_401(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for status in (401, 403):
        upstream.reset()
        upstream.add(
            responses.POST,
            VIDEOS,
            status=status,
            json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}},
        )

        response = create(client, key)

        assert response.status_code == 502, status
        error = assert_error(response, 502, "upstream_error")
        assert "WWW-Authenticate" not in response.headers
        assert "Incorrect API key" not in error["message"]
        # The tester's key still works for the gateway.
        assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200


LIES = [
    (b"<html>Gateway Timeout</html>", "text/html"),
    (b"not json at all", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'"a string"', "application/json"),
    (b"null", "application/json"),
    (b"", "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b'{"id": "video_1", "status": ', "application/json"),
]


def test_upstream_lying_about_json_is_502(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for body, content_type in LIES:
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, body=body, content_type=content_type)

        response = create(client, key)

        assert response.status_code == 502, body
        assert_error(response, 502, "upstream_error")


def test_created_object_without_a_usable_id_is_502_and_not_recorded(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for answer in ({"object": "video"}, {"id": ""}, {"id": 42}, {"id": "a/b"}, {"id": "x" * 129}):
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, json=answer)

        response = create(client, key)

        assert response.status_code == 502, answer
        assert_error(response, 502, "upstream_error")
    listing = client.get("/v1/videos", headers=bearer(key.secret)).get_json()
    assert listing["data"] == []


def test_oversized_json_answer_is_502(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json={**video(), "padding": "x" * MAX_JSON})

    assert_error(create(client, key), 502, "upstream_error")


def test_oversized_json_answer_with_a_declared_length_is_502(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(
        responses.POST,
        VIDEOS,
        json={**video(), "padding": "x" * MAX_JSON},
        auto_calculate_content_length=True,
    )

    assert_error(create(client, key), 502, "upstream_error")


def test_upstream_declaring_a_huge_length_is_502_without_reading(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(
        responses.POST,
        VIDEOS,
        json=video(),
        headers={"Content-Length": str(10 * 1024**3)},
    )

    assert_error(create(client, key), 502, "upstream_error")


def test_upstream_with_a_nonsense_content_length_is_not_a_crash(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for number, declared in enumerate(("\u00b2", "12abc", "-1", "")):
        upstream.reset()
        upstream.add(
            responses.POST,
            VIDEOS,
            json=video(f"video_{number}"),
            headers={"Content-Length": declared},
        )

        response = create(client, key)

        # Either the answer is read within the bound, or refused as the backend's fault.
        assert response.status_code in (200, 502), (declared, response.get_data(as_text=True))


def test_json_answer_just_under_the_limit_is_accepted(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    payload = json.dumps({**video(), "padding": ""}).encode()
    padding = "x" * (MAX_JSON - len(payload))
    upstream.add(responses.POST, VIDEOS, json={**video(), "padding": padding})

    response = create(client, key)

    assert response.status_code == 200
    assert len(response.get_json()["padding"]) == len(padding)


def test_upstream_400_is_passed_on_with_only_the_documented_fields(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(
        responses.POST,
        VIDEOS,
        status=400,
        json={
            "error": {
                "message": "Invalid size '9999x9999'.",
                "type": "invalid_request_error",
                "param": "size",
                "code": "invalid_size",
                "internal_trace": "at backend.py:42",
                "account": "master-account-id",
            },
            "debug": {"credential": UPSTREAM_CREDENTIAL},
        },
    )

    response = create(client, key)

    assert response.status_code == 400
    assert response.get_json() == {
        "error": {
            "message": "Invalid size '9999x9999'.",
            "type": "invalid_request_error",
            "param": "size",
            "code": "invalid_size",
        }
    }
    assert UPSTREAM_CREDENTIAL not in response.get_data(as_text=True)


def test_upstream_4xx_with_a_strange_body_still_answers_in_the_error_shape(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(
        responses.POST,
        VIDEOS,
        status=422,
        json={"error": {"message": ["not", "a", "string"], "code": 7, "param": {"x": 1}}},
    )

    error = assert_error(create(client, key), 422, "upstream_rejected")
    assert isinstance(error["message"], str)
    assert error["param"] is None


# -- request bodies --------------------------------------------------------------------


def test_request_body_over_the_limit_is_413_and_never_sent(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())
    body = json.dumps({"model": "sora-2", "prompt": "x" * (MAX_REQUEST + 1)})

    response = client.post(
        "/v1/videos",
        data=body,
        headers={**bearer(key.secret), "Content-Type": "application/json"},
    )

    assert_error(response, 413, "request_too_large")
    assert len(upstream.calls) == 0


def test_request_body_over_the_limit_is_413_on_remix(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_mine")

    response = client.post(
        "/v1/videos/video_mine/remix",
        json={"prompt": "y" * (MAX_REQUEST + 1)},
        headers=bearer(key.secret),
    )

    assert_error(response, 413, "request_too_large")
    assert len(upstream.calls) == 1  # only the create


UNSUPPORTED_CONTENT_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/jsonp",
    "application/json-patch+json",
    "multipart/mixed; boundary=x",
    "multipart/form-data-evil; boundary=x",
    "image/png",
]


def test_create_with_an_unsupported_content_type_is_415(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())
    for content_type in UNSUPPORTED_CONTENT_TYPES:
        headers = bearer(key.secret)
        if content_type is not None:
            headers["Content-Type"] = content_type

        response = client.post("/v1/videos", data=b'{"prompt": "x"}', headers=headers)

        assert response.status_code == 415, content_type
        assert_error(response, 415, "unsupported_media_type")
    assert len(upstream.calls) == 0


def body_for(content_type: str) -> bytes:
    """A valid create body for the media type (the gateway reads it to apply policy)."""
    if not content_type.startswith("multipart/form-data"):
        return b'{"prompt": "x"}'
    boundary = content_type.split("boundary=", 1)[1]
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'
        f"--{boundary}--\r\n"
    ).encode()


def test_create_accepts_json_and_multipart_media_types(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    accepted = [
        "application/json",
        "Application/JSON; charset=UTF-8",
        "multipart/form-data; boundary=b",
    ]
    for number, content_type in enumerate(accepted):
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, json=video(f"video_{number}"))

        response = client.post(
            "/v1/videos",
            data=body_for(content_type),
            headers={**bearer(key.secret), "Content-Type": content_type},
        )

        assert response.status_code == 200, content_type
        assert len(upstream.calls) == 1


# -- content downloads -----------------------------------------------------------------


def test_content_download_streams_and_passes_content_headers(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_dl")
    payload = bytes(range(256)) * 4096  # 1 MiB of binary
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_dl/content",
        body=payload,
        content_type="video/mp4",
        headers={
            "Content-Length": str(len(payload)),
            "ETag": '"v1"',
            "Set-Cookie": "upstream=secret",
            "X-Upstream-Internal": "node-7",
        },
        match=[responses.matchers.query_param_matcher({"variant": "video"})],
    )

    response = client.get(
        "/v1/videos/video_dl/content",
        headers={**bearer(key.secret), "Accept": "application/binary"},
        buffered=False,
    )

    assert response.status_code == 200
    assert response.is_streamed
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Content-Length"] == str(len(payload))
    assert response.headers["ETag"] == '"v1"'
    assert "Set-Cookie" not in response.headers
    assert "X-Upstream-Internal" not in response.headers
    assert response.get_data() == payload
    sent = upstream.calls[-1].request
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
    assert sent.headers["Accept"] == "application/binary"


def test_content_download_keeps_the_encoding_true(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_gz")
    compressed = gzip.compress(b"thumbnail-bytes" * 100)
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_gz/content",
        body=compressed,
        content_type="image/webp",
        headers={"Content-Encoding": "gzip", "Content-Length": str(len(compressed))},
    )

    response = client.get(
        "/v1/videos/video_gz/content?variant=thumbnail", headers=bearer(key.secret)
    )

    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] == str(len(compressed))
    assert response.get_data() == compressed
    assert upstream.calls[-1].request.url == f"{VIDEOS}/video_gz/content?variant=thumbnail"


def test_content_variants_are_forwarded(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_v")
    upstream.add(responses.GET, f"{VIDEOS}/video_v/content", body=b"bytes")
    for variant in ("spritesheet", "thumbnail", "video"):
        response = client.get(
            f"/v1/videos/video_v/content?variant={variant}", headers=bearer(key.secret)
        )

        assert response.status_code == 200, variant
        assert upstream.calls[-1].request.url == f"{VIDEOS}/video_v/content?variant={variant}"


def test_content_variant_is_validated(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_v")
    for variant in ("", "audio", "VIDEO", "video&x=1", "../thumbnail", "video\x00", "thumbnail "):
        response = client.get(
            "/v1/videos/video_v/content",
            query_string={"variant": variant},
            headers=bearer(key.secret),
        )

        assert response.status_code == 400, variant
        assert_error(response, 400, "invalid_value", "variant")
    assert len(upstream.calls) == 1  # only the create


def test_content_download_upstream_errors_are_mapped(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_e")
    url = f"{VIDEOS}/video_e/content"
    upstream.add(responses.GET, url, status=503, body=b"<html>down</html>")
    upstream.add(responses.GET, url, status=401, json={"error": {"message": "bad key"}})
    upstream.add(responses.GET, url, body=requests.exceptions.ReadTimeout())
    upstream.add(
        responses.GET,
        url,
        status=404,
        json={"error": {"message": "Video is not ready", "code": "video_not_ready"}},
    )

    def download() -> Any:
        return client.get("/v1/videos/video_e/content", headers=bearer(key.secret))

    assert_error(download(), 502, "upstream_error")
    assert_error(download(), 502, "upstream_error")
    assert_error(download(), 504, "upstream_timeout")
    assert_error(download(), 404, "video_not_ready")


def test_content_download_redirect_is_not_followed(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    own_video(client, key, upstream, "video_r")
    upstream.add(
        responses.GET,
        f"{VIDEOS}/video_r/content",
        status=302,
        headers={"Location": "http://cdn.evil.test/file.mp4"},
    )
    upstream.add(responses.GET, "http://cdn.evil.test/file.mp4", body=b"x")

    response = client.get("/v1/videos/video_r/content", headers=bearer(key.secret))

    assert_error(response, 502, "upstream_error")
    assert "cdn.evil.test" not in json.dumps(dict(response.headers))
    assert all("evil" not in call.request.url for call in upstream.calls)


# -- tester-controlled header values ---------------------------------------------------


ODD_CONTENT_TYPES = [
    'application/json; charset="utf-8\\r\\nX-Injected: 1"',
    "application/json; a=b; a=c; ;;; =",
    'application/json;\tq=0.5 ; boundary="x\\"y"',
    "application/json; " + "p=v; " * 400,
    "multipart/form-data; boundary=----drawbridge%0d%0aX-Injected",
]


def test_odd_content_type_parameters_do_not_add_upstream_headers(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    for number, content_type in enumerate(ODD_CONTENT_TYPES):
        upstream.reset()
        upstream.add(responses.POST, VIDEOS, json=video(f"video_odd{number}"))

        response = client.post(
            "/v1/videos",
            data=body_for(content_type),
            headers={**bearer(key.secret), "Content-Type": content_type},
        )

        assert response.status_code == 200, content_type
        sent = upstream.calls[0].request.headers
        assert "X-Injected" not in sent
        assert sent["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
        assert "\r" not in sent["Content-Type"] and "\n" not in sent["Content-Type"]
        # The gateway sends its own encoding of the checked fields, never the tester's header.
        assert sent["Content-Type"].split(";")[0] in ("application/json", "multipart/form-data")
        assert "X-Injected" not in sent["Content-Type"]
        assert "X-Injected" not in response.headers


def test_unreadable_multipart_is_refused_without_an_upstream_call(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    content_type = "multipart/form-data; boundary=----drawbridge%0d%0aX-Injected:1"
    response = client.post(
        "/v1/videos",
        data=b"--not-the-boundary\r\n\r\nprompt\r\n",
        headers={**bearer(key.secret), "Content-Type": content_type},
    )

    assert_error(response, 400, "missing_required_parameter", "prompt")
    assert len(upstream.calls) == 0
    assert "X-Injected" not in response.headers


def test_very_long_headers_are_neither_forwarded_nor_fatal(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())
    long_value = "A" * 64 * 1024

    response = create(client, key, **{"X-Custom": long_value, "User-Agent": long_value})

    assert response.status_code == 200
    sent = upstream.calls[0].request.headers
    assert "X-Custom" not in sent
    assert sent["User-Agent"].startswith("drawbridge-gateway/")
    assert long_value not in json.dumps(dict(response.headers))


def test_crlf_in_a_header_value_never_reaches_the_upstream(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video())

    try:
        response = create(client, key, **{"X-Custom": "a\r\nAuthorization: Bearer stolen"})
    except ValueError:
        return  # werkzeug refuses to build such a request: nothing can reach the gateway
    assert response.status_code in (200, 400)
    for call in upstream.calls:
        assert call.request.headers["Authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
        assert "stolen" not in json.dumps(dict(call.request.headers))


def test_a_reused_upstream_id_never_gives_one_video_two_owners(
    client: Any,
    key: IssuedKey,
    make_key: Callable[..., IssuedKey],
    upstream: responses.RequestsMock,
    store: Any,
) -> None:
    own_video(client, key, upstream, "video_twice")
    other = make_key()
    upstream.add(responses.POST, VIDEOS, json=video("video_twice"))

    response = create(client, other)

    assert_error(response, 502, "upstream_error")
    with store.read() as tx:
        assert tx.videos.upstream_id("video_twice", key.key.tester_id) == "video_twice"
        used = {q.metric: q.used for q in tx.quotas.status(other.key.tester_id, Policy())}
    assert used["generations_per_day"] == 0 and used["concurrent_jobs"] == 0


def test_a_cookie_the_backend_sets_never_rides_along_on_another_call(
    client: Any,
    key: IssuedKey,
    make_key: Callable[..., IssuedKey],
    upstream: responses.RequestsMock,
) -> None:
    upstream.add(
        responses.POST,
        VIDEOS,
        json=video("video_c1"),
        headers={"Set-Cookie": "upstream_session=tester-a; Path=/"},
    )
    assert create(client, key).status_code == 200
    other = make_key()
    upstream.add(responses.POST, VIDEOS, json=video("video_c2"))

    assert create(client, other).status_code == 200

    assert "Cookie" not in upstream.calls[-1].request.headers


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und") -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        # Charged for 4 s, but a backend reading the last value would make 12.
        ([("prompt", None, b"x"), ("seconds", None, b"4"), ("seconds", None, b"12")], "seconds"),
        # A model smuggled as a file part, invisible to a form-only reading.
        ([("prompt", None, b"x"), ("model", "m.txt", b"sora-2-pro")], "model"),
        ([("prompt", None, b"x"), ("style", None, b"noir")], "style"),
    ],
)
def test_ambiguous_or_unknown_create_fields_are_refused_before_any_charge(
    client: Any,
    key: IssuedKey,
    upstream: responses.RequestsMock,
    store: Any,
    parts: list[tuple[str, str | None, bytes]],
    param: str,
) -> None:
    response = client.post(
        "/v1/videos",
        data=multipart(parts),
        headers={**bearer(key.secret), "Content-Type": "multipart/form-data; boundary=b0und"},
    )

    assert_error(response, 400, response.get_json()["error"]["code"], param)
    assert len(upstream.calls) == 0
    with store.read() as tx:
        used = {q.metric: q.used for q in tx.quotas.status(key.key.tester_id, Policy())}
    assert used["generations_per_day"] == 0


def test_duplicate_json_keys_cannot_split_what_is_charged_from_what_is_sent(
    client: Any, key: IssuedKey, upstream: responses.RequestsMock
) -> None:
    upstream.add(responses.POST, VIDEOS, json=video("video_json"))
    body = b'{"prompt": "x", "seconds": "12", "seconds": "4"}'

    response = client.post(
        "/v1/videos", data=body, headers={**bearer(key.secret), "Content-Type": "application/json"}
    )

    assert response.status_code == 200
    fields, _ = forwarded_fields(upstream.calls[0].request)
    assert fields["seconds"] == "4"  # the value that was charged is the value that is sent
