"""Anomaly detection: a key used the way leaked keys are used is suspended at once.

Three rules; the thresholds come from the tester's cohort policy (config/policies.toml):

* ``client_ips``: more than ``anomaly_max_client_ips`` distinct client IPs used the key
  within the last ``anomaly_window_seconds`` (a sliding window). A tester works from a
  handful of addresses; a key pasted somewhere public is used from many.
* ``rate``: this minute's requests exceed BOTH ``anomaly_rate_factor`` x the key's own
  baseline AND ``anomaly_rate_floor``. The baseline is the exponentially weighted mean of the
  key's per-minute counts over the BASELINE_MINUTES complete minutes before this one (weight
  0.9 ** age; a minute without requests counts as zero), so it follows the key's usual pace;
  the floor keeps a quiet or new key, whose baseline is near zero, from being suspended for
  an ordinary burst. Attempts refused by the rate limiter count too: a client that ignores
  429s is exactly what this rule is for.
* ``honeytoken``: any use of a key issued only to be watched. The caller gets the answer an
  unknown key gets (``keys.errors.HoneytokenUsed`` is an ``InvalidKey``).

The response is suspension (an admin resumes the key), never revocation: a false alarm costs
the tester a resume, not a new key. A rotated key still in its grace period cannot be
suspended; its grace period is ended instead. The tester's other keys are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from keys.access.lifecycle import KeyService, Principal
from keys.errors import Conflict, HoneytokenUsed
from keys.limits.counters import BASELINE_MINUTES, Counters, minute_of
from keys.records.audit import AuditTrail

ANOMALY_ACTOR = "system:anomaly-detector"
BASELINE_DECAY = 0.9
# A honeytoken that is already suspended alerts again at most this often per key.
HONEYTOKEN_REALERT_SECONDS = 300
_WEIGHTS = tuple(BASELINE_DECAY**age for age in range(BASELINE_MINUTES))
_WEIGHT_SUM = sum(_WEIGHTS)
_BASELINE_CACHE_SIZE = 10_000

Rule = Literal["client_ips", "rate", "honeytoken", "proof_missing"]
Action = Literal["suspended", "grace_ended", "already_stopped", "alerted"]


def baseline(earlier_minutes: tuple[int, ...]) -> float:
    """The exponentially weighted mean of per-minute counts, newest first."""
    return sum(w * c for w, c in zip(_WEIGHTS, earlier_minutes, strict=False)) / _WEIGHT_SUM


@dataclass(frozen=True)
class Anomaly:
    """A rule that fired for one key, with the numbers that made it fire."""

    rule: Rule
    key_id: str
    tester_id: str
    hint: str
    client_ip: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def details(self, action: Action) -> dict[str, Any]:
        """What the audit trail and the alert record: never the secret, only id and hint."""
        return {
            "rule": self.rule,
            "action": action,
            "key_id": self.key_id,
            "key_hint": self.hint,
            "tester_id": self.tester_id,
            "client_ip": self.client_ip,
            **self.numbers,
        }

    def alert(self, action: Action, at: datetime) -> dict[str, Any]:
        """A Slack-compatible message (``text``) with the structured fields beside it."""
        done = {
            "suspended": "suspended",
            "grace_ended": "ended the rotation grace period of",
            "already_stopped": "saw another use of (already stopped)",
            "alerted": "saw a stranger try",
        }[action]
        text = (
            f":rotating_light: Drawbridge {done} key {self.key_id} ({self.hint}) of tester "
            f"{self.tester_id}: {self.reason}. Last client: {self.client_ip}."
        )
        if action == "suspended":
            text += f" Resume it with `drawbridge keys resume {self.key_id}` when it is safe."
        return {
            "text": text,
            "event": "drawbridge.anomaly",
            "at": at.isoformat(),
            **self.details(action),
        }


class AnomalyDetector:
    """Counts each verified request and applies the rules of the key's policy."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        # A baseline is made of complete minutes only, so it is fixed for the rest of the
        # minute: read once per key and minute, not on every request.
        self._baselines: dict[tuple[str, int], float] = {}

    def observe(self, principal: Principal, client_ip: str, now: float) -> Anomaly | None:
        """Count this request; the anomaly it completes, if any.

        Raises keys.limits.counters.CountersUnavailable.
        """
        policy = principal.policy
        window = policy.anomaly_window_seconds
        activity = self.counters.record(principal.key_id, client_ip, now, window)
        limit = policy.anomaly_max_client_ips
        if limit and activity.client_ips > limit:
            return self._anomaly(
                principal,
                "client_ips",
                client_ip,
                f"{activity.client_ips} distinct client IPs within {window} s (limit {limit})",
                {"client_ips": activity.client_ips, "limit": limit, "window_seconds": window},
            )
        factor, floor = policy.anomaly_rate_factor, policy.anomaly_rate_floor
        if factor and activity.this_minute > floor:
            usual = self._baseline(principal.key_id, now)
            if activity.this_minute > factor * usual:
                return self._anomaly(
                    principal,
                    "rate",
                    client_ip,
                    f"{activity.this_minute} requests this minute, more than {factor} x its "
                    f"baseline of {usual:.1f}/min and more than {floor}",
                    {
                        "requests_this_minute": activity.this_minute,
                        "baseline_per_minute": round(usual, 2),
                        "factor": factor,
                        "floor": floor,
                    },
                )
        return None

    def proof_failure(self, principal: Principal, client_ip: str, now: float) -> Anomaly | None:
        """Count a request of a proof-bound key that came without a valid proof: the key
        string is in someone else's hands. The anomaly once ``proof_alert_after`` of them
        fall in one minute, at most once per anomaly window per key, whichever worker
        counts it.

        Raises keys.limits.counters.CountersUnavailable.
        """
        policy = principal.policy
        limit = policy.proof_alert_after
        if not limit:
            return None
        window = policy.anomaly_window_seconds
        activity = self.counters.record(f"proof:{principal.key_id}", client_ip, now, window)
        if activity.this_minute < limit:
            return None
        if not self.counters.claim(f"proof_missing:{principal.key_id}", window, now):
            return None
        return self._anomaly(
            principal,
            "proof_missing",
            client_ip,
            f"{activity.this_minute} requests this minute with its key string but no valid "
            "proof: the string is in someone else's hands",
            {"requests_this_minute": activity.this_minute, "limit": limit},
        )

    def honeytoken(self, used: HoneytokenUsed, client_ip: str) -> Anomaly:
        return Anomaly(
            "honeytoken",
            used.key_id,
            used.tester_id,
            used.hint,
            client_ip,
            "a honeytoken key was used"
            + (
                " (proof-bound: its string alone could not have been used)"
                if used.proof_bound
                else ""
            ),
            {"proof_bound": used.proof_bound},
        )

    def alert_again(self, anomaly: Anomaly, now: float) -> bool:
        """Whether a use of an already stopped key should alert (at most every few minutes).

        Raises keys.limits.counters.CountersUnavailable.
        """
        name = f"{anomaly.rule}:{anomaly.key_id}"
        return self.counters.claim(name, HONEYTOKEN_REALERT_SECONDS, now)

    def _baseline(self, key_id: str, now: float) -> float:
        cache_key = (key_id, minute_of(now))
        usual = self._baselines.get(cache_key)
        if usual is None:
            if len(self._baselines) >= _BASELINE_CACHE_SIZE:
                self._baselines.clear()
            usual = self._baselines[cache_key] = baseline(
                self.counters.earlier_minutes(key_id, now)
            )
        return usual

    @staticmethod
    def _anomaly(
        principal: Principal, rule: Rule, client_ip: str, reason: str, numbers: dict[str, Any]
    ) -> Anomaly:
        return Anomaly(
            rule, principal.key_id, principal.tester_id, principal.hint, client_ip, reason, numbers
        )


def stop_key(
    keys: KeyService, audit: AuditTrail, anomaly: Anomaly, *, record_if_stopped: bool = False
) -> Action | None:
    """Suspend the key (or end its rotation grace period) and record the anomaly.

    Returns what was done, or None when the key was no longer usable (another worker acted
    first) and ``record_if_stopped`` is false. Raises NotFound.
    """
    reason = f"anomaly {anomaly.rule}: {anomaly.reason}"
    action: Action
    try:
        keys.suspend(anomaly.key_id, ANOMALY_ACTOR, reason)
        action = "suspended"
    except Conflict:
        try:
            keys.end_grace(anomaly.key_id, ANOMALY_ACTOR, reason)
            action = "grace_ended"
        except Conflict:
            if not record_if_stopped:
                return None
            action = "already_stopped"
    audit.append(
        ANOMALY_ACTOR, "anomaly.detected", anomaly.key_id, reason, details=anomaly.details(action)
    )
    return action
