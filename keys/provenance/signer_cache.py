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
from keys.store import Store

PROMPT_HASH_PURPOSE = "drawbridge/prompt-hash/v1"


class SignerCache:
    """One process's view of the signing identity: which generation signs (asked of the
    database at each use, one indexed read, so a rotation is in force at the next
    delivery everywhere), decrypted once per generation; and the media bindings it
    computed (``bindings``). ``observe`` is told each
    delivery's outcome ("signed" or why not), for the metrics."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self._store = store
        self._vault = vault
        self._lock = threading.Lock()
        self._identity: SigningIdentity | None = None
        self._prompt_key = vault.derive(PROMPT_HASH_PURPOSE)
        self.observe: Callable[[str], None] = lambda outcome: None
        # The BMFF hashes of videos this process delivered (keys/provenance/bindings.py).
        self.bindings = BindingCache()

    def current(self) -> SigningIdentity:
        """The identity that signs now, made on first use."""
        with self._store.read() as tx:
            generation = tx.provenance_signers.newest_generation()
            cached = self._identity
            if cached is not None and cached.generation == generation:
                return cached
            row = tx.provenance_signers.get(generation) if generation is not None else None
            identity = unlock(row, self._vault) if row is not None else None
        if identity is None:
            with self._store.transaction() as tx:
                identity = unlock(tx.provenance_signers.ensure(self._vault), self._vault)
        with self._lock:
            self._identity = identity
        return identity

    def prompt_hash(self, prompt: str) -> str:
        """HMAC-SHA256 of the prompt under a key derived from the root secret: a plain hash
        of a short prompt is a dictionary attack away from the prompt itself."""
        return hmac.new(self._prompt_key, prompt.encode(), hashlib.sha256).hexdigest()
