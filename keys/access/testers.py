"""Testers: the people who hold keys."""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys.errors import Conflict, InvalidInput, NotFound, UnknownCohort
from keys.ids import new_id
from keys.limits.cohorts import DEFAULT_COHORT, cohort_exists, known_cohorts
from keys.models import Tester
from keys.pages import keyset_page
from keys.records.audit import AuditTrail
from keys.text import checked_text

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
COHORT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TesterService:
    def __init__(self, session: Session, audit: AuditTrail, clock: Callable[[], datetime]):
        self._session = session
        self._audit = audit
        self._clock = clock

    def add(
        self,
        name: str,
        email: str,
        actor: str,
        cohort: str = DEFAULT_COHORT,
        *,
        create_cohort: bool = False,
    ) -> Tester:
        """Register a tester. With ``create_cohort``, a cohort that does not exist yet is
        created (under the default policy until one is set). Raises InvalidInput,
        UnknownCohort, Conflict (email taken)."""
        name = checked_text(name, "name", 200)
        email = checked_text(email, "email", 320).lower()
        if not name or len(name) > 200:
            raise InvalidInput("name must be 1-200 characters", param="name")
        if not _EMAIL.fullmatch(email) or len(email) > 320:
            raise InvalidInput("email is not a valid address", param="email")
        if not COHORT_NAME.fullmatch(cohort):
            raise InvalidInput("cohort must be lowercase letters, digits, - or _", param="cohort")
        if self._session.scalar(select(Tester.id).where(Tester.email == email)):
            raise Conflict(f"a tester with email {email} exists", code="tester_exists")
        # A new cohort needs nothing stored: its first tester makes it exist, under the
        # default policy until one is set.
        new_cohort = not cohort_exists(self._session, cohort)
        if new_cohort and not create_cohort:
            raise UnknownCohort(cohort, known_cohorts(self._session))
        tester = Tester(
            id=new_id("tst"),
            name=name,
            email=email,
            cohort=cohort,
            status="active",
            created_at=self._clock(),
            created_by=actor,
        )
        self._session.add(tester)
        self._session.flush()
        details: dict[str, object] = {"cohort": cohort}
        if new_cohort:
            details["new_cohort"] = True
        self._audit.append(actor, "tester.add", tester.id, details=details)
        return tester

    def get(self, tester_id: str) -> Tester:
        """Raises NotFound."""
        tester = self._session.get(Tester, tester_id)
        if tester is None:
            raise NotFound(f"no tester {tester_id}")
        return tester

    def list(self, cohort: str | None = None) -> list[Tester]:
        return self.page(cohort)[0]

    def page(
        self, cohort: str | None = None, after: str | None = None, limit: int | None = None
    ) -> tuple[builtins.list[Tester], bool]:
        """Testers oldest first, after the tester ``after``; and whether more follow.
        Raises NotFound (an unknown ``after``)."""
        query = select(Tester)
        if cohort is not None:
            query = query.where(Tester.cohort == cohort)
        return keyset_page(self._session, query, Tester, after, limit, "tester")
