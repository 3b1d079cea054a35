"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from gateway.http.current import current_state
from keys.migrate import current_revision, head_revision

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The process can serve: its database answers and its schema is current.

    ``detail`` says what does not decide readiness: ``upstream_auth`` (does the backend
    accept the gateway's credential; see gateway/upstream/credential.py for why it is not a
    check). Redis, when configured, is in ``checks`` but does not decide readiness either:
    without it the rate limits and anomaly counters count in process memory
    (``keys.limits.counters``), and every key check still reads the database.
    """
    state = current_state()
    database = state.store.database
    checks: dict[str, str] = {}
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = current_revision(database.engine), head_revision(database.engine)
        checks["database"] = "ok"
        checks["schema"] = "ok" if current == head else f"at {current}, expected {head}"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    redis = state.limits.redis_status()
    if redis is not None:
        checks["redis"] = redis
    detail = {"upstream_auth": state.upstream.auth.describe()}
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "detail": detail}
    return jsonify(body), (200 if ready else 503)
