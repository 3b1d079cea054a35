"""Reservations past their lease: the reconciler adopts the backend's job or refunds, once,
however many reconcilers run (keys/generations/reconcile.py), against the real simulator over
HTTP."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from gateway.settings import Secret, Settings, SettingsError
from gateway.simulator import SimulatorOptions, create_simulator_app
from gateway.state import build_state, build_store
from gateway.upstream.client import UpstreamClient
from gateway.upstream.reconciler import ReconcileSweep, UpstreamBackend
from keys.access.lifecycle import IssuedKey, Principal
from keys.access.vault import Vault
from keys.generations.ledger import ReservationSettled, cost_of, intent_of
from keys.generations.reconcile import Reconciler
from keys.limits.policies import GenerationRequest
from keys.models import AuditEntry, QuotaUsage, Reservation, UsageEvent, Video
from keys.records.usage import UsageRecord
from keys.store import Store
from tests.helpers import Cli, FakeClock, free_port

pytestmark = pytest.mark.both_databases

LEASE = timedelta(seconds=120)
SIM_KEY = "sk-sim-reconcile"


class Simulator:
    """The simulated backend on a free port, and a client for the test's own calls."""

    def __init__(self, job_seconds: float) -> None:
        app = create_simulator_app(SimulatorOptions(api_key=SIM_KEY, job_seconds=job_seconds))
        self.port = free_port()
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {SIM_KEY}"

    def create(self, request: GenerationRequest) -> dict[str, Any]:
        body = {
            "prompt": request.prompt,
            "model": request.model,
            "size": request.size,
            "seconds": str(request.seconds),
        }
        answer = self._http.post(f"{self.url}/videos", json=body, timeout=5)
        answer.raise_for_status()
        video: dict[str, Any] = answer.json()
        return video

    def ids(self) -> set[str]:
        answer = self._http.get(f"{self.url}/videos", params={"limit": "100"}, timeout=5)
        return {item["id"] for item in answer.json()["data"]}

    def close(self) -> None:
        self._server.shutdown()
        self._http.close()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(job_seconds=600)
    yield sim
    sim.close()


@pytest.fixture
def videos(simulator: Simulator) -> Iterator[UpstreamBackend]:
    client = UpstreamClient(simulator.url, Secret(SIM_KEY), read_timeout=5, deadline=10)
    yield UpstreamBackend(client)
    client.close()


@pytest.fixture
def principal_of(store: Store) -> Callable[[IssuedKey], Principal]:
    def of(key: IssuedKey) -> Principal:
        principal, _ = store.check_key(key.secret)
        return principal

    return of


def admit(
    store: Store, principal: Principal, request: GenerationRequest, request_id: str
) -> dict[str, str]:
    """What the gateway does before its upstream call: reserve, record, lease."""
    event = UsageRecord(
        at=store.clock(),
        request_id=request_id,
        method="POST",
        route="/v1/videos",
        status=0,
        outcome="admitted",
        key_id=principal.key_id,
        tester_id=principal.tester_id,
        cohort=principal.cohort,
    )
    with store.transaction() as tx:
        return tx.generations.admit(principal, cost_of(request), event, intent_of(request), LEASE)


def used(store: Store, tester_id: str) -> dict[str, int]:
    with store.read() as tx:
        totals: dict[str, int] = {}
        for row in tx.session.scalars(select(QuotaUsage).where(QuotaUsage.tester_id == tester_id)):
            totals[row.metric] = totals.get(row.metric, 0) + row.used
        return totals


def outcome(store: Store, request_id: str) -> tuple[str, str | None]:
    with store.read() as tx:
        event = tx.session.scalars(
            select(UsageEvent).where(UsageEvent.request_id == request_id)
        ).one()
        return event.outcome, event.video_id


def reservations(store: Store) -> int:
    with store.read() as tx:
        return int(tx.session.scalar(select(func.count()).select_from(Reservation)) or 0)


def audit_actions(store: Store) -> list[tuple[str, str]]:
    with store.read() as tx:
        return [
            (entry.action, entry.target)
            for entry in tx.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.actor == "system:reconciler")
                .order_by(AuditEntry.seq)
            )
        ]


RESERVED = {
    "generations_per_day": 1,
    "video_seconds_per_day": 4,
    "video_seconds_per_month": 4,
    "concurrent_jobs": 1,
}
ZERO = dict.fromkeys(RESERVED, 0)


def test_a_lease_that_has_not_run_out_is_left_alone(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    admit(store, principal, GenerationRequest(prompt="a kite"), "req_inflight")
    clock.advance(seconds=119)

    report = Reconciler(store, videos).run()

    assert report.expired == 0 and report.actions == []
    assert used(store, principal.tester_id) == RESERVED
    assert reservations(store) == 1


def test_an_expired_reservation_with_no_job_upstream_is_refunded_once(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    admit(store, principal, GenerationRequest(prompt="a kite"), "req_dead")
    clock.advance(seconds=121)

    report = Reconciler(store, videos).run()

    assert [(a.action, a.request_id) for a in report.actions] == [("refunded", "req_dead")]
    assert used(store, principal.tester_id) == ZERO
    assert outcome(store, "req_dead") == ("refunded", None)
    assert reservations(store) == 0
    assert audit_actions(store) == [("reservation.refunded", "req_dead")]
    # Nothing is left to do, and nothing is refunded twice.
    assert Reconciler(store, videos).run().actions == []
    assert used(store, principal.tester_id) == ZERO


def test_an_orphan_job_upstream_is_adopted_as_the_testers_video(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="a kite over the sea", seconds=4)
    admit(store, principal, request, "req_lost")
    job = simulator.create(request)  # the worker died before it recorded this answer
    simulator.create(GenerationRequest(prompt="someone else's thing"))  # not a match
    clock.advance(seconds=121)

    report = Reconciler(store, videos).run()

    adopted = [a for a in report.actions if a.action == "adopted"]
    assert [(a.request_id, a.upstream_id) for a in adopted] == [("req_lost", job["id"])]
    with store.read() as tx:
        video = tx.videos.owned(job["id"], principal.tester_id)
        assert (video.quota_state, video.upstream_id) == ("reserved", job["id"])
        assert video.snapshot["prompt"] == "a kite over the sea"
    # Charged like any creation: still running, so the job slot stays taken.
    assert used(store, principal.tester_id) == RESERVED
    assert outcome(store, "req_lost") == ("created", job["id"])
    assert ("reservation.adopted", "req_lost") in audit_actions(store)


def test_cancelling_a_job_id_the_backend_could_never_serve_is_a_no_op(
    simulator: Simulator, videos: UpstreamBackend
) -> None:
    # The backend's listing is not trusted to hold well-formed ids: one that no request could
    # address (a slash, a dot) is nothing to cancel, and must not stop the reconciler's run.
    running = simulator.create(GenerationRequest(prompt="a real job"))
    for listed in ("a/b", "..", "x" * 129, ""):
        videos.cancel(listed)
    videos.cancel(running["id"])
    assert running["id"] not in simulator.ids()


def test_a_job_no_reservation_can_own_is_cancelled_upstream(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    admit(store, principal, GenerationRequest(prompt="a kite"), "req_dead")
    stray = simulator.create(GenerationRequest(prompt="nobody asked for this"))
    clock.advance(seconds=121)

    report = Reconciler(store, videos).run()

    assert sorted(a.action for a in report.actions) == ["cancelled", "refunded"]
    assert stray["id"] not in simulator.ids()
    assert ("upstream.orphan_cancelled", stray["id"]) in audit_actions(store)


def test_a_job_two_testers_could_own_goes_to_neither(
    store: Store,
    clock: FakeClock,
    make_key: Callable[..., IssuedKey],
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    first, second = principal_of(make_key()), principal_of(make_key())
    request = GenerationRequest(prompt="the same words")
    admit(store, first, request, "req_first")
    admit(store, second, request, "req_second")
    job = simulator.create(request)
    clock.advance(seconds=121)

    report = Reconciler(store, videos).run()

    assert sorted(a.action for a in report.actions) == ["cancelled", "refunded", "refunded"]
    assert job["id"] not in simulator.ids()
    assert used(store, first.tester_id) == ZERO
    assert used(store, second.tester_id) == ZERO


def test_a_job_a_request_in_flight_could_own_defers_the_decision(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="twice the same")
    admit(store, principal, request, "req_dead")
    clock.advance(seconds=121)
    admit(store, principal, request, "req_live")  # its lease runs; its job is upstream now
    job = simulator.create(request)

    report = Reconciler(store, videos).run()

    assert [(a.action, a.request_id) for a in report.actions] == [("deferred", "req_dead")]
    assert job["id"] in simulator.ids()
    # The live request records its video; the next run finds nothing for the dead one.
    with store.transaction() as tx:
        tx.generations.created(principal, job, cost_of(request), {}, "req_live", 1.0)
    report = Reconciler(store, videos).run()
    assert [(a.action, a.request_id) for a in report.actions] == [("refunded", "req_dead")]
    assert job["id"] in simulator.ids()


def test_a_worker_that_outlived_its_lease_cannot_settle_twice(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="slow")
    earlier = admit(store, principal, request, "req_done")
    with store.transaction() as tx:
        done = {"id": "video_done", "status": "queued"}
        tx.generations.created(principal, done, cost_of(request), earlier, "req_done", 1.0)
    periods = admit(store, principal, request, "req_slow")
    clock.advance(seconds=121)
    Reconciler(store, videos).run()  # refunds: no job upstream yet
    assert used(store, principal.tester_id) == RESERVED

    # The worker comes back: neither its refund nor its video counts again.
    with store.transaction() as tx:
        tx.generations.not_created(
            principal.tester_id, cost_of(request), periods, "req_slow", 502, "x"
        )
    with pytest.raises(ReservationSettled), store.transaction() as tx:
        snapshot = {"id": "video_late", "status": "queued"}
        tx.generations.created(principal, snapshot, cost_of(request), periods, "req_slow", 1.0)
    assert used(store, principal.tester_id) == RESERVED
    with store.read() as tx:
        assert tx.session.get(Video, "video_late") is None


class ListingHook:
    """The real backend, with something happening while the reconciler lists it."""

    def __init__(self, backend: UpstreamBackend, during: Callable[[], None]) -> None:
        self._backend = backend
        self._during = during

    def videos_since(self, since: datetime) -> list[dict[str, Any]]:
        jobs = list(self._backend.videos_since(since))
        self._during()
        return jobs

    def cancel(self, upstream_id: str) -> None:
        self._backend.cancel(upstream_id)


def test_a_worker_that_records_its_job_while_the_reconciler_lists_wins(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="just in time")
    periods = admit(store, principal, request, "req_late")
    job = simulator.create(request)
    clock.advance(seconds=121)

    def worker_records() -> None:
        with store.transaction() as tx:
            tx.generations.created(principal, job, cost_of(request), periods, "req_late", 1.0)

    report = Reconciler(store, ListingHook(videos, worker_records)).run()

    assert [a.action for a in report.actions] == ["deferred"]
    assert used(store, principal.tester_id) == RESERVED
    assert outcome(store, "req_late") == ("created", job["id"])
    assert audit_actions(store) == []


def test_a_dry_run_changes_nothing(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="maybe")
    admit(store, principal, request, "req_maybe")
    job = simulator.create(request)
    clock.advance(seconds=121)

    report = Reconciler(store, videos).run(dry_run=True)

    assert [(a.action, a.upstream_id) for a in report.actions] == [("adopted", job["id"])]
    assert reservations(store) == 1
    assert audit_actions(store) == []
    assert Reconciler(store, videos).run().count("adopted") == 1


def test_concurrent_reconcilers_settle_each_reservation_once(
    settings: Settings,
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
    videos: UpstreamBackend,
) -> None:
    principal = principal_of(key)
    with store.transaction() as tx:
        tx.policies.set_overrides(
            principal.tester_id,
            {"generations_per_day": 100, "concurrent_jobs": 100, "video_seconds_per_day": 1000},
            "test:setup",
        )
    principal = principal_of(key)
    count = 24
    for index in range(count):
        request = GenerationRequest(prompt=f"job {index}")
        admit(store, principal, request, f"req_{index:02d}")
        if index % 2 == 0:
            simulator.create(request)  # half of them reached the backend
    clock.advance(seconds=121)
    # Another gateway: its own engine and connection pool on the same database.
    other = build_store(settings, Vault(settings.root_secret.reveal()))  # type: ignore[union-attr]
    other.clock = clock
    reports = []
    barrier = threading.Barrier(4)

    def sweep(on: Store) -> None:
        barrier.wait()
        # Small batches, so the runs interleave claim by claim.
        while (report := Reconciler(on, videos).run(limit=3)).expired:
            reports.append(report)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in (store, other, store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    other.database.dispose()

    actions = [a for report in reports for a in report.actions]
    assert sorted(a.request_id or "" for a in actions if a.action != "deferred") == [
        f"req_{index:02d}" for index in range(count)
    ]
    assert sum(report.count("adopted") for report in reports) == count // 2
    assert reservations(store) == 0
    # The ledger holds exactly the adopted (still running) jobs.
    assert used(store, principal.tester_id) == {
        "generations_per_day": count // 2,
        "video_seconds_per_day": 4 * count // 2,
        "video_seconds_per_month": 4 * count // 2,
        "concurrent_jobs": count // 2,
    }
    assert len(audit_actions(store)) == count


@pytest.fixture
def key(make_key: Callable[..., IssuedKey]) -> IssuedKey:
    return make_key()


def test_each_worker_sweeps_in_the_background(
    store: Store,
    clock: FakeClock,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="found by the sweep")
    admit(store, principal, request, "req_swept")
    job = simulator.create(request)
    clock.advance(seconds=121)
    client = UpstreamClient(simulator.url, Secret(SIM_KEY), read_timeout=5, deadline=10)
    sweep = ReconcileSweep(store, client, interval=0.2)
    try:
        sweep.ensure_running()
        wait_until(lambda: reservations(store) == 0, 10, "the sweep to settle the reservation")
    finally:
        sweep.stop()
        client.close()
    assert outcome(store, "req_swept") == ("created", job["id"])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_drawbridge_reconcile(
    cli: Cli,
    store: Store,
    key: IssuedKey,
    principal_of: Callable[[IssuedKey], Principal],
    simulator: Simulator,
) -> None:
    principal = principal_of(key)
    request = GenerationRequest(prompt="via the command line")
    admit(store, principal, request, "req_cli")  # by the test clock, long expired by now
    job = simulator.create(request)
    env = {"DRAWBRIDGE_UPSTREAM_URL": simulator.url, "DRAWBRIDGE_UPSTREAM_API_KEY": SIM_KEY}

    dry = cli("reconcile", "--dry-run", "--json", env=env)
    assert json.loads(dry.output)["adopted"] == 1
    assert reservations(store) == 1

    done = cli("reconcile", env=env)
    assert "1 adopted, 0 refunded" in done.output and job["id"] in done.output
    assert reservations(store) == 0
    with store.read() as tx:
        (entry,) = tx.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "reservation.adopted")
        )
        assert entry.actor.startswith("cli:") and entry.target == "req_cli"

    unreachable = {**env, "DRAWBRIDGE_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1"}
    cli("reconcile", env=unreachable)  # nothing expired: the backend is not asked
    admit(store, principal, request, "req_cli_2")
    down = cli("reconcile", env=unreachable, code=1)
    assert "the generation backend" in down.output
    # The claim is given back: the next run (here, with the backend back) settles it.
    assert json.loads(cli("reconcile", "--json", env=env).output)["expired"] == 1


def test_a_lease_shorter_than_the_upstream_deadline_is_refused(settings: Settings) -> None:
    too_short = dataclasses.replace(settings, reservation_lease_seconds=settings.upstream_deadline)
    with pytest.raises(SettingsError, match="reservation_lease_seconds"):
        build_state(too_short)
