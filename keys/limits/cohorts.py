"""Cohort policies and per-tester overrides, kept in the database so that a change is in
force on every worker and instance at once, and recorded with its actor.

A cohort exists once it has a stored policy or a tester; ``default`` always exists (its
policy is the built-in one until one is stored). Adding a tester to any other cohort is
refused unless the caller asks to create it (``create_cohort``), so that a misspelled
cohort does not quietly put a tester under the default policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys.errors import InvalidInput, NotFound
from keys.limits.policies import Policy, PolicyError, policy_from_mapping
from keys.models import CohortPolicy, PolicyOverride, Tester
from keys.records.audit import AuditTrail

DEFAULT_POLICY = Policy()
DEFAULT_COHORT = "default"


def known_cohorts(session: Session) -> list[str]:
    """Every cohort that exists: ``default``, those with a policy, those with testers."""
    with_policy = session.scalars(select(CohortPolicy.cohort))
    with_testers = session.scalars(select(Tester.cohort).distinct())
    return sorted({DEFAULT_COHORT, *with_policy, *with_testers})


def cohort_exists(session: Session, cohort: str) -> bool:
    if cohort == DEFAULT_COHORT or session.get(CohortPolicy, cohort) is not None:
        return True
    return session.scalar(select(Tester.id).where(Tester.cohort == cohort).limit(1)) is not None


def effective_policy(
    cohort_policy: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None
) -> Policy:
    """The policy in force for a tester: the cohort's (or the built-in default) plus their
    overrides. Stored values were validated on the way in."""
    base = policy_from_mapping(cohort_policy) if cohort_policy else DEFAULT_POLICY
    return base.with_overrides(overrides) if overrides else base


class CohortPolicies:
    def __init__(self, session: Session, audit: AuditTrail, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._audit = audit
        self._clock = clock

    def _version_after(self, previous: datetime | None) -> datetime:
        """``updated_at`` for a change: now, but always later than the previous version.
        Workers cache parsed policies by this timestamp, so two changes must never share
        one (a coarse or fake clock, or two changes in the same tick)."""
        now = self._clock()
        if previous is not None and now <= previous:
            return previous + timedelta(microseconds=1)
        return now

    def set_policy(self, cohort: str, policy: Policy, actor: str) -> bool:
        """Store a cohort's policy; returns False when nothing changed."""
        row = self._session.get(CohortPolicy, cohort, with_for_update=True)
        data = policy.to_json()
        if row is not None and row.policy == data:
            return False
        if row is None:
            row = CohortPolicy(
                cohort=cohort, policy=data, updated_at=self._clock(), updated_by=actor
            )
            self._session.add(row)
        else:
            row.policy, row.updated_by = data, actor
            row.updated_at = self._version_after(row.updated_at)
        self._session.flush()
        self._audit.append(actor, "policy.set", f"cohort:{cohort}", details={"policy": data})
        return True

    def policy(self, cohort: str) -> Policy:
        row = self._session.get(CohortPolicy, cohort)
        return effective_policy(row.policy if row else None, None)

    def cohorts(self) -> dict[str, Policy]:
        rows = self._session.scalars(select(CohortPolicy).order_by(CohortPolicy.cohort))
        return {row.cohort: effective_policy(row.policy, None) for row in rows}

    def set_overrides(self, tester_id: str, overrides: Mapping[str, Any], actor: str) -> Policy:
        """Replace a tester's overrides. Raises NotFound, InvalidInput."""
        tester = self._session.get(Tester, tester_id)
        if tester is None:
            raise NotFound(f"no tester {tester_id}")
        try:
            effective = self.policy(tester.cohort).with_overrides(overrides)
        except PolicyError as exc:
            raise InvalidInput(str(exc), param=exc.field) from None
        row = self._session.get(PolicyOverride, tester_id, with_for_update=True)
        if row is None:
            row = PolicyOverride(
                tester_id=tester_id,
                overrides=dict(overrides),
                updated_at=self._clock(),
                updated_by=actor,
            )
            self._session.add(row)
        else:
            row.overrides, row.updated_by = dict(overrides), actor
            row.updated_at = self._version_after(row.updated_at)
        self._session.flush()
        self._audit.append(
            actor, "policy.override", tester_id, details={"overrides": dict(overrides)}
        )
        return effective

    def clear_overrides(self, tester_id: str, actor: str) -> None:
        row = self._session.get(PolicyOverride, tester_id, with_for_update=True)
        if row is not None and row.overrides:
            # Emptied rather than deleted: a row set again later must not reuse a version
            # (updated_at) that workers cached with the old overrides.
            row.overrides, row.updated_by = {}, actor
            row.updated_at = self._version_after(row.updated_at)
            self._session.flush()
            self._audit.append(actor, "policy.override_cleared", tester_id)

    def for_tester(self, tester_id: str) -> tuple[Policy, dict[str, Any]]:
        """The tester's effective policy and their raw overrides. Raises NotFound."""
        tester = self._session.get(Tester, tester_id)
        if tester is None:
            raise NotFound(f"no tester {tester_id}")
        cohort = self._session.get(CohortPolicy, tester.cohort)
        override = self._session.get(PolicyOverride, tester_id)
        overrides = dict(override.overrides) if override else {}
        return effective_policy(cohort.policy if cohort else None, overrides), overrides
