"""Quotas in the domain's units: generations and video-seconds per day and month, and
concurrent jobs.

A creation *reserves* its cost before the upstream call; the reservation is *settled* when
the video completes (only the job slot is given back) or *refunded* when the upstream call or
the generation fails. Each reservation is one conditional ``UPDATE ... SET used = used + n
WHERE used + n <= limit`` per quota inside one transaction: SQLite's ``BEGIN IMMEDIATE``
serializes them, PostgreSQL's row lock re-checks the condition, so concurrent requests on any
number of workers and instances can never overspend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from keys.db import insert_ignoring_duplicates
from keys.errors import QuotaExceeded
from keys.limits.policies import Policy
from keys.models import QuotaUsage


@dataclass(frozen=True)
class Cost:
    generations: int
    video_seconds: int

    @property
    def jobs(self) -> int:
        """A generation holds one job slot until its video completes or fails."""
        return 1 if self.generations else 0


@dataclass(frozen=True)
class Quota:
    metric: str
    period: str
    limit: int
    amount: int
    resets_at: datetime | None


@dataclass(frozen=True)
class QuotaStatus:
    metric: str
    limit: int
    used: int
    resets_at: datetime | None

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


Period = Literal["day", "month", "slot"]
Counted = Literal["generations", "video_seconds", "jobs"]

# Every quota, in the order a reservation touches (and on PostgreSQL, locks) its rows: the
# metric, which is also the name of its limit in the Policy; the period it is counted over
# ("slot": a job slot is held until given back, it never resets); and what of a Cost it
# counts (a field of Cost).
QUOTA_METRICS: tuple[tuple[str, Period, Counted], ...] = (
    ("generations_per_day", "day", "generations"),
    ("video_seconds_per_day", "day", "video_seconds"),
    ("video_seconds_per_month", "month", "video_seconds"),
    ("concurrent_jobs", "slot", "jobs"),
)
METRIC_ORDER = tuple(metric for metric, _, _ in QUOTA_METRICS)


def _periods(now: datetime) -> dict[Period, tuple[str, datetime | None]]:
    """Each period's key in the quota rows now, and when it resets."""
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = day_start + timedelta(days=1)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return {
        "day": (f"d:{day_start:%Y-%m-%d}", next_day),
        "month": (f"m:{month_start:%Y-%m}", next_month),
        "slot": ("", None),
    }


def quotas_for(policy: Policy, cost: Cost, now: datetime) -> list[Quota]:
    """The quotas a request of this cost draws on, under this policy, now."""
    periods = _periods(now)
    quotas = []
    for metric, period, counted in QUOTA_METRICS:
        key, resets_at = periods[period]
        limit, amount = getattr(policy, metric), getattr(cost, counted)
        quotas.append(Quota(metric, key, limit, amount, resets_at))
    return quotas


# Compiled once; the ORM's session synchronisation has nothing to do for these rows.
_RESERVE = (
    update(QuotaUsage)
    .where(
        QuotaUsage.tester_id == bindparam("tester"),
        QuotaUsage.metric == bindparam("q_metric"),
        QuotaUsage.period == bindparam("q_period"),
        QuotaUsage.used + bindparam("amount") <= bindparam("allowed"),
    )
    .values(used=QuotaUsage.used + bindparam("amount"))
    .execution_options(synchronize_session=False)
)


class QuotaService:
    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock

    def reserve(self, tester_id: str, policy: Policy, cost: Cost) -> dict[str, str]:
        """Reserve a request's cost on every quota, or none. Returns the periods reserved
        (needed to give them back). Raises QuotaExceeded; the caller's transaction must then
        roll back, which it does when the exception leaves the ``transaction()`` block."""
        periods = {}
        for quota in quotas_for(policy, cost, self._clock()):
            if quota.amount == 0:
                continue
            params = {
                "tester": tester_id,
                "q_metric": quota.metric,
                "q_period": quota.period,
                "amount": quota.amount,
                "allowed": quota.limit,
            }
            if not self._take(params):
                # The period's first reservation has no row yet (or the quota is spent):
                # create the row if missing, then try once more.
                insert_ignoring_duplicates(
                    self._session,
                    QuotaUsage,
                    {
                        "tester_id": tester_id,
                        "metric": quota.metric,
                        "period": quota.period,
                        "used": 0,
                    },
                )
                if not self._take(params):
                    used = self._used(tester_id, quota.metric, quota.period)
                    raise QuotaExceeded(quota, used, self._clock())
            periods[quota.metric] = quota.period
        return periods

    def _take(self, params: dict[str, object]) -> bool:
        result = self._session.execute(_RESERVE, params)
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def give_back(
        self, tester_id: str, periods: dict[str, str], cost: Cost, *, refund: bool
    ) -> None:
        """Free the job slot; with ``refund``, also return the generation and seconds."""
        # Rows are locked in the order reserve() locks them: PostgreSQL would otherwise
        # deadlock a refund against a concurrent reservation of the same tester.
        for metric, _, counted in QUOTA_METRICS:
            amount = getattr(cost, counted) if refund or counted == "jobs" else 0
            if metric not in periods or amount == 0:
                continue
            self._session.execute(
                update(QuotaUsage)
                .where(
                    QuotaUsage.tester_id == tester_id,
                    QuotaUsage.metric == metric,
                    QuotaUsage.period == periods[metric],
                    QuotaUsage.used >= amount,
                )
                .values(used=QuotaUsage.used - amount)
            )

    def status(self, tester_id: str, policy: Policy) -> list[QuotaStatus]:
        """Every quota of the tester now: limit, used, and when it resets."""
        statuses = []
        for quota in quotas_for(policy, Cost(1, 0), self._clock()):
            used = self._used(tester_id, quota.metric, quota.period)
            statuses.append(QuotaStatus(quota.metric, quota.limit, used, quota.resets_at))
        return statuses

    def _used(self, tester_id: str, metric: str, period: str) -> int:
        used = self._session.scalar(
            select(QuotaUsage.used).where(
                QuotaUsage.tester_id == tester_id,
                QuotaUsage.metric == metric,
                QuotaUsage.period == period,
            )
        )
        return int(used or 0)
