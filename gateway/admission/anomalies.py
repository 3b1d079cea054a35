"""Anomaly detection on the request path: count, and on a trip stop the key and alert.

``keys.leaks.anomalies`` holds the rules; this module runs them for a verified request, suspends
the key in its own transaction (recorded in the audit trail by ``system:anomaly-detector``),
refuses the request, and hands the alert to the webhook thread. While Redis cannot be
reached the counters count in process memory (``keys.limits.counters.FallbackCounters``); should
counters fail all the same, the request goes on undetected (and is logged) — the key check
itself never depends on Redis and still fails closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.admission.alerts import AlertSender
from keys.access.lifecycle import REFUSAL_MESSAGES, Principal
from keys.errors import HoneytokenUsed, KeyRejected
from keys.leaks.anomalies import ANOMALY_ACTOR, Anomaly, AnomalyDetector, stop_key
from keys.limits.counters import Counters, CountersUnavailable, FallbackCounters, RedisCounters
from keys.store import Store

log = logging.getLogger("drawbridge.anomalies")

_WARN_EVERY_SECONDS = 60.0


class AnomalyWatch:
    def __init__(self, counters: Counters, alerts: AlertSender, store: Store) -> None:
        self.detector = AnomalyDetector(counters)
        self.alerts = alerts
        self._store = store
        self._warned_at = 0.0
        # Set by gateway.observability.metrics: told of every rule that stopped a key
        # (rule, action).
        self.on_trip: Callable[[str, str], None] | None = None

    @property
    def counters(self) -> Counters:
        return self.detector.counters

    def watch(self, principal: Principal, client_ip: str) -> None:
        """Count a verified request. Raises KeyRejected when it trips a rule (the key has
        been stopped by then)."""
        try:
            anomaly = self.detector.observe(principal, client_ip, self._now())
        except CountersUnavailable as exc:
            self._warn(exc)
            return
        if anomaly is None:
            return
        action = self._respond(anomaly, record_if_stopped=False)
        code = "key_rotated" if action == "grace_ended" else "key_suspended"
        rejection = KeyRejected(REFUSAL_MESSAGES[code], code=code)
        rejection.key_id = principal.key_id
        raise rejection

    def proof_failed(self, principal: Principal, client_ip: str) -> None:
        """Count a bound key used without a valid proof; past the policy's threshold, alert
        (and suspend the key only where the policy says so)."""
        try:
            anomaly = self.detector.proof_failure(principal, client_ip, self._now())
        except CountersUnavailable as exc:
            self._warn(exc)
            return
        if anomaly is None:
            return
        if principal.policy.suspend_on_missing_proof:
            self._respond(anomaly, record_if_stopped=True)
            return
        with self._store.transaction() as tx:
            tx.audit.append(
                ANOMALY_ACTOR,
                "anomaly.detected",
                anomaly.key_id,
                f"anomaly {anomaly.rule}: {anomaly.reason}",
                details=anomaly.details("alerted"),
            )
        log.warning("anomaly %s on key %s: %s", anomaly.rule, anomaly.key_id, anomaly.reason)
        self.alerts.send(anomaly.alert("alerted", self._store.clock()))
        if self.on_trip is not None:
            self.on_trip(anomaly.rule, "alerted")

    def honeytoken_used(self, used: HoneytokenUsed, client_ip: str) -> None:
        """Stop a honeytoken that was presented and raise the alarm (the caller still
        refuses the request as if the key were unknown)."""
        anomaly = self.detector.honeytoken(used, client_ip)
        # The first use suspends the key and alerts; later uses alert again only once the
        # claim taken here has expired, whichever worker or instance sees them.
        try:
            again = self.detector.alert_again(anomaly, self._now())
        except CountersUnavailable as exc:
            self._warn(exc)
            again = False
        self._respond(anomaly, record_if_stopped=again)

    def _respond(self, anomaly: Anomaly, *, record_if_stopped: bool) -> str | None:
        with self._store.transaction() as tx:
            action = stop_key(tx.keys, tx.audit, anomaly, record_if_stopped=record_if_stopped)
        if action is not None:
            log.warning(
                "anomaly %s on key %s: %s (%s)",
                anomaly.rule,
                anomaly.key_id,
                anomaly.reason,
                action,
            )
            self.alerts.send(anomaly.alert(action, self._store.clock()))
            if self.on_trip is not None:
                self.on_trip(anomaly.rule, action)
        return action

    def _now(self) -> float:
        return self._store.clock().timestamp()

    def _warn(self, exc: CountersUnavailable) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.error("anomaly detection skipped, counters unavailable: %s", exc)

    def close(self) -> None:
        self.alerts.close()
        if isinstance(self.counters, RedisCounters | FallbackCounters):
            self.counters.close()
