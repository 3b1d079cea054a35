"""What the gateway knows about the request in hand, in one typed object.

The edge (gateway/app.py) makes one ``RequestContext`` per request and keeps it on Flask's
``g`` (gateway/http/current.py finds it); the admission pipeline and the services fill it in as
they learn things; the usage event, the access log and the metrics read it at the end. It
imports no Flask, so the services can take it as a plain argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.admission.bulkhead import Slot
    from gateway.admission.limits import LimitState
    from gateway.console.session import ConsoleSession, TesterSession
    from keys.access.admin_tokens import Operator
    from keys.access.gate import VideoRef
    from keys.access.lifecycle import Principal


@dataclass(slots=True)
class RequestContext:
    request_id: str
    """The gateway's own id: unique, filed with the usage event, sent to the backend."""
    started: float
    """``time.perf_counter()`` when the request began."""
    client_request_id: str | None = None
    """The client's well-formed ``X-Request-Id``, echoed instead of ``request_id``."""

    # Who is calling, once admission knows.
    principal: Principal | None = None
    """A tester key that was admitted."""
    attempted_key_id: str | None = None
    """The key the caller presented, admitted or not (never the secret)."""
    operator: Operator | None = None
    """An admin, approver or auditor token (API) or console session."""
    console_session: ConsoleSession | None = None
    """The console's signed-in session, read once per request."""
    tester_session: TesterSession | None = None
    """A tester signed in to the console with a usable key."""

    # What admission handed out, given back when the request ends.
    video: VideoRef | None = None
    """The video named in the URL, read with the key in the same query."""
    bulkhead_slot: Slot | None = None
    """The key's place among its in-flight requests on this worker."""
    rate_limit: LimitState | None = None
    """The tightest rate-limit window after this request, for the response headers."""

    # How it went, for the usage event and the access log.
    upstream_ms: float | None = None
    """Milliseconds the last upstream JSON call took."""
    usage_written: bool = False
    """The request's usage event was written with its ledger entry (a create): not again."""
    error_code: str | None = None
    error_param: str | None = None
    json_parsed: bool = False
    json_document: object = None
    """The request body as JSON, parsed once (``json_parsed`` says whether it was)."""
