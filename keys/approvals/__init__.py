"""Held requests and sharing: ``decisions`` (generations, shares and downloads held for an
approver, and the approver's decision with its reason) and ``share_links`` (signed,
expiring ``/s/<token>`` links). A new kind of held request lands here. It may import the
domain's foundation, ``keys.access``, ``keys.records`` and ``keys.leaks.lockdown``.
"""

__all__ = ["decisions", "share_links"]
