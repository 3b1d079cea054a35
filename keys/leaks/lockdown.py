"""The program-wide kill switch: lockdown refuses every tester request until lifted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from keys.errors import InvalidInput
from keys.models import ProgramState
from keys.records.audit import AuditTrail
from keys.text import clean_text

PROGRAM_ROW = 1


class LockdownSwitch:
    def __init__(self, session: Session, audit: AuditTrail, clock: Callable[[], datetime]):
        self._session = session
        self._audit = audit
        self._clock = clock

    def state(self) -> ProgramState:
        row = self._session.get(ProgramState, PROGRAM_ROW)
        return row if row is not None else ProgramState(id=PROGRAM_ROW, lockdown=False)

    def set_lockdown(self, on: bool, actor: str, reason: str | None) -> ProgramState:
        """Raise or lower the kill switch. Raising it needs a reason."""
        # Cleaned, never refused: the kill switch works whatever its reason holds.
        reason = clean_text(reason or "", 2000) or None
        if on and not reason:
            raise InvalidInput("a reason is required to lock down the program", param="reason")
        row = self._session.get(ProgramState, PROGRAM_ROW, with_for_update=True)
        if row is None:
            row = ProgramState(id=PROGRAM_ROW, lockdown=False)
            self._session.add(row)
        row.lockdown = on
        row.lockdown_reason, row.lockdown_by, row.lockdown_at = reason, actor, self._clock()
        self._session.flush()
        self._audit.append(actor, "lockdown.on" if on else "lockdown.off", "program", reason)
        return row
