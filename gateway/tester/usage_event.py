"""Usage events from the HTTP edge: what each tester request was, and how it ended.

Everything a client controls (path segment, user agent, forwarded address, method) is
cleaned before it is stored: a value shaped like a key or token is masked, so a tester who
pastes a key into a User-Agent or a URL does not put it into the database, the exports or
an auditor's spreadsheet.
"""

from __future__ import annotations

import ipaddress
import re
import time
from functools import lru_cache

from gateway.http.current import current_context, current_request, current_state
from gateway.upstream.client import VIDEO_ID
from keys.records.usage import FAILED, OK, REFUSED, UsageRecord

REDACTED = "[REDACTED]"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _redact(text: str, patterns: tuple[re.Pattern[str], ...]) -> str:
    for pattern in patterns:
        text = pattern.sub(REDACTED, text)
    return text


@lru_cache(maxsize=4096)
def stored_client_ip(value: str | None) -> str | None:
    """The client address as usage records keep it (normalised), None when not an address."""
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return None


def usage_record(status: int, outcome: str | None = None) -> UsageRecord:
    """This request as a usage event (status and outcome as known now)."""
    state = current_state()
    context, incoming = current_context(), current_request()
    # KeyFormat.embedded, not .pattern: "x_drwb_<body>" still holds the whole key.
    secrets = (state.store.key_format.embedded, state.store.token_format.embedded)
    principal = context.principal
    rule = incoming.url_rule.rule if incoming.url_rule is not None else "(unmatched)"
    started = context.started
    video_id = (incoming.view_args or {}).get("video_id")
    if not isinstance(video_id, str) or not VIDEO_ID.fullmatch(video_id):
        video_id = None
    elif _redact(video_id, secrets) != video_id:
        video_id = REDACTED
    user_agent = _redact(incoming.headers.get("User-Agent", ""), secrets)[:300] or None
    return UsageRecord(
        at=state.store.clock(),
        request_id=context.request_id,
        method=incoming.method if incoming.method in _METHODS else "OTHER",
        route=rule[:64],
        status=status,
        outcome=outcome or (OK if status < 400 else REFUSED if status < 500 else FAILED),
        key_id=principal.key_id if principal else context.attempted_key_id,
        tester_id=principal.tester_id if principal else None,
        cohort=principal.cohort if principal else None,
        video_id=video_id,
        error_code=context.error_code,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        upstream_latency_ms=context.upstream_ms,
        client_ip=stored_client_ip(incoming.remote_addr),
        user_agent=user_agent,
    )


def counted_not_recorded(status: int) -> bool:
    """Whether this request is a refusal counted in ``usage_refusals`` instead of an event:
    a 4xx answer to a request no key was admitted for (no key, an unknown, revoked or
    suspended key, a blocked address, a rate limit, the bulkhead, a failed proof, a
    lockdown). A honeytoken keeps its event: each use matters to an auditor. A refusal after
    admission (403 on another tester's object, a quota, a policy) keeps its event too."""
    context = current_context()
    if context.principal is not None or not 400 <= status < 500:
        return False
    # A honeytoken is refused as an unknown key, which has no key id (keys/errors.py).
    return not (context.attempted_key_id is not None and context.error_code == "invalid_api_key")


def record_usage(status: int) -> None:
    """Queue this request's event for the next batch, or count it as a refusal."""
    state = current_state()
    if counted_not_recorded(status):
        context, incoming = current_context(), current_request()
        rule = incoming.url_rule.rule if incoming.url_rule is not None else "(unmatched)"
        state.usage.count_refusal(
            state.store.clock(),
            context.attempted_key_id,
            context.error_code,
            status,
            incoming.method if incoming.method in _METHODS else "OTHER",
            rule,
            stored_client_ip(incoming.remote_addr),
        )
        return
    state.usage.add(usage_record(status))
