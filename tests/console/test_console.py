"""The web console through Flask's test client: sessions and their cookie, CSRF, what each
role is shown and refused, and that no secret is rendered except once at issue.

The browser tests (tests/integration/test_console_browser.py) drive the same pages in
chromium against the real gateway."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest

from gateway.console.session import COOKIE
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.leaks.leaked_keys import LeakedSecret
from keys.models import Tester
from keys.store import Store
from tests.helpers import FakeClock, bearer

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Console:
    """A browser's view of the console: one cookie jar, the CSRF token of its last page."""

    def __init__(self, client: Any, base_url: str = "http://localhost") -> None:
        self.client = client
        self.base_url = base_url
        self.csrf = ""

    def get(self, path: str) -> Any:
        response = self.client.get(f"/console{path}", base_url=self.base_url)
        found = CSRF.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, csrf: bool = True, **form: str) -> Any:
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        return self.client.post(f"/console{path}", data=form, base_url=self.base_url)

    def sign_in(self, secret: str, path: str = "/sign-in") -> Any:
        self.get(path)
        return self.post(path, secret=secret)

    def set_cookie_header(self, response: Any) -> str:
        (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE)]
        return str(header)


@pytest.fixture
def console(app: Any) -> Callable[..., Console]:
    def make(base_url: str = "http://localhost") -> Console:
        return Console(app.test_client(), base_url)

    return make


@pytest.fixture
def operator(
    console: Callable[..., Console], make_token: Callable[..., IssuedToken]
) -> Callable[[str], tuple[Console, IssuedToken]]:
    """A console signed in with a fresh admin token of ``role``."""

    def sign_in(role: str) -> tuple[Console, IssuedToken]:
        browser, token = console(), make_token(role)
        response = browser.sign_in(token.secret)
        assert response.status_code == 302, response.get_data(as_text=True)
        return browser, token

    return sign_in


def held_download(store: Store, key: IssuedKey) -> str:
    with store.transaction() as tx:
        return tx.approvals.hold(
            "download", key.key.tester_id, key.key.id, "video_abc", "Downloads are reviewed."
        ).id


# -- sessions --------------------------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_cookie_without_the_token(
    console: Callable[..., Console], make_token: Callable[..., IssuedToken]
) -> None:
    token = make_token("admin")
    browser = console()
    response = browser.sign_in(token.secret)
    assert response.status_code == 302 and response.headers["Location"].endswith("/approvals")
    header = browser.set_cookie_header(response)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/console" in header
    assert "Secure" not in header  # plain HTTP here: a Secure cookie would never come back
    value = SimpleCookie(header)[COOKIE].value
    assert token.secret not in value and token.secret[-8:] not in value
    assert browser.get("/approvals").status_code == 200


def test_cookie_is_secure_behind_tls(
    console: Callable[..., Console], make_token: Callable[..., IssuedToken]
) -> None:
    browser = console("https://localhost")
    response = browser.sign_in(make_token("admin").secret)
    assert "Secure" in browser.set_cookie_header(response)


def test_wrong_token_is_refused_and_counted(
    console: Callable[..., Console], app: Any, state: Any
) -> None:
    browser = console()
    response = browser.sign_in("drwbadm_" + "A" * 40)
    assert response.status_code == 401
    assert "Not signed in" in response.get_data(as_text=True)
    assert browser.get("/approvals").status_code == 302


@pytest.mark.parametrize("settings_overrides", [{"auth_failures_per_minute": 2}])
def test_an_address_that_failed_too_often_gets_a_429_page_even_with_a_good_secret(
    console: Callable[..., Console], make_token: Callable[..., IssuedToken]
) -> None:
    browser = console()
    for _ in range(2):
        assert browser.sign_in("drwbadm_" + "A" * 40).status_code == 401
    for path in ("/sign-in", "/me/sign-in"):
        response = browser.sign_in(make_token("admin").secret, path)
        assert response.status_code == 429
        assert response.mimetype == "text/html"
        assert "Too many failed authentication attempts" in response.get_data(as_text=True)


def test_a_revoked_token_is_signed_out_on_its_next_request(
    operator: Callable[[str], tuple[Console, IssuedToken]], store: Store
) -> None:
    browser, token = operator("approver")
    assert browser.get("/approvals").status_code == 200
    with store.transaction() as tx:
        tx.tokens.revoke(token.token.id, "test", "left the team")
    response = browser.get("/approvals")
    assert response.status_code == 302 and response.headers["Location"].endswith("/sign-in")
    assert "revoked" in browser.get("/sign-in").get_data(as_text=True)


def test_an_idle_session_expires(
    operator: Callable[[str], tuple[Console, IssuedToken]], clock: FakeClock
) -> None:
    browser, _ = operator("auditor")
    clock.advance(minutes=14)
    assert browser.get("/usage").status_code == 200  # each request renews the idle timer
    clock.advance(minutes=14)
    assert browser.get("/usage").status_code == 200
    clock.advance(minutes=16)
    assert browser.get("/usage").status_code == 302


def test_a_tampered_cookie_is_no_session(
    operator: Callable[[str], tuple[Console, IssuedToken]],
) -> None:
    browser, _ = operator("admin")
    cookie = browser.client.get_cookie(COOKIE, path="/console")
    browser.client.set_cookie(COOKIE, cookie.value[:-2] + "xx", path="/console")
    assert browser.get("/approvals").status_code == 302


def test_sign_out_ends_the_session(
    operator: Callable[[str], tuple[Console, IssuedToken]],
) -> None:
    browser, _ = operator("admin")
    browser.get("/approvals")
    assert browser.post("/sign-out").status_code == 302
    assert browser.get("/approvals").status_code == 302


def test_pages_are_never_cached_or_framed(
    operator: Callable[[str], tuple[Console, IssuedToken]],
) -> None:
    browser, _ = operator("admin")
    response = browser.get("/testers")
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


# -- CSRF ------------------------------------------------------------------------------


def test_forms_without_the_sessions_csrf_token_are_refused(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_key: Callable[..., IssuedKey],
    store: Store,
) -> None:
    key = make_key()
    browser, _ = operator("admin")
    browser.get("/testers")
    missing = browser.post(f"/keys/{key.key.id}/revoke", csrf=False, reason="forged")
    other, _ = operator("admin")
    other.get("/testers")
    foreign = browser.post(f"/keys/{key.key.id}/revoke", reason="forged", csrf_token=other.csrf)
    assert missing.status_code == 403 and foreign.status_code == 403
    with store.read() as tx:
        assert tx.keys.get(key.key.id).status == "active"
    assert browser.post(f"/keys/{key.key.id}/revoke", reason="leaked").status_code == 302
    with store.read() as tx:
        assert tx.keys.get(key.key.id).status == "revoked"


def test_the_sign_in_form_needs_its_csrf_token_too(
    console: Callable[..., Console], make_token: Callable[..., IssuedToken]
) -> None:
    browser = console()
    browser.get("/sign-in")
    response = browser.post("/sign-in", csrf=False, secret=make_token("admin").secret)
    assert response.status_code == 403


# -- roles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("approver", "GET", "/usage"),
        ("approver", "GET", "/testers"),
        ("approver", "GET", "/audit"),
        ("approver", "POST", "/lockdown"),
        ("approver", "POST", "/keys/KEY/revoke"),
        ("auditor", "POST", "/keys/KEY/revoke"),
        ("auditor", "POST", "/testers/TESTER/keys"),
        ("auditor", "POST", "/approvals/APPROVAL/decide"),
        ("auditor", "POST", "/cohorts"),
        ("auditor", "POST", "/lockdown"),
    ],
)
def test_roles_are_refused_what_they_may_not_do(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_key: Callable[..., IssuedKey],
    store: Store,
    role: str,
    method: str,
    path: str,
) -> None:
    key = make_key()
    approval = held_download(store, key)
    path = (
        path.replace("KEY", key.key.id)
        .replace("TESTER", key.key.tester_id)
        .replace("APPROVAL", approval)
    )
    browser, _ = operator(role)
    browser.get("/lockdown")
    if method == "GET":
        response = browser.get(path)
    else:
        response = browser.post(
            path, reason="r", decision="approve", lockdown="on", confirm="yes", cohort="default"
        )
    assert response.status_code == 403, response.get_data(as_text=True)
    assert "needs the role" in response.get_data(as_text=True)
    with store.read() as tx:
        assert tx.keys.get(key.key.id).status == "active"
        assert tx.approvals.get(approval).status == "pending"
        assert not tx.lockdown.state().lockdown
        assert len(tx.keys.list(key.key.tester_id)) == 1


def test_what_a_role_may_not_do_is_not_shown(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_key: Callable[..., IssuedKey],
    store: Store,
) -> None:
    held_download(store, make_key())
    auditor, _ = operator("auditor")
    testers = auditor.get("/testers").get_data(as_text=True)
    assert "Issue a key" not in testers and "Revoke" not in testers
    queue = auditor.get("/approvals").get_data(as_text=True)
    assert "Downloads are reviewed." in queue and "Approve" not in queue
    assert "Lock down now" not in auditor.get("/lockdown").get_data(as_text=True)
    approver, _ = operator("approver")
    page = approver.get("/approvals").get_data(as_text=True)
    assert "Approve" in page and 'href="/console/usage"' not in page
    assert 'href="/console/testers"' not in page


# -- actions through the domain services ------------------------------------------------


def test_a_key_secret_is_rendered_once_at_issue_and_never_again(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_tester: Callable[..., Tester],
    client: Any,
    store: Store,
) -> None:
    tester = make_tester()
    browser, token = operator("admin")
    browser.get("/testers")
    issued = browser.post(f"/testers/{tester.id}/keys")
    html = issued.get_data(as_text=True)
    secret = re.search(r'value="(drwb_[0-9A-Za-z]+)"', html)
    assert issued.status_code == 200 and secret and html.count(secret.group(1)) == 1
    assert issued.headers["Cache-Control"] == "no-store"
    assert client.get("/v1/me", headers=bearer(secret.group(1))).status_code == 200
    with store.read() as tx:
        (key,) = tx.keys.list(tester.id)
    rotated = browser.post(f"/keys/{key.id}/rotate", grace_seconds="0")
    new_secret = re.search(r'value="(drwb_[0-9A-Za-z]+)"', rotated.get_data(as_text=True))
    assert new_secret and new_secret.group(1) != secret.group(1)
    for page in ("/testers", "/approvals", "/audit", "/usage", f"/keys/{key.id}/report"):
        text = browser.get(page).get_data(as_text=True)
        assert secret.group(1) not in text and new_secret.group(1) not in text, page
        assert token.secret not in text, page


def test_rejecting_with_a_reason_reaches_the_testers_page(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    console: Callable[..., Console],
    make_key: Callable[..., IssuedKey],
    store: Store,
) -> None:
    key = make_key()
    approval = held_download(store, key)
    approver, _ = operator("approver")
    approver.get("/approvals")
    no_reason = approver.post(f"/approvals/{approval}/decide", decision="reject", reason=" ")
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.get_data(as_text=True)
    response = approver.post(
        f"/approvals/{approval}/decide", decision="reject", reason="Not before launch."
    )
    assert response.status_code == 302
    with store.read() as tx:
        decided = tx.approvals.get(approval)
    assert decided.status == "rejected" and decided.decided_by.startswith("approver:")
    assert approver.post(f"/approvals/{approval}/decide", decision="approve").status_code == 409

    tester = console()
    assert tester.sign_in(key.secret, "/me/sign-in").status_code == 302
    page = tester.get("/me").get_data(as_text=True)
    assert "Not before launch." in page and key.key.hint in page and key.secret not in page


def test_a_tester_is_signed_out_when_the_key_stops_and_may_revoke_it(
    console: Callable[..., Console],
    make_key: Callable[..., IssuedKey],
    client: Any,
    store: Store,
) -> None:
    key, other = make_key(), make_key()
    tester = console()
    tester.sign_in(key.secret, "/me/sign-in")
    assert tester.get("/me").status_code == 200
    assert tester.get("/approvals").status_code == 302  # a tester session is no operator's
    with store.transaction() as tx:
        tx.keys.suspend(key.key.id, "test", "looks odd")
    response = tester.get("/me")
    assert response.status_code == 302 and response.headers["Location"].endswith("/me/sign-in")

    second = console()
    second.sign_in(other.secret, "/me/sign-in")
    second.get("/me")
    assert second.post("/me/revoke", reason="pasted it in a gist").status_code == 302
    refused = client.get("/v1/me", headers=bearer(other.secret))
    assert refused.status_code == 401 and refused.json["error"]["code"] == "key_revoked"
    with store.read() as tx:
        assert tx.keys.get(other.key.id).revoked_by == f"tester:{other.key.tester_id}"


def test_lockdown_needs_confirmation_and_stops_testers(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_key: Callable[..., IssuedKey],
    client: Any,
) -> None:
    key = make_key()
    admin, _ = operator("admin")
    admin.get("/lockdown")
    assert admin.post("/lockdown", lockdown="on", reason="leak").status_code == 400
    assert admin.post("/lockdown", lockdown="on", reason="leak", confirm="yes").status_code == 302
    refused = client.get("/v1/me", headers=bearer(key.secret))
    assert refused.status_code == 503 and refused.json["error"]["code"] == "lockdown"
    assert "Lockdown is ON" in admin.get("/lockdown").get_data(as_text=True)
    assert admin.post("/lockdown", lockdown="off", confirm="yes").status_code == 302
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200


def test_cohort_policy_edits_go_through_the_policy_parser(
    operator: Callable[[str], tuple[Console, IssuedToken]], store: Store
) -> None:
    admin, _ = operator("admin")
    admin.get("/cohorts")
    bad = admin.post("/cohorts", cohort="beta", policy='{"requests_per_minute": -1}')
    assert bad.status_code == 400
    assert admin.post("/cohorts", cohort="beta", policy="{not json").status_code == 400
    ok = admin.post("/cohorts", cohort="beta", policy='{"requests_per_minute": 7}')
    assert ok.status_code == 302
    with store.read() as tx:
        assert tx.policies.policy("beta").requests_per_minute == 7


def test_usage_export_and_audit_status(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_key: Callable[..., IssuedKey],
    client: Any,
    state: Any,
) -> None:
    key = make_key()
    assert client.get("/v1/me", headers=bearer(key.secret)).status_code == 200
    state.usage.flush()
    auditor, _ = operator("auditor")
    page = auditor.get("/usage").get_data(as_text=True)
    assert key.key.tester_id in page and "<svg" in page
    export = auditor.get(f"/usage/export?format=csv&tester_id={key.key.tester_id}")
    lines = export.get_data(as_text=True).splitlines()
    assert export.headers["Content-Type"].startswith("text/csv")
    assert lines[0].startswith("id,") and len(lines) == 2 and key.key.id in lines[1]
    jsonl = auditor.get(f"/usage/export?format=jsonl&tester_id={key.key.tester_id}")
    assert jsonl.get_data(as_text=True).count("\n") == 1
    assert "Verified: the trail is intact" in auditor.get("/audit").get_data(as_text=True)


@pytest.mark.parametrize("settings_overrides", [{"trusted_proxies": 1}])
def test_cookie_is_secure_behind_a_trusted_tls_proxy(
    app: Any, make_token: Callable[..., IssuedToken]
) -> None:
    browser = Console(app.test_client())
    browser.client.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
    response = browser.sign_in(make_token("admin").secret)
    assert "Secure" in browser.set_cookie_header(response)


def test_incidents_lists_leaks_and_anomalies_only(
    operator: Callable[[str], tuple[Console, IssuedToken]],
    make_key: Callable[..., IssuedKey],
    store: Store,
) -> None:
    odd, leaked, plain = make_key(), make_key(), make_key()
    with store.transaction() as tx:
        tx.audit.append("system:anomaly-detector", "anomaly.detected", odd.key.id, "rate")
        tx.keys.revoke(plain.key.id, "test", "no longer needed")
    with store.transaction() as tx:
        tx.leaks.report([LeakedSecret(leaked.secret, "https://gist.example/x", "gist")], "test")
    auditor, _ = operator("auditor")
    page = auditor.get("/incidents").get_data(as_text=True)
    assert odd.key.id in page and leaked.key.id in page and "https://gist.example/x" in page
    assert plain.key.id not in page and leaked.secret not in page


def test_static_files_are_served_without_touching_the_session(client: Any) -> None:
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and ":focus-visible" in css.get_data(as_text=True)
    assert not css.headers.getlist("Set-Cookie")
    assert client.get("/console/static/console.js").status_code == 200


def test_the_audit_page_identifies_an_uploaded_video(
    operator: Callable[[str], tuple[Console, IssuedToken]], store: Store
) -> None:
    from tests.domain.test_provenance import facts, mp4, record_delivery, signed

    delivered = signed(store, mp4("video_console"), facts("dl_console"))
    record_delivery(store, "dl_console", "video_console", mp4("video_console"), delivered)
    auditor, _ = operator("auditor")
    assert "Identify a video" in auditor.get("/audit").get_data(as_text=True)

    def upload(data: bytes) -> Any:
        form = {"csrf_token": auditor.csrf, "file": (io.BytesIO(data), "found.mp4")}
        return auditor.client.post(
            "/console/audit/identify", data=form, content_type="multipart/form-data"
        )

    found = upload(delivered)
    page = found.get_data(as_text=True)
    assert found.status_code == 200 and "Identified" in page and "dl_console" in page
    assert "Manifest: <strong>valid</strong>" in page
    stranger = upload(mp4("video_elsewhere")).get_data(as_text=True)
    assert "Unknown: this file never left the gateway" in stranger
    assert upload(b"plain text").status_code == 400
    with store.read() as tx:
        lookups = [e for e in tx.audit.entries() if e.action == "provenance.identify"]
    assert [e.actor.split(":")[0] for e in lookups] == ["auditor", "auditor"]
