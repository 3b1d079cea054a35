"""The media bindings one process has computed: for a video's bytes, the BMFF hash c2pa
computed over them (and their media hash), so the next delivery of the same bytes signs in
O(manifest) instead of hashing the file again (keys/provenance/manifests.py
``DeliveryManifest``).

No content is kept, only hashes (a few hundred bytes an entry), bounded (LRU). An entry is
found by what is known before the first byte (the video, the backend's length and ETag),
and used only if the SHA-256 of the bytes that then streamed past is the one it was
computed for: another video's or changed bytes are never signed with it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Binding:
    """What was computed for one video's bytes, found by their SHA-256: the BMFF hash
    assertion and the media hash (of the ``mdat`` payloads, for the index)."""

    original_sha256: str
    assertion: dict[str, Any]
    media_sha256: str


class BindingCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int, str], Binding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, str]) -> Binding | None:
        with self._lock:
            binding = self._entries.get(key)
            if binding is not None:
                self._entries.move_to_end(key)
            return binding

    def put(self, key: tuple[str, int, str], binding: Binding) -> None:
        with self._lock:
            self._entries[key] = binding
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop(self, key: tuple[str, int, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
