"""The key lifecycle: issue, rotate with grace, suspend, resume, revoke, verify.

The admin API and the CLI both call these methods; every change records its actor in the
row and in the audit trail.
"""

from __future__ import annotations

import builtins
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from keys.access.digests import SecretDigester
from keys.access.keyformat import KeyFormat
from keys.access.proof_keys import BoundProofKey, ProofKeyService
from keys.db import ACCESS_NEUTRAL
from keys.errors import (
    Conflict,
    HoneytokenUsed,
    InvalidInput,
    InvalidKey,
    KeyRejected,
    Lockdown,
    NotFound,
)
from keys.ids import new_id
from keys.leaks.lockdown import PROGRAM_ROW
from keys.limits.cohorts import effective_policy
from keys.limits.policies import Policy
from keys.models import ApiKey, CohortPolicy, PolicyOverride, ProgramState, ProofKey, Tester
from keys.pages import keyset_page
from keys.records.audit import AuditTrail
from keys.text import checked_text, clean_text

DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=30)
# last_used_at is a hint for humans; writing it on every request would serialize traffic.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_METADATA_ENTRIES = 20
MAX_REASON_CHARS = 2000
# A key issued only to be watched carries this metadata entry ("true"); any use of it is
# refused like an unknown key and raises the alarm (keys/leaks/anomalies.py).
HONEYTOKEN = "honeytoken"

# One indexed read answers everything a request needs to know about its key: the key, its
# tester, the policy in force and the kill switch.
VERIFY_STATEMENT = (
    select(
        ApiKey.id,
        ApiKey.tester_id,
        ApiKey.digest,
        ApiKey.hint,
        ApiKey.status,
        ApiKey.expires_at,
        ApiKey.grace_until,
        ApiKey.last_used_at,
        ApiKey.key_metadata.label("key_metadata"),
        Tester.cohort,
        Tester.status.label("tester_status"),
        CohortPolicy.policy.label("cohort_policy"),
        CohortPolicy.updated_at.label("cohort_policy_at"),
        PolicyOverride.overrides.label("overrides"),
        PolicyOverride.updated_at.label("overrides_at"),
        ProgramState.lockdown,
        ProofKey.id.label("proof_key_id"),
        ProofKey.algorithm.label("proof_key_algorithm"),
        ProofKey.public_key.label("proof_key_public"),
        ProofKey.thumbprint.label("proof_key_thumbprint"),
    )
    .join(Tester, Tester.id == ApiKey.tester_id)
    .outerjoin(CohortPolicy, CohortPolicy.cohort == Tester.cohort)
    .outerjoin(PolicyOverride, PolicyOverride.tester_id == Tester.id)
    .outerjoin(ProgramState, ProgramState.id == PROGRAM_ROW)
    .outerjoin(ProofKey, (ProofKey.key_id == ApiKey.id) & ProofKey.removed_at.is_(None))
    .where(ApiKey.digest == bindparam("digest"))
)
_POLICY_CACHE: dict[tuple[object, ...], Policy] = {}
_POLICY_CACHE_SIZE = 10_000


def _policy_of(row: Any) -> Policy:
    """The row's effective policy, parsed once per (cohort version, override version)."""
    cache_key = (row.cohort, row.cohort_policy_at, row.tester_id, row.overrides_at)
    policy = _POLICY_CACHE.get(cache_key)
    if policy is None:
        if len(_POLICY_CACHE) >= _POLICY_CACHE_SIZE:
            _POLICY_CACHE.clear()
        policy = effective_policy(row.cohort_policy, row.overrides)
        _POLICY_CACHE[cache_key] = policy
    return policy


@dataclass(frozen=True)
class IssuedKey:
    """The one moment a secret exists in clear: returned by issue and rotate, never stored."""

    secret: str
    key: ApiKey


@dataclass(frozen=True)
class Principal:
    """A verified tester key, as the gateway needs it for one request."""

    key_id: str
    tester_id: str
    cohort: str
    hint: str
    last_used_at: datetime | None
    policy: Policy
    metadata: Mapping[str, Any]
    proof_key: BoundProofKey | None = None
    """The public key bound to this API key: every request must then be signed with it."""


def refusal(
    status: str,
    expires_at: datetime | None,
    grace_until: datetime | None,
    tester_status: str,
    now: datetime,
) -> str | None:
    """The error code that refuses a key in this state, or None when it may be used."""
    if status == "revoked":
        return "key_revoked"
    if status == "suspended":
        return "key_suspended"
    if status == "rotated" and (grace_until is None or now >= grace_until):
        return "key_rotated"
    if expires_at is not None and now >= expires_at:
        return "key_expired"
    if tester_status != "active":
        return "tester_suspended"
    return None


REFUSAL_MESSAGES = {
    "key_revoked": "This API key has been revoked.",
    "key_suspended": "This API key is suspended.",
    "key_rotated": "This API key was rotated and its grace period has ended; use its successor.",
    "key_expired": "This API key has expired.",
    "tester_suspended": "The tester who holds this API key is suspended.",
}


def effective_status(key: ApiKey, now: datetime) -> str:
    """Stored status with the clock applied: an active key past its expiry reads 'expired'."""
    if key.status in ("active", "rotated") and key.expires_at and now >= key.expires_at:
        return "expired"
    return key.status


class KeyService:
    def __init__(
        self,
        session: Session,
        audit: AuditTrail,
        digester: SecretDigester,
        key_format: KeyFormat,
        clock: Callable[[], datetime],
    ) -> None:
        self._session = session
        self._audit = audit
        self._digester = digester
        self._format = key_format
        self._clock = clock

    # -- issuing -------------------------------------------------------------------------

    def issue(
        self,
        tester_id: str,
        actor: str,
        expires_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        honeytoken: bool = False,
    ) -> IssuedKey:
        """Issue a new key to a tester; a ``honeytoken`` is only ever watched, never served.

        Raises NotFound, InvalidInput.
        """
        tester = self._session.get(Tester, tester_id)
        if tester is None:
            raise NotFound(f"no tester {tester_id}")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at must be in the future", param="expires_at")
        metadata = _checked_metadata({} if metadata is None else metadata)
        if honeytoken:
            metadata[HONEYTOKEN] = "true"
        issued = self._new_key(tester_id, actor, expires_at, metadata)
        details: dict[str, Any] = {"tester_id": tester_id, "expires_at": _iso(expires_at)}
        if is_honeytoken(metadata):
            details[HONEYTOKEN] = True
        self._audit.append(actor, "key.issue", issued.key.id, details=details)
        return issued

    def rotate(
        self, key_id: str, actor: str, grace: timedelta = DEFAULT_ROTATION_GRACE
    ) -> IssuedKey:
        """Replace an active key; the old secret keeps working until ``now + grace``.

        Raises NotFound, InvalidInput (grace out of range), Conflict (key not active).
        """
        if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
            raise InvalidInput("grace must be between 0 and 30 days", param="grace_seconds")
        old = self._locked(key_id)
        now = self._clock()
        if effective_status(old, now) != "active":
            raise Conflict(f"only an active key can be rotated; {key_id} is not", code="key_state")
        issued = self._new_key(old.tester_id, actor, old.expires_at, dict(old.key_metadata))
        issued.key.rotated_from_id = old.id
        old.status = "rotated"
        old.grace_until = now + grace
        old.replaced_by_id = issued.key.id
        self._session.flush()
        self._audit.append(
            actor,
            "key.rotate",
            old.id,
            details={"successor": issued.key.id, "grace_until": _iso(old.grace_until)},
        )
        # The successor proves possession with the same key pair: a binding survives a
        # rotation (the old key keeps its own until its grace ends).
        ProofKeyService(self._session, self._audit, self._clock).carry_over(
            old.id, issued.key, actor
        )
        return issued

    def _new_key(
        self,
        tester_id: str,
        actor: str,
        expires_at: datetime | None,
        metadata: dict[str, Any],
    ) -> IssuedKey:
        secret = self._format.generate()
        key = ApiKey(
            id=new_id("key"),
            tester_id=tester_id,
            digest=self._digester.digest(secret),
            hint=self._format.hint(secret),
            status="active",
            created_at=self._clock(),
            created_by=actor,
            expires_at=expires_at,
            key_metadata=metadata,
        )
        self._session.add(key)
        self._session.flush()
        return IssuedKey(secret=secret, key=key)

    # -- state changes -------------------------------------------------------------------

    def revoke(self, key_id: str, actor: str, reason: str) -> ApiKey:
        """Revoke for good. Raises NotFound, InvalidInput (no reason), Conflict (revoked)."""
        reason = _required_reason(reason)
        key = self._locked(key_id)
        if key.status == "revoked":
            raise Conflict(f"{key_id} is already revoked", code="key_state")
        self._mark_revoked(key, actor, reason)
        self._audit.append(actor, "key.revoke", key.id, reason)
        return key

    def revoke_all_for_tester(self, tester_id: str, actor: str, reason: str) -> list[str]:
        """Revoke every key of a tester that is not revoked yet; returns their ids."""
        reason = _required_reason(reason)
        if self._session.get(Tester, tester_id) is None:
            raise NotFound(f"no tester {tester_id}")
        keys = self._session.scalars(
            select(ApiKey)
            .where(ApiKey.tester_id == tester_id, ApiKey.status != "revoked")
            .with_for_update()
        ).all()
        for key in keys:
            self._mark_revoked(key, actor, reason)
        revoked = [key.id for key in keys]
        self._audit.append(
            actor, "tester.revoke_keys", tester_id, reason, details={"keys": revoked}
        )
        return revoked

    def revoke_matching(
        self,
        actor: str,
        reason: str,
        cohort: str | None = None,
        issued_before: datetime | None = None,
    ) -> list[str]:
        """Revoke every live key of a cohort and/or issued before a time; returns their ids.

        Raises InvalidInput when neither filter is given (use lockdown to stop everyone).
        """
        reason = _required_reason(reason)
        if cohort is None and issued_before is None:
            raise InvalidInput("give a cohort, an issued_before time, or both", param="cohort")
        query = select(ApiKey).where(ApiKey.status != "revoked").with_for_update()
        if cohort is not None:
            query = query.where(
                ApiKey.tester_id.in_(select(Tester.id).where(Tester.cohort == cohort))
            )
        if issued_before is not None:
            query = query.where(ApiKey.created_at < issued_before)
        keys = self._session.scalars(query).all()
        for key in keys:
            self._mark_revoked(key, actor, reason)
        revoked = [key.id for key in keys]
        self._audit.append(
            actor,
            "keys.revoke_bulk",
            f"cohort:{cohort}" if cohort else "all-cohorts",
            reason,
            details={"issued_before": _iso(issued_before), "keys": revoked},
        )
        return revoked

    def suspend(self, key_id: str, actor: str, reason: str) -> ApiKey:
        """Stop a key until resumed. Raises NotFound, InvalidInput, Conflict (not active)."""
        reason = _required_reason(reason)
        key = self._locked(key_id)
        if key.status != "active":
            raise Conflict(
                f"only an active key can be suspended; {key_id} is {key.status}", code="key_state"
            )
        key.status = "suspended"
        key.suspended_at, key.suspended_by, key.suspended_reason = self._clock(), actor, reason
        self._session.flush()
        self._audit.append(actor, "key.suspend", key.id, reason)
        return key

    def resume(self, key_id: str, actor: str, reason: str | None = None) -> ApiKey:
        """Lift a suspension. Raises NotFound, Conflict (not suspended)."""
        reason = clean_text(reason, MAX_REASON_CHARS) or None if reason else None
        key = self._locked(key_id)
        if key.status != "suspended":
            raise Conflict(f"{key_id} is not suspended", code="key_state")
        key.status = "active"
        self._session.flush()
        self._audit.append(actor, "key.resume", key.id, reason)
        return key

    def end_grace(self, key_id: str, actor: str, reason: str) -> ApiKey:
        """Stop a rotated key's old secret now instead of at the end of its grace period.

        Raises NotFound, InvalidInput (no reason), Conflict (not a rotated key in grace).
        """
        reason = _required_reason(reason)
        key = self._locked(key_id)
        now = self._clock()
        if key.status != "rotated" or key.grace_until is None or key.grace_until <= now:
            raise Conflict(f"{key_id} is not a rotated key in its grace period", code="key_state")
        key.grace_until = now
        self._session.flush()
        self._audit.append(actor, "key.end_grace", key.id, reason)
        return key

    def _mark_revoked(self, key: ApiKey, actor: str, reason: str) -> None:
        key.status = "revoked"
        key.revoked_at, key.revoked_by, key.revoked_reason = self._clock(), actor, reason
        self._session.flush()

    def _locked(self, key_id: str) -> ApiKey:
        key = self._session.scalars(
            select(ApiKey).where(ApiKey.id == key_id).with_for_update()
        ).first()
        if key is None:
            raise NotFound(f"no key {key_id}")
        return key

    # -- reading -------------------------------------------------------------------------

    def get(self, key_id: str) -> ApiKey:
        """Raises NotFound."""
        key = self._session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no key {key_id}")
        return key

    def list(self, tester_id: str | None = None) -> list[ApiKey]:
        return self.page(tester_id)[0]

    def page(
        self, tester_id: str | None = None, after: str | None = None, limit: int | None = None
    ) -> tuple[builtins.list[ApiKey], bool]:
        """Keys oldest first, after the key ``after``; and whether more follow.
        Raises NotFound (an unknown ``after``)."""
        query = select(ApiKey)
        if tester_id is not None:
            query = query.where(ApiKey.tester_id == tester_id)
        return keyset_page(self._session, query, ApiKey, after, limit, "key")

    def verify(self, secret: str) -> Principal:
        """The principal behind a secret (see ``verify_secret``)."""
        return verify_secret(self._session, secret, self._digester, self._format, self._clock())

    def touch(self, key_id: str) -> None:
        """Record use, at most once per LAST_USED_RESOLUTION per key."""
        now = self._clock()
        self._session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .where(
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
            )
            .values(last_used_at=now)
            # When a key was last used admits or refuses nothing: no write wait.
            .execution_options(**ACCESS_NEUTRAL)
        )


def is_honeytoken(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a key's metadata marks it as a honeytoken."""
    return metadata is not None and str(metadata.get(HONEYTOKEN, "")).lower() == "true"


def verify_secret(
    executor: Session | Connection,
    secret: str,
    digester: SecretDigester,
    key_format: KeyFormat,
    now: datetime,
) -> Principal:
    """The principal behind a secret, in one indexed read.

    Raises InvalidKey (malformed, bad checksum, unknown) before or without touching storage
    where it can, HoneytokenUsed (an InvalidKey) for a honeytoken in any state, KeyRejected
    with the precise code, or Lockdown.
    """
    if not key_format.is_well_formed(secret):
        raise InvalidKey("Malformed API key.")
    digest = digester.digest(secret)
    row = executor.execute(VERIFY_STATEMENT, {"digest": digest}).first()
    return principal_of(row, digest, now)


def principal_of(row: Any, digest: str, now: datetime) -> Principal:
    """Judge the row ``VERIFY_STATEMENT`` (or a statement built on it) found for a secret's
    digest.

    Raises as ``verify_secret`` does.
    """
    if row is None or not hmac.compare_digest(digest, row.digest):
        raise InvalidKey("Incorrect API key provided.")
    if is_honeytoken(row.key_metadata):
        raise HoneytokenUsed(
            row.id, row.tester_id, row.hint, row.status, _proof_key_of(row) is not None
        )
    code = refusal(row.status, row.expires_at, row.grace_until, row.tester_status, now)
    if code is not None:
        rejection = KeyRejected(REFUSAL_MESSAGES[code], code=code)
        rejection.key_id = row.id
        raise rejection
    if row.lockdown:
        raise Lockdown("The program is locked down; all tester access is paused.")
    return Principal(
        row.id,
        row.tester_id,
        row.cohort,
        row.hint,
        row.last_used_at,
        _policy_of(row),
        MappingProxyType(row.key_metadata or {}),
        _proof_key_of(row),
    )


def _proof_key_of(row: Any) -> BoundProofKey | None:
    if row.proof_key_id is None:
        return None
    return BoundProofKey(
        row.proof_key_id, row.proof_key_algorithm, row.proof_key_public, row.proof_key_thumbprint
    )


def needs_touch(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a request should refresh ``last_used_at``."""
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION


def _required_reason(reason: str | None) -> str:
    """The reason of a state change, cleaned rather than refused (keys/text.py): a key must be
    revoked or suspended whatever the text beside the request holds."""
    reason = clean_text(reason or "", MAX_REASON_CHARS)
    if not reason:
        raise InvalidInput("a reason is required", param="reason")
    return reason


def _checked_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidInput("metadata must be an object of at most 20 entries", param="metadata")
    checked = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidInput("metadata names and values must be strings", param="metadata")
        if not 0 < len(name) <= 64 or len(value) > 500:
            raise InvalidInput("metadata names 1-64 chars, values up to 500", param="metadata")
        checked[checked_text(name, "metadata", 64)] = checked_text(value, "metadata", 500)
    return checked


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
