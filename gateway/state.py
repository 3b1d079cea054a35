"""What one gateway process holds: settings, the domain store and the upstream client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from flask import Request, current_app, g, request
from flask.ctx import _AppCtxGlobals

from gateway.anomalies import AnomalyWatch
from gateway.bulkhead import Bulkhead
from gateway.limits import RateLimits
from gateway.reconciler import ReconcileSweep
from gateway.settings import Settings
from gateway.upstream import UpstreamClient
from keys.share_links import ShareLinkSigner
from keys.store import Store
from keys.usage import UsageBuffer
from keys.vault import Vault

EXTENSION = "drawbridge"


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
    sweep: ReconcileSweep | None = None


def current_state() -> GatewayState:
    state: GatewayState = current_app.extensions[EXTENSION]
    return state


# Flask's ``g`` and ``request`` are proxies that find the current context on every attribute
# access. Code that runs for every request and uses them many times takes the objects once.


def request_globals() -> _AppCtxGlobals:
    """The current request's ``flask.g`` object itself."""
    globals_: _AppCtxGlobals = cast(Any, g)._get_current_object()
    return globals_


def current_request() -> Request:
    """The current ``flask.request`` object itself."""
    incoming: Request = cast(Any, request)._get_current_object()
    return incoming
