"""Where a delivered video came from.

``identity`` (the deployment's X.509 signing chain, made on first use, rotated by command),
``signer_cache`` (one process's view of it), ``manifests`` (C2PA manifests signed and read
with c2pa-python), ``mp4`` (a bounded walk of an MP4's boxes), ``deliveries`` (the forensic
index of what left the gateway) and ``identify`` (which delivery a file is). It imports the
domain's foundation, ``access.vault`` and ``records.audit``.
"""

__all__ = ["deliveries", "identify", "identity", "manifests", "mp4", "signer_cache"]
