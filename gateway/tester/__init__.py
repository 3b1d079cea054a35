"""The tester plane: the ``/v1`` routes a tester's key calls, and the public ``/s/<token>``.

One module per blueprint (``videos``, ``me``, ``shares``), each parsing a request, calling a
use case of ``gateway.services`` and rendering the answer, plus what reading a tester request
takes: the create form (``video_forms``), ``Idempotency-Key`` replays (``idempotency``) and
the request's usage event (``usage_event``). A new tester route lands here. It may import
``keys``, ``gateway.services``, ``gateway.http``, ``gateway.upstream`` (ids and errors), the
presenters and the process state; never another plane (tests/test_layering.py).
"""

__all__ = ["idempotency", "me", "shares", "usage_event", "video_forms", "videos"]
