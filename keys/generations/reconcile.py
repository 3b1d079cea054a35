"""Reconciling reservations whose lease ran out, against the generation backend.

A creation reserves its quota and leases a ``reservations`` row before the upstream call; the
worker ends the lease when it records the outcome. A row past its lease means the worker died
(``kill -9``, a lost database connection) or lost the backend's answer (a timeout). Then one
reconciler run:

1. claims expired rows with a conditional UPDATE (``lease_until <= now``): on PostgreSQL the
   row lock re-checks the condition, on SQLite ``BEGIN IMMEDIATE`` serializes the claims, so
   of several gateways sweeping at once exactly one holds each row;
2. lists the backend's videos created since the oldest claimed reservation (no transaction
   open), and keeps those no video row owns;
3. matches each claimed reservation to such a job by what was sent (model, size, seconds,
   prompt, remix source) and time, then in one transaction per reservation deletes the row
   *if still claimed by this run* and either adopts the job (the video becomes the tester's,
   the reservation is settled like any creation) or refunds the quota;
4. cancels (deletes upstream) jobs no reservation can own, so nothing runs on the master
   credential uncharged.

A job that two testers' reservations could both own is never handed to either (their inputs
may differ in what the backend does not echo, such as a reference image): it is cancelled and
both are refunded. A job that a reservation *outside* this run's claim could own (a request
still in flight, another reconciler's claim) defers the decision to a later run. Every action
is appended to the audit trail in the transaction that makes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from keys.generations.ledger import present
from keys.limits.quotas import Cost
from keys.models import Reservation, UsageEvent, Video
from keys.process import unique_hex
from keys.records.usage import CREATED, REFUNDED

if TYPE_CHECKING:
    from keys.store import Store, Transaction

log = logging.getLogger("drawbridge.reconcile")

ACTOR = "system:reconciler"
# How far the backend's clock may be behind ours, and how much a job's whole-second
# ``created_at`` may round down: a job is looked for from this long before its reservation.
CLOCK_SKEW = timedelta(seconds=30)
# How long a run holds the rows it claimed; longer than one run takes.
CLAIM_FOR = timedelta(minutes=5)
BATCH = 200


class UpstreamVideos(Protocol):
    """What the reconciler needs of the generation backend."""

    def videos_since(self, since: datetime) -> Iterable[dict[str, Any]]:
        """Every video object the backend holds created at or after ``since``."""

    def cancel(self, upstream_id: str) -> None:
        """Delete the job upstream (a job already gone is not an error)."""


@dataclass
class Action:
    """One thing a run did (or, dry, would do)."""

    action: str  # adopted | refunded | cancelled | deferred
    request_id: str | None
    tester_id: str | None
    upstream_id: str | None = None
    video_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "request_id": self.request_id,
            "tester_id": self.tester_id,
            "upstream_id": self.upstream_id,
            "video_id": self.video_id,
        }


@dataclass
class ReconcileReport:
    expired: int = 0
    actions: list[Action] = field(default_factory=list)
    dry_run: bool = False

    def count(self, action: str) -> int:
        return sum(1 for item in self.actions if item.action == action)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "expired": self.expired,
            **{name: self.count(name) for name in ("adopted", "refunded", "cancelled", "deferred")},
            "actions": [item.as_dict() for item in self.actions],
        }


@dataclass(frozen=True)
class _Claimed:
    request_id: str
    tester_id: str
    key_id: str
    video_id: str | None
    created_at: datetime
    generations: int
    video_seconds: int
    quota_periods: dict[str, str]
    intent: dict[str, Any]


def _created_at(job: dict[str, Any]) -> float:
    value = job.get("created_at")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _could_own(intent: dict[str, Any], created_at: datetime, job: dict[str, Any]) -> bool:
    """Whether a job is what this reservation sent, created after it was made."""
    return (
        _created_at(job) >= (created_at - CLOCK_SKEW).timestamp()
        and job.get("model") == intent.get("model")
        and job.get("size") == intent.get("size")
        and str(job.get("seconds")) == intent.get("seconds")
        and job.get("prompt") == intent.get("prompt")
        and job.get("remixed_from_video_id") == intent.get("remix_of")
    )


class Reconciler:
    """Settles or refunds reservations past their lease; safe to run anywhere, any time."""

    def __init__(
        self,
        store: Store,
        backend: UpstreamVideos,
        *,
        clock: Callable[[], datetime] | None = None,
        actor: str = ACTOR,
    ) -> None:
        self._store = store
        self._backend = backend
        self._clock = clock
        self._actor = actor

    def _now(self) -> datetime:
        return (self._clock or self._store.clock)()

    def run(self, *, dry_run: bool = False, limit: int = BATCH) -> ReconcileReport:
        """One pass over the expired reservations (at most ``limit``)."""
        report = ReconcileReport(dry_run=dry_run)
        token = "rec_" + unique_hex()[:32]
        claimed = self._expired(limit) if dry_run else self._claim(token, limit)
        report.expired = len(claimed)
        if not claimed:
            return report
        since = min(item.created_at for item in claimed) - CLOCK_SKEW
        try:
            jobs = list(self._backend.videos_since(since))
        except Exception:
            # The backend could not be asked: give the claims back for the next run.
            if not dry_run:
                self._unclaim(token)
            raise
        # Read after the listing, and the reservations before the videos: a worker that
        # records its job in between has then either its reservation or its video seen (it
        # writes the one and deletes the other in one transaction), so no job of a request
        # in flight looks orphaned. Every job the gateway creates had its reservation row
        # written before the upstream call.
        mine = {item.request_id for item in claimed}
        with self._store.read() as tx:
            others = [
                _claimed_of(row)
                for row in tx.session.scalars(select(Reservation))
                if row.request_id not in mine
            ]
            owned = self._owned(tx, [str(job.get("id")) for job in jobs])
        unowned = [job for job in jobs if str(job.get("id")) not in owned]
        plan, deferred, cancel = _match(claimed, others, unowned)
        for item, job in plan:
            report.actions.append(self._settle(item, job, token, dry_run))
        for item in deferred:
            report.actions.append(self._defer(item, token, dry_run))
        for job in cancel:
            report.actions.append(self._cancel(job, dry_run))
        return report

    # -- claiming ------------------------------------------------------------------------

    def _expired(self, limit: int) -> list[_Claimed]:
        with self._store.read() as tx:
            rows = tx.session.scalars(
                select(Reservation)
                .where(Reservation.lease_until <= self._now())
                .order_by(Reservation.created_at)
                .limit(limit)
            )
            return [_claimed_of(row) for row in rows]

    def _claim(self, token: str, limit: int) -> list[_Claimed]:
        now = self._now()
        with self._store.transaction() as tx:
            candidates = list(
                tx.session.scalars(
                    select(Reservation.request_id)
                    .where(Reservation.lease_until <= now)
                    .order_by(Reservation.created_at)
                    .limit(limit)
                )
            )
            claimed = []
            for request_id in candidates:
                # Re-checked under the row lock: another run that claimed it first wins.
                result = tx.session.execute(
                    update(Reservation)
                    .where(Reservation.request_id == request_id, Reservation.lease_until <= now)
                    .values(lease_until=now + CLAIM_FOR, claimed_by=token)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(request_id)
            rows = tx.session.scalars(
                select(Reservation)
                .where(Reservation.request_id.in_(claimed))
                .order_by(Reservation.created_at)
                .execution_options(populate_existing=True)
            )
            return [_claimed_of(row) for row in rows]

    def _unclaim(self, token: str) -> None:
        with self._store.transaction() as tx:
            tx.session.execute(
                update(Reservation)
                .where(Reservation.claimed_by == token)
                .values(lease_until=self._now(), claimed_by=None)
                .execution_options(synchronize_session=False)
            )

    @staticmethod
    def _owned(tx: Transaction, upstream_ids: list[str]) -> set[str]:
        owned: set[str] = set()
        for start in range(0, len(upstream_ids), 500):
            chunk = upstream_ids[start : start + 500]
            owned.update(
                str(value)
                for value in tx.session.scalars(
                    select(Video.upstream_id).where(Video.upstream_id.in_(chunk))
                )
            )
        return owned

    # -- settling ------------------------------------------------------------------------

    def _settle(
        self, item: _Claimed, job: dict[str, Any] | None, token: str, dry_run: bool
    ) -> Action:
        upstream_id = str(job["id"]) if job is not None else None
        action = Action(
            "adopted" if job is not None else "refunded",
            item.request_id,
            item.tester_id,
            upstream_id,
            item.video_id or upstream_id,
        )
        if dry_run:
            return action
        unwanted: str | None = None
        try:
            with self._store.transaction() as tx:
                taken = tx.session.execute(
                    delete(Reservation)
                    .where(
                        Reservation.request_id == item.request_id,
                        Reservation.claimed_by == token,
                    )
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    # The worker came back and recorded its outcome after all.
                    return Action("deferred", item.request_id, item.tester_id, upstream_id)
                if item.video_id is not None:
                    if not self._settle_submission(tx, item, job):
                        unwanted = upstream_id
                elif job is not None:
                    self._adopt(tx, item, job)
                else:
                    self._refund(tx, item)
                tx.audit.append(
                    self._actor,
                    f"reservation.{action.action}",
                    item.request_id,
                    reason="lease expired",
                    details={
                        "tester_id": item.tester_id,
                        "video_id": action.video_id,
                        "upstream_id": upstream_id,
                        "generations": item.generations,
                        "video_seconds": item.video_seconds,
                    },
                )
        except IntegrityError:
            # Someone recorded this job for another video meanwhile: look again next run.
            return self._defer(item, token, dry_run=False)
        if unwanted is not None:
            self._backend.cancel(unwanted)
        return action

    def _defer(self, item: _Claimed, token: str, dry_run: bool) -> Action:
        """Give the claim back, expired, for a later run to decide."""
        if not dry_run:
            with self._store.transaction() as tx:
                tx.session.execute(
                    update(Reservation)
                    .where(
                        Reservation.request_id == item.request_id,
                        Reservation.claimed_by == token,
                    )
                    .values(lease_until=self._now(), claimed_by=None)
                    .execution_options(synchronize_session=False)
                )
        return Action("deferred", item.request_id, item.tester_id)

    @staticmethod
    def _adopt(tx: Transaction, item: _Claimed, job: dict[str, Any]) -> None:
        upstream_id = str(job["id"])
        remixed_from = None
        if item.intent.get("remix_of"):
            remixed_from = tx.session.scalar(
                select(Video.id).where(Video.upstream_id == item.intent["remix_of"])
            )
        snapshot = present(job, upstream_id, remixed_from)
        tx.videos.record(
            upstream_id,
            item.tester_id,
            item.key_id,
            snapshot,
            video_seconds=item.video_seconds,
            quota_periods=item.quota_periods,
            quota_state="reserved",
        )
        tx.usage.complete(
            item.request_id, outcome=CREATED, status=200, error_code=None, video_id=upstream_id
        )
        tx.generations.observe(upstream_id, snapshot)

    @staticmethod
    def _refund(tx: Transaction, item: _Claimed) -> None:
        cost = Cost(item.generations, item.video_seconds)
        tx.quotas.give_back(item.tester_id, item.quota_periods, cost, refund=True)
        status = tx.session.scalar(
            select(UsageEvent.status).where(UsageEvent.request_id == item.request_id)
        )
        tx.usage.complete(
            item.request_id,
            outcome=REFUNDED,
            status=status or 502,
            error_code="reservation_expired",
        )

    @staticmethod
    def _settle_submission(tx: Transaction, item: _Claimed, job: dict[str, Any] | None) -> bool:
        """Settle an approved video's lost submission; False when the job found must go
        (the tester deleted the video meanwhile, and with it its quota)."""
        video_id = str(item.video_id)
        if job is None:
            tx.generations.submission_failed(
                video_id, "The generation backend's answer was lost; the quota is refunded."
            )
            return True
        return tx.generations.submitted(video_id, job)

    def _cancel(self, job: dict[str, Any], dry_run: bool) -> Action:
        upstream_id = str(job.get("id"))
        action = Action("cancelled", None, None, upstream_id)
        if dry_run:
            return action
        self._backend.cancel(upstream_id)
        with self._store.transaction() as tx:
            tx.audit.append(
                self._actor,
                "upstream.orphan_cancelled",
                upstream_id,
                reason="no reservation can own this backend job",
                details={"created_at": job.get("created_at"), "model": job.get("model")},
            )
        return action


def _claimed_of(row: Reservation) -> _Claimed:
    return _Claimed(
        request_id=row.request_id,
        tester_id=row.tester_id,
        key_id=row.key_id,
        video_id=row.video_id,
        created_at=row.created_at,
        generations=row.generations,
        video_seconds=row.video_seconds,
        quota_periods=dict(row.quota_periods or {}),
        intent=dict(row.intent or {}),
    )


def _match(
    claimed: list[_Claimed], others: list[_Claimed], jobs: list[dict[str, Any]]
) -> tuple[list[tuple[_Claimed, dict[str, Any] | None]], list[_Claimed], list[dict[str, Any]]]:
    """Pair each claimed reservation with its job (None: refund), list those to defer (a
    candidate job that a reservation outside the claim could own), and the jobs to cancel."""
    jobs = sorted(jobs, key=_created_at)
    owners = {
        id(job): [r for r in claimed + others if _could_own(r.intent, r.created_at, job)]
        for job in jobs
    }
    claimed_ids = {item.request_id for item in claimed}
    taken: set[int] = set()
    cancel: list[dict[str, Any]] = []
    plan: list[tuple[_Claimed, dict[str, Any] | None]] = []
    deferred: list[_Claimed] = []
    for item in claimed:  # oldest first, so each takes the earliest job it could own
        choice: dict[str, Any] | None = None
        wait = False
        for job in jobs:
            if id(job) in taken or item not in owners[id(job)]:
                continue
            if any(r.request_id not in claimed_ids for r in owners[id(job)]):
                wait = True
                break
            if {r.tester_id for r in owners[id(job)]} != {item.tester_id}:
                # Two testers could own it: neither gets it.
                taken.add(id(job))
                cancel.append(job)
                continue
            choice = job
            break
        if wait:
            deferred.append(item)
            continue
        if choice is not None:
            taken.add(id(choice))
        plan.append((item, choice))
    settled = {item.request_id for item, _ in plan}
    for job in jobs:
        # Nobody left who could own it: no reservation at all, or only ones this run settles
        # otherwise.
        if id(job) not in taken and all(r.request_id in settled for r in owners[id(job)]):
            cancel.append(job)
    return plan, deferred, cancel
