"""What a key may spend: cohort policies, quotas and the shared counters behind them.

``policies`` (a cohort's policy and a tester's overrides: limits, quotas, allowed values,
prompt rules), ``cohorts`` (stored policies), ``quotas`` (reserve, settle, refund, exactly,
per period) and ``counters`` (Redis or in-process counters for rate and anomaly windows). A
new quota unit or policy field lands here. It may import the domain's foundation and
``keys.records`` (changes are audited).
"""

__all__ = ["cohorts", "counters", "policies", "quotas"]
