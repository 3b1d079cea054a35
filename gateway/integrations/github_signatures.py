"""Verifying that a request body was signed by GitHub's secret scanning service.

GitHub signs the raw body with ECDSA P-256 / SHA-256 and names the key in a header; its
public keys are published as ``{"public_keys": [{"key_identifier", "key", "is_current"}]}``.
We keep them in process and fetch them again when an unknown key id arrives (GitHub rotated)
or when the copy is old (GitHub withdrew a key). A refetch happens at most once per
``min_refresh_interval`` whatever arrives: anyone can send an unknown key id, and we must
not let them make us hammer GitHub (60 unauthenticated calls an hour) or their own URL.

SignatureError
├── SignatureRejected       the signature does not verify (or names no key GitHub publishes)
├── RefreshThrottled        unknown key id, and a refetch happened too recently to try again
└── SigningKeysUnavailable  the public keys could not be fetched
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("drawbridge.secret_scanning")

MIN_REFRESH_INTERVAL = 60.0
MAX_KEYS_AGE = 3600.0
FETCH_TIMEOUT = (3.05, 5.0)  # connect, read
MAX_KEYS_DOCUMENT_BYTES = 256 * 1024
# A DER ECDSA P-256 signature is at most 72 bytes; anything much longer is not one.
_MAX_SIGNATURE_HEADER = 256
_MAX_KEY_ID_HEADER = 256


class SignatureError(Exception):
    """The body cannot be trusted as coming from GitHub."""


class SignatureRejected(SignatureError):
    pass


class RefreshThrottled(SignatureError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SigningKeysUnavailable(SignatureError):
    pass


@dataclass(frozen=True)
class _Keys:
    by_id: dict[str, ec.EllipticCurvePublicKey]
    fetched_at: float


class GitHubSigningKeys:
    """GitHub's secret scanning public keys, cached in process. Thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        min_refresh_interval: float = MIN_REFRESH_INTERVAL,
        max_age: float = MAX_KEYS_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.clock = clock
        self._min_refresh_interval = min_refresh_interval
        self._max_age = max_age
        if session is None:
            session = requests.Session()
            # No netrc or proxy variables: they could redirect or decorate the request.
            session.trust_env = False
        self._session = session
        self._keys: _Keys | None = None
        self._last_attempt: float | None = None
        self._lock = threading.Lock()

    def verify(self, payload: bytes, key_id: str, signature: str) -> None:
        """Check ``signature`` (base64 DER) over the raw ``payload``. Raises SignatureError."""
        if len(signature) > _MAX_SIGNATURE_HEADER or len(key_id) > _MAX_KEY_ID_HEADER:
            raise SignatureRejected("signature or key identifier too long")
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureRejected("the signature is not base64") from None
        public_key = self.public_key(key_id)
        try:
            public_key.verify(der, payload, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise SignatureRejected("the signature does not verify") from None

    def public_key(self, key_id: str) -> ec.EllipticCurvePublicKey:
        """The public key GitHub publishes under ``key_id``. Raises SignatureError."""
        keys = self._keys
        now = self.clock()
        if keys is not None and key_id in keys.by_id and now - keys.fetched_at < self._max_age:
            return keys.by_id[key_id]
        with self._lock:
            keys = self._keys  # another thread may have refreshed while we waited
            now = self.clock()
            fresh = keys is not None and now - keys.fetched_at < self._max_age
            if keys is not None and key_id in keys.by_id and fresh:
                return keys.by_id[key_id]
            if self._last_attempt is not None:
                wait = self._last_attempt + self._min_refresh_interval - now
                if wait > 0:
                    if keys is not None and key_id in keys.by_id:
                        return keys.by_id[key_id]  # old, but a refresh was just tried
                    raise RefreshThrottled(
                        "unknown key identifier; the key list was fetched moments ago", wait
                    )
            self._last_attempt = now
            try:
                keys = _Keys(self._fetch(), now)
            except SigningKeysUnavailable:
                if self._keys is not None and key_id in self._keys.by_id:
                    # Better an hour-old list than no leak response while GitHub's API
                    # is down; the next refresh is tried after the interval.
                    log.warning("could not refresh GitHub's public keys; using the old ones")
                    return self._keys.by_id[key_id]
                raise
            self._keys = keys
        if key_id not in keys.by_id:
            raise SignatureRejected("GitHub publishes no key with this identifier")
        return keys.by_id[key_id]

    def _fetch(self) -> dict[str, ec.EllipticCurvePublicKey]:
        try:
            response = self._session.get(
                self.url,
                headers={"Accept": "application/json", "User-Agent": "drawbridge"},
                timeout=FETCH_TIMEOUT,
                allow_redirects=False,
                stream=True,
            )
            with response:
                if response.status_code != 200:
                    raise SigningKeysUnavailable(f"{self.url} answered {response.status_code}")
                body = b""
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > MAX_KEYS_DOCUMENT_BYTES:
                        raise SigningKeysUnavailable(f"{self.url} sent an oversized document")
        except requests.RequestException as exc:
            raise SigningKeysUnavailable(f"{self.url}: {type(exc).__name__}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise SigningKeysUnavailable(f"{self.url} sent no JSON") from None
        records = document.get("public_keys") if isinstance(document, dict) else None
        if not isinstance(records, list):
            raise SigningKeysUnavailable(f"{self.url} sent no public_keys list")
        keys = {}
        for record in records:
            parsed = _parse_key(record)
            if parsed is not None:
                keys[parsed[0]] = parsed[1]
        log.info("fetched %d GitHub secret scanning public keys", len(keys))
        return keys


def _parse_key(record: object) -> tuple[str, ec.EllipticCurvePublicKey] | None:
    """(key id, P-256 public key) of one published record; None (logged) if unusable."""
    if not isinstance(record, dict):
        return None
    key_id, pem = record.get("key_identifier"), record.get("key")
    if not isinstance(key_id, str) or not key_id or not isinstance(pem, str):
        log.warning("skipping a malformed GitHub public key record")
        return None
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        log.warning("skipping GitHub public key %s: not a PEM public key", key_id)
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        log.warning("skipping GitHub public key %s: not ECDSA P-256", key_id)
        return None
    return key_id, key
