"""Settings: code defaults, then a TOML file, then ``DRAWBRIDGE_*`` environment variables.

The TOML file may group settings in tables; ``[upstream] url`` is the setting
``upstream_url``, overridden by ``DRAWBRIDGE_UPSTREAM_URL``. Every setting is documented in
``config/drawbridge.toml``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, DEFAULT_KEY_PREFIX

ENV_PREFIX = "DRAWBRIDGE_"
GITHUB_SCANNING_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"


class SettingsError(Exception):
    """The configuration cannot be used; the message names the file or variable."""


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///drawbridge.db"
    database_pool_size: int = 10
    redis_url: str | None = None
    # How many gateway hosts serve this database; more than one needs redis_url to share the
    # rate limits (`drawbridge doctor` checks it).
    instances: int = 1

    # The root secret derives the key pepper and the credential encryption key.
    root_secret: Secret | None = None
    root_secret_file: str | None = None

    upstream_url: str = "http://127.0.0.1:8090/v1"
    upstream_api_key: Secret | None = None
    upstream_api_key_encrypted: str | None = None
    upstream_connect_timeout: float = 3.05
    upstream_read_timeout: float = 30.0
    upstream_deadline: float = 60.0
    # A content download ends after this many seconds in all, however slowly the backend
    # sends or the client reads: the worker thread it holds is freed (docs/isolation.md).
    upstream_download_deadline: float = 300.0
    upstream_pool_size: int = 32
    upstream_max_json_bytes: int = 4 * 1024 * 1024

    max_request_bytes: int = 25 * 1024 * 1024
    key_prefix: str = DEFAULT_KEY_PREFIX
    admin_token_prefix: str = DEFAULT_ADMIN_TOKEN_PREFIX
    rotation_grace_seconds: int = 86_400

    # A signed audit checkpoint every N entries, and at an append once the last is M s old.
    audit_checkpoint_every: int = 100
    audit_checkpoint_seconds: int = 300

    # The gateway's public address, for links it hands out (share links). Unset: taken from
    # the request, which a client controls through the Host header.
    public_url: str | None = None

    # How many proxies in front of the gateway may set X-Forwarded-For; 0 trusts none.
    trusted_proxies: int = 0
    auth_failures_per_minute: int = 30
    # An address this worker holds blocked for failed authentications is refused in front of
    # Flask, with the same answer, log line and counts (gateway/fast_refusal.py); false sends
    # those refusals through Flask (to compare the two: bench.flood --compare-fast-refusals).
    fast_refusals: bool = True

    # Proof of possession (docs/proof-of-possession.md): a signature's ``created`` may be this
    # old, or this far in the future; its nonce is remembered for twice the window.
    proof_window_seconds: int = 60
    proof_skew_seconds: int = 5
    # A leaked key found by `leaks scan --revoke` or a secret-scanning report is revoked even
    # when a proof key is bound to it (its string alone is refused anyway); false keeps such
    # a key in force and only records the leak (docs/leak-response.md).
    proof_revoke_leaked: bool = True
    # Requests of one key in progress at once, per worker process; 0 turns the cap off
    # (docs/isolation.md). Keep it below gunicorn's threads per worker.
    max_inflight_per_key: int = 4

    # POST /integrations/secret-scanning (docs/leak-response.md): where GitHub publishes the
    # keys it signs reports with, whether to answer with label feedback (it tells GitHub
    # which tokens were real), and the largest report accepted.
    secret_scanning_keys_url: str = GITHUB_SCANNING_KEYS_URL
    secret_scanning_feedback: bool = False
    secret_scanning_max_body_bytes: int = 1024 * 1024

    # Anomaly alerts (docs/leak-response.md): Slack-compatible webhooks, each posted once
    # with this timeout from a background thread. The environment variable takes a
    # comma-separated list.
    alert_webhook_urls: tuple[str, ...] = ()
    alert_timeout_seconds: float = 3.0

    # Usage events (docs/usage.md): kept this many days by `drawbridge usage prune`; the
    # non-billable ones are written in batches at least this often.
    usage_retention_days: int = 400
    usage_flush_seconds: float = 1.0

    # GET /metrics: with a token, scrapers must send it as a Bearer credential; without one,
    # only loopback clients may scrape. ``metrics_dir`` is where each worker process
    # publishes its counters so any worker answers for all (`drawbridge serve` makes one).
    metrics_token: Secret | None = None
    metrics_dir: str | None = None

    # Reservations (docs/reconcile.md): a creation's quota reservation is leased this long
    # (longer than the upstream deadline); each worker reconciles expired ones about this
    # often, with jitter (0: never, leave it to `drawbridge reconcile`).
    reservation_lease_seconds: float = 120.0
    reconcile_interval_seconds: float = 30.0

    # Provenance (docs/provenance.md): a signed C2PA manifest on every video that leaves the
    # gateway. A file is held in memory up to spool_memory_bytes while it is signed, on disk
    # past that; one larger than max_sign_bytes, or not an MP4, goes out unchanged (logged
    # and counted). The prompt is in manifests only as a keyed hash unless include_prompt.
    provenance_sign: bool = True
    provenance_include_prompt: bool = False
    provenance_spool_memory_bytes: int = 8 * 1024 * 1024
    provenance_max_sign_bytes: int = 4 * 1024 * 1024 * 1024
    # The largest file POST /admin/v1/provenance/identify accepts (413 beyond).
    provenance_identify_max_bytes: int = 256 * 1024 * 1024
    # A host's cache of delivered videos (docs/provenance.md): the bytes of a video the
    # backend tagged with a strong ETag are kept on disk with their hashes, and a repeat
    # delivery the backend confirms unchanged (304) streams them from there. The directory
    # (unset: ``provenance-cache`` next to the SQLite database, else in the working
    # directory) holds generated videos: it is made 0700. At most cache_bytes (0: no cache).
    provenance_cache_dir: str | None = None
    provenance_cache_bytes: int = 2 * 1024 * 1024 * 1024

    log_level: str = "INFO"
    access_log: bool = True


_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = str(_FIELDS[name].type)
    try:
        if "Secret" in kind:
            return Secret(str(value)) if value not in (None, "") else None
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                raise ValueError(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("1", "true", "yes", "on")
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if value in (None, "") and "None" in kind:
            return None
        return str(value)
    except ValueError:
        raise SettingsError(f"{source}: {name} has an invalid value for type {kind}") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}_"))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def read_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file. Raises SettingsError naming the file (and line)."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            table = tomllib.load(stream)
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such settings file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    values = {}
    for name, value in _flatten(table).items():
        if name not in _FIELDS:
            raise SettingsError(f"{path}: unknown setting {name!r}")
        values[name] = _coerce(name, value, str(path))
    return values


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults < file (``config_file`` or ``DRAWBRIDGE_CONFIG``) < environment < overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file:
        values.update(read_file(config_file))
    for name in _FIELDS:
        variable = f"{ENV_PREFIX}{name.upper()}"
        if variable in environ:
            values[name] = _coerce(name, environ[variable], variable)
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value, "override") if not isinstance(value, Secret) else value
    return Settings(**values)


PROVENANCE_CACHE_DIR = "provenance-cache"


def provenance_cache_dir(settings: Settings) -> Path:
    """Where this host keeps delivered videos: the setting, else beside the SQLite database
    (the gateway's state folder: ``drawbridge demo``'s, or the working directory)."""
    if settings.provenance_cache_dir:
        return Path(settings.provenance_cache_dir)
    url = settings.database_url
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url.removeprefix(prefix).split("?", 1)[0]
            if path and path != ":memory:":
                return Path(path).parent / PROVENANCE_CACHE_DIR
    return Path(PROVENANCE_CACHE_DIR)


def root_secret_of(settings: Settings) -> str:
    """The root secret's text. Raises SettingsError when none is configured."""
    if settings.root_secret:
        return settings.root_secret.reveal()
    if settings.root_secret_file:
        try:
            return Path(settings.root_secret_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{settings.root_secret_file}: {exc.strerror}") from None
    raise SettingsError(
        "no root secret: set DRAWBRIDGE_ROOT_SECRET or root_secret_file "
        "(create one with `drawbridge secrets new-root`)"
    )
