"""The admin actions the CLI runs either here (the database and root secret at hand) or on a
server (``--server``, gateway/cli/remote.py). Both return the admin API's JSON views, so a
command calls ``admin(ctx)`` and presents the result one way whichever runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.presenters import (
    approval_view,
    daily_view,
    export_chunks,
    key_report_view,
    key_view,
    lockdown_view,
    proof_key_view,
    rotation_view,
    tester_view,
)
from gateway.services.provenance import certificates, identify_file
from keys.records.audit import Verification
from keys.records.usage_reports import UsageFilter, parse_time

if TYPE_CHECKING:
    from gateway.state import GatewayState
    from keys.store import Store


class LocalResources(Protocol):
    """What LocalAdmin runs on: the CLI's context (gateway/cli/base.py) gives both."""

    @property
    def store(self) -> Store: ...
    def gateway_state(self) -> GatewayState: ...


class Admin(Protocol):
    """What both LocalAdmin and RemoteAdmin offer."""

    remote: bool

    def list_testers(self, cohort: str | None) -> list[dict[str, Any]]: ...
    def list_keys(self, tester_id: str | None) -> list[dict[str, Any]]: ...
    def show_key(self, key_id: str) -> dict[str, Any]: ...
    def rotate_key(self, key_id: str, grace: timedelta) -> dict[str, Any]: ...
    def revoke_key(self, key_id: str, reason: str) -> list[str]: ...
    def revoke_tester_keys(self, tester_id: str, reason: str) -> list[str]: ...
    def revoke_matching(
        self, reason: str, cohort: str | None, issued_before: datetime | None
    ) -> list[str]: ...
    def suspend_key(self, key_id: str, reason: str) -> dict[str, Any]: ...
    def resume_key(self, key_id: str, reason: str | None) -> dict[str, Any]: ...
    def bind_proof_key(self, key_id: str, public_key: str, replace: bool) -> dict[str, Any]: ...
    def unbind_proof_key(self, key_id: str) -> dict[str, Any]: ...
    def list_approvals(
        self, status: str | None, kind: str | None, tester_id: str | None
    ) -> list[dict[str, Any]]: ...
    def decide(self, approval_id: str, approve: bool, reason: str | None) -> dict[str, Any]: ...
    def daily_usage(
        self, since: str | None, until: str | None, tester_id: str | None, cohort: str | None
    ) -> list[dict[str, Any]]: ...
    def export_usage(self, filters: dict[str, str | None], format: str) -> Iterator[str]: ...
    def key_report(self, key_id: str, since: str | None, until: str | None) -> dict[str, Any]: ...
    def verify_audit(self, against: Path | None, read_anchors: Any) -> Verification: ...
    def lockdown_state(self) -> dict[str, Any]: ...
    def set_lockdown(self, on: bool, reason: str | None) -> dict[str, Any]: ...
    def identify_video(self, path: Path) -> dict[str, Any]: ...
    def provenance_certificates(self) -> dict[str, Any]: ...


class LocalAdmin:
    """The admin actions on the configured database, as the CLI's user (``cli:user@host``)."""

    remote = False

    def __init__(self, context: LocalResources, actor: str) -> None:
        self._context = context
        self._actor = actor

    @property
    def _store(self) -> Any:
        return self._context.store

    # -- testers and keys --------------------------------------------------------------

    def list_testers(self, cohort: str | None) -> list[dict[str, Any]]:
        with self._store.read() as tx:
            return [tester_view(tester) for tester in tx.testers.list(cohort=cohort)]

    def list_keys(self, tester_id: str | None) -> list[dict[str, Any]]:
        with self._store.read() as tx:
            return [key_view(key, tx.clock()) for key in tx.keys.list(tester_id=tester_id)]

    def show_key(self, key_id: str) -> dict[str, Any]:
        with self._store.read() as tx:
            return key_view(tx.keys.get(key_id), tx.clock())

    def rotate_key(self, key_id: str, grace: timedelta) -> dict[str, Any]:
        with self._store.transaction() as tx:
            issued = tx.keys.rotate(key_id, self._actor, grace)
            return rotation_view(tx.keys.get(key_id), issued.key, issued.secret, tx.clock())

    def revoke_key(self, key_id: str, reason: str) -> list[str]:
        with self._store.transaction() as tx:
            return [tx.keys.revoke(key_id, self._actor, reason).id]

    def revoke_tester_keys(self, tester_id: str, reason: str) -> list[str]:
        with self._store.transaction() as tx:
            return list(tx.keys.revoke_all_for_tester(tester_id, self._actor, reason))

    def revoke_matching(
        self, reason: str, cohort: str | None, issued_before: datetime | None
    ) -> list[str]:
        with self._store.transaction() as tx:
            return list(tx.keys.revoke_matching(self._actor, reason, cohort, issued_before))

    def suspend_key(self, key_id: str, reason: str) -> dict[str, Any]:
        with self._store.transaction() as tx:
            return key_view(tx.keys.suspend(key_id, self._actor, reason), tx.clock())

    def resume_key(self, key_id: str, reason: str | None) -> dict[str, Any]:
        with self._store.transaction() as tx:
            return key_view(tx.keys.resume(key_id, self._actor, reason), tx.clock())

    def bind_proof_key(self, key_id: str, public_key: str, replace: bool) -> dict[str, Any]:
        with self._store.transaction() as tx:
            row = tx.proof_keys.bind(key_id, public_key, self._actor, replace=replace)
            return proof_key_view(row)

    def unbind_proof_key(self, key_id: str) -> dict[str, Any]:
        with self._store.transaction() as tx:
            return proof_key_view(tx.proof_keys.unbind_key(key_id, self._actor))

    # -- approvals ---------------------------------------------------------------------

    def list_approvals(
        self, status: str | None, kind: str | None, tester_id: str | None
    ) -> list[dict[str, Any]]:
        with self._store.read() as tx:
            return [approval_view(a) for a in tx.approvals.list(status, kind, tester_id, 500)]

    def decide(self, approval_id: str, approve: bool, reason: str | None) -> dict[str, Any]:
        from gateway.services.approvals import decide

        return decide(
            self._context.gateway_state(),
            approval_id,
            approve,
            self._actor,
            reason,
            f"req_cli_{uuid.uuid4().hex}",
        )

    # -- usage -------------------------------------------------------------------------

    def daily_usage(
        self, since: str | None, until: str | None, tester_id: str | None, cohort: str | None
    ) -> list[dict[str, Any]]:
        with self._store.read() as tx:
            first, last = tx.usage_reports.daily_range(since, until)
            rows = tx.usage_reports.daily(first, last, tester_id, cohort)
            return [daily_view(row) for row in rows]

    def export_usage(self, filters: dict[str, str | None], format: str) -> Iterator[str]:
        store = self._store
        usage_filter = UsageFilter.parse(filters, store.clock())
        with store.read() as tx:
            yield from export_chunks(tx.usage_reports.stream(usage_filter), format)

    def key_report(self, key_id: str, since: str | None, until: str | None) -> dict[str, Any]:
        with self._store.read() as tx:
            now = tx.clock()
            start = parse_time(since, "since", now) if since else None
            end = parse_time(until, "until", now) if until else None
            return key_report_view(tx.usage_reports.key_report(key_id, start, end))

    # -- audit -------------------------------------------------------------------------

    def verify_audit(self, against: Path | None, read_anchors: Any) -> Verification:
        with self._store.read() as tx:
            signer = tx.audit.signer
            anchors = read_anchors(against, signer.verifier if signer else None) if against else []
            result: Verification = tx.audit.verify(anchors)
            return result

    # -- provenance --------------------------------------------------------------------

    def identify_video(self, path: Path) -> dict[str, Any]:
        with path.open("rb") as upload:
            return identify_file(self._store, upload, self._actor).as_json()

    def provenance_certificates(self) -> dict[str, Any]:
        return certificates(self._store)

    # -- the kill switch ---------------------------------------------------------------

    def lockdown_state(self) -> dict[str, Any]:
        with self._store.read() as tx:
            return lockdown_view(tx.lockdown.state())

    def set_lockdown(self, on: bool, reason: str | None) -> dict[str, Any]:
        with self._store.transaction() as tx:
            return lockdown_view(tx.lockdown.set_lockdown(on, self._actor, reason))
