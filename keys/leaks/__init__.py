"""Leak response: ``leaked_keys`` (find keys in bytes, files and streams; shut found or
reported keys off), ``anomalies`` (the rules that suspend a key used the way leaked keys
are) and ``lockdown`` (the global kill switch, internal: reached as ``tx.lockdown``). A new
anomaly rule or leak source lands here. It may import the domain's foundation,
``keys.access``, ``keys.limits`` (counters) and ``keys.records``.
"""

__all__ = ["anomalies", "leaked_keys"]
