"""The admin plane: the ``/admin/v1`` routes for admins, approvers and auditors.

``api`` (testers, keys, tokens, cohorts, lockdown, audit), ``approvals`` (held requests and
their decisions), ``usage`` (reports and exports) and ``provenance`` (identify a file) are
the blueprints; ``plane`` is what they share (id routes, strict query strings, body fields)
and ``openapi`` the document the plane is checked against. A new admin action, or a role's
access to one, lands here (the roles themselves are ``keys.access.roles``). It may import
``keys``, ``gateway.services``, ``gateway.http`` and the presenters; never another plane
(tests/test_layering.py).
"""

__all__ = ["api", "approvals", "openapi", "plane", "provenance", "usage"]
