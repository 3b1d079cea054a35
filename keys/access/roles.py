"""The roles an admin token carries, and which roles may do what.

The admin API and the console guard their routes with the same sets, so a role has the same
rights on both planes. Whatever changes the program (testers, keys, tokens, policies, the
kill switch) is for ``ADMIN`` alone.
"""

from __future__ import annotations

ADMIN = "admin"
APPROVER = "approver"
AUDITOR = "auditor"
ROLES = (ADMIN, APPROVER, AUDITOR)

# Who am I, the kill switch's state, cohort policies, the queue of held requests.
ANY_ROLE = ROLES
# Approve or reject a held generation, share or download.
APPROVAL_DECIDERS = (ADMIN, APPROVER)
# The program's records: testers, their keys and policies, usage, incidents, the audit trail.
RECORD_READERS = (ADMIN, AUDITOR)
