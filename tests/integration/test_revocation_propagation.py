"""A revocation is in force on every instance and worker the moment the admin call returns.

Two gateway instances x two gunicorn workers on PostgreSQL (where each worker reuses its hot
read until a commit notice arrives, for at most ``REUSE_SECONDS``, and a revoke waits that
long after its commit: keys/commit_notices.py), and again on one SQLite file (where each
worker reuses its hot read until a commit renews the stamp: keys/commit_stamp.py), Redis for
the counters; client threads hammer ``GET /v1/videos/{id}`` with one key on both instances
while the key is revoked (or the program locked down) through one instance's admin API. The
bounded version of ``python -m bench.revocation`` (same stack, same trial code).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from bench.revocation import PropagationStack, Trial, lockdown_trial, revoke_trial
from keys.db import REUSE_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture(scope="module")
def live_redis_url(fleet_redis_server: str) -> str:
    url = fleet_redis_server
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(
    scope="module", params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"]
)
def stack(request: pytest.FixtureRequest, live_redis_url: str) -> Iterator[PropagationStack]:
    sqlite = request.param == "sqlite"
    with PropagationStack(
        "" if sqlite else request.getfixturevalue("postgres_server"),
        live_redis_url,
        sqlite=sqlite,
        instances=2,
        workers=2,
        threads=4,
        extra_env={"DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE": "1000000"},
    ) as stack:
        yield stack


def _assert_in_force_at_return(stack: PropagationStack, trial: Trial) -> None:
    report = [
        (o.instance, o.requests, o.admitted, o.refused, o.other, o.last_admitted_start)
        for o in trial.instances
    ]
    assert trial.violations == 0, report
    # No window at all: nothing sent after the return is served, also where rows are reused.
    assert trial.admitted_after_return == 0, report
    for outcome in trial.instances:
        # Each instance served the key before and refused it after, with nothing else.
        assert outcome.admitted > 0 and outcome.refused > 0, (report, stack.log_tails())
        assert outcome.other == {}, report
        assert outcome.last_admitted_start is not None and outcome.last_admitted_start < 0.1
    if not stack.sqlite:
        # The write waited out the reuse bound before answering (keys/db.py).
        assert trial.action_seconds >= REUSE_SECONDS


def test_no_request_starting_after_the_revoke_returned_is_admitted(
    stack: PropagationStack,
) -> None:
    # Revoked through instance 1; both instances are watched.
    trial = revoke_trial(stack, action_instance=1, clients_per_instance=3, warmup=0.8, after=0.8)
    _assert_in_force_at_return(stack, trial)


def test_no_request_starting_after_lockdown_returned_is_admitted(
    stack: PropagationStack,
) -> None:
    trial = lockdown_trial(stack, action_instance=0, clients_per_instance=3, warmup=0.8, after=0.8)
    _assert_in_force_at_return(stack, trial)
    # Lifted, the program serves again on both instances.
    assert all(o.first_admit_after_lift is not None for o in trial.instances), trial.instances
