"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from gateway.http.current import current_state
from keys.migrate import current_revision, head_revision, is_ahead

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The process can serve: its database answers and its schema is current (or ahead:
    a newer release has migrated it during a rolling upgrade).

    ``detail`` says what does not decide readiness: ``upstream_auth`` (does the backend
    accept the gateway's credential; see gateway/upstream/credential.py for why it is not a
    check). Redis, when configured, is in ``checks`` but does not decide readiness either:
    without it the rate limits and anomaly counters count in process memory
    (``keys.limits.counters``), and every key check still reads the database.
    """
    state = current_state()
    database = state.store.database
    checks: dict[str, str] = {}
    detail_schema: str | None = None
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = current_revision(database.engine), head_revision(database.engine)
        checks["database"] = "ok"
        # A schema ahead of this code is a rolling upgrade under way (docs/deploy.md): the
        # new release migrated first, and this instance serves until it is replaced.
        ahead = current != head and is_ahead(current)
        checks["schema"] = "ok" if current == head or ahead else f"at {current}, expected {head}"
        if ahead:
            detail_schema = f"at {current}, ahead of this code's {head}: restart on the new release"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    redis = state.limits.redis_status()
    if redis is not None:
        checks["redis"] = redis
    detail = {"upstream_auth": state.upstream.auth.describe()}
    if detail_schema is not None:
        detail["schema"] = detail_schema
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "detail": detail}
    return jsonify(body), (200 if ready else 503)
