"""What one gateway process holds, and how it is built from settings.

The app factory (gateway/app.py) serves it; the CLI builds the same state to run the same
services without any HTTP. Nothing here reads a request (``gateway.http.current`` finds the state
of the app handling one), but one part needs the app: the rate limits count in
flask-limiter's storage, which exists once ``create_app`` has bound them (``init_app``), so
tester admission runs only in a gateway app.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admission.alerts import AlertSender
from gateway.admission.anomalies import AnomalyWatch
from gateway.admission.bulkhead import Bulkhead
from gateway.admission.limits import MEMORY_STORAGE_URI, RateLimits
from gateway.settings import (
    Secret,
    Settings,
    SettingsError,
    provenance_cache_dir,
    root_secret_of,
)
from gateway.upstream.client import UpstreamClient
from gateway.upstream.reconciler import ReconcileSweep
from keys.access.digests import SecretDigester
from keys.access.keyformat import KeyFormat
from keys.access.proof_replays import DatabaseReplayClaims, ReplayGuard
from keys.access.vault import Vault
from keys.approvals.share_links import SHARE_LINK_PURPOSE, ShareLinkSigner
from keys.db import Database
from keys.limits.counters import (
    Counters,
    FallbackCounters,
    MemoryCounters,
    RedisCounters,
    RedisOutage,
)
from keys.provenance.content_cache import ContentCache
from keys.provenance.signer_cache import SignerCache
from keys.records.audit import CheckpointPolicy
from keys.records.audit_signing import AUDIT_SIGNING_PURPOSE, AuditSigner
from keys.records.usage import UsageBuffer
from keys.store import Store


@dataclass
class GatewayState:
    settings: Settings
    vault: Vault
    store: Store
    upstream: UpstreamClient
    limits: RateLimits
    usage: UsageBuffer
    share_links: ShareLinkSigner
    anomalies: AnomalyWatch
    bulkhead: Bulkhead
    replays: ReplayGuard
    signers: SignerCache
    content_cache: ContentCache
    sweep: ReconcileSweep | None = None


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


def build_upstream(settings: Settings, vault: Vault) -> UpstreamClient:
    """The client of the generation backend, with the master credential. Raises
    SettingsError when no credential is configured."""
    return UpstreamClient(
        settings.upstream_url,
        Secret(upstream_credential(settings, vault)),
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        deadline=settings.upstream_deadline,
        download_deadline=settings.upstream_download_deadline,
        max_json_bytes=settings.upstream_max_json_bytes,
        pool_size=settings.upstream_pool_size,
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
    if (
        not 5 <= settings.proof_window_seconds <= 3_600
        or not 0 <= settings.proof_skew_seconds <= 300
    ):
        raise SettingsError(
            "proof.window_seconds must be between 5 and 3600 and proof.skew_seconds between "
            "0 and 300"
        )
    if settings.reservation_lease_seconds <= settings.upstream_deadline:
        # A live request's reservation could be reconciled under it (docs/reconcile.md).
        raise SettingsError(
            "reservation_lease_seconds must be longer than upstream_deadline "
            f"({settings.reservation_lease_seconds} <= {settings.upstream_deadline})"
        )
    vault = Vault(root_secret_of(settings))
    store = build_store(settings, vault)
    upstream = build_upstream(settings, vault)
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
        replays=ReplayGuard(
            DatabaseReplayClaims(store.database),
            RedisCounters.from_url(settings.redis_url) if settings.redis_url else None,
            outage,
        ),
        signers=SignerCache(store, vault),
        # Made on first use (a CLI command never touches it).
        content_cache=ContentCache(
            provenance_cache_dir(settings),
            settings.provenance_cache_bytes if settings.provenance_sign else 0,
        ),
        sweep=ReconcileSweep(store, upstream, settings.reconcile_interval_seconds),
    )
