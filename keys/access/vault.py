"""Server-side secrets, all derived from one root secret.

The root secret (32+ random bytes) never leaves the server. From it, HKDF derives the pepper
that keys tester-key digests and the Fernet key that encrypts credentials kept in files or
the database (the upstream master credential). Rotating the root secret invalidates every
issued key, so it is generated once per deployment.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT_SECRET_BYTES = 32


class VaultError(Exception):
    """A secret could not be decoded or decrypted."""


def new_root_secret() -> str:
    """A fresh root secret, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(ROOT_SECRET_BYTES)).decode()


class Vault:
    def __init__(self, root_secret: str) -> None:
        try:
            raw = base64.urlsafe_b64decode(root_secret.strip().encode())
        except ValueError as exc:
            raise VaultError("the root secret is not valid base64") from exc
        if len(raw) < ROOT_SECRET_BYTES:
            raise VaultError(f"the root secret must decode to at least {ROOT_SECRET_BYTES} bytes")
        self._raw = raw

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """A subkey for one purpose; different purposes give independent keys."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
        return hkdf.derive(self._raw)

    @property
    def key_pepper(self) -> bytes:
        return self.derive("drawbridge/key-digest-pepper/v1")

    def _fernet(self) -> Fernet:
        key = base64.urlsafe_b64encode(self.derive("drawbridge/credential-encryption/v1"))
        return Fernet(key)

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a credential for storage in a file or the database."""
        return self._fernet().encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Raises VaultError when the token was not made with this root secret."""
        try:
            return self._fernet().decrypt(token.strip().encode()).decode()
        except InvalidToken as exc:
            raise VaultError("cannot decrypt: wrong root secret or damaged value") from exc

    def __repr__(self) -> str:
        return "Vault(<redacted>)"
