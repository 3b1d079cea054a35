"""The Flask application factory."""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import (
    admin_api,
    approvals_api,
    console,
    health,
    me,
    metrics,
    secret_scanning,
    shares,
    usage_api,
    videos,
)
from gateway.alerts import AlertSender
from gateway.anomalies import AnomalyWatch
from gateway.bulkhead import Bulkhead
from gateway.bulkhead import init_app as init_bulkhead
from gateway.errors import ApiError, register_error_handlers
from gateway.inputs import bound_chunked_body, refuse_unsafe_query
from gateway.limits import MEMORY_STORAGE_URI, RateLimits
from gateway.limits import add_headers as add_rate_limit_headers
from gateway.logs import access_log, configure_logging
from gateway.paths import refuse_path_tricks
from gateway.reconciler import ReconcileSweep
from gateway.settings import Secret, Settings, SettingsError, load_settings, root_secret_of
from gateway.state import (
    EXTENSION,
    GatewayState,
    current_request,
    current_state,
    request_globals,
)
from gateway.upstream import UpstreamClient
from gateway.usage import record_usage
from keys.audit import CheckpointPolicy
from keys.audit_signing import AUDIT_SIGNING_PURPOSE, AuditSigner
from keys.counters import (
    Counters,
    FallbackCounters,
    MemoryCounters,
    RedisCounters,
    RedisOutage,
)
from keys.db import Database
from keys.digests import SecretDigester
from keys.errors import DatabaseUnreachable
from keys.keyformat import KeyFormat
from keys.migrate import require_current_schema
from keys.process import unique_hex
from keys.share_links import SHARE_LINK_PURPOSE, ShareLinkSigner
from keys.store import Store
from keys.usage import UsageBuffer
from keys.vault import Vault

log = logging.getLogger("drawbridge")

_REQUEST_ID_HEADER = "X-Request-Id"
# A client's (or a proxy's) X-Request-Id is kept, to follow one request across systems,
# only if it is this plain: nothing that could split a header or a log line, nothing long.
# It is echoed and logged; the gateway's own id (unique: usage events are filed under it,
# the backend receives it) is generated every time, since a client may repeat an id.
WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TESTER_BLUEPRINTS = frozenset({"videos", "me", "shares"})


def upstream_credential(settings: Settings, vault: Vault) -> str:
    """The master credential, from the environment or decrypted from the settings file."""
    if settings.upstream_api_key:
        return settings.upstream_api_key.reveal()
    if settings.upstream_api_key_encrypted:
        return vault.decrypt(settings.upstream_api_key_encrypted)
    raise SettingsError(
        "no upstream credential: set DRAWBRIDGE_UPSTREAM_API_KEY or upstream.api_key_encrypted "
        "(encrypt one with `drawbridge secrets encrypt`)"
    )


def build_store(settings: Settings, vault: Vault) -> Store:
    """The domain store for these settings (what the CLI needs, without the upstream)."""
    try:
        checkpoints = CheckpointPolicy(
            settings.audit_checkpoint_every, settings.audit_checkpoint_seconds
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Store(
        Database(settings.database_url, pool_size=settings.database_pool_size),
        SecretDigester(vault.key_pepper),
        KeyFormat(settings.key_prefix),
        KeyFormat(settings.admin_token_prefix),
        audit_signer=AuditSigner(vault.derive(AUDIT_SIGNING_PURPOSE)),
        checkpoint_policy=checkpoints,
    )


def build_anomaly_watch(
    settings: Settings, store: Store, outage: RedisOutage | None = None
) -> AnomalyWatch:
    """Anomaly detection with counters in Redis when ``redis_url`` is set (in process memory
    while Redis is unreachable), else in process."""
    counters: Counters = (
        FallbackCounters(
            RedisCounters.from_url(settings.redis_url), outage or RedisOutage(), MemoryCounters()
        )
        if settings.redis_url
        else MemoryCounters()
    )
    try:
        alerts = AlertSender(settings.alert_webhook_urls, settings.alert_timeout_seconds)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return AnomalyWatch(counters, alerts, store)


def build_state(settings: Settings) -> GatewayState:
    """Everything a gateway process holds, built from settings."""
    if settings.reservation_lease_seconds <= settings.upstream_deadline:
        # A live request's reservation could be reconciled under it (docs/reconcile.md).
        raise SettingsError(
            "reservation_lease_seconds must be longer than upstream_deadline "
            f"({settings.reservation_lease_seconds} <= {settings.upstream_deadline})"
        )
    vault = Vault(root_secret_of(settings))
    store = build_store(settings, vault)
    upstream = UpstreamClient(
        settings.upstream_url,
        Secret(upstream_credential(settings, vault)),
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        deadline=settings.upstream_deadline,
        download_deadline=settings.upstream_download_deadline,
        max_json_bytes=settings.upstream_max_json_bytes,
        pool_size=settings.upstream_pool_size,
    )
    # One view of Redis per process, shared by the two stores that count in it.
    outage = RedisOutage()
    return GatewayState(
        settings=settings,
        vault=vault,
        store=store,
        upstream=upstream,
        limits=RateLimits(
            settings.redis_url or MEMORY_STORAGE_URI, settings.auth_failures_per_minute, outage
        ),
        usage=UsageBuffer(store, settings.usage_flush_seconds),
        share_links=ShareLinkSigner(vault.derive(SHARE_LINK_PURPOSE)),
        anomalies=build_anomaly_watch(settings, store, outage),
        bulkhead=Bulkhead(settings.max_inflight_per_key),
        sweep=ReconcileSweep(store, upstream, settings.reconcile_interval_seconds),
    )


def create_app(settings: Settings | None = None, state: GatewayState | None = None) -> Flask:
    """A gateway application. With no arguments, settings come from file and environment."""
    if state is None:
        settings = settings or load_settings()
        # Refuse to serve a missing or unmigrated database: every request would fail. One
        # that is down now may come back: serve, fail closed, and say so in /readyz.
        try:
            require_current_schema(settings.database_url)
        except DatabaseUnreachable as exc:
            log.warning("%s: starting anyway; /readyz reports it until it answers", exc.message)
        state = build_state(settings)
    settings = state.settings
    configure_logging(settings.log_level, state)

    app = Flask("drawbridge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Paths are matched exactly; '//' and friends are refused, never redirected.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions[EXTENSION] = state
    if settings.trusted_proxies:
        # Only the configured number of proxies may speak for the client's address: a
        # spoofed X-Forwarded-For entry beyond them changes nothing.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies
        )
    state.limits.init_app(app)
    init_bulkhead(app)

    register_error_handlers(app)
    metrics.init_app(app, settings)
    app.before_request(_start_request)
    app.before_request(bound_chunked_body)
    app.before_request(refuse_unsafe_query)
    app.after_request(_finish_request)
    for blueprint in (
        videos.bp,
        shares.bp,
        me.bp,
        admin_api.bp,
        approvals_api.bp,
        health.bp,
        secret_scanning.bp,
        usage_api.bp,
        console.bp,
    ):
        app.register_blueprint(blueprint)
    return app


def new_request_id() -> str:
    return "req_" + unique_hex()


def client_request_id(incoming: str | None) -> str | None:
    """The client's X-Request-Id when it is well formed, else None."""
    if incoming is not None and WELL_FORMED_REQUEST_ID.fullmatch(incoming):
        return incoming
    return None


def _start_request() -> None:
    context = request_globals()
    context.started = time.perf_counter()
    context.request_id = new_request_id()
    context.client_request_id = client_request_id(current_request().headers.get(_REQUEST_ID_HEADER))
    refuse_path_tricks(request.environ)
    sweep = current_state().sweep
    if sweep is not None:
        sweep.ensure_running()


def _finish_request(response: Response) -> Response:
    # This runs for every response: the request's globals are looked up once, not per use.
    context, incoming = request_globals(), current_request()
    if not context.get("request_id"):  # a hook before _start_request refused the request
        context.request_id = new_request_id()
    echoed = context.get("client_request_id") or context.request_id
    response.headers[_REQUEST_ID_HEADER] = echoed
    add_rate_limit_headers(response, context.get("rate_limit"))
    if incoming.blueprint in _TESTER_BLUEPRINTS and not context.get("usage_written"):
        record_usage(response.status_code)
    access = access_log() if current_state().settings.access_log else None
    if access is not None:
        principal, operator = context.get("principal"), context.get("operator")
        access.write(
            {
                "request_id": echoed,
                # The gateway's own id (usage events, the backend's logs), when it differs.
                "gateway_request_id": context.request_id if echoed != context.request_id else None,
                "method": incoming.method,
                "path": incoming.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - context.get("started", 0.0)) * 1000, 2),
                "key_id": principal.key_id if principal else None,
                "operator": operator.token_id if operator else None,
            }
        )
    return response


__all__ = ["ApiError", "build_state", "create_app"]
