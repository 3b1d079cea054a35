"""What one gateway process holds: settings, the domain store and the upstream client."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from gateway.anomalies import AnomalyWatch
from gateway.limits import RateLimits
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


def current_state() -> GatewayState:
    state: GatewayState = current_app.extensions[EXTENSION]
    return state
