"""One process's cached view of the signing identity (``SignerCache``), and the keyed hash
that stands for a prompt in manifests."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable

from keys.access.vault import Vault
from keys.provenance.bindings import BindingCache
from keys.provenance.identity import SigningIdentity, unlock
from keys.provenance.manifests import ManifestSigner
from keys.store import Store, Transaction

PROMPT_HASH_PURPOSE = "drawbridge/prompt-hash/v1"


class SignerCache:
    """One process's view of the signing identity: which generation signs (asked of the
    database at each use, one indexed read, so a rotation is in force at the next
    delivery everywhere), decrypted once per generation with its c2pa context
    (``manifest_signer``); and the media bindings it computed (``bindings``). ``observe``
    is told each delivery's outcome ("signed" or why not), for the metrics."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self._store = store
        self._vault = vault
        self._lock = threading.Lock()
        self._identity: SigningIdentity | None = None
        self._signer: tuple[SigningIdentity, ManifestSigner] | None = None
        self._prompt_key = vault.derive(PROMPT_HASH_PURPOSE)
        self.observe: Callable[[str], None] = lambda outcome: None
        # The BMFF hashes of videos this process delivered (keys/provenance/bindings.py).
        self.bindings = BindingCache()

    def current(self, tx: Transaction | None = None) -> SigningIdentity:
        """The identity that signs now, made on first use. With ``tx`` (a write
        transaction the caller has open: a delivery's audit entry), the generation is read
        in it rather than in a transaction of its own."""
        if tx is not None:
            made = self._current(tx, tx)
            assert made is not None
            return made
        with self._store.read() as read:
            identity = self._current(read, None)
        if identity is None:
            with self._store.transaction() as write:
                identity = self._current(write, write)
        assert identity is not None
        return identity

    def _current(self, tx: Transaction, write: Transaction | None) -> SigningIdentity | None:
        generation = tx.provenance_signers.newest_generation()
        cached = self._identity
        if cached is not None and cached.generation == generation:
            return cached
        row = tx.provenance_signers.get(generation) if generation is not None else None
        if row is None and write is not None:
            row = write.provenance_signers.ensure(self._vault)
        if row is None:
            return None
        identity = unlock(row, self._vault)
        with self._lock:
            self._identity = identity
            self._signer = None
        return identity

    def manifest_signer(self, identity: SigningIdentity) -> ManifestSigner:
        """The c2pa context that signs as ``identity``, made once per generation (kept for
        the identity this cache holds, never matched by generation number alone: a first
        generation made in a transaction that rolled back is not the one made after it).
        Raises SigningFailed."""
        with self._lock:
            held = self._signer
            if held is not None and held[0] is identity:
                return held[1]
        signer = ManifestSigner(identity.chain_pem, identity.private_key_pem)
        with self._lock:
            if self._identity is identity:
                self._signer = (identity, signer)
        return signer

    def prompt_hash(self, prompt: str) -> str:
        """HMAC-SHA256 of the prompt under a key derived from the root secret: a plain hash
        of a short prompt is a dictionary attack away from the prompt itself."""
        return hmac.new(self._prompt_key, prompt.encode(), hashlib.sha256).hexdigest()
