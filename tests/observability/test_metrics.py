"""``/metrics``: the Prometheus text format, what is counted, who may scrape, gauges read
from the database, several worker processes summed through the spool directory, and no key
in any label."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from gateway.observability.metrics import LATENCY_BUCKETS, MetricsRegistry
from gateway.state import GatewayState
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from tests.flows import FakeBackend, admin_call, create_video
from tests.helpers import assert_error, bearer

METRICS_TOKEN = "metrics-scrape-token-0123456789"
# name{labels} value, as Prometheus parses it.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"-?[0-9.e+]+$"
)


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


def scrape(client: Any, **options: Any) -> str:
    response = client.get("/metrics", **options)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text: str = response.get_data(as_text=True)
    return text


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, every line checked against the exposition format."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def test_requests_latency_and_rejections_are_counted(
    client: Any, upstream: FakeBackend, make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key()
    for _ in range(2):  # the default policy runs two jobs at once
        assert create_video(client, key).status_code == 200
    client.get("/v1/me", headers=bearer(key.secret))
    client.get("/v1/me", headers=bearer("drwb_nonsense"))
    client.get("/v1/me")

    values = samples(scrape(client))

    assert (
        values['drawbridge_http_requests_total{route="/v1/videos",method="POST",status="200"}'] == 2
    )
    assert values['drawbridge_http_requests_total{route="/v1/me",method="GET",status="200"}'] == 1
    assert values['drawbridge_http_requests_total{route="/v1/me",method="GET",status="401"}'] == 2
    assert values['drawbridge_rejections_total{code="invalid_api_key"}'] == 1
    assert values['drawbridge_rejections_total{code="missing_api_key"}'] == 1
    prefix = 'drawbridge_http_request_duration_seconds_bucket{route="/v1/videos",method="POST",'
    buckets = [values[f'{prefix}le="{bound}"}}'] for bound in (*LATENCY_BUCKETS, "+Inf")]
    assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative
    labels = '{route="/v1/videos",method="POST"}'
    assert values[f"drawbridge_http_request_duration_seconds_count{labels}"] == 2
    assert values[f"drawbridge_http_request_duration_seconds_sum{labels}"] > 0


def test_gauges_come_from_the_database(
    client: Any,
    make_key: Callable[..., IssuedKey],
    make_token: Callable[..., IssuedToken],
) -> None:
    admin = make_token("admin")
    keys = [make_key() for _ in range(3)]
    before = samples(scrape(client))
    assert before["drawbridge_lockdown"] == 0
    assert before["drawbridge_revoked_keys"] == 0
    assert before['drawbridge_api_keys{status="active"}'] == 3
    assert before["drawbridge_database_up"] == 1

    for key in keys[:2]:
        admin_call(client, admin, "POST", f"/keys/{key.key.id}/revoke", {"reason": "leaked"})
    admin_call(client, admin, "POST", "/lockdown", {"lockdown": True, "reason": "drill"})
    after = samples(scrape(client))

    assert after["drawbridge_lockdown"] == 1
    assert after["drawbridge_revoked_keys"] == 2
    assert after['drawbridge_api_keys{status="revoked"}'] == 2
    assert after['drawbridge_api_keys{status="active"}'] == 1


def test_a_scrape_without_the_database_still_answers(
    client: Any, state: GatewayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("database down")

    monkeypatch.setattr(state.store, "read", down)
    values = samples(scrape(client))
    assert values["drawbridge_database_up"] == 0
    assert "drawbridge_lockdown" not in values


def test_only_loopback_clients_scrape_without_a_token(client: Any) -> None:
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert_error(response, 403, "permission_denied")
    assert "drawbridge_" not in response.get_data(as_text=True)


class TokenTests:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"metrics_token": METRICS_TOKEN}

    def test_with_a_token_every_scraper_must_send_it(self, client: Any) -> None:
        remote = {"environ_base": {"REMOTE_ADDR": "203.0.113.5"}}
        assert_error(client.get("/metrics"), 401, "invalid_token")  # loopback is not enough
        assert_error(
            client.get("/metrics", headers=bearer("wrong"), **remote), 401, "invalid_token"
        )
        assert_error(
            client.get("/metrics", headers={"Authorization": METRICS_TOKEN}, **remote),
            401,
            "invalid_token",
        )
        assert "drawbridge_http_requests_total" in scrape(
            client, headers=bearer(METRICS_TOKEN), **remote
        )


def test_no_key_reaches_a_label(
    client: Any,
    make_key: Callable[..., IssuedKey],
    make_token: Callable[..., IssuedToken],
) -> None:
    key, other = make_key(), make_key()
    token = make_token("auditor")
    client.get(f"/v1/videos/{other.secret}", headers=bearer(key.secret))
    client.get(f"/v1/videos/{other.secret}/content", headers=bearer(key.secret))
    client.get(f"/{other.secret}", headers={"User-Agent": key.secret})
    client.get(f"/v1/me?key={other.secret}", headers=bearer(key.secret))
    client.open("/v1/videos", method=other.secret[:12].upper(), headers=bearer(key.secret))
    client.get(f"/admin/v1/keys/{other.secret}", headers=bearer(token.secret))

    text = scrape(client)

    for secret in (key.secret, other.secret, token.secret):
        assert secret not in text
        assert secret[5:25] not in text
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert routes <= {
        "(unmatched)",
        "/metrics",
        "/v1/me",
        "/v1/videos",
        "/v1/videos/<video_id>",
        "/v1/videos/<video_id>/content",
        "/admin/v1/keys/<key_id>",
    }
    assert set(re.findall(r'method="([^"]*)"', text)) <= {"GET", "OTHER"}


# -- several processes -------------------------------------------------------------------


def test_workers_sharing_a_spool_directory_are_summed(tmp_path: Path) -> None:
    first, second = MetricsRegistry(tmp_path), MetricsRegistry(tmp_path)
    for _ in range(3):
        first.count_response("/v1/me", "GET", 200, 0.02, None)
    first.count_response("/v1/me", "GET", 401, 0.001, "key_revoked")
    second.count_response("/v1/me", "GET", 200, 7.0, None)
    second.count_response("/v1/me", "GET", 401, 0.001, "key_revoked")
    first.publish()

    values = samples(second.render())
    assert values['drawbridge_http_requests_total{route="/v1/me",method="GET",status="200"}'] == 4
    assert values['drawbridge_rejections_total{code="key_revoked"}'] == 2
    prefix = 'drawbridge_http_request_duration_seconds_bucket{route="/v1/me",method="GET",'
    assert values[prefix + 'le="0.025"}'] == 5
    assert values[prefix + 'le="5.0"}'] == 5
    assert values[prefix + 'le="10.0"}'] == 6

    # A worker that is gone leaves its counts behind: counters never go backwards.
    del first
    third = MetricsRegistry(tmp_path)
    assert samples(third.render())['drawbridge_rejections_total{code="key_revoked"}'] == 1
    second.publish()
    assert samples(third.render())['drawbridge_rejections_total{code="key_revoked"}'] == 2


def test_a_torn_spool_file_is_skipped(tmp_path: Path) -> None:
    registry = MetricsRegistry(tmp_path)
    registry.count_response("/v1/me", "GET", 200, 0.01, None)
    (tmp_path / "999-dead.json").write_text('{"counters": [["drawbridge_http_req')
    values = samples(registry.render())
    assert values['drawbridge_http_requests_total{route="/v1/me",method="GET",status="200"}'] == 1


def test_proof_refusals_are_declared_at_zero_and_then_counted() -> None:
    registry = MetricsRegistry()
    codes = ("proof_required", "proof_invalid", "proof_replayed")
    values = samples(registry.render())
    assert [values[f'drawbridge_rejections_total{{code="{code}"}}'] for code in codes] == [0, 0, 0]
    registry.count_response("/v1/videos", "GET", 401, 0.01, "proof_replayed")
    values = samples(registry.render())
    assert [values[f'drawbridge_rejections_total{{code="{code}"}}'] for code in codes] == [0, 0, 1]


def test_label_values_are_escaped() -> None:
    registry = MetricsRegistry()
    registry.count_response('/odd"route\\\n', "GET", 200, 0.01, None)
    line = next(
        line
        for line in registry.render().splitlines()
        if line.startswith("drawbridge_http_requests")
    )
    assert line == (
        'drawbridge_http_requests_total{route="/odd\\"route\\\\\\n",method="GET",status="200"} 1'
    )


def test_the_server_prepares_one_spool_directory_for_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.observability.metrics import prepare_spool_dir
    from gateway.settings import load_settings

    configured = tmp_path / "spool"
    configured.mkdir()
    (configured / "123-dead.json").write_text("{}")
    assert prepare_spool_dir(load_settings(environ={}, metrics_dir=str(configured))) == configured
    assert list(configured.iterdir()) == []  # a new server starts its counters from zero

    monkeypatch.delenv("DRAWBRIDGE_METRICS_DIR", raising=False)
    fresh = prepare_spool_dir(load_settings(environ={}))
    assert fresh.is_dir() and fresh != configured
    # Workers load their settings after the fork and find it there.
    assert load_settings().metrics_dir == str(fresh)
    fresh.rmdir()
