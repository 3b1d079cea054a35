"""The web console in a real browser: Debian's chromium, driven by Playwright, against the
gateway under gunicorn and the simulator.

Each role signs in; an approver approves a held generation (and the backend receives it)
and rejects another with a reason (and the tester reads it on ``/console/me``); an admin
issues and revokes a key (and the API answers 401 ``key_revoked``), and turns the lockdown
on and off; an auditor exports usage. Forms without a CSRF token and roles out of their
lane are refused. Every page is searched for secrets, and so are the cookies and the
gateway's log. The screenshots in docs/console/ are taken here.

Nothing downloads a browser: ``make test`` installs Debian's ``chromium`` (root with
apt-get), and without it these tests skip, or fail when CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CI
from tests.integration.live import (
    LiveGateway,
    LiveSimulator,
    TesterKey,
    error_of,
    http_session,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    # One backend is enough here: the console calls the services the API tests prove on both.
    pytest.mark.parametrize("live_gateway", ["sqlite"], indirect=True),
]

CHROMIUM = Path(os.environ.get("DRAWBRIDGE_TEST_CHROMIUM", "/usr/bin/chromium"))
# The tests always take their screenshots; they land in docs/console/ only when asked
# (`DRAWBRIDGE_SCREENSHOTS=docs/console make integration`), so a test run leaves the
# working tree clean.
SCREENSHOTS = Path(
    os.environ.get("DRAWBRIDGE_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / f"drawbridge-console-screenshots-{os.getpid()}"
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
HOLD_RULE = {
    "pattern": "(?i)\\bsenator\\b",
    "action": "hold",
    "reason": "Prompts about elected officials are reviewed before they run.",
}
APPROVED_PROMPT = "a senator feeding pigeons in the rain, 35mm film"
REJECTED_PROMPT = "a senator giving a speech on the moon"
REJECTION = "We do not depict real politicians in this program."
TIMEOUT_MS = 15_000


def _browser_unavailable(detail: str) -> None:
    message = (
        f"The browser tests need Debian's chromium ({detail}). `make test` installs it as "
        "root with apt-get (`apt-get install chromium chromium-driver`); outside CI these "
        "tests are skipped."
    )
    if CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the module (Debian's binary; Playwright never downloads one)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _browser_unavailable(f"the playwright package is missing: {exc}")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        _browser_unavailable(f"{CHROMIUM} is missing")
    with sync_playwright() as playwright:
        # Chromium's sandbox refuses to run as root (containers, CI); elsewhere keep it.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    """Signs people in, one browser context (one cookie jar) each, and keeps every page's
    HTML for the secret checks at the end."""

    browser: Any
    gateway: LiveGateway
    contexts: list[Any] = field(default_factory=list)
    html_seen: list[str] = field(default_factory=list)
    cookies_seen: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.gateway.base}/console{path}"

    def context(self, viewport: dict[str, int] = DESKTOP) -> Any:
        context = self.browser.new_context(viewport=viewport, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        return context

    def look(self, page: Any) -> str:
        """The page's HTML, remembered for the secret checks."""
        html: str = page.content()
        self.html_seen.append(html)
        self.cookies_seen.extend(c["value"] for c in page.context.cookies())
        return html

    def sign_in(
        self, secret: str, *, tester: bool = False, viewport: dict[str, int] = DESKTOP
    ) -> Any:
        page = self.context(viewport).new_page()
        page.goto(self.url("/me/sign-in" if tester else "/sign-in"))
        page.get_by_label("API key" if tester else "Admin token").fill(secret)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        self.look(page)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def screenshot(page: Any, name: str, **options: Any) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), **options)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture(scope="module")
def console(browser: Any, live_gateway: LiveGateway) -> Iterator[Console]:
    console = Console(browser, live_gateway)
    yield console
    console.close()


@pytest.fixture(scope="module")
def tokens(live_gateway: LiveGateway) -> dict[str, str]:
    """An admin token of each role."""
    secrets = {"admin": live_gateway.admin_token}
    for role in ("approver", "auditor"):
        made = live_gateway.admin_ok(
            "POST", "/tokens", json={"name": f"Console {role}", "role": role}
        )
        live_gateway.issued_secrets.append(made["secret"])
        secrets[role] = made["secret"]
    return secrets


@pytest.fixture(scope="module")
def held_tester(live_gateway: LiveGateway) -> TesterKey:
    """A tester whose prompts about senators are held for review."""
    key = live_gateway.new_tester_key()
    live_gateway.admin_ok(
        "PUT", f"/testers/{key.tester_id}/policy", json={"prompt_rules": [HOLD_RULE]}
    )
    return key


def create_video(gateway: LiveGateway, key: TesterKey, prompt: str) -> dict[str, Any]:
    with http_session() as session:
        response = session.post(
            f"{gateway.api_url}/videos",
            headers={"Authorization": f"Bearer {key.secret}"},
            json={"prompt": prompt, "seconds": "4", "size": "720x1280", "model": "sora-2"},
            timeout=15,
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def api_me(gateway: LiveGateway, key: TesterKey) -> Any:
    return gateway.tester_get("/me", key.secret)


def test_each_role_signs_in_and_sees_only_its_pages(
    console: Console, tokens: dict[str, str]
) -> None:
    page = console.context().new_page()
    page.goto(console.url("/"))
    assert page.url.endswith("/console/sign-in")
    screenshot(page, "sign-in")

    expected = {
        "admin": {"Approvals", "Testers & keys", "Usage", "Audit trail", "Lockdown"},
        "approver": {"Approvals", "Cohorts", "Lockdown"},
        "auditor": {"Approvals", "Testers & keys", "Usage", "Audit trail", "Incidents"},
    }
    hidden = {"approver": {"Usage", "Testers & keys", "Audit trail", "Incidents"}}
    for role, secret in tokens.items():
        page = console.sign_in(secret)
        nav = set(page.get_by_role("navigation").get_by_role("link").all_inner_texts())
        assert expected[role] <= nav, (role, nav)
        assert not hidden.get(role, set()) & nav, (role, nav)
        assert page.locator(".who .badge").inner_text() == role

    refused = console.sign_in("drwbadm_" + "x" * 40)
    assert "Not signed in" in refused.inner_text("main")


def test_approver_approves_a_held_generation_and_the_backend_receives_it(
    console: Console,
    tokens: dict[str, str],
    held_tester: TesterKey,
    simulator: LiveSimulator,
    live_gateway: LiveGateway,
) -> None:
    held = create_video(live_gateway, held_tester, APPROVED_PROMPT)
    assert held["status"] == "queued"
    simulator.clear_requests()

    page = console.sign_in(tokens["approver"])
    item = page.locator("[data-queue-item]", has_text=APPROVED_PROMPT)
    assert HOLD_RULE["reason"] in item.inner_text()
    assert held_tester.tester_id in item.inner_text()
    # The keyboard: focus the request, press "a".
    item.focus()
    with page.expect_navigation():
        page.keyboard.press("a")
    assert "sent it to the backend" in console.look(page)

    creates = [
        entry
        for entry in simulator.recorded_requests()
        if (entry["method"], entry["path"]) == ("POST", "/v1/videos")
    ]
    assert len(creates) == 1, creates

    def completed() -> bool:
        polled = live_gateway.tester_get(f"/videos/{held['id']}", held_tester.secret)
        return bool(polled.json().get("status") == "completed")

    wait_for(completed, 15, "the approved generation to complete upstream")

    # The tester asks to share it, and holds another prompt: the queue has both kinds.
    with http_session() as session:
        shared = session.post(
            f"{live_gateway.api_url}/videos/{held['id']}/share",
            headers={"Authorization": f"Bearer {held_tester.secret}"},
            timeout=15,
        )
    assert shared.status_code == 200, shared.text
    create_video(live_gateway, held_tester, REJECTED_PROMPT)
    page.goto(console.url("/approvals"))
    share = page.locator("[data-queue-item]", has_text="share")
    assert share.locator("video").count() == 1
    screenshot(page, "approvals", full_page=True)
    console.look(page)

    # The inline player streams through the gateway, never from the backend's URL.
    source = share.locator("video source").get_attribute("src")
    assert source and source.startswith("/console/approvals/")
    thumbnail = page.context.request.get(
        live_gateway.base + source.replace("variant=video", "variant=thumbnail")
    )
    assert thumbnail.status == 200 and thumbnail.headers["content-type"] == "image/webp"
    assert simulator.base not in console.look(page)


def test_rejection_with_a_reason_reaches_the_tester(
    console: Console, tokens: dict[str, str], held_tester: TesterKey
) -> None:
    page = console.sign_in(tokens["approver"])
    item = page.locator("[data-queue-item]", has_text=REJECTED_PROMPT)
    item.get_by_role("button", name="Reject").click()  # no reason: the browser asks for one
    assert page.url.endswith("/console/approvals")
    item.get_by_placeholder("Reason (the tester sees it)").fill(REJECTION)
    with page.expect_navigation():
        item.get_by_role("button", name="Reject").click()
    assert "Rejected the generation" in console.look(page)
    history = page.locator("table").inner_text()
    assert REJECTION in history

    me = console.sign_in(held_tester.secret, tester=True)
    assert me.url.endswith("/console/me")
    row = me.locator("tr", has_text=REJECTION)
    assert "rejected" in row.inner_text()
    screenshot(me, "me", full_page=True)
    phone = console.sign_in(held_tester.secret, tester=True, viewport=PHONE)
    no_horizontal_scroll(phone)
    screenshot(phone, "me-phone", full_page=True)


def no_horizontal_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px"


def test_admin_issues_and_revokes_a_key_and_the_api_refuses_it(
    console: Console, tokens: dict[str, str], live_gateway: LiveGateway
) -> None:
    tester_id = live_gateway.new_tester()
    page = console.sign_in(tokens["admin"])
    page.goto(console.url("/testers"))
    section = page.locator("section.tester", has=page.locator(f"#tester-{tester_id}"))
    with page.expect_navigation():
        section.get_by_role("button", name="Issue a key").click()
    field = page.locator("[data-secret]")
    secret = field.input_value()
    live_gateway.issued_secrets.append(secret)
    key_id = field.get_attribute("data-key-id")
    screenshot(page, "key-issued", mask=[field], mask_color="#e4dcc0")
    key = TesterKey(tester_id, "", secret, "")
    assert api_me(live_gateway, key).status_code == 200
    # Shown once: the listing and every later page show the hint, never the secret.
    page.goto(console.url("/testers"))
    assert secret not in console.look(page)
    screenshot(page, "testers")
    no_horizontal_scroll(page)

    row = page.locator(f'li.key[data-key="{key_id}"]')
    row.get_by_label(re.compile("Reason for")).fill("leaked in a screenshot")
    with page.expect_navigation():
        row.get_by_role("button", name="Revoke").click()
    assert "Revoked" in console.look(page)

    refused = api_me(live_gateway, key)
    assert refused.status_code == 401 and error_of(refused)["code"] == "key_revoked"

    with page.expect_navigation():
        page.locator(f'li.key[data-key="{key_id}"]').get_by_role("link", name="Report").click()
    assert "Blast radius" in console.look(page)
    screenshot(page, "key-report", full_page=True)


def test_lockdown_on_and_off(
    console: Console, tokens: dict[str, str], live_gateway: LiveGateway
) -> None:
    key = live_gateway.new_tester_key()
    page = console.sign_in(tokens["admin"])
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(console.url("/cohorts"))
    assert page.get_by_role("button", name="Save default").count() == 1
    screenshot(page, "cohorts")
    page.goto(console.url("/lockdown"))
    page.get_by_label("Reason").fill("investigating a leak")
    page.get_by_label(re.compile("refuse every tester request")).check()
    with page.expect_navigation():
        page.get_by_role("button", name="Lock down now").click()
    assert "Lockdown is ON" in console.look(page)
    screenshot(page, "lockdown")
    refused = api_me(live_gateway, key)
    assert refused.status_code == 503 and error_of(refused)["code"] == "lockdown"

    page.get_by_label(re.compile("lift the lockdown")).check()
    with page.expect_navigation():
        page.get_by_role("button", name="Lift lockdown").click()
    assert "Lockdown is off" in console.look(page)
    assert api_me(live_gateway, key).status_code == 200


def test_auditor_reads_usage_exports_it_and_sees_the_trail_verified(
    console: Console,
    tokens: dict[str, str],
    held_tester: TesterKey,
    live_gateway: LiveGateway,
    tmp_path: Path,
) -> None:
    page = console.sign_in(tokens["auditor"])
    page.goto(console.url("/usage"))
    assert held_tester.tester_id in console.look(page)
    assert page.locator("svg.bars rect").count() >= 1
    screenshot(page, "usage", full_page=True)
    no_horizontal_scroll(page)

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    path = tmp_path / "usage.csv"
    download.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("id,") and "tester_id" in lines[0]
    assert any(held_tester.tester_id in line for line in lines[1:])

    page.goto(console.url("/audit"))
    assert "Verified: the trail is intact" in console.look(page)
    screenshot(page, "audit")

    # A key found in a public file, revoked by the leak scanner: an incident with a report.
    leaked = live_gateway.new_tester_key()
    notes = tmp_path / "notes.md"
    notes.write_text(f"deploy with OPENAI_API_KEY={leaked.secret}\n")
    scan = subprocess.run(
        [sys.executable, "-m", "gateway", "leaks", "scan", str(notes), "--revoke"],
        env=live_gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert scan.returncode == 1 and "revoked now: 1" in scan.stderr, scan  # 1: keys found
    page.goto(console.url("/incidents"))
    row = page.locator("tr", has_text=leaked.key_id)
    assert "leak" in row.inner_text() and str(notes) in row.inner_text()
    screenshot(page, "incidents")
    with page.expect_navigation():
        row.get_by_role("link", name=leaked.key_id).click()
    assert "Blast radius" in console.look(page)
    page.goto(console.url("/cohorts"))
    assert page.get_by_role("button", name=re.compile("Save")).count() == 0  # read-only
    console.look(page)
    page.goto(console.url("/testers"))
    assert page.get_by_role("button", name="Issue a key").count() == 0  # read-only
    phone = console.sign_in(tokens["approver"], viewport=PHONE)
    no_horizontal_scroll(phone)
    screenshot(phone, "approvals-phone")


def test_forms_without_csrf_and_roles_out_of_their_lane_are_refused(
    console: Console, tokens: dict[str, str], live_gateway: LiveGateway
) -> None:
    key = live_gateway.new_tester_key()
    page = console.sign_in(tokens["admin"])
    forged = page.context.request.post(
        console.url(f"/keys/{key.key_id}/revoke"), form={"reason": "forged"}
    )
    assert forged.status == 403 and "expired or did not come from the console" in forged.text()
    assert api_me(live_gateway, key).status_code == 200

    approver = console.sign_in(tokens["approver"])
    token = csrf_of(console.look(approver))
    refused = approver.context.request.post(
        console.url(f"/keys/{key.key_id}/revoke"), form={"reason": "x", "csrf_token": token}
    )
    assert refused.status == 403 and "needs the role admin" in refused.text()
    assert approver.context.request.get(console.url("/usage")).status == 403
    lockdown = approver.context.request.post(
        console.url("/lockdown"), form={"lockdown": "on", "confirm": "yes", "csrf_token": token}
    )
    assert lockdown.status == 403
    assert api_me(live_gateway, key).status_code == 200


def test_no_secret_in_any_page_cookie_or_log(
    console: Console, live_gateway: LiveGateway, simulator: LiveSimulator
) -> None:
    secrets = [*live_gateway.issued_secrets, simulator.master]
    assert len(console.html_seen) > 10 and console.cookies_seen
    for html in console.html_seen:
        for secret in secrets:
            assert secret not in html
    for value in console.cookies_seen:
        for secret in secrets:
            assert secret not in value
            assert secret[-12:] not in value
    log = live_gateway.process.log_text() if live_gateway.process else ""
    assert "/console/" in log
    for secret in secrets:
        assert secret not in log
