"""Where a delivered video came from.

``identity`` (the deployment's X.509 signing chain, made on first use, rotated by command),
``signer_cache`` (one process's view of it), ``manifests`` (C2PA manifests signed and read
with c2pa-python), ``bindings`` (one process's BMFF hashes of videos it delivered),
``content_cache`` (a host's delivered videos on disk, for revalidated repeat deliveries),
``mp4`` (a bounded walk of an MP4's boxes), ``deliveries`` (the forensic index of what left
the gateway) and ``identify`` (which delivery a file is). It imports the
domain's foundation, ``access.vault`` and ``records.audit``.
"""

__all__ = [
    "bindings",
    "content_cache",
    "deliveries",
    "identify",
    "identity",
    "manifests",
    "mp4",
    "signer_cache",
]
