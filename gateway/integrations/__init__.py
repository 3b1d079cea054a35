"""Integrations: endpoints other systems call, not people.

``secret_scanning`` takes GitHub's secret-scanning partner reports
(``POST /integrations/secret-scanning``) and hands the found keys to the domain's leak
response; ``github_signatures`` verifies those reports against GitHub's published keys. A
new reporter (another scanner, a honeypot feed) lands here. It may import ``keys``,
``gateway.http`` and the process state; never another plane (tests/test_layering.py).
"""

__all__ = ["github_signatures", "secret_scanning"]
