"""Who may call: testers, their keys and admin tokens, and the one read that admits a key.

``keyformat`` (what a key looks like, its checksum), ``digests`` (HMAC of a secret with the
pepper), ``vault`` (the root secret and what is derived from it), ``lifecycle`` (issue,
rotate, revoke, suspend, resume, verify), ``gate`` (the hot path's single read: key, tester,
kill switch and named video at once), ``testers``, ``admin_tokens`` and ``roles`` (which
role may do what), ``proof_keys`` (public keys bound to API keys), ``proofs`` (checking a
request's RFC 9421 signature) and ``proof_replays`` (each proof's nonce claimed once). A new
key state, credential kind or role lands here. It may import the domain's foundation
(``keys.errors``, ``keys.models``, ``keys.db``...), ``keys.limits`` (a key's cohort and
policy), ``keys.records`` (the audit trail) and ``keys.leaks.lockdown``.
"""

__all__ = [
    "admin_tokens",
    "digests",
    "gate",
    "keyformat",
    "lifecycle",
    "proof_keys",
    "proof_replays",
    "proofs",
    "roles",
    "testers",
    "vault",
]
