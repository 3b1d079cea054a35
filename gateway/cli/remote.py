"""The CLI's remote mode: the admin API (``/admin/v1``) with a role token instead of the
database and the root secret. Auditors and approvers run reads and decisions from their own
machines; the server enforces their roles.

``RemoteAdmin`` has the same methods as ``LocalAdmin`` (gateway/cli/admin.py) and returns
the same JSON views, so each command has one code path and one presenter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import requests

from gateway.cli.exits import EXIT_NOT_ALLOWED, EXIT_REFUSED, EXIT_UNREACHABLE
from keys.records.audit import (
    Anchor,
    ChainLink,
    SignedCheckpoint,
    Verification,
    canonical_time,
    verify_chain,
)
from keys.records.audit_signing import AuditKeyError, AuditVerifier

TIMEOUT = (5.0, 60.0)  # connect, read
PAGE = 1000


class RemoteError(Exception):
    """The server refused a request or could not be reached. ``exit_code`` is the CLI's."""

    def __init__(self, message: str, code: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code


def read_token_file(path: Path) -> str:
    """The first line of a token file. Raises RemoteError."""
    try:
        token = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc.strerror}", "token_file") from None
    if not token:
        raise RemoteError(f"{path} holds no token", "token_file")
    return token[0].strip()


class AdminClient:
    """A small HTTP client of ``/admin/v1``: bearer token, timeouts, no proxies from the
    environment, API errors turned into RemoteError."""

    def __init__(self, server: str, token: str, session: requests.Session | None = None):
        self.base = server.rstrip("/").removesuffix("/admin/v1") + "/admin/v1"
        self._token = token
        self._session = session or requests.Session()
        # A role token goes to the server named on the command line, never to a proxy
        # named in the environment, and no .netrc replaces it.
        self._session.trust_env = False
        # A server whose certificate an organisation's own CA signed: that CA's bundle
        # (trust_env off, requests would not read the variable itself).
        self._session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Raises RemoteError for an error response or a server out of reach."""
        try:
            response = self._session.request(
                method,
                self.base + path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=json,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=TIMEOUT,
                stream=stream,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise RemoteError(
                f"cannot reach {self.base}: {type(exc).__name__}", "unreachable", EXIT_UNREACHABLE
            ) from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def upload(self, path: str, body: IO[bytes], content_type: str) -> requests.Response:
        """POST a file as the request body, streamed. Raises RemoteError."""
        try:
            response = self._session.post(
                self.base + path,
                data=body,
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": content_type},
                timeout=TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise RemoteError(
                f"cannot reach {self.base}: {type(exc).__name__}", "unreachable", EXIT_UNREACHABLE
            ) from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        return self.request(
            "POST", path, json={k: v for k, v in payload.items() if v is not None}
        ).json()

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).json()

    def pages(self, path: str, cursor: str = "after", **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a keyset-paged listing."""
        after: Any = None
        while True:
            page = self.get(path, **params, **{cursor: after})
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            last = page["data"][-1]
            after = last["seq"] if cursor == "after_seq" else last["id"]


def _error_of(response: requests.Response) -> RemoteError:
    try:
        error = response.json()["error"]
        message, code = str(error["message"]), str(error["code"])
    except (ValueError, KeyError, TypeError):
        message, code = f"HTTP {response.status_code}", "http_error"
    if response.status_code in (401, 403):
        return RemoteError(message, code, EXIT_NOT_ALLOWED)
    if response.status_code >= 500:
        return RemoteError(message, code, EXIT_UNREACHABLE)
    return RemoteError(message, code)


class RemoteAdmin:
    """The admin actions of the CLI, carried out by the server."""

    remote = True

    def __init__(self, client: AdminClient) -> None:
        self.client = client

    # -- testers and keys --------------------------------------------------------------

    def list_testers(self, cohort: str | None) -> list[dict[str, Any]]:
        return list(self.client.pages("/testers", cohort=cohort, limit=PAGE))

    def list_keys(self, tester_id: str | None) -> list[dict[str, Any]]:
        return list(self.client.pages("/keys", tester_id=tester_id, limit=PAGE))

    def show_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get(f"/keys/{key_id}")
        return result

    def rotate_key(self, key_id: str, grace: timedelta) -> dict[str, Any]:
        return dict(
            self.client.post(
                f"/keys/{key_id}/rotate", {"grace_seconds": int(grace.total_seconds())}
            )
        )

    def revoke_key(self, key_id: str, reason: str) -> list[str]:
        return [self.client.post(f"/keys/{key_id}/revoke", {"reason": reason})["id"]]

    def revoke_tester_keys(self, tester_id: str, reason: str) -> list[str]:
        return list(
            self.client.post(f"/testers/{tester_id}/revoke-keys", {"reason": reason})["revoked"]
        )

    def revoke_matching(
        self, reason: str, cohort: str | None, issued_before: datetime | None
    ) -> list[str]:
        payload = {
            "reason": reason,
            "cohort": cohort,
            "issued_before": issued_before.isoformat() if issued_before else None,
        }
        return list(self.client.post("/keys/revoke", payload)["revoked"])

    def suspend_key(self, key_id: str, reason: str) -> dict[str, Any]:
        return dict(self.client.post(f"/keys/{key_id}/suspend", {"reason": reason}))

    def resume_key(self, key_id: str, reason: str | None) -> dict[str, Any]:
        return dict(self.client.post(f"/keys/{key_id}/resume", {"reason": reason}))

    def bind_proof_key(self, key_id: str, public_key: str, replace: bool) -> dict[str, Any]:
        payload = {"public_key": public_key, "replace": replace}
        return dict(self.client.post(f"/keys/{key_id}/proof-key", payload))

    def unbind_proof_key(self, key_id: str) -> dict[str, Any]:
        return dict(self.client.delete(f"/keys/{key_id}/proof-key"))

    # -- approvals ---------------------------------------------------------------------

    def list_approvals(
        self, status: str | None, kind: str | None, tester_id: str | None
    ) -> list[dict[str, Any]]:
        page = self.client.get(
            "/approvals", status=status, kind=kind, tester_id=tester_id, limit=500
        )
        return list(page["data"])

    def decide(self, approval_id: str, approve: bool, reason: str | None) -> dict[str, Any]:
        action = "approve" if approve else "reject"
        return dict(self.client.post(f"/approvals/{approval_id}/{action}", {"reason": reason}))

    # -- usage -------------------------------------------------------------------------

    def daily_usage(
        self, since: str | None, until: str | None, tester_id: str | None, cohort: str | None
    ) -> list[dict[str, Any]]:
        page = self.client.get(
            "/usage/daily", since=since, until=until, tester_id=tester_id, cohort=cohort
        )
        return list(page["data"])

    def export_usage(self, filters: dict[str, str | None], format: str) -> Iterator[str]:
        response = self.client.request(
            "GET", "/usage/export", params={**filters, "format": format}, stream=True
        )
        with response:
            yield from response.iter_content(chunk_size=64 * 1024, decode_unicode=True)

    def key_report(self, key_id: str, since: str | None, until: str | None) -> dict[str, Any]:
        return dict(self.client.get(f"/keys/{key_id}/report", since=since, until=until))

    # -- audit -------------------------------------------------------------------------

    def verify_audit(self, against: Path | None, read_anchors: Any) -> Verification:
        """Fetch the trail, its checkpoints and the public key; verify them here, with the
        verifier of ``audit verify-export``. Raises RemoteError."""
        key = self.client.get("/audit/public-key")
        try:
            verifier = AuditVerifier.from_pem(key["public_key_pem"])
        except AuditKeyError as exc:
            raise RemoteError(f"the server's public key is unusable: {exc}", "bad_key") from None
        if verifier.key_id != key["key_id"]:
            raise RemoteError("the server's public key does not match its key id", "bad_key")
        anchors: list[Anchor] = read_anchors(against, verifier) if against else []
        links = (
            ChainLink(**{**entry, "at": canonical_time(_parse_time(entry["at"]))})
            for entry in self.client.pages("/audit", cursor="after_seq", limit=PAGE)
        )
        checkpoints = [
            SignedCheckpoint(**record)
            for record in self.client.pages("/audit/checkpoints", cursor="after_seq", limit=PAGE)
        ]
        return verify_chain(links, checkpoints, verifier, anchors)

    # -- the kill switch ---------------------------------------------------------------

    def identify_video(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as upload:
            return dict(self.client.upload("/provenance/identify", upload, "video/mp4").json())

    def provenance_certificates(self) -> dict[str, Any]:
        return dict(self.client.get("/provenance/certificates"))

    def lockdown_state(self) -> dict[str, Any]:
        return dict(self.client.get("/lockdown"))

    def doctor(self) -> dict[str, Any]:
        """The server's own checks of its deployment (admin role)."""
        return dict(self.client.get("/doctor"))

    def set_lockdown(self, on: bool, reason: str | None) -> dict[str, Any]:
        return dict(self.client.post("/lockdown", {"lockdown": on, "reason": reason}))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
